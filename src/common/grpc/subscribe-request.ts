// Validation of a SubscribeRequest, shared by the collector (the API's edge) and by `observe`
// (which reports the same problems against its flags). Produces the parsed form filters run on.
import { z } from 'zod';
import { parseIcmpSelector, type IcmpSelector, type IpFamily } from '../icmp-names.js';
import { parseIpPrefix, type IpPrefix } from '../ip-prefix.js';
import { icmpwatch, type google } from '../proto.js';

const v1 = icmpwatch.v1;

/** "namespace/name-prefix" or "name-prefix" (any namespace). */
export interface PodSelector {
  namespace: string | null;
  namePrefix: string;
}

export interface FilterSpec {
  node: string[];
  namespace: string[];
  pod: PodSelector[];
  sourcePod: PodSelector[];
  destinationPod: PodSelector[];
  ip: IpPrefix[];
  sourceIp: IpPrefix[];
  destinationIp: IpPrefix[];
  family: IpFamily[];
  icmpType: IcmpSelector[];
  icmpCode: number[];
  observationPoint: number[];
}

export interface SubscriptionSpec {
  last: number;
  follow: boolean;
  /** Milliseconds since the epoch (fractional), see timestampMs. */
  since: number | null;
  until: number | null;
  allow: FilterSpec[];
  deny: FilterSpec[];
}

/** Milliseconds since the epoch with sub-millisecond fraction: one scale for every comparison. */
export function timestampMs(ts: google.protobuf.ITimestamp): number {
  return Number(ts.seconds ?? 0) * 1000 + (ts.nanos ?? 0) / 1e6;
}

/**
 * Bounds on a request's size: filters are evaluated for every event and every subscriber, so their
 * cost is the collector's, not the caller's. Generous for any real selection.
 */
export const SUBSCRIBE_LIMITS = { filters: 64, values: 256, valueLength: 512 } as const;

const text = z.string().max(SUBSCRIBE_LIMITS.valueLength, `longer than the limit of ${SUBSCRIBE_LIMITS.valueLength} characters`);

const nonEmpty = text.min(1, 'must not be empty');

const ipPrefix = text.transform((value, ctx): IpPrefix => {
  const parsed = parseIpPrefix(value);
  if (!parsed) ctx.addIssue(value.includes('/') ? `invalid CIDR '${value}'` : `invalid IP address '${value}'`);
  return parsed ?? { family: 'ipv4', address: '0.0.0.0', bits: 0 };
});

const podSelector = nonEmpty.transform((value, ctx): PodSelector => {
  const slash = value.indexOf('/');
  if (slash < 0) return { namespace: null, namePrefix: value };
  const namespace = value.slice(0, slash);
  const namePrefix = value.slice(slash + 1);
  if (!namespace || namePrefix.includes('/')) ctx.addIssue(`invalid pod '${value}': expected NAMESPACE/NAME-PREFIX or NAME-PREFIX`);
  return { namespace, namePrefix };
});

const icmpType = text.transform((value, ctx): IcmpSelector[] => {
  const selectors = parseIcmpSelector(value);
  if (!selectors) ctx.addIssue(`unknown ICMP type '${value}': expected a name such as echo-request or port-unreachable, a number or TYPE/CODE`);
  return selectors ?? [];
});

/** A known, specified value of a generated enum. */
function enumValue(names: Record<number, string>, what: string) {
  return z.number().refine((n) => n !== 0 && names[n] !== undefined, { error: (issue) => `unknown ${what} ${String(issue.input)}` });
}

const family = enumValue(v1.Family, 'family').transform((n): IpFamily => (n === v1.Family.FAMILY_IPV4 ? 'ipv4' : 'ipv6'));

/** The length is checked before any item is: a huge list is refused without parsing it. */
const boundedList = <T extends z.ZodType>(item: T, max: number, what: string) =>
  z.preprocess(
    (v) => v ?? [],
    z.array(z.unknown()).max(max, `more than the limit of ${max} ${what}`).pipe(z.array(item)),
  );

const list = <T extends z.ZodType>(item: T) => boundedList(item, SUBSCRIBE_LIMITS.values, 'values');

const filter = z.object({
  node: list(nonEmpty),
  namespace: list(nonEmpty),
  pod: list(podSelector),
  sourcePod: list(podSelector),
  destinationPod: list(podSelector),
  ip: list(ipPrefix),
  sourceIp: list(ipPrefix),
  destinationIp: list(ipPrefix),
  family: list(family),
  icmpType: list(icmpType).transform((lists) => lists.flat()),
  icmpCode: list(z.number().int().min(0).max(255)),
  observationPoint: list(enumValue(v1.ObservationPoint, 'observation point')),
});

const timestamp = z
  .object({ seconds: z.number().int(), nanos: z.number().int().min(0).max(999_999_999) })
  .partial()
  .nullish()
  .transform((ts) => (ts ? timestampMs(ts) : null));

const request = z
  .object({
    last: z.preprocess((v) => v ?? 0, z.number().int().min(0, 'must not be negative')),
    follow: z.preprocess((v) => v ?? false, z.boolean()),
    since: timestamp,
    until: timestamp,
    allow: boundedList(filter, SUBSCRIBE_LIMITS.filters, 'filters'),
    deny: boundedList(filter, SUBSCRIBE_LIMITS.filters, 'filters'),
  })
  .refine((r) => r.since === null || r.until === null || r.since <= r.until, {
    path: ['since'],
    error: 'must not be after until',
  });

const snake = (key: string): string => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** ['allow', 0, 'icmpType', 1] -> "allow[0].icmp_type[1]", the proto's own field names. */
export function fieldPath(path: PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i > 0 ? '.' : ''}${snake(String(p))}`)).join('');
}

export type SubscribeRequestIssue = { path: PropertyKey[]; message: string };

/** The parsed request, or every problem found in it (path and message). */
export function parseSubscribeRequest(
  req: icmpwatch.v1.ISubscribeRequest,
): { ok: true; spec: SubscriptionSpec } | { ok: false; issues: SubscribeRequestIssue[] } {
  const parsed = request.safeParse(req);
  if (parsed.success) return { ok: true, spec: parsed.data };
  return { ok: false, issues: parsed.error.issues.map((i) => ({ path: i.path, message: i.message })) };
}
