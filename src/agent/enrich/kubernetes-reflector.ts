import { setTimeout as sleep } from 'node:timers/promises';
import { Watch, type KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../../common/log.js';
import type { ObjectLike } from './kubernetes-objects.js';

/** One page of a LIST, as the generated client returns it. */
export interface ListPage<K> {
  items: K[];
  metadata?: { resourceVersion?: string; _continue?: string };
}

export interface ReflectorOptions<K extends ObjectLike, R> {
  /** Plural resource name, for logs and metrics. */
  resource: string;
  /** Collection path to watch, e.g. /api/v1/pods. */
  path: string;
  list(page: { limit: number; _continue?: string }): Promise<ListPage<K>>;
  /** Reduces an object to the record kept; whole objects are never stored. */
  slim(obj: K): R;
  /** A complete relist: exactly these records exist now. */
  replace(records: R[]): void;
  upsert(record: R): void;
  remove(record: R): void;
  timing: ReflectorTiming;
  log: Logger;
}

export interface ReflectorTiming {
  /**
   * Server-side watch timeout. client-node 2.0.1 aborts a watch after 30 s without a byte, and
   * the API server sends no bookmarks to short quiet watches, so a healthy watch must end (and be
   * resumed from its resourceVersion) before that: keep this under 30.
   */
  watchTimeoutSeconds: number;
  /**
   * Watchdog: no list page, event, bookmark or watch (re)connect for this long means the
   * connection is dead without having said so (half-open); the reflector restarts with a relist.
   */
  silenceMs: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
}

interface WatchObject extends ObjectLike {
  code?: number;
  message?: string;
}

const PAGE = 500;

/** What the resolver reads of a reflector, whatever it reflects. */
export interface ReflectorStatus {
  readonly resource: string;
  readonly everSynced: boolean;
  readonly healthy: boolean;
  readonly restarts: number;
  readonly lastContact: number;
  readonly lastError: string | null;
  close(): void;
}

/**
 * LIST then WATCH one resource into slim records, forever. Unlike client-node's informer it
 * never stops: any failure (HTTP error, network, a silent watch caught by the watchdog) marks it
 * unhealthy and restarts it after an exponential backoff with jitter, with a full relist so that
 * the records converge on what exists now (deletes missed during an outage included).
 */
export class Reflector<K extends ObjectLike, R> implements ReflectorStatus {
  /** A first complete list has been applied. */
  everSynced = false;
  /** Listed, and the watch since then has not failed. */
  healthy = false;
  restarts = 0;
  /** Last sign of life from the API server (ms since epoch; 0 = never). */
  lastContact = 0;
  lastError: string | null = null;

  private readonly watch: Watch;
  private readonly closing = new AbortController();
  private readonly watchdog: NodeJS.Timeout;
  private interrupt: ((err: Error) => void) | null = null;
  private watchAbort: AbortController | null = null;
  /** Start of the watchdog's silence window: the last contact or the start of this attempt. */
  private alive = 0;
  /** Bumped whenever an attempt is abandoned, so that its late results are dropped. */
  private epoch = 0;

  constructor(
    kubeConfig: KubeConfig,
    private readonly opts: ReflectorOptions<K, R>,
  ) {
    this.watch = new Watch(kubeConfig);
    this.watchdog = setInterval(() => this.checkSilence(), Math.min(1000, opts.timing.silenceMs / 4));
    this.watchdog.unref();
    void this.run();
  }

  get resource(): string {
    return this.opts.resource;
  }

  close(): void {
    clearInterval(this.watchdog);
    this.closing.abort();
    this.abandon(new Error('closed'));
  }

  private get closed(): boolean {
    return this.closing.signal.aborted;
  }

  private async run(): Promise<void> {
    let resourceVersion: string | null = null;
    let failures = 0;
    while (!this.closed) {
      try {
        const epoch = this.epoch;
        if (resourceVersion === null) resourceVersion = await this.guarded(this.relist(epoch));
        resourceVersion = await this.guarded(this.watchOnce(resourceVersion, epoch));
        failures = 0;
      } catch (err) {
        if (this.closed) return;
        resourceVersion = null;
        failures++;
        this.restarts++;
        this.healthy = false;
        this.lastError = describe(err);
        const delay = backoff(failures, this.opts.timing);
        this.opts.log.warn({ resource: this.opts.resource, err: this.lastError, retryInMs: delay }, 'kubernetes watch failed; relisting after backoff');
        await sleep(delay, undefined, { signal: this.closing.signal }).catch(() => undefined);
      }
    }
  }

  private contact(): void {
    this.lastContact = this.alive = Date.now();
  }

  /** Lets the watchdog abandon a call that hangs (a LIST has no timeout of its own). */
  private guarded<T>(work: Promise<T>): Promise<T> {
    this.alive = Date.now();
    return new Promise<T>((resolve, reject) => {
      this.interrupt = reject;
      work.then(resolve, reject).finally(() => {
        // The next call may already have installed its own interrupt.
        if (this.interrupt === reject) this.interrupt = null;
      });
    });
  }

  private checkSilence(): void {
    const silent = Date.now() - this.alive;
    if (this.interrupt && silent > this.opts.timing.silenceMs) {
      this.abandon(new Error(`no list page, event, bookmark or reconnect for ${Math.round(silent / 1000)} s`));
    }
  }

  private abandon(reason: Error): void {
    this.epoch++;
    this.watchAbort?.abort();
    this.watchAbort = null;
    this.interrupt?.(reason);
  }

  private async relist(epoch: number): Promise<string> {
    const records: R[] = [];
    let resourceVersion = '';
    let next: string | undefined;
    do {
      const page = await this.opts.list({ limit: PAGE, _continue: next });
      if (epoch !== this.epoch) throw new Error('abandoned');
      this.contact();
      for (const item of page.items) records.push(this.opts.slim(item));
      resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
      next = page.metadata?._continue || undefined;
    } while (next);
    this.opts.replace(records);
    if (!this.healthy) this.opts.log.info({ resource: this.opts.resource, objects: records.length }, 'kubernetes resource synced');
    this.everSynced = true;
    this.healthy = true;
    this.lastError = null;
    return resourceVersion;
  }

  /** One watch request. Resolves with the resourceVersion to resume from, or null to relist. */
  private watchOnce(resourceVersion: string, epoch: number): Promise<string | null> {
    return new Promise((resolve, reject) => {
      let next: string | null = resourceVersion;
      let failure: Error | null = null;
      let finished = false;
      const onEvent = (phase: string, obj: WatchObject) => {
        if (epoch !== this.epoch) return;
        this.contact();
        switch (phase) {
          case 'ADDED':
          case 'MODIFIED':
            this.opts.upsert(this.opts.slim(obj as K));
            break;
          case 'DELETED':
            this.opts.remove(this.opts.slim(obj as K));
            break;
          case 'ERROR':
            // 410: our resourceVersion was compacted away; anything else is a server-side failure.
            if (obj.code === 410) next = null;
            else failure = new Error(`watch error event ${obj.code ?? '?'}: ${obj.message ?? ''}`);
            return;
        }
        if (next !== null) next = obj.metadata?.resourceVersion ?? next;
      };
      const onDone = (err: unknown) => {
        finished = true;
        if (epoch === this.epoch) this.watchAbort = null;
        if (failure) reject(failure);
        else if (err && statusOf(err) === 410) resolve(null);
        else if (err) reject(err);
        else resolve(next);
      };
      const query = { resourceVersion, allowWatchBookmarks: true, timeoutSeconds: this.opts.timing.watchTimeoutSeconds };
      this.watch.watch(this.opts.path, query, onEvent, onDone).then((abort) => {
        if (finished || epoch !== this.epoch) {
          abort.abort();
          return;
        }
        // Connected: the response headers arrived, so the server is there.
        this.watchAbort = abort;
        this.contact();
      }, reject);
    });
  }
}

function backoff(failures: number, t: ReflectorTiming): number {
  const ceiling = Math.min(t.backoffMaxMs, t.backoffInitialMs * 2 ** Math.min(failures - 1, 30));
  // Jitter spreads the reconnects of every agent in the cluster after an API-server restart.
  return Math.round(ceiling * (0.5 + Math.random() / 2));
}

function statusOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { statusCode?: unknown; code?: unknown };
  if (typeof e.statusCode === 'number') return e.statusCode;
  return typeof e.code === 'number' ? e.code : undefined;
}

function describe(err: unknown): string {
  const status = statusOf(err);
  const prefix = status ? `HTTP ${status}: ` : '';
  // The generated client's ApiException carries the API's Status (with its reason) in `body`.
  const message = statusMessage((err as { body?: unknown } | null)?.body);
  if (message) return `${prefix}${message}`;
  const text = err instanceof Error ? err.message : String(err);
  const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
  return `${prefix}${text.split('\n')[0].slice(0, 300)}${cause}`;
}

function statusMessage(body: unknown): string | null {
  let parsed = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body);
    } catch {
      return null;
    }
  }
  const message = (parsed as { message?: unknown } | null)?.message;
  return typeof message === 'string' ? message.slice(0, 300) : null;
}
