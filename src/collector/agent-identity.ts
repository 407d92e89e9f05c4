// Which clients may publish (Ingest) when the collector runs with TLS: those presenting a client
// certificate that chains to the agent CA (--tls-agent-ca) and whose subject Common Name is
// `icmpwatch-agent`. The Common Name, because every way the chart issues certificates can set it
// (helm's genSignedCert sets only the CN and DNS names; cert-manager and openssl set anything) and
// because a collector or subscriber certificate from the same CA then cannot publish. The handshake
// does not require a certificate (see WatchedTlsFiles.serverCredentials): the refusal is a gRPC status
// here, logged and counted, so a misconfigured agent is visible on both sides.
import { status, type ServerDuplexStream } from '@grpc/grpc-js';
import type { Logger } from '../common/log.js';
import type { CollectorMetrics } from './metrics.js';
import { statusError } from './status-error.js';

export const AGENT_COMMON_NAME = 'icmpwatch-agent';

type AuthContext = ReturnType<ServerDuplexStream<unknown, unknown>['getAuthContext']>;

export type AgentRefusal = { reason: 'no_certificate' | 'not_agent'; code: status; message: string };

/** Null when the peer is an agent; otherwise why not. */
export function refuseNonAgent(auth: AuthContext): AgentRefusal | null {
  // grpc-js sets the peer certificate only when the TLS layer verified it against the CA.
  const cert = auth.sslPeerCertificate;
  if (!cert) {
    return {
      reason: 'no_certificate',
      code: status.UNAUTHENTICATED,
      message: 'agents must present a client certificate signed by the collector\'s agent CA (none was presented, or it did not verify)',
    };
  }
  const cn = cert.subject?.CN;
  if (cn !== AGENT_COMMON_NAME) {
    return {
      reason: 'not_agent',
      code: status.PERMISSION_DENIED,
      message: `client certificate CN=${JSON.stringify(cn ?? '')} is not an agent's (CN=${AGENT_COMMON_NAME})`,
    };
  }
  return null;
}

/** Refuses the call unless it comes from an agent: counted, logged, and ended with the status. */
export function admitAgent(call: ServerDuplexStream<unknown, unknown>, metrics: CollectorMetrics, log: Logger): boolean {
  const refusal = refuseNonAgent(call.getAuthContext());
  if (!refusal) return true;
  metrics.ingestRefused.inc({ reason: refusal.reason });
  log.warn({ peer: call.getPeer(), reason: refusal.reason, detail: refusal.message }, 'agent refused: Ingest needs an agent client certificate');
  call.emit('error', statusError(refusal.code, refusal.message));
  return false;
}
