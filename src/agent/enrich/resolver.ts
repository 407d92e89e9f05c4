import type { icmpwatch } from '../../common/proto.js';

/**
 * Names an IP address in cluster terms. Implementations answer from memory and never wait:
 * the capture path calls this for both ends of every event.
 */
export interface EndpointResolver {
  resolve(ip: string): icmpwatch.v1.IEndpoint;
  /** null when ready, else why not (shown on /readyz). */
  notReadyReason(): string | null;
  close(): void;
}
