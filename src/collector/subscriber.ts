// One Subscribe stream: its history replay, then live records through a bounded queue. A reader
// slower than the stream's flow control fills the queue; beyond the bound records are dropped, and
// the count reaches the reader as a lost-events notice in the queue's order once there is room.
import type { ServerWritableStream } from '@grpc/grpc-js';
import { Deque } from '../common/deque.js';
import { icmpwatch } from '../common/proto.js';
import type { HistoryEntry } from './history.js';
import { timestampFromMs } from './timestamps.js';

type Call = ServerWritableStream<icmpwatch.v1.ISubscribeRequest, icmpwatch.v1.ISubscribeResponse>;

interface Loss {
  count: number;
  firstMs: number;
  lastMs: number;
}

export class Subscriber {
  private replay: HistoryEntry[] = [];
  private replayNext = 0;
  private readonly queue = new Deque<icmpwatch.v1.ISubscribeResponse>();
  private loss: Loss | null = null;
  private waitingForDrain = false;
  private ending = false;
  private closed = false;
  private readonly closeListeners: (() => void)[] = [];

  constructor(
    private readonly call: Call,
    private readonly queueLimit: number,
    private readonly onDrop: (count: number) => void,
  ) {
    call.on('cancelled', () => this.close());
    call.on('error', () => this.close());
    call.on('close', () => this.close());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  onClose(listener: () => void): void {
    this.closeListeners.push(listener);
  }

  /** History first: written with flow control, not counted against the queue bound. */
  startReplay(entries: HistoryEntry[]): void {
    this.replay = entries;
    this.pump();
  }

  /** A live record; never blocks the caller. */
  offer(response: icmpwatch.v1.ISubscribeResponse, timeMs: number): void {
    if (this.closed || this.ending) return;
    if (this.queue.length >= this.queueLimit) {
      this.loss = this.loss
        ? { count: this.loss.count + 1, firstMs: Math.min(this.loss.firstMs, timeMs), lastMs: Math.max(this.loss.lastMs, timeMs) }
        : { count: 1, firstMs: timeMs, lastMs: timeMs };
      this.onDrop(1);
      return;
    }
    this.flushLoss();
    this.queue.push(response);
    this.pump();
  }

  /** Sends what is queued, then ends the stream. */
  end(): void {
    this.ending = true;
    this.pump();
  }

  private flushLoss(): void {
    if (!this.loss) return;
    const { count, firstMs, lastMs } = this.loss;
    this.loss = null;
    this.queue.push({
      nodeName: '',
      time: timestampFromMs(Date.now()),
      lostEvents: {
        source: icmpwatch.v1.LostEventsSource.LOST_EVENTS_SOURCE_SUBSCRIBER_QUEUE,
        count,
        first: timestampFromMs(firstMs),
        last: timestampFromMs(lastMs),
      },
    });
  }

  private next(): icmpwatch.v1.ISubscribeResponse | undefined {
    if (this.replayNext < this.replay.length) return this.replay[this.replayNext++]!.response;
    if (this.replay.length > 0) {
      this.replay = [];
      this.replayNext = 0;
    }
    if (this.queue.length === 0) this.flushLoss();
    return this.queue.shift();
  }

  private pump(): void {
    while (!this.closed && !this.waitingForDrain) {
      const response = this.next();
      if (!response) break;
      if (!this.call.write(response)) {
        this.waitingForDrain = true;
        this.call.once('drain', () => {
          this.waitingForDrain = false;
          this.pump();
        });
      }
    }
    if (this.ending && !this.closed && !this.waitingForDrain && this.queue.length === 0 && this.replayNext >= this.replay.length) {
      this.call.end();
      this.close();
    }
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const listener of this.closeListeners) listener();
  }
}
