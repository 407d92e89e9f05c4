// Compiles validated allow/deny filter lists into predicates: lists ORed, fields of one filter
// ANDed, values of one field ORed; result = allowed and not denied.
import { familyOf } from '../common/event-format.js';
import { ipPrefixMatcher } from '../common/ip-prefix.js';
import type { icmpwatch } from '../common/proto.js';
import type { FilterSpec, PodSelector, SubscriptionSpec } from '../common/grpc/subscribe-request.js';

type EventPredicate = (ev: icmpwatch.v1.IEvent) => boolean;

export interface CompiledFilters {
  /** No allow or deny lists: everything passes (and nothing needs reading). */
  everything: boolean;
  event(ev: icmpwatch.v1.IEvent): boolean;
  /** Whether a notice about this node (empty: every node) belongs in the stream. */
  notice(node: string): boolean;
}

function podMatches(selectors: PodSelector[], ep: icmpwatch.v1.IEndpoint | null | undefined): boolean {
  if (!ep?.pod) return false;
  return selectors.some((s) => (s.namespace === null || s.namespace === ep.namespace) && ep.pod!.startsWith(s.namePrefix));
}

function compileFilter(f: FilterSpec): EventPredicate {
  const checks: EventPredicate[] = [];
  if (f.node.length) checks.push((ev) => f.node.includes(ev.node ?? ''));
  if (f.namespace.length) {
    checks.push((ev) => f.namespace.includes(ev.source?.namespace ?? '') || f.namespace.includes(ev.destination?.namespace ?? ''));
  }
  if (f.pod.length) checks.push((ev) => podMatches(f.pod, ev.source) || podMatches(f.pod, ev.destination));
  if (f.sourcePod.length) checks.push((ev) => podMatches(f.sourcePod, ev.source));
  if (f.destinationPod.length) checks.push((ev) => podMatches(f.destinationPod, ev.destination));
  if (f.ip.length) {
    const inSet = ipPrefixMatcher(f.ip);
    checks.push((ev) => inSet(ev.source?.ip ?? '') || inSet(ev.destination?.ip ?? ''));
  }
  if (f.sourceIp.length) {
    const inSet = ipPrefixMatcher(f.sourceIp);
    checks.push((ev) => inSet(ev.source?.ip ?? ''));
  }
  if (f.destinationIp.length) {
    const inSet = ipPrefixMatcher(f.destinationIp);
    checks.push((ev) => inSet(ev.destination?.ip ?? ''));
  }
  if (f.family.length) checks.push((ev) => f.family.some((fam) => fam === familyOf(ev)));
  if (f.icmpType.length) {
    checks.push((ev) => {
      const family = familyOf(ev);
      const type = ev.icmp?.type ?? 0;
      const code = ev.icmp?.code ?? 0;
      return f.icmpType.some((s) => (s.family === undefined || s.family === family) && s.type === type && (s.code === undefined || s.code === code));
    });
  }
  if (f.icmpCode.length) checks.push((ev) => f.icmpCode.includes(ev.icmp?.code ?? 0));
  if (f.observationPoint.length) checks.push((ev) => f.observationPoint.includes(ev.observation?.point ?? 0));
  return (ev) => checks.every((check) => check(ev));
}

/** A filter constraining only nodes: the one kind that can deny a notice. */
const onlyNodes = (f: FilterSpec) =>
  f.node.length > 0 && Object.entries(f).every(([key, values]) => key === 'node' || (values as unknown[]).length === 0);

export function compileFilters(spec: Pick<SubscriptionSpec, 'allow' | 'deny'>): CompiledFilters {
  const allow = spec.allow.map(compileFilter);
  const deny = spec.deny.map(compileFilter);
  return {
    everything: allow.length === 0 && deny.length === 0,
    event: (ev) => (allow.length === 0 || allow.some((p) => p(ev))) && !deny.some((p) => p(ev)),
    notice: (node) =>
      node === '' ||
      ((spec.allow.length === 0 || spec.allow.some((f) => f.node.length === 0 || f.node.includes(node))) &&
        !spec.deny.some((f) => onlyNodes(f) && f.node.includes(node))),
  };
}
