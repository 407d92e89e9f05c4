// Live fan-out: every stored record goes to each following subscriber whose filters match. Offering
// never blocks (each subscriber has its own bounded queue), so one slow reader slows no one else.
import type { EncodedResponse } from './encoded-response.js';
import type { CompiledFilters } from './filter.js';

/** Where the hub hands a follower's records: its Subscriber, or an access gate in front of it. */
export interface RecordSink {
  offer(record: EncodedResponse, timeMs: number): void;
  end(): void;
  onClose(listener: () => void): void;
}

interface Follower {
  subscriber: RecordSink;
  filters: CompiledFilters;
  until: number | null;
}

/** Whether the filters let the record through; a record is decoded only for filters that read it. */
export function responseMatches(filters: CompiledFilters, record: EncodedResponse): boolean {
  if (filters.everything) return true;
  return record.carriesEvent ? filters.event(record.response.event!) : filters.notice(record.nodeName);
}

export class Hub {
  private readonly followers = new Set<Follower>();

  get size(): number {
    return this.followers.size;
  }

  follow(subscriber: RecordSink, filters: CompiledFilters, until: number | null): void {
    const follower = { subscriber, filters, until };
    this.followers.add(follower);
    subscriber.onClose(() => this.followers.delete(follower));
  }

  /** Every follower's filters and access checks read the record decoded once. */
  publish(record: EncodedResponse, timeMs: number): void {
    record.keepingDecoded(() => {
      for (const f of this.followers) {
        if (f.until !== null && timeMs > f.until) continue;
        if (responseMatches(f.filters, record)) f.subscriber.offer(record, timeMs);
      }
    });
  }

  /** Ends every stream after what is queued for it has been sent. */
  endAll(): void {
    for (const f of this.followers) f.subscriber.end();
  }
}
