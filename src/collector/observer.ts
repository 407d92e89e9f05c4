// The Observer service: Subscribe (history, then live with no gap: the history query and joining the
// fan-out happen in the same synchronous step), GetStatus and ListNodes. Requests are validated at
// this edge; problems come back as INVALID_ARGUMENT naming the field.
import { status, type sendUnaryData, type ServerUnaryCall, type ServerWritableStream } from '@grpc/grpc-js';
import type { Counter } from 'prom-client';
import { fieldPath, parseSubscribeRequest, type SubscriptionSpec } from '../common/grpc/subscribe-request.js';
import type { Logger } from '../common/log.js';
import { icmpwatch } from '../common/proto.js';
import { compileFilters } from './filter.js';
import { responseMatches, type Hub } from './hub.js';
import type { CollectorMetrics } from './metrics.js';
import type { HistoryEntry } from './history.js';
import type { NodeRegistry } from './nodes.js';
import type { RateWindow } from './rate.js';
import { statusError } from './status-error.js';
import type { Store } from './store.js';
import { Subscriber } from './subscriber.js';
import { timestampFromMs } from './timestamps.js';

const MAX_TIMER_MS = 2 ** 31 - 1;

const { LostEventsSource } = icmpwatch.v1;

type SubscribeCall = ServerWritableStream<icmpwatch.v1.ISubscribeRequest, icmpwatch.v1.ISubscribeResponse>;

async function total(counter: Counter<string>, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await counter.get();
  return values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((n, v) => n + v.value, 0);
}

export class ObserverService {
  private stopping = false;
  private readonly active = new Set<Subscriber>();
  private readonly started = Date.now();

  constructor(
    private readonly store: Store,
    private readonly hub: Hub,
    private readonly nodes: NodeRegistry,
    private readonly metrics: CollectorMetrics,
    private readonly rate: RateWindow,
    private readonly options: { subscriberQueue: number; journalDamaged: () => number },
    private readonly log: Logger,
  ) {}

  subscribe(call: SubscribeCall): void {
    if (this.stopping) {
      call.emit('error', statusError(status.UNAVAILABLE, 'collector is shutting down'));
      return;
    }
    const parsed = parseSubscribeRequest(call.request);
    if (!parsed.ok) {
      const message = parsed.issues.map((i) => `${fieldPath(i.path)}: ${i.message}`).join('; ');
      call.emit('error', statusError(status.INVALID_ARGUMENT, message));
      return;
    }
    const spec = parsed.spec;
    const filters = compileFilters(spec);
    const subscriber = new Subscriber(call, this.options.subscriberQueue, (n) => this.metrics.subscriberDrops.inc(n));
    this.active.add(subscriber);
    this.metrics.subscribers.inc();
    subscriber.onClose(() => {
      this.active.delete(subscriber);
      this.metrics.subscribers.dec();
    });

    // Live only when following with no history asked for; otherwise the matching history first.
    const wantsHistory = !spec.follow || spec.last > 0 || spec.since !== null;
    const history = wantsHistory
      ? this.store.history.query({ last: spec.last, since: spec.since, until: spec.until, matches: (r) => responseMatches(filters, r) })
      : [];
    const incomplete = this.historyGap(spec, call.request);
    if (incomplete) history.unshift(incomplete);
    if (spec.follow) this.hub.follow(subscriber, filters, spec.until);
    subscriber.startReplay(history);
    this.log.debug({ peer: call.getPeer(), history: history.length, follow: spec.follow }, 'subscriber');

    if (!spec.follow) {
      subscriber.end();
    } else if (spec.until !== null) {
      const until = spec.until;
      let timer: NodeJS.Timeout;
      // Re-armed in steps: setTimeout fires at once for delays beyond 2^31-1 ms (~24.8 days).
      const arm = () => {
        const left = until - Date.now();
        timer = left <= 0 ? setTimeout(() => subscriber.end(), 0) : setTimeout(arm, Math.min(left, MAX_TIMER_MS));
      };
      arm();
      subscriber.onClose(() => clearTimeout(timer));
    }
  }

  /** A notice first when `since` reaches back to records the history's bounds already dropped. */
  private historyGap(spec: SubscriptionSpec, request: icmpwatch.v1.ISubscribeRequest): HistoryEntry | null {
    const dropped = this.store.history.droppedThrough;
    if (spec.since === null || dropped === null || spec.since > dropped.timeMs) return null;
    // The request's and the record's own timestamps: milliseconds would lose their nanoseconds.
    const droppedTime = dropped.response.event?.time ?? dropped.response.lostEvents?.last ?? timestampFromMs(dropped.timeMs);
    const last = spec.until !== null && spec.until < dropped.timeMs ? request.until : droppedTime;
    return {
      index: 0,
      timeMs: spec.since,
      response: {
        nodeName: '',
        time: timestampFromMs(Date.now()),
        lostEvents: { source: LostEventsSource.LOST_EVENTS_SOURCE_HISTORY_EXPIRED, count: 0, first: request.since, last },
      },
    };
  }

  getStatus(_call: ServerUnaryCall<icmpwatch.v1.IGetStatusRequest, icmpwatch.v1.IGetStatusResponse>, callback: sendUnaryData<icmpwatch.v1.IGetStatusResponse>): void {
    const m = this.metrics;
    const source = (s: icmpwatch.v1.LostEventsSource) => ({ source: LostEventsSource[s] });
    Promise.all([
      total(m.eventsStored),
      total(m.duplicates),
      total(m.subscriberDrops),
      total(m.lostEvents, source(LostEventsSource.LOST_EVENTS_SOURCE_AGENT_EXPORT_BUFFER)),
      total(m.lostEvents, source(LostEventsSource.LOST_EVENTS_SOURCE_RING_BUFFER)),
    ]).then(([eventsSeen, duplicates, subscriberDrops, exportDrops, ringBufferLost]) => {
      const oldest = this.store.history.oldest;
      callback(null, {
        eventsSeen,
        eventsPerSecond: this.rate.perSecond(),
        duplicates,
        historyEvents: this.store.history.size,
        oldestEvent: oldest ? timestampFromMs(oldest.timeMs) : null,
        subscribers: this.active.size,
        subscriberDrops,
        exportDrops,
        ringBufferLost,
        journalDamagedRecords: this.options.journalDamaged(),
        nodes: this.nodes.list(),
        started: timestampFromMs(this.started),
      });
    }, (err: Error) => callback(statusError(status.INTERNAL, err.message)));
  }

  listNodes(_call: ServerUnaryCall<icmpwatch.v1.IListNodesRequest, icmpwatch.v1.IListNodesResponse>, callback: sendUnaryData<icmpwatch.v1.IListNodesResponse>): void {
    callback(null, { nodes: this.nodes.list() });
  }

  /**
   * New subscriptions are refused; followers get what is queued for them, then their stream ends.
   * Resolves when every subscriber's stream has ended.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    this.hub.endAll();
    await Promise.all([...this.active].map((s) => new Promise<void>((resolve) => (s.isClosed ? resolve() : s.onClose(resolve)))));
  }
}
