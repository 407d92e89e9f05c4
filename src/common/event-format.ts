// How an event is printed, identically by the agent's node log and by `icmpwatch observe`.
import { icmpName, type IpFamily } from './icmp-names.js';
import { icmpwatch, google } from './proto.js';

const v1 = icmpwatch.v1;

/** "FLAG_MORE_FRAGMENTS" -> "more-fragments"; an unknown number stays a number. */
export function enumLabel(names: Record<number, string>, prefix: string, value: number | null | undefined): string {
  let labels = enumLabels.get(names);
  if (!labels) enumLabels.set(names, (labels = new Map()));
  const key = value ?? 0;
  let label = labels.get(key);
  if (label === undefined) {
    const name = names[key];
    label = name === undefined ? String(value) : name.slice(prefix.length).toLowerCase().replace(/_/g, '-');
    labels.set(key, label);
  }
  return label;
}
/** Labels computed once per enum value: they are formatted for every event (CPU per event). */
const enumLabels = new WeakMap<Record<number, string>, Map<number, string>>();

/** Hooks keep the kernel's spelling: "tp_btf", "raw_tp", "fexit", "kretprobe". */
export function hookLabel(hook: icmpwatch.v1.Hook | null | undefined): string {
  let label = hookLabels.get(hook ?? 0);
  if (label === undefined) hookLabels.set(hook ?? 0, (label = enumLabel(v1.Hook, 'HOOK_', hook).replace(/-/g, '_')));
  return label;
}
const hookLabels = new Map<number, string>();

export function familyOf(ev: icmpwatch.v1.IEvent): IpFamily | null {
  return ev.family === v1.Family.FAMILY_IPV4 ? 'ipv4' : ev.family === v1.Family.FAMILY_IPV6 ? 'ipv6' : null;
}

/** The range google.protobuf.Timestamp allows: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z. */
const MIN_SECONDS = -62_135_596_800;
const MAX_SECONDS = 253_402_300_799;

/** Whether google.protobuf.Timestamp allows these fields; outside, a time is printed as its raw fields. */
export function timestampInRange(seconds: number, nanos: number): boolean {
  return seconds >= MIN_SECONDS && seconds <= MAX_SECONDS && Number.isInteger(nanos) && nanos >= 0 && nanos < 1e9;
}

/** Events come in time order: the date part is formatted once per second, not per event. */
let lastSeconds = NaN;
let lastBase = '';

/** "YYYY-MM-DDTHH:MM:SS" (UTC) of a time in range. */
export function secondsText(seconds: number): string {
  if (seconds !== lastSeconds) {
    lastSeconds = seconds;
    lastBase = new Date(seconds * 1000).toISOString().slice(0, 19);
  }
  return lastBase;
}

/**
 * RFC 3339 in UTC with nanoseconds, or with milliseconds when `millis`. A timestamp outside the
 * protobuf range (any agent can send one) is printed as its raw fields, never thrown on.
 */
export function formatTimestamp(ts: google.protobuf.ITimestamp | null | undefined, millis = false): string {
  const seconds = Number(ts?.seconds ?? 0);
  const nanos = ts?.nanos ?? 0;
  if (!timestampInRange(seconds, nanos)) return `invalid-time(seconds=${seconds},nanos=${nanos})`;
  const fraction = String(nanos).padStart(9, '0');
  return `${secondsText(seconds)}.${millis ? fraction.slice(0, 3) : fraction}Z`;
}

export function isEcho(family: IpFamily | null, type: number): boolean {
  return family === 'ipv4' ? type === 0 || type === 8 : family === 'ipv6' ? type === 128 || type === 129 : false;
}

export function icmpLabel(ev: icmpwatch.v1.IEvent): string {
  const family = familyOf(ev);
  const icmp = ev.icmp;
  // No ICMP header was decoded (a non-first fragment, a malformed or unreadable packet):
  // never print type 0 as "echo-reply".
  if (!icmp) return (ev.flags ?? []).includes(v1.Flag.FLAG_FRAGMENT) ? 'fragment' : 'undecoded';
  if (icmp.name) return icmp.name;
  return family ? icmpName(family, icmp.type ?? 0, icmp.code ?? 0) : `type-${icmp.type ?? 0}`;
}

type Json = string | number | boolean | Json[] | { [key: string]: Json };

function endpointToJson(ep: icmpwatch.v1.IEndpoint | null | undefined): Record<string, Json> {
  const out: Record<string, Json> = { ip: ep?.ip ?? '' };
  if (!ep) return out;
  if (ep.namespace) out.namespace = ep.namespace;
  if (ep.pod) out.pod = ep.pod;
  if (ep.podUid) out.podUid = ep.podUid;
  if (ep.labels && Object.keys(ep.labels).length > 0) out.labels = { ...ep.labels };
  if (ep.workload?.name) out.workload = { kind: ep.workload.kind ?? '', name: ep.workload.name };
  if (ep.node) out.node = ep.node;
  if (ep.service) out.service = ep.service;
  if (ep.kind) out.kind = enumLabel(v1.EndpointKind, 'ENDPOINT_KIND_', ep.kind);
  if (ep.enrichment) out.enrichment = enumLabel(v1.Enrichment, 'ENRICHMENT_', ep.enrichment);
  return out;
}

function quotedToJson(q: icmpwatch.v1.IQuotedPacket): Record<string, Json> {
  const out: Record<string, Json> = { source: q.source ?? '', destination: q.destination ?? '', protocol: q.protocol ?? 0 };
  if (q.sourcePort) out.sourcePort = q.sourcePort;
  if (q.destinationPort) out.destinationPort = q.destinationPort;
  if (q.echoId || q.echoSeq) Object.assign(out, { echoId: q.echoId ?? 0, echoSeq: q.echoSeq ?? 0 });
  return out;
}

/** The JSON object of one event: proto3 JSON names (lowerCamelCase), as the capture issue fixes them; unset fields omitted. */
export function eventToJson(ev: icmpwatch.v1.IEvent): Record<string, Json> {
  const family = familyOf(ev);
  const out: Record<string, Json> = {
    time: formatTimestamp(ev.time),
    node: ev.node ?? '',
    family: family ?? 'unspecified',
    source: endpointToJson(ev.source),
    destination: endpointToJson(ev.destination),
  };
  const icmp = ev.icmp;
  if (icmp) {
    const type = icmp.type ?? 0;
    const icmpOut: Record<string, Json> = { type, code: icmp.code ?? 0, name: icmpLabel(ev) };
    if (isEcho(family, type)) Object.assign(icmpOut, { id: icmp.id ?? 0, seq: icmp.seq ?? 0 });
    if (icmp.mtu) icmpOut.mtu = icmp.mtu;
    if (icmp.quoted) icmpOut.quoted = quotedToJson(icmp.quoted);
    out.icmp = icmpOut;
  }
  if (ev.ttl) out.ttl = ev.ttl;
  if (ev.length) out.length = ev.length;
  if (ev.ipId) out.ipId = ev.ipId;
  if (ev.fragmentOffset) out.fragmentOffset = ev.fragmentOffset;
  const obs = ev.observation;
  if (obs) {
    const o: Record<string, Json> = {
      hook: hookLabel(obs.hook),
      point: enumLabel(v1.ObservationPoint, 'OBSERVATION_POINT_', obs.point ?? 0),
    };
    if (obs.ifindex) o.ifindex = obs.ifindex;
    if (obs.interface) o.interface = obs.interface;
    if (obs.netns) o.netns = Number(obs.netns);
    if (obs.sightings) o.sightings = obs.sightings;
    if (obs.symbol) o.symbol = obs.symbol;
    out.observation = o;
  }
  out.flags = (ev.flags ?? []).map((f) => enumLabel(v1.Flag, 'FLAG_', f));
  if (ev.summary) {
    out.summary = {
      packets: Number(ev.summary.packets ?? 0),
      sightings: Number(ev.summary.sightings ?? 0),
      first: formatTimestamp(ev.summary.first),
      last: formatTimestamp(ev.summary.last),
    };
  }
  if (ev.sequence) out.sequence = Number(ev.sequence);
  return out;
}

function endpointToText(ep: icmpwatch.v1.IEndpoint | null | undefined): string {
  const ip = ep?.ip || '?';
  if (ep?.pod) return `${ip} (${ep.namespace}/${ep.pod})`;
  if (ep?.service) return `${ip} (${ep.namespace}/${ep.service} service)`;
  if (ep?.node) return `${ip} (node ${ep.node})`;
  return ip;
}

/** One line: time node name source -> destination details [observation] flags. */
export function eventToText(ev: icmpwatch.v1.IEvent): string {
  const family = familyOf(ev);
  const icmp = ev.icmp ?? {};
  const parts = [
    formatTimestamp(ev.time, true),
    ev.node || '?',
    icmpLabel(ev),
    endpointToText(ev.source),
    '->',
    endpointToText(ev.destination),
  ];
  if (ev.icmp && isEcho(family, icmp.type ?? 0)) parts.push(`id=${icmp.id ?? 0}`, `seq=${icmp.seq ?? 0}`);
  if (ev.fragmentOffset) parts.push(`frag=${ev.fragmentOffset}`);
  if (icmp.mtu) parts.push(`mtu=${icmp.mtu}`);
  const q = icmp.quoted;
  if (q) {
    const port = (p: number | null | undefined) => (p ? `:${p}` : '');
    parts.push(`quoted=${q.source}${port(q.sourcePort)}->${q.destination}${port(q.destinationPort)}/proto=${q.protocol ?? 0}`);
  }
  if (ev.ttl) parts.push(`ttl=${ev.ttl}`);
  if (ev.length) parts.push(`len=${ev.length}`);
  const obs = ev.observation;
  if (obs) {
    const where = [enumLabel(v1.ObservationPoint, 'OBSERVATION_POINT_', obs.point ?? 0)];
    if (obs.interface || obs.ifindex) where.push(`if=${obs.interface || obs.ifindex}`);
    if (obs.netns) where.push(`netns=${Number(obs.netns)}`);
    parts.push(`[${where.join(' ')}]`);
  }
  if (ev.flags?.length) parts.push(`flags=${ev.flags.map((f) => enumLabel(v1.Flag, 'FLAG_', f)).join(',')}`);
  if (ev.summary) {
    const packets = Number(ev.summary.packets ?? 0);
    const sightings = Number(ev.summary.sightings ?? 0);
    parts.push(`x${packets} packets suppressed${sightings > packets ? ` (${sightings} sightings)` : ''}`);
  }
  return parts.join(' ');
}
