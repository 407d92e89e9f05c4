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

/** A claim as held: the object's claimant with its addresses canonical, and its deletion. */
interface Claim<T> extends Claimant<T> {
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
  /**
   * The claims on each address: the claim itself when it is the only one, as for almost every
   * address, else a list with the winner first (kept so on every change: a lookup is one map read).
   * One map entry and no list per address is a good part of the index's memory per pod.
   */
  private readonly byIp = new Map<string, Claim<T> | Claim<T>[]>();
  /** Deleted claims in deletion order; grace is constant, so expiry order is the same. */
  private readonly tombstones: Claim<T>[] = [];

  constructor(private readonly graceMs: number) {}

  lookup(ip: string): Claimant<T> | undefined {
    const claims = this.byIp.get(ip);
    return Array.isArray(claims) ? claims[0] : claims;
  }

  /** Adds or replaces the object's claims (its addresses may have changed). */
  upsert(claimant: Claimant<T>): void {
    const old = this.byUid.get(claimant.uid);
    const ips = [...new Set(claimant.ips.map(canonicalIp))];
    // A literal, not a spread: a spread's object keeps its sixth property out of line (a property array per object).
    const { uid, source, created, value } = claimant;
    const claim: Claim<T> = { uid, source, created, ips, value, deletedAt: null };
    this.byUid.set(claimant.uid, claim);
    if (old) for (const ip of old.ips) this.detach(ip, old);
    for (const ip of ips) this.attach(ip, claim);
  }

  /** The object left the API (or stopped holding addresses): keep it resolvable for the grace period. */
  remove(uid: string, now: number): void {
    const claim = this.byUid.get(uid);
    if (!claim || claim.deletedAt !== null) return;
    claim.deletedAt = now;
    this.tombstones.push(claim);
    for (const ip of claim.ips) {
      const claims = this.byIp.get(ip);
      if (Array.isArray(claims)) electFirst(claims);
    }
  }

  /**
   * After a relist of `source`: the listed objects are the truth, so every live claim of that
   * source not among `present` is removed (its delete event was missed).
   */
  retainOnly(source: Source, present: ReadonlySet<string>, now: number): void {
    for (const [uid, claim] of this.byUid) {
      if (claim.source === source && claim.deletedAt === null && !present.has(uid)) this.remove(uid, now);
    }
  }

  /** Drops deleted claims whose grace period is over. */
  sweep(now: number): void {
    while (this.tombstones.length && this.tombstones[0].deletedAt! + this.graceMs <= now) {
      const claim = this.tombstones.shift()!;
      // A deleted object that came back (same uid re-listed) has a new claim object.
      if (this.byUid.get(claim.uid) !== claim) continue;
      this.byUid.delete(claim.uid);
      for (const ip of claim.ips) this.detach(ip, claim);
    }
  }

  /** Addresses whose current winner comes from each source. */
  sizes(): Record<Source, number> {
    const out: Record<Source, number> = { pod: 0, node: 0, hostNetwork: 0, service: 0 };
    for (const claims of this.byIp.values()) out[(Array.isArray(claims) ? claims[0]! : claims).source]++;
    return out;
  }

  /** Objects held (live and in their grace period). */
  get objects(): number {
    return this.byUid.size;
  }

  private attach(ip: string, claim: Claim<T>): void {
    const claims = this.byIp.get(ip);
    if (claims === undefined) return void this.byIp.set(ip, claim);
    const list = Array.isArray(claims) ? claims : [claims];
    list.push(claim);
    electFirst(list);
    if (list !== claims) this.byIp.set(ip, list);
  }

  private detach(ip: string, claim: Claim<T>): void {
    const claims = this.byIp.get(ip);
    if (claims === claim) return void this.byIp.delete(ip);
    if (!Array.isArray(claims)) return;
    const i = claims.indexOf(claim);
    if (i < 0) return;
    claims.splice(i, 1);
    if (claims.length === 1) this.byIp.set(ip, claims[0]!);
    else electFirst(claims);
  }
}

/** Moves the winner of the claims to the front. */
function electFirst<T>(claims: Claim<T>[]): void {
  let best = 0;
  for (let i = 1; i < claims.length; i++) if (better(claims[i]!, claims[best]!)) best = i;
  if (best !== 0) [claims[0], claims[best]] = [claims[best]!, claims[0]!];
}

function better<T>(a: Claim<T>, b: Claim<T>): boolean {
  const rank = SOURCES.indexOf(a.source) - SOURCES.indexOf(b.source);
  if (rank !== 0) return rank < 0;
  if ((a.deletedAt === null) !== (b.deletedAt === null)) return a.deletedAt === null;
  if (a.created !== b.created) return a.created > b.created;
  // Same second of creation: any stable order keeps the answer from flapping.
  return a.uid > b.uid;
}

/** The text form packets are decoded to (lower-case, compressed IPv6). */
export function canonicalIp(ip: string): string {
  return isIP(ip) === 6 ? new URL(`http://[${ip}]`).hostname.slice(1, -1) : ip;
}
