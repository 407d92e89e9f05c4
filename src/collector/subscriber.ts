// One Subscribe or SubscribeBatches stream: its history replay, then live records through a bounded
// queue. A reader slower than the stream's flow control fills the queue; beyond the bound records are
// dropped, and the count reaches the reader as a lost-events notice in the queue's order once there
// is room. The two RPCs differ only in how records are written: Subscribe one message each;
// SubscribeBatches, whenever the stream can take more, everything queued (up to the bounds) in one
// message, since grpc-js has one message in flight per stream and a message per record per
// subscriber is what limits the collector's throughput. Either way a record's bytes are the ones
// encoded once for every stream (encoded-response.ts).
import type { ServerWritableStream } from '@grpc/grpc-js';
import { Deque } from '../common/deque.js';
import { batchedSize, type EncodedBatch } from '../common/grpc/services.js';
import { icmpwatch } from '../common/proto.js';
import { encodeResponse, type EncodedResponse } from './encoded-response.js';
import type { HistoryEntry } from './history.js';
import { timestampFromMs } from './timestamps.js';

/** The bounds of one SubscribeBatch (observer.proto says so). */
export const MAX_BATCH_RECORDS = 1000;
export const MAX_BATCH_BYTES = 1 << 20;
/**
 * SubscribeBatches messages a stream holds that its reader has not taken: enough to ride out a
 * reader's short pause, few enough that a slow reader's backlog waits in the bounded queue (and is
 * counted when dropped) rather than in the stream's buffer, which takes 16 messages of any size.
 */
const MAX_BATCHES_IN_FLIGHT = 4;

/** Subscribe: each message an encoded SubscribeResponse. */
export type SubscribeCall = ServerWritableStream<icmpwatch.v1.ISubscribeRequest, Uint8Array>;
export type SubscribeBatchesCall = ServerWritableStream<icmpwatch.v1.ISubscribeRequest, EncodedBatch>;

/** A stream's call and how it is written: a message per record, or batches of records. */
export type SubscriberOutput = { call: SubscribeCall; batched: false } | { call: SubscribeBatchesCall; batched: true };

interface Loss {
  count: number;
  firstMs: number;
  lastMs: number;
}

export class Subscriber {
  private replay: HistoryEntry[] = [];
  private replayNext = 0;
  private readonly queue = new Deque<EncodedResponse>();
  private loss: Loss | null = null;
  /** Taken for a batch that had no room left for it: first in the next one. */
  private heldOver: Uint8Array | null = null;
  private waitingForDrain = false;
  /** SubscribeBatches: messages written that the stream has not taken yet. */
  private batchesInFlight = 0;
  private pumpScheduled = false;
  private ending = false;
  private closed = false;
  private readonly closeListeners: (() => void)[] = [];

  constructor(
    private readonly output: SubscriberOutput,
    private readonly queueLimit: number,
    private readonly onDrop: (count: number) => void,
  ) {
    const call = output.call;
    call.on('cancelled', () => this.close());
    call.on('error', () => this.close());
    call.on('close', () => this.close());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs `listener` when the stream closes, or now if it already has. */
  onClose(listener: () => void): void {
    if (this.closed) listener();
    else this.closeListeners.push(listener);
  }

  /** History first: written with flow control, not counted against the queue bound. */
  startReplay(entries: HistoryEntry[]): void {
    this.replay = entries;
    this.pump();
  }

  /** A live record; never blocks the caller. */
  offer(record: EncodedResponse, timeMs: number): void {
    if (this.closed || this.ending) return;
    if (this.queue.length >= this.queueLimit) {
      this.lose(timeMs);
      return;
    }
    this.flushLoss();
    this.queue.push(record);
    this.schedulePump();
  }

  /**
   * Pumps once the caller's turn is over: the records published in one go (an agent's batch) then
   * leave in one SubscribeBatch, not the first few each in a message of its own.
   */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    queueMicrotask(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** A live record dropped before it reached the queue: counted, and announced like queue overflow. */
  lose(timeMs: number): void {
    this.loss = this.loss
      ? { count: this.loss.count + 1, firstMs: Math.min(this.loss.firstMs, timeMs), lastMs: Math.max(this.loss.lastMs, timeMs) }
      : { count: 1, firstMs: timeMs, lastMs: timeMs };
    this.onDrop(1);
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
    this.queue.push(
      encodeResponse({
        nodeName: '',
        time: timestampFromMs(Date.now()),
        lostEvents: {
          source: icmpwatch.v1.LostEventsSource.LOST_EVENTS_SOURCE_SUBSCRIBER_QUEUE,
          count,
          first: timestampFromMs(firstMs),
          last: timestampFromMs(lastMs),
        },
      }),
    );
  }

  private next(): EncodedResponse | undefined {
    if (this.replayNext < this.replay.length) return this.replay[this.replayNext++]!.record;
    if (this.replay.length > 0) {
      this.replay = [];
      this.replayNext = 0;
    }
    if (this.queue.length === 0) this.flushLoss();
    return this.queue.shift();
  }

  private pump(): void {
    while (!this.closed && !this.waitingForDrain && this.batchesInFlight < MAX_BATCHES_IN_FLIGHT) {
      const written = this.writeNext();
      if (written === null) break;
      if (!written) {
        this.waitingForDrain = true;
        this.output.call.once('drain', () => {
          this.waitingForDrain = false;
          this.pump();
        });
      }
    }
    const drained = this.queue.length === 0 && this.replayNext >= this.replay.length && this.heldOver === null;
    if (this.ending && !this.closed && !this.waitingForDrain && drained) {
      this.output.call.end();
      this.close();
    }
  }

  /** Writes one message; what call.write answers, or null with nothing to write. */
  private writeNext(): boolean | null {
    const output = this.output;
    if (!output.batched) {
      const record = this.next();
      return record ? output.call.write(record.encoded) : null;
    }
    const batch: Uint8Array[] = [];
    let bytes = 0;
    while (batch.length < MAX_BATCH_RECORDS) {
      let encoded = this.heldOver;
      this.heldOver = null;
      if (!encoded) {
        const record = this.next();
        if (!record) break;
        encoded = record.encoded;
      }
      const size = batchedSize(encoded);
      if (batch.length > 0 && bytes + size > MAX_BATCH_BYTES) {
        this.heldOver = encoded;
        break;
      }
      batch.push(encoded);
      bytes += size;
    }
    if (batch.length === 0) return null;
    this.batchesInFlight++;
    return output.call.write(batch, () => {
      this.batchesInFlight--;
      this.pump();
    });
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const listener of this.closeListeners) listener();
  }
}
