// Who a subscriber is and what it may read, as the Kubernetes API server decides: TokenReview for
// the bearer token, SubjectAccessReview for verb `get` on the virtual resource
// `icmpevents.icmpwatch.io`, per namespace ("" = cluster-wide). Answers are cached for `cacheTtlMs`
// and shared by every stream of the same user; the API server unreachable is an error, never an
// answer (no failing open).
import { createHash } from 'node:crypto';
import { status, type Metadata } from '@grpc/grpc-js';
import { AuthenticationV1Api, AuthorizationV1Api, type KubeConfig } from '@kubernetes/client-node';

export const ACCESS_GROUP = 'icmpwatch.io';
export const ACCESS_RESOURCE = 'icmpevents';
export const ACCESS_VERB = 'get';

/** The collector's own API rights, and all it needs: the chart's collector ClusterRole is this list. */
export const ACCESS_REVIEW_RULES = [
  { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
  { apiGroups: ['authorization.k8s.io'], resources: ['subjectaccessreviews'], verbs: ['create'] },
] as const;

/** "get icmpevents.icmpwatch.io cluster-wide" or "... in namespace NS". */
export function permissionText(namespace: string): string {
  return `${ACCESS_VERB} ${ACCESS_RESOURCE}.${ACCESS_GROUP} ${namespace === '' ? 'cluster-wide' : `in namespace ${namespace}`}`;
}

/** A refusal with the gRPC status it becomes. */
export class AccessError extends Error {
  override name = 'AccessError';
  constructor(
    readonly code: status.UNAUTHENTICATED | status.PERMISSION_DENIED | status.UNAVAILABLE,
    message: string,
  ) {
    super(message);
  }
}

/** The user a TokenReview names; `key` identifies it in the decision cache. */
export interface Identity {
  username: string;
  uid: string;
  groups: string[];
  extra: Record<string, string[]>;
  key: string;
}

interface Cached<T> {
  value: Promise<T>;
  expiresAt: number;
}

/** Promises cached until they expire; a rejected one is forgotten at once (the next call retries). */
class TtlCache<T> {
  private readonly entries = new Map<string, Cached<T>>();
  private nextSweep = 0;

  constructor(private readonly ttlMs: number) {}

  get(key: string, load: () => Promise<T>): Promise<T> {
    const now = Date.now();
    const hit = this.entries.get(key);
    if (hit && hit.expiresAt > now) return hit.value;
    if (now >= this.nextSweep) this.sweep(now);
    const value = load();
    this.entries.set(key, { value, expiresAt: now + this.ttlMs });
    value.catch(() => {
      if (this.entries.get(key)?.value === value) this.entries.delete(key);
    });
    return value;
  }

  private sweep(now: number): void {
    this.nextSweep = now + this.ttlMs;
    for (const [key, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(key);
  }
}

export interface AccessReviewerOptions {
  kubeConfig: KubeConfig;
  /** How long an answer is reused. A stream rechecks at half this, so a change reaches it within it. */
  cacheTtlMs: number;
}

/** An API call that takes longer counts as the API server unreachable. */
const API_TIMEOUT_MS = 5000;

export class AccessReviewer {
  readonly cacheTtlMs: number;
  private readonly authn: AuthenticationV1Api;
  private readonly authz: AuthorizationV1Api;
  // Both live half the lifetime and streams recheck every half: a change reaches them within it.
  // A rejected token is remembered too: retrying it costs the API server nothing.
  private readonly tokens: TtlCache<Identity | AccessError>;
  private readonly decisions: TtlCache<boolean>;
  private readonly server: string;

  constructor(options: AccessReviewerOptions) {
    this.cacheTtlMs = options.cacheTtlMs;
    this.authn = options.kubeConfig.makeApiClient(AuthenticationV1Api);
    this.authz = options.kubeConfig.makeApiClient(AuthorizationV1Api);
    this.tokens = new TtlCache(options.cacheTtlMs / 2);
    this.decisions = new TtlCache(options.cacheTtlMs / 2);
    this.server = options.kubeConfig.getCurrentCluster()?.server ?? 'the Kubernetes API server';
  }

  /** The token's user; AccessError UNAUTHENTICATED when the API server rejects it. */
  async authenticate(token: string): Promise<Identity> {
    const key = createHash('sha256').update(token).digest('base64');
    const answer = await this.tokens.get(key, async () => {
      const review = await this.call('TokenReview', this.authn.createTokenReview({ body: { spec: { token } } }));
      const s = review.status;
      if (!s?.authenticated || !s.user?.username) {
        return new AccessError(status.UNAUTHENTICATED, `the Kubernetes API server rejected the bearer token${s?.error ? `: ${s.error}` : ''}`);
      }
      const { username, uid = '', groups = [], extra = {} } = s.user;
      return { username, uid, groups, extra, key: createHash('sha256').update(JSON.stringify([username, uid, groups, extra])).digest('base64') };
    });
    if (answer instanceof AccessError) throw answer;
    return answer;
  }

  /** Whether `who` may get icmpevents in `namespace` ("" = cluster-wide). */
  allowed(who: Identity, namespace: string): Promise<boolean> {
    return this.decisions.get(`${who.key}\0${namespace}`, async () => {
      const review = await this.call(
        'SubjectAccessReview',
        this.authz.createSubjectAccessReview({
          body: {
            spec: {
              user: who.username,
              uid: who.uid,
              groups: who.groups,
              extra: who.extra,
              resourceAttributes: { group: ACCESS_GROUP, resource: ACCESS_RESOURCE, verb: ACCESS_VERB, namespace },
            },
          },
        }),
      );
      return review.status?.allowed === true && review.status.denied !== true;
    });
  }

  private async call<T>(what: string, request: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer in ${API_TIMEOUT_MS} ms`)), API_TIMEOUT_MS);
    });
    try {
      return await Promise.race([request, timeout]);
    } catch (err) {
      throw new AccessError(status.UNAVAILABLE, `cannot check access: ${what} at ${this.server} failed: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** The token of `authorization: Bearer <token>` metadata; UNAUTHENTICATED without one. */
export function bearerToken(metadata: Metadata): string {
  const [value] = metadata.get('authorization');
  const token = typeof value === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(value)?.[1] : undefined;
  if (!token) throw new AccessError(status.UNAUTHENTICATED, "no bearer token: send metadata 'authorization: Bearer <token>' (icmpwatch observe --token-file)");
  return token;
}
