import type { KubeConfig } from '@kubernetes/client-node';
import { z } from 'zod';
import { DEFAULT_ADMISSION_LIMITS } from '../collector/admission.js';
import { Collector } from '../collector/collector.js';
import { flag, hostPort, parseFlags, UsageError } from '../common/config.js';
import { duration } from '../common/duration.js';
import { TlsFilesError } from '../common/grpc/tls.js';
import { inCluster, loadKubeConfig } from '../common/kubeconfig.js';
import { createLogger } from '../common/log.js';
import { refuseTlsWithPlaintext, usageErrorOf } from './client-tls.js';

export const summary = `icmpwatch collector --listen HOST:PORT [flags]
  Receives the events of every node's agent and serves them to subscribers (gRPC).

  --listen HOST:PORT          gRPC address for subscribers, and agents without --ingest-listen (required)
  --ingest-listen HOST:PORT   gRPC address for agents only (Ingest; with TLS, client certificates asked for)
 transport (one of the two):
  --tls-cert FILE, --tls-key FILE  the collector's certificate and key (PEM; re-read when they change)
  --tls-agent-ca FILE         CA of the agents' client certificates; agents publish only with one
                              whose subject is CN=icmpwatch-agent
  --insecure-plaintext        no TLS at all: anyone who reaches the collector can publish (development)
  --metrics-addr HOST:PORT    /metrics, /healthz, /readyz
  --data-dir DIR              keep the history in append-only files there (survives restarts)
  --history-events N          history bound by count (default 100000)
  --history-age DURATION      history bound by age (default 1h)
  --history-bytes N           history bound by encoded size (default 268435456)
  --subscriber-queue N        records queued per slow subscriber before dropping (default 10000)
  --max-subscribers N         concurrent Subscribe streams (default 256)
  --max-subscribers-per-peer N
                              of them from one client address (default 64)
  --max-requests-per-second N
                              Observer calls per second from one client address (default 100)
 subscriber access (bearer tokens checked with TokenReview + SubjectAccessReview, see README):
  --authorization kubernetes|off  off: every client reads everything (development only; logged)
  --kubeconfig PATH           the API server to ask (default in a pod: its service account)
  --authorization-cache DURATION  how long answers are reused; a revoked binding stops delivery
                              within it (default 15s)`;

export const schema = z.object({
  listen: hostPort(),
  ingestListen: hostPort().optional(),
  tlsCert: z.string().min(1).optional(),
  tlsKey: z.string().min(1).optional(),
  tlsAgentCa: z.string().min(1).optional(),
  insecurePlaintext: flag(),
  metricsAddr: hostPort().optional(),
  dataDir: z.string().min(1).optional(),
  historyEvents: z.coerce.number().int().positive().default(100_000),
  historyAge: duration().prefault('1h'),
  historyBytes: z.coerce.number().int().min(1 << 20).default(256 << 20),
  subscriberQueue: z.coerce.number().int().positive().default(10_000),
  maxSubscribers: z.coerce.number().int().positive().default(DEFAULT_ADMISSION_LIMITS.maxSubscribers),
  maxSubscribersPerPeer: z.coerce.number().int().positive().default(DEFAULT_ADMISSION_LIMITS.maxSubscribersPerPeer),
  maxRequestsPerSecond: z.coerce.number().int().positive().default(DEFAULT_ADMISSION_LIMITS.requestsPerSecond),
  authorization: z.enum(['kubernetes', 'off']).default('kubernetes'),
  kubeconfig: z.string().min(1).optional(),
  authorizationCache: duration()
    .prefault('15s')
    .refine((ms) => ms >= 1000 && ms <= 300_000, 'must be between 1s and 5m'),
});

export async function run(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, schema, ['insecurePlaintext']);
  refuseTlsWithPlaintext(flags.insecurePlaintext, { '--tls-cert': flags.tlsCert, '--tls-key': flags.tlsKey, '--tls-agent-ca': flags.tlsAgentCa });
  const tls = flags.tlsCert && flags.tlsKey && flags.tlsAgentCa ? { certFile: flags.tlsCert, keyFile: flags.tlsKey, agentCaFile: flags.tlsAgentCa } : null;
  if (!tls && !flags.insecurePlaintext) {
    throw new UsageError('--tls-cert, --tls-key and --tls-agent-ca are required together (or --insecure-plaintext, development only, for no TLS)');
  }
  const log = createLogger('collector');
  if (flags.authorization === 'kubernetes' && !flags.kubeconfig && !inCluster()) {
    throw new UsageError('--authorization: kubernetes needs the API server: run in a pod with a service account, pass --kubeconfig, or --authorization=off (development only)');
  }
  let access: { kubeConfig: KubeConfig; cacheTtlMs: number } | null = null;
  if (flags.authorization === 'kubernetes') {
    try {
      access = { kubeConfig: loadKubeConfig(flags.kubeconfig ?? null), cacheTtlMs: flags.authorizationCache };
    } catch (err) {
      throw new UsageError(`${flags.kubeconfig ? '--kubeconfig' : '--authorization'}: cannot load the API server's configuration: ${(err as Error).message}`);
    }
  }
  const start = Collector.start({
    listen: flags.listen,
    ingestListen: flags.ingestListen ?? null,
    tls,
    metricsAddr: flags.metricsAddr ?? null,
    dataDir: flags.dataDir ?? null,
    historyEvents: flags.historyEvents,
    historyAgeMs: flags.historyAge,
    historyBytes: flags.historyBytes,
    subscriberQueue: flags.subscriberQueue,
    limits: { maxSubscribers: flags.maxSubscribers, maxSubscribersPerPeer: flags.maxSubscribersPerPeer, requestsPerSecond: flags.maxRequestsPerSecond },
    access,
    log,
  });
  const collector = await start.catch((err: unknown) => {
    if (err instanceof TlsFilesError) throw usageErrorOf(err, '--tls-agent-ca');
    throw err;
  });
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      log.info({ signal }, 'signal received');
      collector.stop().then(resolve, (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        resolve();
      });
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  return 0;
}
