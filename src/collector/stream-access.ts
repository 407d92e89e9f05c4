// What one Subscribe stream may read, decided per namespace and kept in memory so that each record
// costs a lookup or two, no API call. The rule:
//  - cluster scope (get icmpevents.icmpwatch.io cluster-wide) reads everything;
//  - otherwise an event is delivered when the subscriber may read the namespace of at least one of
//    its ends; an end without a namespace (a node, an external or unknown address) grants nothing,
//    so an event with no namespaced end needs cluster scope;
//  - agent loss notices and node status records describe whole nodes: cluster scope only. Notices
//    about the stream itself (its own queue overflowing, history it asked for already expired)
//    are always delivered.
// The same rule filters the history replay. Decisions are rechecked every half cache lifetime while
// the stream is open: a revoked binding stops delivery, a new one starts it.
import { status } from '@grpc/grpc-js';
import { Deque } from '../common/deque.js';
import type { icmpwatch } from '../common/proto.js';
import { AccessError, type AccessReviewer, type Identity } from './access-review.js';
import type { EncodedResponse } from './encoded-response.js';
import type { RecordSink } from './hub.js';
import type { Subscriber } from './subscriber.js';

function namespacesOf(record: EncodedResponse): string[] {
  if (!record.carriesEvent) return [];
  const ev = record.response.event!;
  const out: string[] = [];
  if (ev.source?.namespace) out.push(ev.source.namespace);
  if (ev.destination?.namespace && ev.destination.namespace !== ev.source?.namespace) out.push(ev.destination.namespace);
  return out;
}

export class StreamAccess {
  private cluster = false;
  /** Namespace -> may read; a namespace not in it is undecided. */
  private namespaces = new Map<string, boolean>();

  private constructor(
    private readonly reviewer: AccessReviewer,
    private readonly token: string,
    private identity: Identity,
  ) {}

  /** Authenticates the token and decides cluster scope. */
  static async open(reviewer: AccessReviewer, token: string): Promise<StreamAccess> {
    const access = new StreamAccess(reviewer, token, await reviewer.authenticate(token));
    access.cluster = await reviewer.allowed(access.identity, '');
    return access;
  }

  get user(): string {
    return this.identity.username;
  }

  /** Half the cache lifetime: an answer cached just before a recheck is at most that old. */
  get recheckMs(): number {
    return this.reviewer.cacheTtlMs / 2;
  }

  get clusterScope(): boolean {
    return this.cluster;
  }

  /** true or false when decided; null while a namespace it depends on is undecided. */
  decide(record: EncodedResponse): boolean | null {
    if (this.cluster) return true;
    if (!record.carriesEvent) return false;
    const ev = record.response.event!;
    // Two lookups at most: this runs for every record of every stream (while a record is published,
    // its event is decoded once for all of them).
    const source = ev.source?.namespace ? this.namespaces.get(ev.source.namespace) : false;
    if (source) return true;
    const destination = ev.destination?.namespace ? this.namespaces.get(ev.destination.namespace) : false;
    if (destination) return true;
    return source === undefined || destination === undefined ? null : false;
  }

  /** The namespaces these records need decided that are not. */
  undecided(records: Iterable<EncodedResponse>): string[] {
    const out = new Set<string>();
    if (this.cluster) return [];
    for (const r of records) for (const ns of namespacesOf(r)) if (!this.namespaces.has(ns)) out.add(ns);
    return [...out];
  }

  async decideNamespaces(namespaces: string[]): Promise<void> {
    const answers = await Promise.all(namespaces.map((ns) => this.reviewer.allowed(this.identity, ns)));
    namespaces.forEach((ns, i) => this.namespaces.set(ns, answers[i]!));
  }

  allows(namespace: string): boolean {
    return this.cluster || this.namespaces.get(namespace) === true;
  }

  /** Authenticates the token again and redecides everything decided so far. */
  async revalidate(): Promise<void> {
    const identity = await this.reviewer.authenticate(this.token);
    const known = [...this.namespaces.keys()];
    const [cluster, ...answers] = await Promise.all([this.reviewer.allowed(identity, ''), ...known.map((ns) => this.reviewer.allowed(identity, ns))]);
    this.identity = identity;
    this.cluster = cluster!;
    // Set, not replaced: namespaces decided while this recheck awaited keep their answers.
    known.forEach((ns, i) => this.namespaces.set(ns, answers[i]!));
  }
}

/**
 * Sits between the hub and a Subscriber: passes the records the stream may read, in order. A record
 * whose namespace is undecided waits (with every record after it) for the API server's answer.
 */
export class AccessGate implements RecordSink {
  private readonly pending = new Deque<{ record: EncodedResponse; timeMs: number }>();
  /** Held while the history replay is being decided, and while an answer is awaited. */
  private waiting = true;
  private ending = false;
  private readonly recheck: NodeJS.Timeout;

  constructor(
    private readonly subscriber: Subscriber,
    private readonly access: StreamAccess,
    private readonly pendingLimit: number,
    /** Ends the stream with this error (token no longer valid, API server unreachable). */
    private readonly fail: (err: AccessError) => void,
  ) {
    this.recheck = setInterval(() => {
      this.access.revalidate().catch((err: unknown) => this.fail(asAccessError(err)));
    }, access.recheckMs);
    subscriber.onClose(() => clearInterval(this.recheck));
  }

  onClose(listener: () => void): void {
    this.subscriber.onClose(listener);
  }

  offer(record: EncodedResponse, timeMs: number): void {
    if (this.pending.length === 0 && !this.waiting) {
      const allowed = this.access.decide(record);
      if (allowed !== null) {
        if (allowed) this.subscriber.offer(record, timeMs);
        return;
      }
    }
    if (this.pending.length >= this.pendingLimit) {
      this.subscriber.lose(timeMs);
      return;
    }
    this.pending.push({ record, timeMs });
    if (!this.waiting) this.drain();
  }

  end(): void {
    this.ending = true;
    if (!this.waiting) this.drain();
  }

  /** Lets live records through after the history replay (already decided) has been handed over. */
  release(): void {
    this.waiting = false;
    this.drain();
  }

  private drain(): void {
    for (let head = this.pending.peek(); head; head = this.pending.peek()) {
      const allowed = this.access.decide(head.record);
      if (allowed === null) {
        this.waiting = true;
        const pendingRecords = Array.from({ length: this.pending.length }, (_, i) => this.pending.at(i)!.record);
        this.access.decideNamespaces(this.access.undecided(pendingRecords)).then(
          () => this.release(),
          (err: unknown) => this.fail(asAccessError(err)),
        );
        return;
      }
      this.pending.shift();
      if (allowed) this.subscriber.offer(head.record, head.timeMs);
    }
    if (this.ending) this.subscriber.end();
  }
}

export function asAccessError(err: unknown): AccessError {
  return err instanceof AccessError ? err : new AccessError(status.UNAVAILABLE, `cannot check access: ${(err as Error).message}`);
}
