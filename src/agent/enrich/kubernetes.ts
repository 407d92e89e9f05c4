import { AppsV1Api, BatchV1Api, CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../common/log.js';
import { icmpwatch } from '../../common/proto.js';
import { Interned } from './interned.js';
import { IpIndex, type Claimant, type Source } from './ip-index.js';
import {
  nodeRecord,
  ownerLink,
  podHoldsAddresses,
  podRecord,
  serviceRecord,
  type NodeRecord,
  type ObjectLike,
  type OwnerLink,
  type OwnerRef,
  type PodRecord,
  type ServiceRecord,
} from './kubernetes-objects.js';
import { Reflector, type ListPage, type ReflectorStatus, type ReflectorTiming } from './kubernetes-reflector.js';
import { EndpointMemo, type EndpointResolver } from './resolver.js';

const Kind = icmpwatch.v1.EndpointKind;
const Enrichment = icmpwatch.v1.Enrichment;

export { inCluster, loadKubeConfig } from '../../common/kubeconfig.js';

export interface KubernetesResolverOptions {
  kubeConfig: KubeConfig;
  log: Logger;
  /** Where the resolver's metrics go (none when absent). */
  registry?: Registry;
  /** How long a deleted object's addresses still resolve to it (late packets). */
  graceMs?: number;
  timing?: Partial<ReflectorTiming>;
}

const DEFAULT_TIMING: ReflectorTiming = {
  watchTimeoutSeconds: 25,
  silenceMs: 45_000,
  backoffInitialMs: 500,
  backoffMaxMs: 30_000,
};

/** What a claim on an address names; the workload of a pod is derived at lookup time. */
interface Named {
  endpoint: icmpwatch.v1.IEndpoint;
  owner: OwnerRef | null;
}

/** What an answer for an address nobody claims was made from. */
const PENDING = 'not synced yet';
const NOT_FOUND = 'not claimed';

/** Distinct namespace and node names, label sets and pod owners kept once each (well above a cluster's). */
const INTERNED_LIMIT = 65_536;

/** Owner kinds whose own controller is the workload a user knows (ReplicaSet -> Deployment, Job -> CronJob). */
type Intermediate = 'ReplicaSet' | 'Job';

/**
 * Names addresses from the Kubernetes API: pods (every podIPs entry, all nodes), nodes (their
 * InternalIP/ExternalIP, and hostNetwork pods' IPs), Services (ClusterIPs), and pods' workloads
 * through their owners. Slim records are kept from list+watch reflectors; resolve() reads memory
 * only. While any reflector is broken, answers carry ENRICHMENT_STALE (last known metadata).
 */
export class KubernetesResolver implements EndpointResolver {
  private readonly index: IpIndex<Named>;
  private readonly owners: Record<Intermediate, Map<string, OwnerRef>> = { ReplicaSet: new Map(), Job: new Map() };
  private readonly reflectors: ReflectorStatus[] = [];
  private readonly sweeper: NodeJS.Timeout;
  /** Answers for addresses an object claims, by its claim; see claimedAnswer(). */
  private readonly claimAnswers = new WeakMap<Claimant<Named>, { stale: boolean; ownerLinks: number; endpoint: icmpwatch.v1.IEndpoint }[]>();
  /** Changes whenever a ReplicaSet's or Job's controller does: pods' workloads may read otherwise. */
  private ownerLinksVersion = 0;
  /** Answers for addresses nobody claims; cleared when the reflectors' health changes. */
  private readonly unclaimed = new EndpointMemo();
  private answeredStale = false;
  private readonly names = new Interned<string>(INTERNED_LIMIT);
  private readonly labelSets = new Interned<Record<string, string>>(INTERNED_LIMIT);
  private readonly podOwners = new Interned<OwnerRef>(INTERNED_LIMIT);
  private readonly startedAt = Date.now();
  private hits = 0;
  private misses = 0;

  constructor(opts: KubernetesResolverOptions) {
    const graceMs = opts.graceMs ?? 30_000;
    this.index = new IpIndex(graceMs);
    this.sweeper = setInterval(() => this.index.sweep(Date.now()), Math.max(100, Math.min(graceMs, 1000)));
    this.sweeper.unref();
    const timing = { ...DEFAULT_TIMING, ...opts.timing };
    const kc = opts.kubeConfig;
    const core = kc.makeApiClient(CoreV1Api);
    const apps = kc.makeApiClient(AppsV1Api);
    const batch = kc.makeApiClient(BatchV1Api);
    const common: Common = { timing, log: opts.log };
    this.reflectors.push(
      new Reflector<ObjectLike, PodRecord>(kc, {
        ...common,
        resource: 'pods',
        path: '/api/v1/pods',
        list: (page) => core.listPodForAllNamespaces(page),
        slim: podRecord,
        upsert: (p) => this.upsertPod(p),
        remove: (p) => this.index.remove(p.uid, Date.now()),
        replace: (pods) => {
          const present = new Set<string>();
          for (const p of pods) if (this.upsertPod(p)) present.add(p.uid);
          this.index.retainOnly('pod', present, Date.now());
          this.index.retainOnly('hostNetwork', present, Date.now());
        },
      }),
    );
    this.reflectors.push(
      this.claims(kc, 'node', {
        resource: 'nodes',
        path: '/api/v1/nodes',
        list: (page) => core.listNode(page),
        slim: nodeRecord,
        claimant: (n) => ({
          uid: n.uid,
          source: 'node',
          created: n.created,
          ips: n.ips,
          value: { endpoint: { kind: Kind.ENDPOINT_KIND_NODE, node: n.name, labels: n.labels }, owner: null },
        }),
      }, common),
    );
    this.reflectors.push(
      this.claims(kc, 'service', {
        resource: 'services',
        path: '/api/v1/services',
        list: (page) => core.listServiceForAllNamespaces(page),
        slim: serviceRecord,
        claimant: (s) => ({
          uid: s.uid,
          source: 'service',
          created: s.created,
          ips: s.ips,
          value: { endpoint: { kind: Kind.ENDPOINT_KIND_SERVICE, namespace: s.namespace, service: s.name, labels: s.labels }, owner: null },
        }),
      }, common),
    );
    this.reflectors.push(
      this.ownerLinks(kc, 'ReplicaSet', 'replicasets', '/apis/apps/v1/replicasets', (page) => apps.listReplicaSetForAllNamespaces(page), common),
      this.ownerLinks(kc, 'Job', 'jobs', '/apis/batch/v1/jobs', (page) => batch.listJobForAllNamespaces(page), common),
    );
    if (opts.registry) this.registerMetrics(opts.registry);
  }

  resolve(ip: string): icmpwatch.v1.IEndpoint {
    const claim = this.index.lookup(ip);
    const stale = this.reflectors.some((r) => !r.healthy);
    if (stale !== this.answeredStale) {
      this.unclaimed.clear();
      this.answeredStale = stale;
    }
    if (claim) {
      this.hits++;
      return this.claimedAnswer(ip, claim, stale);
    }
    this.misses++;
    const pending = this.reflectors.some((r) => !r.everSynced);
    const basis = pending ? PENDING : NOT_FOUND;
    return (
      this.unclaimed.get(ip, basis) ??
      this.unclaimed.remember(
        ip,
        basis,
        pending
          ? { ip, enrichment: Enrichment.ENRICHMENT_PENDING }
          : { ip, kind: Kind.ENDPOINT_KIND_EXTERNAL, enrichment: stale ? Enrichment.ENRICHMENT_STALE : Enrichment.ENRICHMENT_UNKNOWN },
      )
    );
  }

  /**
   * The answer for an address an object claims, kept with the claim (one per address looked up,
   * gone with the claim) while the workload links and the reflectors' health it was made with hold.
   */
  private claimedAnswer(ip: string, claim: Claimant<Named>, stale: boolean): icmpwatch.v1.IEndpoint {
    let answers = this.claimAnswers.get(claim);
    const known = answers?.find((a) => a.endpoint.ip === ip);
    if (known && known.stale === stale && known.ownerLinks === this.ownerLinksVersion) return known.endpoint;
    const { endpoint, owner } = claim.value;
    const workload = endpoint.kind === Kind.ENDPOINT_KIND_POD ? this.workloadOf(endpoint.pod ?? '', owner) : null;
    const answer = { stale, ownerLinks: this.ownerLinksVersion, endpoint: { ...endpoint, ip, workload, enrichment: stale ? Enrichment.ENRICHMENT_STALE : Enrichment.ENRICHMENT_RESOLVED } };
    if (!answers) this.claimAnswers.set(claim, (answers = []));
    if (known) answers[answers.indexOf(known)] = answer;
    else answers.push(answer);
    return answer.endpoint;
  }

  notReadyReason(): string | null {
    const waiting = this.reflectors.filter((r) => !r.everSynced);
    if (waiting.length === 0) return null;
    const errors = [...new Set(waiting.map((r) => r.lastError).filter((e) => e !== null))];
    return `kubernetes: not synced yet: ${waiting.map((r) => r.resource).join(', ')}${errors.length ? ` (${errors.join('; ')})` : ''}`;
  }

  /** Every reflector listed and watching (false during an API-server outage). */
  get healthy(): boolean {
    return this.reflectors.every((r) => r.healthy);
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const r of this.reflectors) r.close();
  }

  /** Indexes a pod if it holds addresses, else drops its claims. Returns whether it is indexed. */
  private upsertPod(p: PodRecord): boolean {
    if (!podHoldsAddresses(p)) {
      this.index.remove(p.uid, Date.now());
      return false;
    }
    // A hostNetwork pod's IP is its node's: it names the node (when no Node object lists it).
    const node = this.names.get(p.node, p.node);
    const endpoint: icmpwatch.v1.IEndpoint = p.hostNetwork
      ? { kind: Kind.ENDPOINT_KIND_NODE, node }
      : {
          kind: Kind.ENDPOINT_KIND_POD,
          namespace: this.names.get(p.namespace, p.namespace),
          pod: p.name,
          podUid: p.uid,
          labels: this.labelSets.get(JSON.stringify(p.labels), p.labels),
          node,
        };
    // An owner's kind and name never change for its uid.
    const owner = p.hostNetwork || p.owner === null ? null : this.podOwners.get(p.owner.uid, p.owner);
    this.index.upsert({ uid: p.uid, source: p.hostNetwork ? 'hostNetwork' : 'pod', created: p.created, ips: p.ips, value: { endpoint, owner } });
    return true;
  }

  /** Pod -> workload: through a ReplicaSet or Job to its Deployment or CronJob; other owners as they are; no owner: the pod. */
  private workloadOf(pod: string, owner: OwnerRef | null): icmpwatch.v1.IWorkload {
    if (!owner) return { kind: 'Pod', name: pod };
    const upper = owner.kind === 'ReplicaSet' || owner.kind === 'Job' ? this.owners[owner.kind].get(owner.uid) : undefined;
    return upper ? { kind: upper.kind, name: upper.name } : { kind: owner.kind, name: owner.name };
  }

  /** A reflector whose objects claim addresses of one source (nodes, services). */
  private claims<R extends { uid: string }>(
    kc: KubeConfig,
    source: Source,
    spec: { resource: string; path: string; list: Lister; slim: (o: ObjectLike) => R; claimant: (r: R) => Claimant<Named> },
    common: Common,
  ): Reflector<ObjectLike, R> {
    return new Reflector<ObjectLike, R>(kc, {
      ...common,
      ...spec,
      upsert: (r) => this.index.upsert(spec.claimant(r)),
      remove: (r) => this.index.remove(r.uid, Date.now()),
      replace: (records) => {
        for (const r of records) this.index.upsert(spec.claimant(r));
        this.index.retainOnly(source, new Set(records.map((r) => r.uid)), Date.now());
      },
    });
  }

  /** A reflector keeping, for ReplicaSets or Jobs, only who controls them (a Deployment, a CronJob). */
  private ownerLinks(kc: KubeConfig, kind: Intermediate, resource: string, path: string, list: Lister, common: Common): Reflector<ObjectLike, OwnerLink> {
    const links = this.owners[kind];
    // A pod's workload is read through these links: a changed link makes remembered answers old.
    // ReplicaSets change often (status), their controller rarely.
    const upsert = (l: OwnerLink) => {
      const known = links.get(l.uid);
      if (l.owner === null) {
        if (links.delete(l.uid)) this.ownerLinksVersion++;
      } else if (known?.uid !== l.owner.uid || known.kind !== l.owner.kind || known.name !== l.owner.name) {
        links.set(l.uid, l.owner);
        this.ownerLinksVersion++;
      }
    };
    return new Reflector<ObjectLike, OwnerLink>(kc, {
      ...common,
      resource,
      path,
      list,
      slim: ownerLink,
      upsert,
      remove: (l) => {
        if (links.delete(l.uid)) this.ownerLinksVersion++;
      },
      replace: (records) => {
        this.ownerLinksVersion++;
        links.clear();
        for (const l of records) upsert(l);
      },
    });
  }

  private registerMetrics(registry: Registry): void {
    const resolver = this;
    registry.registerMetric(
      new Gauge({
        name: 'icmpwatch_k8s_index_addresses',
        help: 'Addresses the Kubernetes index names, by what they name (deleted objects in their grace period included)',
        labelNames: ['kind'],
        registers: [],
        collect() {
          const s = resolver.index.sizes();
          this.set({ kind: 'pod' }, s.pod);
          this.set({ kind: 'node' }, s.node + s.hostNetwork);
          this.set({ kind: 'service' }, s.service);
        },
      }),
    );
    registry.registerMetric(
      new Gauge({
        name: 'icmpwatch_k8s_owner_links',
        help: 'ReplicaSets and Jobs known with a controller (Deployment, CronJob), for workload names',
        labelNames: ['kind'],
        registers: [],
        collect() {
          for (const kind of ['ReplicaSet', 'Job'] as const) this.set({ kind }, resolver.owners[kind].size);
        },
      }),
    );
    // Counted in plain fields on the capture path and copied out at scrape time.
    registry.registerMetric(
      new Counter({
        name: 'icmpwatch_k8s_lookups_total',
        help: 'Address lookups by the Kubernetes resolver, by result',
        labelNames: ['result'],
        registers: [],
        collect() {
          this.reset();
          this.inc({ result: 'hit' }, resolver.hits);
          this.inc({ result: 'miss' }, resolver.misses);
        },
      }),
    );
    registry.registerMetric(
      new Counter({
        name: 'icmpwatch_k8s_watch_restarts_total',
        help: 'List/watch restarts after an error or a silent watch, by resource',
        labelNames: ['resource'],
        registers: [],
        collect() {
          this.reset();
          for (const r of resolver.reflectors) this.inc({ resource: r.resource }, r.restarts);
        },
      }),
    );
    registry.registerMetric(
      new Gauge({
        name: 'icmpwatch_k8s_last_sync_age_seconds',
        help: 'Seconds since the API server last answered for a resource (list, event, bookmark or watch reconnect)',
        labelNames: ['resource'],
        registers: [],
        collect() {
          const now = Date.now();
          for (const r of resolver.reflectors) this.set({ resource: r.resource }, (now - (r.lastContact || resolver.startedAt)) / 1000);
        },
      }),
    );
  }
}

type Lister = (page: { limit: number; _continue?: string }) => Promise<ListPage<ObjectLike>>;
type Common = { timing: ReflectorTiming; log: Logger };
