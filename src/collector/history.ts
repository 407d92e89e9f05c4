// The bounded in-memory history (count, encoded bytes and age) that `last`, `since` and `until`
// read. Entries are kept in the order they were stored; each gets an index so a subscriber can
// tell where the history it was sent ends and live delivery begins.
import { Deque } from '../common/deque.js';
import type { EncodedResponse } from './encoded-response.js';

export interface HistoryEntry {
  record: EncodedResponse;
  index: number;
  /** Time the record is about (event time, end of a loss), see timestampMs. */
  timeMs: number;
  /** The journal record's encoded size: what the byte bound counts (the heap holds a small multiple of it). */
  bytes: number;
}

export interface HistoryQuery {
  last: number;
  since: number | null;
  until: number | null;
  matches(record: EncodedResponse): boolean;
}

export class History {
  private readonly entries = new Deque<HistoryEntry>();
  private nextIndex = 1;
  private newestDropped: HistoryEntry | null = null;
  private totalBytes = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly maxAgeMs: number,
    private readonly maxBytes: number,
  ) {}

  get size(): number {
    return this.entries.length;
  }

  get bytes(): number {
    return this.totalBytes;
  }

  get oldest(): HistoryEntry | undefined {
    return this.entries.peek();
  }

  /** The newest record the bounds dropped: a range reaching back to its time is incomplete. */
  get droppedThrough(): HistoryEntry | null {
    return this.newestDropped;
  }

  append(record: EncodedResponse, timeMs: number, bytes: number, now = Date.now()): HistoryEntry {
    const entry = { record, index: this.nextIndex++, timeMs, bytes };
    this.entries.push(entry);
    this.totalBytes += bytes;
    // The newest record stays even when it alone is over the byte bound: live delivery has it anyway.
    while (this.entries.length > this.maxEntries || (this.totalBytes > this.maxBytes && this.entries.length > 1)) this.drop();
    this.expire(now);
    return entry;
  }

  /** Drops entries older than the age bound. */
  expire(now = Date.now()): void {
    while ((this.entries.peek()?.timeMs ?? Infinity) < now - this.maxAgeMs) this.drop();
  }

  private drop(): void {
    const entry = this.entries.shift()!;
    this.totalBytes -= entry.bytes;
    if (!this.newestDropped || entry.timeMs > this.newestDropped.timeMs) this.newestDropped = entry;
  }

  /**
   * Matching entries in the time range, oldest first: with `last`, back to the last-th event (notices
   * in between come along but do not count).
   */
  query(q: HistoryQuery): HistoryEntry[] {
    const out: HistoryEntry[] = [];
    let events = 0;
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries.at(i)!;
      if (q.since !== null && e.timeMs < q.since) continue;
      if (q.until !== null && e.timeMs > q.until) continue;
      if (!q.matches(e.record)) continue;
      out.push(e);
      if (e.record.carriesEvent) events++;
      if (q.last > 0 && events >= q.last) break;
    }
    return out.reverse();
  }
}
