import { google, icmpwatch } from '../common/proto.js';
import { icmpName } from '../common/icmp-names.js';
import type { EndpointResolver } from './enrich/resolver.js';
import { isEcho, type CapturedPacket } from './probe/decoder.js';
import type { FloodAggregate } from './probe/probe.js';
import { FLAG_BITS, HOOK_IDS, type HookName } from './probe/event-layout.js';
import type { ReportedPacket, ObservationPointName } from './sightings.js';

const v1 = icmpwatch.v1;

const POINT_INDEX: Record<ObservationPointName, number> = { destination: 0, host: 1, forwarded: 2, unknown: 3 };

const POINTS: Record<ObservationPointName, icmpwatch.v1.ObservationPoint> = {
  destination: v1.ObservationPoint.OBSERVATION_POINT_DESTINATION,
  host: v1.ObservationPoint.OBSERVATION_POINT_HOST,
  forwarded: v1.ObservationPoint.OBSERVATION_POINT_FORWARDED,
  unknown: v1.ObservationPoint.OBSERVATION_POINT_UNKNOWN,
};

/** Kernel flag bit -> proto Flag, in bit order. */
const FLAGS: [number, icmpwatch.v1.Flag][] = [
  [FLAG_BITS.vlan, v1.Flag.FLAG_VLAN],
  [FLAG_BITS.fragment, v1.Flag.FLAG_FRAGMENT],
  [FLAG_BITS['more-fragments'], v1.Flag.FLAG_MORE_FRAGMENTS],
  [FLAG_BITS.nonlinear, v1.Flag.FLAG_NONLINEAR],
  [FLAG_BITS.truncated, v1.Flag.FLAG_TRUNCATED],
  [FLAG_BITS['bad-version'], v1.Flag.FLAG_BAD_VERSION],
  [FLAG_BITS['bad-ihl'], v1.Flag.FLAG_BAD_IHL],
  [FLAG_BITS['bad-length'], v1.Flag.FLAG_BAD_LENGTH],
  [FLAG_BITS.padded, v1.Flag.FLAG_PADDED],
  [FLAG_BITS['exthdr-limit'], v1.Flag.FLAG_EXTHDR_LIMIT],
  [FLAG_BITS['inner-truncated'], v1.Flag.FLAG_INNER_TRUNCATED],
  [FLAG_BITS['vlan-unsupported'], v1.Flag.FLAG_VLAN_UNSUPPORTED],
];

/** Flags that mean the ICMP header was not decoded: type/code 0 is not "echo reply". */
const UNDECODED = FLAG_BITS.fragment | FLAG_BITS.nonlinear | FLAG_BITS.truncated | FLAG_BITS['bad-version'] |
  FLAG_BITS['bad-ihl'] | FLAG_BITS['bad-length'] | FLAG_BITS['exthdr-limit'] | FLAG_BITS['vlan-unsupported'];

const FAMILIES = { 0: v1.Family.FAMILY_UNSPECIFIED, 4: v1.Family.FAMILY_IPV4, 6: v1.Family.FAMILY_IPV6 } as const;

/** Kernel monotonic nanoseconds -> wall clock, re-anchored periodically against drift. */
export class WallClock {
  private offsetNs = 0;
  constructor() {
    this.anchor();
  }
  anchor(): void {
    this.offsetNs = Date.now() * 1e6 - Number(process.hrtime.bigint());
  }
  timestamp(monoNs: number): google.protobuf.ITimestamp {
    const ns = monoNs + this.offsetNs;
    const seconds = Math.floor(ns / 1e9);
    return { seconds, nanos: Math.floor(ns - seconds * 1e9) };
  }
}

/** An event without flags: one array for all of them (events are never changed once built). */
const NO_FLAGS: icmpwatch.v1.Flag[] = [];

/** Observations remembered, keyed by netns then by the rest; forgotten at once beyond this. */
const MAX_OBSERVATIONS = 4096;

/** Turns kernel sightings and flood counts into API events, naming both ends. */
export class EventBuilder {
  private sequence = 0;
  /**
   * The observation part is the same for every packet seen at one place (device, point, hook):
   * one object for them, so that the node log and the exporter encode it once (by identity).
   */
  private readonly observations = new Map<number, Map<number, icmpwatch.v1.IObservation>>();
  private observationCount = 0;
  /** The hooked symbol per family: ip_rcv_core.isra.N for IPv4, ip6_rcv_core for IPv6, all for unknown. */
  private readonly symbolByFamily: Record<0 | 4 | 6, string>;

  constructor(
    private readonly node: string,
    private readonly resolver: EndpointResolver,
    private readonly clock: WallClock,
    symbols: string[],
    private readonly interfaceName: (netns: number, ifindex: number) => string,
  ) {
    const pick = (prefix: string) => symbols.filter((s) => s.startsWith(prefix)).join(',');
    this.symbolByFamily = {
      0: symbols.join(','),
      4: pick('ip_rcv_core') || symbols.join(','),
      6: pick('ip6_rcv_core') || symbols.join(','),
    };
  }

  fromPacket({ packet: p, point, sightings }: ReportedPacket): icmpwatch.v1.IEvent {
    const decoded = p.family !== 0 && (p.flags & UNDECODED) === 0;
    let flags = NO_FLAGS;
    if (p.flags !== 0) {
      flags = [];
      for (const [bit, flag] of FLAGS) if (p.flags & bit) flags.push(flag);
    }
    const icmp: icmpwatch.v1.IIcmp | null = decoded
      ? {
          type: p.type,
          code: p.code,
          name: icmpName(p.family === 4 ? 'ipv4' : 'ipv6', p.type, p.code),
          id: isEcho(p) ? p.echoId : 0,
          seq: isEcho(p) ? p.echoSeq : 0,
          mtu: p.mtu,
          quoted: p.quoted && {
            source: p.quoted.src,
            destination: p.quoted.dst,
            protocol: p.quoted.protocol,
            ...(p.quoted.protocol === 1 || p.quoted.protocol === 58
              ? { echoId: p.quoted.sport, echoSeq: p.quoted.dport }
              : { sourcePort: p.quoted.sport, destinationPort: p.quoted.dport }),
          },
        }
      : null;
    return {
      time: this.clock.timestamp(p.monoNs),
      node: this.node,
      family: FAMILIES[p.family],
      source: this.resolver.resolve(p.src),
      destination: this.resolver.resolve(p.dst),
      icmp,
      ttl: p.ttl,
      length: p.totLen,
      ipId: p.ipId,
      fragmentOffset: p.fragOff,
      observation: this.observation(p, point, sightings),
      flags,
      sequence: ++this.sequence,
      monotonicNs: p.monoNs,
    };
  }

  private observation(p: CapturedPacket, point: ObservationPointName, sightings: number): icmpwatch.v1.IObservation {
    const iface = this.interfaceName(p.netns, p.ifindex);
    // Everything but netns and the interface name in one small integer (a cheap map key): ifindex
    // below 2^19 and few sightings cover every real case; anything else gets an object of its own.
    const cacheable = p.ifindex < 1 << 19 && sightings < 8;
    const key = (((p.ifindex * 8 + sightings) * 4 + POINT_INDEX[point]) * 8 + HOOK_IDS[p.hook]) * 8 + p.family;
    let byPlace = cacheable ? this.observations.get(p.netns) : undefined;
    const known = byPlace?.get(key);
    if (known !== undefined && known.interface === iface) return known;
    const observation: icmpwatch.v1.IObservation = {
      hook: HOOK_IDS[p.hook],
      point: POINTS[point],
      ifindex: p.ifindex,
      interface: iface,
      netns: p.netns,
      sightings,
      symbol: this.symbolByFamily[p.family],
    };
    if (!cacheable) return observation;
    if (this.observationCount >= MAX_OBSERVATIONS) {
      this.observations.clear();
      this.observationCount = 0;
      byPlace = undefined;
    }
    if (byPlace === undefined) {
      byPlace = new Map();
      this.observations.set(p.netns, byPlace);
    }
    if (!byPlace.has(key)) this.observationCount++;
    byPlace.set(key, observation);
    return observation;
  }

  fromFlood(a: FloodAggregate, hook: HookName): icmpwatch.v1.IEvent {
    const family = a.family === 4 ? 'ipv4' : 'ipv6';
    return {
      time: this.clock.timestamp(a.lastNs),
      node: this.node,
      family: a.family === 4 ? v1.Family.FAMILY_IPV4 : v1.Family.FAMILY_IPV6,
      source: this.resolver.resolve(a.src),
      destination: this.resolver.resolve(a.dst),
      icmp: { type: a.type, code: a.code, name: icmpName(family, a.type, a.code) },
      observation: { hook: HOOK_IDS[hook], point: v1.ObservationPoint.OBSERVATION_POINT_UNSPECIFIED, symbol: this.symbolByFamily[a.family] },
      summary: { packets: a.packets, sightings: a.sightings, first: this.clock.timestamp(a.firstNs), last: this.clock.timestamp(a.lastNs) },
      sequence: ++this.sequence,
      monotonicNs: a.lastNs,
    };
  }
}
