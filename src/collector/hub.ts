// Live fan-out: every stored record goes to each following subscriber whose filters match. Offering
// never blocks (each subscriber has its own bounded queue), so one slow reader slows no one else.
import type { icmpwatch } from '../common/proto.js';
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

export function responseMatches(filters: CompiledFilters, response: icmpwatch.v1.ISubscribeResponse): boolean {
  return response.event ? filters.event(response.event) : filters.notice(response.nodeName ?? '');
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

  publish(record: EncodedResponse, timeMs: number): void {
    for (const f of this.followers) {
      if (f.until !== null && timeMs > f.until) continue;
      if (responseMatches(f.filters, record.response)) f.subscriber.offer(record, timeMs);
    }
  }

  /** Ends every stream after what is queued for it has been sent. */
  endAll(): void {
    for (const f of this.followers) f.subscriber.end();
  }
}
