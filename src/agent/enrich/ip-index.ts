import { isIP } from 'node:net';

/**
 * Where a claim on an address comes from, in the order a lookup prefers them: a pod's own IP names
 * the pod; a Node's addresses name the node; a hostNetwork pod's IP is its node's (used when no
 * Node object lists it); a Service's ClusterIP names the Service.
 */
export const SOURCES = ['pod', 'node', 'hostNetwork', 'service'] as const;
export type Source = (typeof SOURCES)[number];

/** One object's claim on its addresses. */
export interface Claimant<T> {
  /** The object's uid: claims are added and removed by uid, never by name. */
  uid: string;
  source: Source;
  /** Creation time (ms): among live claims of one source the newest wins. */
  created: number;
  ips: readonly string[];
  value: T;
}

interface Claim<T> {
  claimant: Claimant<T>;
  /** When the object left the API (ms); it stays resolvable until deletedAt + grace. */
  deletedAt: number | null;
}

/**
 * Address -> object, with the rules that keep IP reuse and racing events right:
 * several objects may claim one address (a pod not yet seen as deleted and its IP's next owner);
 * the winner is chosen by source, then live over deleted, then newest; removing an object drops
 * only its own claims, so a late delete of an address's previous owner cannot remove the new one;
 * a removed object stays resolvable for `graceMs` so that late packets are still named.
 */
export class IpIndex<T> {
  private readonly byUid = new Map<string, Claim<T>>();
  private readonly byIp = new Map<string, Claim<T>[]>();
  /** The winner per address, kept up to date on every change so lookups are one map read. */
  private readonly winners = new Map<string, Claimant<T>>();
  /** Deleted claims in deletion order; grace is constant, so expiry order is the same. */
  private readonly tombstones: Claim<T>[] = [];

  constructor(private readonly graceMs: number) {}

  lookup(ip: string): Claimant<T> | undefined {
    return this.winners.get(ip);
  }

  /** Adds or replaces the object's claims (its addresses may have changed). */
  upsert(claimant: Claimant<T>): void {
    const old = this.byUid.get(claimant.uid);
    const ips = [...new Set(claimant.ips.map(canonicalIp))];
    const claim: Claim<T> = { claimant: { ...claimant, ips }, deletedAt: null };
    this.byUid.set(claimant.uid, claim);
    const touched = new Set(ips);
    if (old) {
      for (const ip of old.claimant.ips) {
        this.detach(ip, old);
        touched.add(ip);
      }
    }
    for (const ip of ips) {
      const list = this.byIp.get(ip);
      if (list) list.push(claim);
      else this.byIp.set(ip, [claim]);
    }
    for (const ip of touched) this.elect(ip);
  }

  /** The object left the API (or stopped holding addresses): keep it resolvable for the grace period. */
  remove(uid: string, now: number): void {
    const claim = this.byUid.get(uid);
    if (!claim || claim.deletedAt !== null) return;
    claim.deletedAt = now;
    this.tombstones.push(claim);
    for (const ip of claim.claimant.ips) this.elect(ip);
  }

  /**
   * After a relist of `source`: the listed objects are the truth, so every live claim of that
   * source not among `present` is removed (its delete event was missed).
   */
  retainOnly(source: Source, present: ReadonlySet<string>, now: number): void {
    for (const [uid, claim] of this.byUid) {
      if (claim.claimant.source === source && claim.deletedAt === null && !present.has(uid)) this.remove(uid, now);
    }
  }

  /** Drops deleted claims whose grace period is over. */
  sweep(now: number): void {
    while (this.tombstones.length && this.tombstones[0].deletedAt! + this.graceMs <= now) {
      const claim = this.tombstones.shift()!;
      // A deleted object that came back (same uid re-listed) has a new claim object.
      if (this.byUid.get(claim.claimant.uid) !== claim) continue;
      this.byUid.delete(claim.claimant.uid);
      for (const ip of claim.claimant.ips) {
        this.detach(ip, claim);
        this.elect(ip);
      }
    }
  }

  /** Addresses whose current winner comes from each source. */
  sizes(): Record<Source, number> {
    const out: Record<Source, number> = { pod: 0, node: 0, hostNetwork: 0, service: 0 };
    for (const c of this.winners.values()) out[c.source]++;
    return out;
  }

  /** Objects held (live and in their grace period). */
  get objects(): number {
    return this.byUid.size;
  }

  private detach(ip: string, claim: Claim<T>): void {
    const list = this.byIp.get(ip);
    if (!list) return;
    const i = list.indexOf(claim);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.byIp.delete(ip);
  }

  private elect(ip: string): void {
    let best: Claim<T> | null = null;
    for (const c of this.byIp.get(ip) ?? []) if (!best || better(c, best)) best = c;
    if (best) this.winners.set(ip, best.claimant);
    else this.winners.delete(ip);
  }
}

function better<T>(a: Claim<T>, b: Claim<T>): boolean {
  const rank = SOURCES.indexOf(a.claimant.source) - SOURCES.indexOf(b.claimant.source);
  if (rank !== 0) return rank < 0;
  if ((a.deletedAt === null) !== (b.deletedAt === null)) return a.deletedAt === null;
  if (a.claimant.created !== b.claimant.created) return a.claimant.created > b.claimant.created;
  // Same second of creation: any stable order keeps the answer from flapping.
  return a.claimant.uid > b.claimant.uid;
}

/** The text form packets are decoded to (lower-case, compressed IPv6). */
export function canonicalIp(ip: string): string {
  return isIP(ip) === 6 ? new URL(`http://[${ip}]`).hostname.slice(1, -1) : ip;
}
