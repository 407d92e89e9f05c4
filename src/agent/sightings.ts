import { isEcho, type CapturedPacket } from './probe/decoder.js';
import type { Ownership } from './netns-addresses.js';
import { FLAG_BITS } from './probe/event-layout.js';

/** Packets whose IP header failed validation carry no trustworthy identity: never merged. */
const UNVALIDATED = FLAG_BITS['bad-version'] | FLAG_BITS['bad-ihl'] | FLAG_BITS['bad-length'] | FLAG_BITS['exthdr-limit'];
/** Packets whose ICMP header was not read: their type, code, echo id/seq are zeros, not values. */
const NO_ICMP_HEADER = FLAG_BITS.fragment | FLAG_BITS.nonlinear | FLAG_BITS.truncated | FLAG_BITS['vlan-unsupported'];

/**
 * Whether the merge key tells this packet apart from the next one between the same pair: an IP
 * id (IPv4, or an IPv6 fragment header), an echo id/seq, or the header an error quotes. Without one
 * (an undecoded IPv6 packet, neighbour discovery) two packets of one length would look like one.
 */
function identifiable(p: CapturedPacket): boolean {
  if (p.family === 0) return false;
  if (p.ipId !== 0) return true;
  if (p.flags & NO_ICMP_HEADER) return false;
  return isEcho(p) || p.quoted !== null;
}

export type ObservationPointName = 'destination' | 'host' | 'forwarded' | 'unknown';

/** A packet reported once, from the sighting that best shows where it went. */
export interface ReportedPacket {
  packet: CapturedPacket;
  point: ObservationPointName;
  sightings: number;
}

interface Pending {
  best: CapturedPacket;
  point: ObservationPointName;
  sightings: number;
  seenAt: number;
}

export interface SightingsOptions {
  /** How long a sighting on the way waits for the same packet at its destination. */
  holdMs: number;
  /**
   * How long, at least, a reported packet is remembered so later sightings are merged, not reported
   * again (a packet can wait ~1 s in the node for neighbour resolution before reaching its pod);
   * at most twice that, which maxPending must cover at the rates the agent takes.
   */
  rememberMs: number;
  /** Bound on packets tracked at once; past it packets are reported without merging. */
  maxPending: number;
  owns: (netns: number, ip: string) => Ownership;
  hostNetns: () => number;
  report: (r: ReportedPacket) => void;
}

/**
 * A packet is seen once per network namespace it enters (node, then pod). Sightings of one
 * packet share its identity (addresses, IP id, ICMP header and quote, fragment, length; not the
 * TTL); packets whose identity cannot tell them from the next one are reported unmerged.
 * A sighting at the destination is reported at once; one on the way is held `holdMs` in case the
 * destination's sighting follows, which then replaces it. Sightings within `rememberMs` of the
 * first only count.
 */
export class SightingMerger {
  /** Packets seen only on the way so far, in arrival order. */
  private readonly held = new Map<string, Pending>();
  /**
   * Packets already reported, in two generations swapped every rememberMs: a packet is remembered
   * for rememberMs to twice that, and forgetting costs one swap, not a delete per packet.
   */
  private recent = new Set<string>();
  private older = new Set<string>();
  private rotatedAt = Date.now();
  private readonly timer: NodeJS.Timeout;
  overflowed = 0;
  merged = 0;

  constructor(private readonly opts: SightingsOptions) {
    this.timer = setInterval(() => this.expire(Date.now()), Math.max(5, opts.holdMs / 2));
    this.timer.unref();
  }

  private classify(p: CapturedPacket): ObservationPointName {
    switch (this.opts.owns(p.netns, p.dst)) {
      case 'local':
        return p.netns === this.opts.hostNetns() ? 'host' : 'destination';
      case 'remote':
        return 'forwarded';
      default:
        return 'unknown';
    }
  }

  add(p: CapturedPacket): void {
    const point = this.classify(p);
    if (p.flags & UNVALIDATED || !identifiable(p)) {
      this.opts.report({ packet: p, point, sightings: 1 });
      return;
    }
    const q = p.quoted;
    const quote = q ? `${q.protocol}|${q.src}|${q.dst}|${q.sport}|${q.dport}` : '';
    const key = `${p.family}|${p.src}|${p.dst}|${p.ipId}|${p.type}|${p.code}|${p.echoId}|${p.echoSeq}|${p.fragOff}|${p.totLen}|${quote}`;
    if (this.recent.has(key) || this.older.has(key)) {
      this.merged++;
      return;
    }
    const atDestination = point === 'destination' || point === 'host';
    const waiting = this.held.get(key);
    if (waiting) {
      waiting.sightings++;
      this.merged++;
      // The latest hop on the way is the closest to the destination.
      waiting.best = p;
      waiting.point = point;
      if (atDestination) this.reportHeld(key, waiting);
      return;
    }
    if (this.held.size + this.recent.size + this.older.size >= this.opts.maxPending) {
      this.overflowed++;
      this.opts.report({ packet: p, point, sightings: 1 });
      return;
    }
    if (atDestination) {
      this.recent.add(key);
      this.opts.report({ packet: p, point, sightings: 1 });
    } else {
      this.held.set(key, { best: p, point, sightings: 1, seenAt: Date.now() });
    }
  }

  private reportHeld(key: string, e: Pending): void {
    this.held.delete(key);
    this.recent.add(key);
    this.opts.report({ packet: e.best, point: e.point, sightings: e.sightings });
  }

  /** Reports packets held longer than holdMs; forgets reported ones older than rememberMs (to twice that). */
  private expire(now: number): void {
    const holdCutoff = now - this.opts.holdMs;
    for (const [key, e] of this.held) {
      if (e.seenAt > holdCutoff) break;
      this.reportHeld(key, e);
    }
    if (now - this.rotatedAt >= this.opts.rememberMs) {
      this.older = this.recent;
      this.recent = new Set();
      this.rotatedAt = now;
    }
  }

  /** Reports everything still held (shutdown). */
  flush(): void {
    clearInterval(this.timer);
    for (const [key, e] of this.held) this.reportHeld(key, e);
    this.recent.clear();
    this.older.clear();
  }
}
