// Events not yet acknowledged by the collector, in sequence order, bounded by count and bytes. When
// full the oldest are dropped; the dropped sequences are kept as one range to announce.
import { Deque } from '../../common/deque.js';
import type { google } from '../../common/proto.js';

export interface BufferedEvent {
  /** The event encoded (Event message bytes). */
  encoded: Uint8Array;
  sequence: number;
  time: google.protobuf.ITimestamp | null;
}

/** Dropped sequences not yet covered by an acknowledgement; `version` changes with each drop. */
export interface DropRange {
  firstSequence: number;
  lastSequence: number;
  first: google.protobuf.ITimestamp | null;
  last: google.protobuf.ITimestamp | null;
  version: number;
}

export class SendBuffer {
  private readonly events = new Deque<BufferedEvent>();
  private totalBytes = 0;
  private dropVersion = 0;
  /** Sequences dropped before the collector acknowledged them (or heard of their loss). */
  dropped: DropRange | null = null;

  constructor(
    private readonly maxEvents: number,
    private readonly maxBytes: number,
  ) {}

  get length(): number {
    return this.events.length;
  }

  get bytes(): number {
    return this.totalBytes;
  }

  /** Adds an event; returns how many old ones were dropped to make room. */
  add(entry: BufferedEvent): number {
    this.events.push(entry);
    this.totalBytes += entry.encoded.length;
    let dropped = 0;
    while (this.events.length > this.maxEvents || (this.totalBytes > this.maxBytes && this.events.length > 1)) {
      this.drop(this.events.shift()!);
      dropped++;
    }
    return dropped;
  }

  private drop(entry: BufferedEvent): void {
    this.totalBytes -= entry.encoded.length;
    const time = entry.time;
    this.dropped = this.dropped
      ? { ...this.dropped, lastSequence: entry.sequence, last: time ?? this.dropped.last, version: ++this.dropVersion }
      : { firstSequence: entry.sequence, lastSequence: entry.sequence, first: time, last: time, version: ++this.dropVersion };
  }

  /** Forgets everything up to and including `sequence`. Returns how many events that removed. */
  ack(sequence: number): number {
    let removed = 0;
    while ((this.events.peek()?.sequence ?? Infinity) <= sequence) {
      this.totalBytes -= this.events.shift()!.encoded.length;
      removed++;
    }
    if (this.dropped && this.dropped.lastSequence <= sequence) this.dropped = null;
    return removed;
  }

  /** Up to `maxEvents` / `maxBytes` (at least one) of the events after `sequence`, in order. */
  after(sequence: number, maxEvents: number, maxBytes: number): BufferedEvent[] {
    let lo = 0;
    let hi = this.events.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.events.at(mid)!.sequence <= sequence) lo = mid + 1;
      else hi = mid;
    }
    const out: BufferedEvent[] = [];
    let bytes = 0;
    for (let i = lo; i < this.events.length && out.length < maxEvents; i++) {
      const e = this.events.at(i)!;
      if (out.length > 0 && bytes + e.encoded.length > maxBytes) break;
      out.push(e);
      bytes += e.encoded.length;
    }
    return out;
  }
}
