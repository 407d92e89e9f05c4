import { randomInt } from 'node:crypto';
import { blankPacket, isEcho, type CapturedPacket } from './probe/decoder.js';
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

/** Multipliers of the two independent 32-bit hashes a packet id is made of. */
const M1 = 0x5bd1e995;
const M2 = 0x27d4eb2f;

/**
 * Seeds drawn per process: a sender who knows the hash cannot craft packets whose ids collide
 * with others' offline, to have them merged away unreported.
 */
const SEEDS = [randomInt(2 ** 32), randomInt(2 ** 32)] as const;

/** The two hashes while a packet id is computed (one pass over the fields feeds both). */
let h1 = 0;
let h2 = 0;

function mix(v: number): void {
  h1 = Math.imul(h1 ^ v, M1);
  h1 ^= h1 >>> 15;
  h2 = Math.imul(h2 ^ v, M2);
  h2 ^= h2 >>> 15;
}

/** Two characters per step: addresses are ASCII, and their text is most of what is hashed. */
function mixString(s: string): void {
  mix(s.length);
  let i = 0;
  for (; i + 1 < s.length; i += 2) mix(s.charCodeAt(i) | (s.charCodeAt(i + 1) << 16));
  if (i < s.length) mix(s.charCodeAt(i));
}

/**
 * A packet's identity as a number: two independent 32-bit hashes of its addresses, IP id, ICMP
 * header and quote, fragment and length (not the TTL), 53 bits of them kept. Unlike a string key
 * it costs no allocation to build or to look up; two different packets share one with
 * probability 2^-53 (a packet is taken for one reported in the last 1-2 s about once in 3e10
 * packets with the table full; counted as a merged sighting).
 */
function packetId(p: CapturedPacket): number {
  h1 = SEEDS[0];
  h2 = SEEDS[1];
  mix(p.family | (p.type << 8) | (p.code << 16));
  mix(p.ipId | (p.fragOff << 16));
  mix(p.echoId | (p.echoSeq << 16));
  mix(p.totLen);
  mixString(p.src);
  mixString(p.dst);
  const q = p.quoted;
  if (q) {
    mix(q.protocol | 0x100);
    mix(q.sport | (q.dport << 16));
    mixString(q.src);
    mixString(q.dst);
  }
  // Never 0: the empty slot of PacketIdSet.
  return (h1 >>> 0) * 2 ** 21 + (h2 >>> 11) || 1;
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

/**
 * A packet reported once, from the sighting that best shows where it went. The merger hands one
 * object over for every report (and the capture path one packet object for every record): valid
 * during the call, copied by whoever keeps it.
 */
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

  /** One sighting; `p` is only read during the call (a packet held for later is copied). */
  add(p: CapturedPacket): void {
    const point = this.classify(p);
    if (p.flags & UNVALIDATED || !identifiable(p)) {
      this.report(p, point, 1);
      return;
    }
    const key = packetId(p);
    if (this.recent.has(key) || this.older.has(key)) {
      this.merged++;
      return;
    }
    const atDestination = point === 'destination' || point === 'host';
    // Most packets are seen once, at their destination, so nothing is held: skipping the lookup
    // also spares boxing the 53-bit key into a heap number for the Map.
    const waiting = this.held.size === 0 ? undefined : this.held.get(key);
    if (waiting) {
      waiting.sightings++;
      this.merged++;
      waiting.point = point;
      // Reported now, or kept: the latest hop on the way is the closest to the destination.
      if (atDestination) {
        waiting.best = p;
        this.reportHeld(key, waiting);
      } else {
        waiting.best = { ...p };
      }
      return;
    }
    if (this.held.size + this.recent.size + this.older.size >= this.opts.maxPending) {
      this.overflowed++;
      this.report(p, point, 1);
      return;
    }
    if (atDestination) {
      this.recent.add(key);
      this.report(p, point, 1);
    } else {
      this.held.set(key, { best: { ...p }, point, sightings: 1, seenAt: Date.now() });
    }
  }

  private readonly reported: ReportedPacket = { packet: blankPacket(), point: 'unknown', sightings: 0 };

  private report(packet: CapturedPacket, point: ObservationPointName, sightings: number): void {
    const r = this.reported;
    r.packet = packet;
    r.point = point;
    r.sightings = sightings;
    this.opts.report(r);
  }

  private reportHeld(key: number, e: Pending): void {
    this.held.delete(key);
    this.recent.add(key);
    this.report(e.best, e.point, e.sightings);
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
