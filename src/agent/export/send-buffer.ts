// Events not yet acknowledged by the collector, in sequence order, bounded by count and bytes. When
// full the oldest are dropped; the dropped sequences are kept as one range to announce.
//
// Events are encoded once, framed as EventBatch.events fields, one after another into large chunks;
// their sequences, times and places are kept in typed arrays. A batch is a run of events in one
// chunk, so its bytes are one slice: nothing is allocated per event (an object and a buffer per
// event were as much of the exporter's CPU as encoding).
import { Deque } from '../../common/deque.js';
import type { google, icmpwatch } from '../../common/proto.js';
import { encodeFramedEvent } from './event-encoder.js';

/**
 * Dropped sequences not yet covered by an acknowledgement; `version` changes with each drop. Extended
 * in place, the last time kept as numbers: while the collector is behind, events are dropped one by
 * one at the capture rate, and an object per drop is garbage at that rate.
 */
export class DropRange {
  /** The time of the first dropped event (null if it had none). */
  readonly first: google.protobuf.ITimestamp | null;
  lastSequence: number;
  version: number;
  private lastSeconds: number;
  private lastNanos: number;

  /** A range of one event; `seconds` NaN: the event had no time. */
  constructor(
    readonly firstSequence: number,
    seconds: number,
    nanos: number,
    version: number,
  ) {
    this.lastSequence = firstSequence;
    this.version = version;
    this.first = Number.isNaN(seconds) ? null : { seconds, nanos };
    this.lastSeconds = seconds;
    this.lastNanos = nanos;
  }

  /** The time of the last dropped event that had one. */
  get last(): google.protobuf.ITimestamp | null {
    return Number.isNaN(this.lastSeconds) ? null : { seconds: this.lastSeconds, nanos: this.lastNanos };
  }

  extend(sequence: number, seconds: number, nanos: number, version: number): void {
    this.lastSequence = sequence;
    this.version = version;
    if (!Number.isNaN(seconds)) {
      this.lastSeconds = seconds;
      this.lastNanos = nanos;
    }
  }
}

/** Consecutive events in one chunk: their framed bytes, ready to be an EventBatch's events field. */
export interface EventRun {
  framed: Uint8Array;
  count: number;
  lastSequence: number;
}

interface Chunk {
  bytes: Buffer;
  /** Bytes written. */
  used: number;
  id: number;
}

const CHUNK_BYTES = 1 << 20;

export class SendBuffer {
  /** Oldest first; events are written at the end of the last. */
  private readonly chunks = new Deque<Chunk>();
  private nextChunkId = 0;
  /** A released chunk, kept to be the next one. */
  private spare: Buffer | null = null;
  private readonly chunkBytes: number;

  // Per event, in a ring of `capacity` slots from `head` (grown by doubling up to the event bound).
  private capacity = 1024;
  private head = 0;
  private count = 0;
  private sequences = new Float64Array(this.capacity);
  private chunkIds = new Float64Array(this.capacity);
  private starts = new Int32Array(this.capacity);
  private ends = new Int32Array(this.capacity);
  /** Timestamp seconds and nanos; NaN seconds: the event had no time. */
  private seconds = new Float64Array(this.capacity);
  private nanos = new Int32Array(this.capacity);

  private totalBytes = 0;
  private dropVersion = 0;
  /** Sequences dropped before the collector acknowledged them (or heard of their loss). */
  dropped: DropRange | null = null;

  constructor(
    private readonly maxEvents: number,
    private readonly maxBytes: number,
  ) {
    // A small bound needs no megabyte chunks; an event larger than a chunk gets one of its own.
    this.chunkBytes = Math.min(CHUNK_BYTES, Math.max(64 << 10, maxBytes));
  }

  get length(): number {
    return this.count;
  }

  /** Encoded bytes of the buffered events. */
  get bytes(): number {
    return this.totalBytes;
  }

  /** Encodes and adds an event; returns how many old ones were dropped to make room. */
  add(event: icmpwatch.v1.IEvent, sequence: number): number {
    let chunk = this.chunks.at(this.chunks.length - 1);
    let start = chunk?.used ?? 0;
    let end = chunk ? encodeFramedEvent(event, chunk.bytes, start) : -1;
    for (let size = this.chunkBytes; end < 0; size *= 2) {
      const bytes = this.spare !== null && this.spare.length >= size ? this.spare : Buffer.allocUnsafe(size);
      end = encodeFramedEvent(event, bytes, 0);
      if (end < 0) continue;
      if (bytes === this.spare) this.spare = null;
      chunk = { bytes, used: 0, id: this.nextChunkId++ };
      this.chunks.push(chunk);
      start = 0;
    }
    chunk!.used = end;
    if (this.count === this.capacity) this.grow();
    const slot = (this.head + this.count) % this.capacity;
    this.sequences[slot] = sequence;
    this.chunkIds[slot] = chunk!.id;
    this.starts[slot] = start;
    this.ends[slot] = end;
    const time = event.time;
    this.seconds[slot] = time ? Number(time.seconds ?? 0) : Number.NaN;
    this.nanos[slot] = time?.nanos ?? 0;
    this.count++;
    this.totalBytes += end - start;
    let dropped = 0;
    while (this.count > this.maxEvents || (this.totalBytes > this.maxBytes && this.count > 1)) {
      this.drop();
      dropped++;
    }
    return dropped;
  }

  /** Forgets everything up to and including `sequence`. Returns how many events that removed. */
  ack(sequence: number): number {
    let removed = 0;
    while (this.count > 0 && this.sequences[this.head]! <= sequence) {
      this.removeOldest();
      removed++;
    }
    if (this.dropped && this.dropped.lastSequence <= sequence) this.dropped = null;
    return removed;
  }

  /** Up to `maxEvents` / `maxBytes` (at least one) of the events after `sequence`, in order, from one chunk; null if none. */
  after(sequence: number, maxEvents: number, maxBytes: number): EventRun | null {
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.sequences[this.slot(mid)]! <= sequence) lo = mid + 1;
      else hi = mid;
    }
    if (lo === this.count) return null;
    const first = this.slot(lo);
    const chunkId = this.chunkIds[first]!;
    const start = this.starts[first]!;
    let last = first;
    let n = 1;
    for (let i = lo + 1; i < this.count && n < maxEvents; i++, n++) {
      const slot = this.slot(i);
      if (this.chunkIds[slot] !== chunkId || this.ends[slot]! - start > maxBytes) break;
      last = slot;
    }
    const chunk = this.chunks.at(chunkId - this.chunks.peek()!.id)!;
    return { framed: chunk.bytes.subarray(start, this.ends[last]), count: n, lastSequence: this.sequences[last]! };
  }

  private slot(i: number): number {
    return (this.head + i) % this.capacity;
  }

  private drop(): void {
    const slot = this.head;
    const sequence = this.sequences[slot]!;
    const seconds = this.seconds[slot]!;
    const nanos = this.nanos[slot]!;
    this.removeOldest();
    const version = ++this.dropVersion;
    if (this.dropped) this.dropped.extend(sequence, seconds, nanos, version);
    else this.dropped = new DropRange(sequence, seconds, nanos, version);
  }

  private removeOldest(): void {
    const slot = this.head;
    this.totalBytes -= this.ends[slot]! - this.starts[slot]!;
    this.head = (this.head + 1) % this.capacity;
    this.count--;
    // Chunks before the oldest event's are done with; the last one is still written to, from its
    // start again once it holds nothing.
    const oldestChunk = this.count > 0 ? this.chunkIds[this.head]! : Infinity;
    while (this.chunks.length > 1 && this.chunks.peek()!.id < oldestChunk) {
      const released = this.chunks.shift()!.bytes;
      if (released.length === this.chunkBytes) this.spare = released;
    }
    if (this.count === 0) this.chunks.peek()!.used = 0;
  }

  private grow(): void {
    const capacity = this.capacity * 2;
    const inOrder = <T extends Float64Array<ArrayBuffer> | Int32Array<ArrayBuffer>>(from: T, to: T): T => {
      for (let i = 0; i < this.count; i++) to[i] = from[this.slot(i)]!;
      return to;
    };
    this.sequences = inOrder(this.sequences, new Float64Array(capacity));
    this.chunkIds = inOrder(this.chunkIds, new Float64Array(capacity));
    this.starts = inOrder(this.starts, new Int32Array(capacity));
    this.ends = inOrder(this.ends, new Int32Array(capacity));
    this.seconds = inOrder(this.seconds, new Float64Array(capacity));
    this.nanos = inOrder(this.nanos, new Int32Array(capacity));
    this.head = 0;
    this.capacity = capacity;
  }
}
