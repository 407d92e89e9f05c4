// Each record's SubscribeResponse bytes for SubscribeBatches streams, encoded once for all of them:
// the hub hands the same response object to every follower, and followers that keep up take it
// within moments of each other. Bounded to the most recently encoded records; an older one (a
// history replay, a subscriber far behind) is encoded again.
import { icmpwatch } from '../common/proto.js';

type Response = icmpwatch.v1.ISubscribeResponse;

export class ResponseEncodings {
  private readonly recent = new Map<Response, Uint8Array>();
  /**
   * The keys in the order encoded, a ring: the oldest is evicted from here, since finding a Map's
   * first key walks over the entries deleted before it (quadratic as the cache turns over).
   */
  private readonly order: (Response | undefined)[];
  private next = 0;

  constructor(limit: number) {
    this.order = new Array<Response | undefined>(limit);
  }

  encoded(response: Response): Uint8Array {
    let bytes = this.recent.get(response);
    if (bytes) return bytes;
    bytes = icmpwatch.v1.SubscribeResponse.encode(response).finish();
    const evicted = this.order[this.next];
    if (evicted) this.recent.delete(evicted);
    this.order[this.next] = response;
    this.next = (this.next + 1) % this.order.length;
    this.recent.set(response, bytes);
    return bytes;
  }
}
