// Transport flags: TLS unless --insecure-plaintext says otherwise.
import { z } from 'zod';
import { flag, UsageError } from '../common/config.js';
// Types only: the agent loads gRPC only when it streams to a collector.
import type { ClientTransport, TlsFiles, TlsFilesError } from '../common/grpc/tls.js';

/** Flags of observe and status (subscribers present no certificate: access is by bearer token). */
export const subscriberTlsFlags = {
  tlsCa: z.string().min(1).optional(),
  tlsServerName: z.string().min(1).optional(),
  insecurePlaintext: flag(),
};

export const subscriberTlsUsage = `  --tls-ca FILE          CA of the collector's certificate (PEM; default: the system's roots)
  --tls-server-name NAME the name the collector's certificate carries, when not the --server host
                         (e.g. its Service name through kubectl port-forward)
  --insecure-plaintext   no TLS (a collector started with --insecure-plaintext; development only)`;

const FLAG_OF: Record<keyof TlsFiles, string> = { certFile: '--tls-cert', keyFile: '--tls-key', caFile: '--tls-ca' };

/** The flag a TlsFilesError is about, in a UsageError; the collector names its CA flag otherwise. */
export function usageErrorOf(err: TlsFilesError, caFlag = FLAG_OF.caFile): UsageError {
  return new UsageError(`${err.field === 'caFile' ? caFlag : FLAG_OF[err.field]}: ${err.message}`);
}

/** Refuses TLS flags next to --insecure-plaintext, naming them. */
export function refuseTlsWithPlaintext(insecurePlaintext: boolean, given: Record<string, string | undefined>): void {
  const named = Object.entries(given).flatMap(([name, value]) => (value === undefined ? [] : [name]));
  if (insecurePlaintext && named.length) throw new UsageError(`--insecure-plaintext: cannot be combined with ${named.join(', ')}`);
}

export async function subscriberTransport(flags: { tlsCa?: string | undefined; tlsServerName?: string | undefined; insecurePlaintext: boolean }): Promise<ClientTransport> {
  refuseTlsWithPlaintext(flags.insecurePlaintext, { '--tls-ca': flags.tlsCa, '--tls-server-name': flags.tlsServerName });
  const { plaintextTransport, staticClientTransport, TlsFilesError } = await import('../common/grpc/tls.js');
  if (flags.insecurePlaintext) return plaintextTransport();
  try {
    return staticClientTransport(flags.tlsCa ?? null, flags.tlsServerName ?? null);
  } catch (err) {
    if (err instanceof TlsFilesError) throw usageErrorOf(err);
    throw err;
  }
}
