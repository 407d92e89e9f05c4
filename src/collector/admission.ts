// Limits on subscribers: Observer calls per second per client address (a token bucket: a burst of
// one second's worth), checked before a call does any work, and concurrent Subscribe streams in total
// and per client address, counted once a stream's access is granted. A refusal says which limit and
// which flag sets it.

export interface AdmissionLimits {
  maxSubscribers: number;
  maxSubscribersPerPeer: number;
  /** Observer calls (Subscribe, GetStatus, ListNodes) per second per client address. */
  requestsPerSecond: number;
}

/** Generous for people and dashboards; a loop or a flood of streams from one address is not. */
export const DEFAULT_ADMISSION_LIMITS: AdmissionLimits = { maxSubscribers: 256, maxSubscribersPerPeer: 64, requestsPerSecond: 100 };

export type RefusalReason = 'rate' | 'subscribers' | 'subscribers_per_peer';

export interface Refusal {
  reason: RefusalReason;
  message: string;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
}

/** Client addresses whose buckets are kept before the full (idle) ones are forgotten. */
const MAX_BUCKETS = 4096;

/**
 * "10.0.0.5:41234", "[fd00::5]:41234" -> the address without the port (a client's connections
 * differ by port only); an IPv4 client of a dual-stack listener ("::ffff:10.0.0.5") as itself.
 */
export function peerAddress(peer: string): string {
  const colon = peer.lastIndexOf(':');
  let host = colon > 0 && !peer.endsWith(']') ? peer.slice(0, colon) : peer;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(host) ? host.slice('::ffff:'.length) : host;
}

export class Admission {
  private readonly buckets = new Map<string, Bucket>();
  private readonly subscribersByPeer = new Map<string, number>();
  private subscribers = 0;

  constructor(private readonly limits: AdmissionLimits) {}

  /** Null when one more call from `peer` is within the rate; it then counts. */
  call(peer: string, now = Date.now()): Refusal | null {
    const { requestsPerSecond: rate } = this.limits;
    const address = peerAddress(peer);
    let bucket = this.buckets.get(address);
    if (!bucket) {
      if (this.buckets.size >= MAX_BUCKETS) this.forget(now);
      bucket = { tokens: rate, updatedMs: now };
      this.buckets.set(address, bucket);
    }
    bucket.tokens = Math.min(rate, bucket.tokens + ((now - bucket.updatedMs) / 1000) * rate);
    bucket.updatedMs = now;
    if (bucket.tokens < 1) {
      return { reason: 'rate', message: `rate limit: at most ${rate} Observer calls per second from one client address (--max-requests-per-second)` };
    }
    bucket.tokens--;
    return null;
  }

  /** A Subscribe stream from `peer`: its release function, or why it is refused. */
  subscriber(peer: string): { release: () => void } | Refusal {
    const { maxSubscribers, maxSubscribersPerPeer } = this.limits;
    const address = peerAddress(peer);
    const fromPeer = this.subscribersByPeer.get(address) ?? 0;
    if (this.subscribers >= maxSubscribers) {
      return { reason: 'subscribers', message: `too many subscribers: at most ${maxSubscribers} Subscribe streams (--max-subscribers)` };
    }
    if (fromPeer >= maxSubscribersPerPeer) {
      return {
        reason: 'subscribers_per_peer',
        message: `too many subscribers from ${address}: at most ${maxSubscribersPerPeer} Subscribe streams per client address (--max-subscribers-per-peer)`,
      };
    }
    this.subscribers++;
    this.subscribersByPeer.set(address, fromPeer + 1);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.subscribers--;
        const left = (this.subscribersByPeer.get(address) ?? 1) - 1;
        if (left > 0) this.subscribersByPeer.set(address, left);
        else this.subscribersByPeer.delete(address);
      },
    };
  }

  /**
   * Buckets refilled to the full burst hold nothing a new bucket would not; if all are in use, the
   * longest-kept one goes (its address starts over with a full burst: memory stays bounded).
   */
  private forget(now: number): void {
    const { requestsPerSecond: rate } = this.limits;
    for (const [address, b] of this.buckets) {
      if (b.tokens + ((now - b.updatedMs) / 1000) * rate >= rate) this.buckets.delete(address);
    }
    if (this.buckets.size >= MAX_BUCKETS) this.buckets.delete(this.buckets.keys().next().value!);
  }
}
