/**
 * The few fields the resolver reads from API objects, and their slim records. List responses come
 * from the generated client (timestamps as Date) and watch events as plain JSON (timestamps as
 * strings); the shapes below accept both, and nothing else of an object is kept.
 */

type Timestamp = Date | string | undefined;

interface OwnerReferenceLike {
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
}

export interface MetaLike {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: Timestamp;
  labels?: { [key: string]: string };
  ownerReferences?: OwnerReferenceLike[];
}

export interface ObjectLike {
  metadata?: MetaLike;
}

export interface PodLike extends ObjectLike {
  spec?: { nodeName?: string; hostNetwork?: boolean };
  status?: { phase?: string; podIP?: string; podIPs?: { ip: string }[] };
}

export interface NodeLike extends ObjectLike {
  status?: { addresses?: { type: string; address: string }[] };
}

export interface ServiceLike extends ObjectLike {
  spec?: { clusterIP?: string; clusterIPs?: string[] };
}

export interface OwnerRef {
  kind: string;
  name: string;
  uid: string;
}

export interface PodRecord {
  namespace: string;
  name: string;
  uid: string;
  labels: Record<string, string>;
  node: string;
  ips: string[];
  phase: string;
  hostNetwork: boolean;
  created: number;
  /** The controller owner as the pod names it; resolved to a workload at lookup time. */
  owner: OwnerRef | null;
}

export interface NodeRecord {
  name: string;
  uid: string;
  labels: Record<string, string>;
  ips: string[];
  created: number;
}

export interface ServiceRecord {
  namespace: string;
  name: string;
  uid: string;
  labels: Record<string, string>;
  ips: string[];
  created: number;
}

/** A ReplicaSet's or Job's own controller owner (Deployment, CronJob), by the owned object's uid. */
export interface OwnerLink {
  uid: string;
  owner: OwnerRef | null;
}

function millis(t: Timestamp): number {
  return t === undefined ? 0 : new Date(t).getTime();
}

function uidOf(o: ObjectLike): string {
  return o.metadata?.uid ?? '';
}

function controllerOf(meta: MetaLike | undefined): OwnerRef | null {
  const ref = meta?.ownerReferences?.find((r) => r.controller === true);
  return ref ? { kind: ref.kind, name: ref.name, uid: ref.uid } : null;
}

export function podRecord(p: PodLike): PodRecord {
  const m = p.metadata ?? {};
  // Older objects may carry only podIP; podIPs[0] always equals it when both are set.
  const ips = p.status?.podIPs?.map((x) => x.ip) ?? (p.status?.podIP ? [p.status.podIP] : []);
  return {
    namespace: m.namespace ?? '',
    name: m.name ?? '',
    uid: m.uid ?? '',
    labels: m.labels ?? {},
    node: p.spec?.nodeName ?? '',
    ips,
    phase: p.status?.phase ?? '',
    hostNetwork: p.spec?.hostNetwork === true,
    created: millis(m.creationTimestamp),
    owner: controllerOf(m),
  };
}

/** Finished pods have released their addresses, which may already belong to a new pod. */
export function podHoldsAddresses(p: PodRecord): boolean {
  return p.phase !== 'Succeeded' && p.phase !== 'Failed' && p.ips.length > 0;
}

export function nodeRecord(n: NodeLike): NodeRecord {
  const m = n.metadata ?? {};
  const ips = (n.status?.addresses ?? []).filter((a) => a.type === 'InternalIP' || a.type === 'ExternalIP').map((a) => a.address);
  return { name: m.name ?? '', uid: m.uid ?? '', labels: m.labels ?? {}, ips, created: millis(m.creationTimestamp) };
}

export function serviceRecord(s: ServiceLike): ServiceRecord {
  const m = s.metadata ?? {};
  // Headless Services have clusterIP "None"; ExternalName Services have none at all.
  const ips = (s.spec?.clusterIPs ?? (s.spec?.clusterIP ? [s.spec.clusterIP] : [])).filter((ip) => ip !== 'None' && ip !== '');
  return { namespace: m.namespace ?? '', name: m.name ?? '', uid: m.uid ?? '', labels: m.labels ?? {}, ips, created: millis(m.creationTimestamp) };
}

export function ownerLink(o: ObjectLike): OwnerLink {
  return { uid: uidOf(o), owner: controllerOf(o.metadata) };
}
