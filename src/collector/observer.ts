// The Observer service: Subscribe and SubscribeBatches (history, then live with no gap: the history
// query and joining the fan-out happen in the same synchronous step; the two differ only in how a
// stream is written, see subscriber.ts), GetStatus and ListNodes. Requests are validated at
// this edge; problems come back as INVALID_ARGUMENT naming the field. With access control on, every
// call's bearer token is reviewed first (access-review.ts) and each stream delivers only what its
// subscriber may read (stream-access.ts). Calls beyond the request rate, and streams granted access
// beyond the limits on subscribers (admission.ts), get RESOURCE_EXHAUSTED naming the limit.
import { status, type sendUnaryData, type ServerUnaryCall, type ServiceError } from '@grpc/grpc-js';
import type { Counter } from 'prom-client';
import { undecodableReason } from '../common/grpc/services.js';
import { fieldPath, parseSubscribeRequest, type SubscriptionSpec } from '../common/grpc/subscribe-request.js';
import type { Logger } from '../common/log.js';
import { icmpwatch } from '../common/proto.js';
import { AccessError, bearerToken, permissionText, type AccessReviewer } from './access-review.js';
import type { Admission } from './admission.js';
import { encodeResponse } from './encoded-response.js';
import { compileFilters } from './filter.js';
import { responseMatches, type Hub } from './hub.js';
import type { CollectorMetrics } from './metrics.js';
import type { HistoryEntry } from './history.js';
import type { NodeRegistry } from './nodes.js';
import type { RateWindow } from './rate.js';
import { statusError } from './status-error.js';
import type { Store } from './store.js';
import { AccessGate, asAccessError, StreamAccess } from './stream-access.js';
import { Subscriber, type SubscribeBatchesCall, type SubscribeCall, type SubscriberOutput } from './subscriber.js';
import { timestampFromMs } from './timestamps.js';

const MAX_TIMER_MS = 2 ** 31 - 1;

const { LostEventsSource } = icmpwatch.v1;

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
    private readonly options: { subscriberQueue: number; journalDamaged: () => number; admission: Admission; access: AccessReviewer | null },
    private readonly log: Logger,
  ) {}

  subscribe(call: SubscribeCall): void {
    this.open({ call, batched: false });
  }

  subscribeBatches(call: SubscribeBatchesCall): void {
    this.open({ call, batched: true });
  }

  private open(output: SubscriberOutput): void {
    const call = output.call;
    if (this.stopping) {
      call.emit('error', statusError(status.UNAVAILABLE, 'collector is shutting down'));
      return;
    }
    const fail = (err: ServiceError) => call.emit('error', err);
    if (this.refused(call.getPeer(), call.request, fail)) return;
    const parsed = parseSubscribeRequest(call.request);
    if (!parsed.ok) {
      const message = parsed.issues.map((i) => `${fieldPath(i.path)}: ${i.message}`).join('; ');
      this.metrics.requestsRefused.inc({ reason: 'invalid_argument' });
      fail(statusError(status.INVALID_ARGUMENT, message));
      return;
    }
    const spec = parsed.spec;
    const reviewer = this.options.access;
    if (!reviewer) return this.admit(output, spec, null);
    // The slot is taken once access is granted: clients without rights, or whose review is slow,
    // never hold the places of those with rights.
    this.authorize(call, reviewer, spec).then(
      (access) => {
        if (this.stopping) fail(statusError(status.UNAVAILABLE, 'collector is shutting down'));
        else if (!call.cancelled) this.admit(output, spec, access);
      },
      (err: unknown) => fail(this.refusal(err, call.getPeer())),
    );
  }

  /** Streams within the limits on subscribers (admission.ts), or refuses with RESOURCE_EXHAUSTED naming the limit. */
  private admit(output: SubscriberOutput, spec: SubscriptionSpec, access: StreamAccess | null): void {
    const call = output.call;
    const admitted = this.options.admission.subscriber(call.getPeer());
    if ('reason' in admitted) {
      this.metrics.requestsRefused.inc({ reason: admitted.reason });
      call.emit('error', statusError(status.RESOURCE_EXHAUSTED, admitted.message));
      return;
    }
    this.stream(output, spec, admitted.release, access);
  }

  /** A stream's access: its token's user, cluster scope, and the namespaces its filters ask for. */
  private async authorize(call: SubscriberOutput['call'], reviewer: AccessReviewer, spec: SubscriptionSpec): Promise<StreamAccess> {
    const access = await StreamAccess.open(reviewer, bearerToken(call.metadata));
    // Asking only for namespaces it may not read is refused at once rather than left silent.
    const onlyNamespaces = spec.allow.length > 0 && spec.allow.every((f) => f.namespace.length > 0);
    if (access.clusterScope || !onlyNamespaces) return access;
    const asked = [...new Set(spec.allow.flatMap((f) => f.namespace))];
    await access.decideNamespaces(asked);
    if (!asked.some((ns) => access.allows(ns))) {
      throw new AccessError(status.PERMISSION_DENIED, `${access.user} may not ${asked.map(permissionText).join(' or ')}, nor ${permissionText('')}`);
    }
    return access;
  }

  /** Unary calls report on the whole cluster: cluster scope only. */
  private async requireClusterScope(call: ServerUnaryCall<object, object>, method: string): Promise<void> {
    const reviewer = this.options.access;
    if (!reviewer) return;
    const access = await StreamAccess.open(reviewer, bearerToken(call.metadata));
    if (!access.clusterScope) throw new AccessError(status.PERMISSION_DENIED, `${access.user} may not ${permissionText('')}, which ${method} needs`);
  }

  /** The status an access failure ends a call with; counted and logged. */
  private refusal(err: unknown, peer: string): ServiceError {
    const e = asAccessError(err);
    const reason = e.code === status.UNAVAILABLE ? 'access_check_failed' : e.code === status.UNAUTHENTICATED ? 'unauthenticated' : 'permission_denied';
    this.metrics.requestsRefused.inc({ reason });
    if (e.code === status.UNAVAILABLE) this.log.warn({ peer, err: e.message }, 'access check failed');
    else this.log.debug({ peer, reason: e.message }, 'access refused');
    return statusError(e.code, e.message);
  }

  /** History (what access allows of it), then live records with no gap between them. */
  private stream(output: SubscriberOutput, spec: SubscriptionSpec, release: () => void, access: StreamAccess | null): void {
    const call = output.call;
    const filters = compileFilters(spec);
    const subscriber = new Subscriber(output, this.options.subscriberQueue, (n) => this.metrics.subscriberDrops.inc(n));
    this.active.add(subscriber);
    this.metrics.subscribers.inc();
    subscriber.onClose(() => {
      release();
      this.active.delete(subscriber);
      this.metrics.subscribers.dec();
    });

    // Live only when following with no history asked for; otherwise the matching history first.
    const wantsHistory = !spec.follow || spec.last > 0 || spec.since !== null;
    const history = wantsHistory
      ? this.store.history.query({ last: spec.last, since: spec.since, until: spec.until, matches: (r) => responseMatches(filters, r) })
      : [];
    const incomplete = this.historyGap(spec, call.request);
    // A stream's access ends it when its token stops authenticating or access cannot be checked.
    const gate = access
      ? new AccessGate(subscriber, access, this.options.subscriberQueue, (err) => call.emit('error', this.refusal(err, call.getPeer())))
      : null;
    const sink = gate ?? subscriber;
    if (spec.follow) this.hub.follow(sink, filters, spec.until);

    const begin = (replay: HistoryEntry[]) => {
      // Cancelled while its access was being decided: nothing to start.
      if (subscriber.isClosed) return;
      if (incomplete) replay.unshift(incomplete);
      subscriber.startReplay(replay);
      gate?.release();
      this.log.debug({ peer: call.getPeer(), user: access?.user, history: replay.length, follow: spec.follow }, 'subscriber');
      if (!spec.follow) {
        subscriber.end();
      } else if (spec.until !== null) {
        const until = spec.until;
        let timer: NodeJS.Timeout;
        // Re-armed in steps: setTimeout fires at once for delays beyond 2^31-1 ms (~24.8 days).
        const arm = () => {
          const left = until - Date.now();
          timer = left <= 0 ? setTimeout(() => sink.end(), 0) : setTimeout(arm, Math.min(left, MAX_TIMER_MS));
        };
        arm();
        subscriber.onClose(() => clearTimeout(timer));
      }
    };
    if (!access) return begin(history);
    // Live records wait in the gate while the history's namespaces are decided.
    access.decideNamespaces(access.undecided(history.map((e) => e.record))).then(
      () => begin(history.filter((e) => access.decide(e.record) === true)),
      (err: unknown) => call.emit('error', this.refusal(err, call.getPeer())),
    );
  }

  /**
   * Refuses a call beyond the request rate (RESOURCE_EXHAUSTED) or whose request bytes did not
   * decode (INVALID_ARGUMENT); true when it did.
   */
  private refused(peer: string, request: object, fail: (err: ServiceError) => void): boolean {
    const refusal = this.options.admission.call(peer);
    if (refusal) {
      this.metrics.requestsRefused.inc({ reason: refusal.reason });
      fail(statusError(status.RESOURCE_EXHAUSTED, refusal.message));
      return true;
    }
    const undecodable = undecodableReason(request);
    if (undecodable !== null) {
      this.metrics.requestsRefused.inc({ reason: 'undecodable' });
      fail(statusError(status.INVALID_ARGUMENT, `request: not a valid protobuf message of this method's type (${undecodable})`));
      return true;
    }
    return false;
  }

  /** A notice first when `since` reaches back to records the history's bounds already dropped. */
  private historyGap(spec: SubscriptionSpec, request: icmpwatch.v1.ISubscribeRequest): HistoryEntry | null {
    const dropped = this.store.history.droppedThrough;
    if (spec.since === null || dropped === null || spec.since > dropped.timeMs) return null;
    // The request's and the record's own timestamps: milliseconds would lose their nanoseconds.
    const { response } = dropped.record;
    const droppedTime = response.event?.time ?? response.lostEvents?.last ?? timestampFromMs(dropped.timeMs);
    const last = spec.until !== null && spec.until < dropped.timeMs ? request.until : droppedTime;
    return {
      index: 0,
      bytes: 0,
      timeMs: spec.since,
      record: encodeResponse({
        nodeName: '',
        time: timestampFromMs(Date.now()),
        lostEvents: { source: LostEventsSource.LOST_EVENTS_SOURCE_HISTORY_EXPIRED, count: 0, first: request.since, last },
      }),
    };
  }

  getStatus(call: ServerUnaryCall<icmpwatch.v1.IGetStatusRequest, icmpwatch.v1.IGetStatusResponse>, callback: sendUnaryData<icmpwatch.v1.IGetStatusResponse>): void {
    if (this.refused(call.getPeer(), call.request, (err) => callback(err))) return;
    this.requireClusterScope(call, 'GetStatus').then(
      () => this.statusNow(callback),
      (err: unknown) => callback(this.refusal(err, call.getPeer())),
    );
  }

  private statusNow(callback: sendUnaryData<icmpwatch.v1.IGetStatusResponse>): void {
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

  listNodes(call: ServerUnaryCall<icmpwatch.v1.IListNodesRequest, icmpwatch.v1.IListNodesResponse>, callback: sendUnaryData<icmpwatch.v1.IListNodesResponse>): void {
    if (this.refused(call.getPeer(), call.request, (err) => callback(err))) return;
    this.requireClusterScope(call, 'ListNodes').then(
      () => callback(null, { nodes: this.nodes.list() }),
      (err: unknown) => callback(this.refusal(err, call.getPeer())),
    );
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
