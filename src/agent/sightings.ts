import { randomInt } from 'node:crypto';
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
 * The flood limit counts packets by the same rule and key: bpf/icmpwatch.bpf.c identifiable().
 */
function identifiable(p: CapturedPacket): boolean {
  if (p.family === 0) return false;
  if (p.ipId !== 0) return true;
  if (p.flags & NO_ICMP_HEADER) return false;
  return isEcho(p) || p.quoted !== null;
}

/** One step of a 32-bit multiplicative hash (two multipliers make two independent hashes). */
function mix(h: number, v: number, multiplier: number): number {
  h = Math.imul(h ^ v, multiplier);
  return h ^ (h >>> 15);
}

function mixString(h: number, s: string, multiplier: number): number {
  h = mix(h, s.length, multiplier);
  for (let i = 0; i < s.length; i++) h = mix(h, s.charCodeAt(i), multiplier);
  return h;
}

/** A 32-bit hash of a packet's identity: addresses, IP id, ICMP header and quote, fragment, length; not the TTL. */
function identityHash(p: CapturedPacket, seed: number, multiplier: number): number {
  let h = mix(seed, p.family | (p.type << 8) | (p.code << 16), multiplier);
  h = mix(h, p.ipId | (p.fragOff << 16), multiplier);
  h = mix(h, p.echoId | (p.echoSeq << 16), multiplier);
  h = mix(h, p.totLen, multiplier);
  h = mixString(h, p.src, multiplier);
  h = mixString(h, p.dst, multiplier);
  const q = p.quoted;
  if (q) {
    h = mix(h, q.protocol | 0x100, multiplier);
    h = mix(h, q.sport | (q.dport << 16), multiplier);
    h = mixString(h, q.src, multiplier);
    h = mixString(h, q.dst, multiplier);
  }
  return h;
}

/**
 * Seeds drawn per process: a sender who knows the hash cannot craft packets whose ids collide
 * with others' offline, to have them merged away unreported.
 */
const SEEDS = [randomInt(2 ** 32), randomInt(2 ** 32)] as const;

/**
 * A packet's identity as a number: two independent 32-bit hashes, 53 bits of them kept. Unlike the
 * string key it replaces it costs no allocation to build or to look up; two different packets
 * share one with probability 2^-53 (a packet is taken for one reported in the last 1-2 s about
 * once in 3e10 packets with the table full; counted as a merged sighting).
 */
function packetId(p: CapturedPacket): number {
  // Never 0: the empty slot of PacketIdSet.
  return (identityHash(p, SEEDS[0], 0x5bd1e995) >>> 0) * 2 ** 21 + (identityHash(p, SEEDS[1], 0x27d4eb2f) >>> 11) || 1;
}

/**
 * A set of packet ids in one typed array (open addressing, linear probing): adding allocates
 * nothing and leaves nothing for the garbage collector; clear() is one fill.
 */
class PacketIdSet {
  private readonly slots: Float64Array;
  private readonly mask: number;
  size = 0;

  /** Holds up to `capacity` ids at a load of at most one half. */
  constructor(capacity: number) {
    const slots = 2 ** Math.ceil(Math.log2(Math.max(2, 2 * capacity)));
    this.slots = new Float64Array(slots);
    this.mask = slots - 1;
  }

  has(id: number): boolean {
    for (let i = id & this.mask; ; i = (i + 1) & this.mask) {
      const slot = this.slots[i]!;
      if (slot === id) return true;
      if (slot === 0) return false;
    }
  }

  /** The caller keeps the size within the capacity. */
  add(id: number): void {
    let i = id & this.mask;
    for (; this.slots[i] !== 0; i = (i + 1) & this.mask) if (this.slots[i] === id) return;
    this.slots[i] = id;
    this.size++;
  }

  clear(): void {
    if (this.size === 0) return;
    this.slots.fill(0);
    this.size = 0;
  }
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
  private readonly held = new Map<number, Pending>();
  /**
   * Packets already reported, in two generations swapped every rememberMs: a packet is remembered
   * for rememberMs to twice that, and forgetting costs one swap, not a delete per packet.
   */
  private recent: PacketIdSet;
  private older: PacketIdSet;
  private rotatedAt = Date.now();
  private readonly timer: NodeJS.Timeout;
  overflowed = 0;
  merged = 0;

  constructor(private readonly opts: SightingsOptions) {
    this.recent = new PacketIdSet(opts.maxPending);
    this.older = new PacketIdSet(opts.maxPending);
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
    const key = packetId(p);
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

  private reportHeld(key: number, e: Pending): void {
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
      const forgotten = this.older;
      forgotten.clear();
      this.older = this.recent;
      this.recent = forgotten;
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
