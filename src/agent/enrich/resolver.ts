import type { icmpwatch } from '../../common/proto.js';

/**
 * Names an IP address in cluster terms. Implementations answer from memory and never wait:
 * the capture path calls this for both ends of every event. An address gets the same object back
 * while its answer stays the same, and nobody changes that object: the node log and the exporter
 * encode each endpoint once and reuse the bytes while it comes back.
 */
export interface EndpointResolver {
  resolve(ip: string): icmpwatch.v1.IEndpoint;
  /** null when ready, else why not (shown on /readyz). */
  notReadyReason(): string | null;
  close(): void;
}

/**
 * Answers remembered per address with what they were made from (`basis`, compared by identity);
 * all forgotten at once beyond `limit` (a scan or a flood of new addresses) or when the resolver
 * says everything changed.
 */
export class EndpointMemo {
  private readonly answers = new Map<string, { basis: unknown; endpoint: icmpwatch.v1.IEndpoint }>();

  // Answers for unnamed addresses (ip, kind, enrichment): some 2 MiB at most.
  constructor(private readonly limit = 16384) {}

  /** The answer remembered for `ip` if it was made from `basis`. */
  get(ip: string, basis: unknown): icmpwatch.v1.IEndpoint | undefined {
    const known = this.answers.get(ip);
    return known !== undefined && known.basis === basis ? known.endpoint : undefined;
  }

  remember(ip: string, basis: unknown, endpoint: icmpwatch.v1.IEndpoint): icmpwatch.v1.IEndpoint {
    if (this.answers.size >= this.limit) this.answers.clear();
    this.answers.set(ip, { basis, endpoint });
    return endpoint;
  }

  clear(): void {
    this.answers.clear();
  }
}
