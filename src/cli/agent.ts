import { hostname } from 'node:os';
import { z } from 'zod';
import { flag, parseFlags, hostPort, UsageError } from '../common/config.js';
import type { ClientTransport, WatchedTlsFiles } from '../common/grpc/tls.js';
import { createLogger, type Logger } from '../common/log.js';
import { Agent } from '../agent/agent.js';
import { DEFAULT_OBJECT, ProbeError } from '../agent/probe/probe.js';
import { EndpointsFileError } from '../agent/enrich/endpoints-file.js';
import { MissingBtfError } from '../agent/probe/kernel-features.js';
import { refuseTlsWithPlaintext, usageErrorOf } from './client-tls.js';

export const summary = `icmpwatch agent: capture ICMP/ICMPv6 on this node and print one line per event

  --node-name NAME          node name (default: $NODE_NAME, then the hostname)
  --probe auto|fexit|kretprobe|tracepoint
                            hook to attach; auto tries fexit, kretprobe, then the tracepoint
  --btf PATH                BTF for kernels without /sys/kernel/btf/vmlinux (CO-RE; kretprobe and raw_tp only)
  --log-format text|json    event lines on stdout (operational logs are JSON on stderr)
  --metrics-addr HOST:PORT  serve /healthz /readyz /metrics (default :9090; "off" to disable)
  --kubeconfig PATH         name addresses from this cluster (default in a pod: its service account)
  --endpoints-file FILE     JSON {"endpoints":[{"ip","namespace","pod",...}]} naming addresses; reloaded on change
  --events-per-second N     per-node limit before packets are only counted in-kernel (default 10000; 0 = none)
  --ring-bytes N            BPF ring buffer size, a power of two up to 1 GiB (default 4194304)
  --collector HOST:PORT     stream events to the collector (the node log keeps printing when it is down)
  --tls-ca FILE             with --collector: CA of the collector's certificate (PEM)
  --tls-cert FILE           this agent's client certificate (subject CN=icmpwatch-agent) and key (PEM);
  --tls-key FILE            all three files are re-read when they change (rotation without a restart)
  --tls-server-name NAME    the name the collector's certificate carries, when not the --collector host
  --insecure-plaintext      with --collector: no TLS (a collector started so; development only)
  --export-buffer-events N  unacknowledged events kept for the collector (default 100000), then the oldest
  --export-buffer-bytes N   are dropped, counted and announced (default 67108864)
  --bpf-object PATH         the compiled BPF object (default: build/bpf/icmpwatch.bpf.o)`;

export const Flags = z.object({
  nodeName: z.string().min(1).optional(),
  probe: z.enum(['auto', 'fexit', 'kretprobe', 'tracepoint']).default('auto'),
  btf: z.string().min(1).optional(),
  logFormat: z.enum(['text', 'json']).default('text'),
  metricsAddr: z.union([z.literal('off'), hostPort()]).default(':9090'),
  endpointsFile: z.string().min(1).optional(),
  kubeconfig: z.string().min(1).optional(),
  eventsPerSecond: z.coerce.number().int().min(0).default(10000),
  ringBytes: z.coerce
    .number()
    .int()
    .min(4096)
    // The reader keeps ring offsets in 32-bit integer arithmetic.
    .max(2 ** 30)
    // Not n & (n - 1): bitwise operators see only the low 32 bits (2^32 + 2^31 would pass).
    .refine((n) => 2 ** Math.round(Math.log2(n)) === n, 'must be a power of two')
    .default(4 * 1024 * 1024),
  bpfObject: z.string().default(DEFAULT_OBJECT),
  holdMs: z.coerce.number().int().min(0).max(1000).default(50),
  collector: hostPort().optional(),
  tlsCa: z.string().min(1).optional(),
  tlsCert: z.string().min(1).optional(),
  tlsKey: z.string().min(1).optional(),
  tlsServerName: z.string().min(1).optional(),
  insecurePlaintext: flag(),
  exportBufferEvents: z.coerce.number().int().min(1).default(100_000),
  exportBufferBytes: z.coerce.number().int().min(4096).default(64 << 20),
});

export async function run(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, Flags, ['insecurePlaintext']);
  const log = createLogger('agent');
  const tls = await collectorTls(flags, log);
  let agent: Agent;
  try {
    agent = await Agent.start(
      {
        node: flags.nodeName ?? process.env.NODE_NAME ?? hostname(),
        hook: flags.probe,
        objectPath: flags.bpfObject,
        btfPath: flags.btf ?? null,
        ringBytes: flags.ringBytes,
        eventsPerSecond: flags.eventsPerSecond,
        logFormat: flags.logFormat,
        metricsAddr: flags.metricsAddr === 'off' ? null : flags.metricsAddr,
        endpointsFile: flags.endpointsFile ?? null,
        kubeconfig: flags.kubeconfig ?? null,
        holdMs: flags.holdMs,
        collector: flags.collector ?? null,
        collectorTransport: tls?.transport,
        exportBufferEvents: flags.exportBufferEvents,
        exportBufferBytes: flags.exportBufferBytes,
      },
      log,
    );
  } catch (err) {
    if (err instanceof EndpointsFileError) throw new UsageError(`--endpoints-file: ${err.message}`);
    if (err instanceof MissingBtfError) throw new UsageError(err.message);
    if (err instanceof ProbeError) {
      log.error({ attempts: err.attempts }, err.message);
      process.stderr.write(`icmpwatch agent: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'stopping');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  const deadline = setTimeout(() => {
    log.error('shutdown took longer than 5 s; exiting');
    process.exit(1);
  }, 5000);
  await agent.stop();
  tls?.files.close();
  clearTimeout(deadline);
  return 0;
}

/**
 * The collector connection's TLS: CA, client certificate and key together, or --insecure-plaintext
 * said out loud; null without --collector or with plaintext.
 */
async function collectorTls(flags: z.infer<typeof Flags>, log: Logger): Promise<{ transport: ClientTransport; files: WatchedTlsFiles } | null> {
  const given = { '--tls-ca': flags.tlsCa, '--tls-cert': flags.tlsCert, '--tls-key': flags.tlsKey, '--tls-server-name': flags.tlsServerName };
  refuseTlsWithPlaintext(flags.insecurePlaintext, given);
  if (!flags.collector) {
    const stray = Object.entries({ ...given, '--insecure-plaintext': flags.insecurePlaintext || undefined }).find(([, v]) => v !== undefined);
    if (stray) throw new UsageError(`${stray[0]}: only with --collector`);
    return null;
  }
  if (flags.insecurePlaintext) {
    log.warn({ collector: flags.collector }, 'PLAINTEXT: NO TLS to the collector (--insecure-plaintext): events cross the network readable and the collector cannot tell this agent from anyone (development only)');
    return null;
  }
  if (!flags.tlsCa || !flags.tlsCert || !flags.tlsKey) {
    throw new UsageError('--collector: needs --tls-ca, --tls-cert and --tls-key (or --insecure-plaintext, development only, for no TLS)');
  }
  // gRPC is loaded only when a collector is used (seconds of start-up on slow machines).
  const { WatchedTlsFiles, TlsFilesError } = await import('../common/grpc/tls.js');
  try {
    const files = await WatchedTlsFiles.open({ caFile: flags.tlsCa, certFile: flags.tlsCert, keyFile: flags.tlsKey }, log);
    return { files, transport: { credentials: files.channelCredentials(), serverName: flags.tlsServerName ?? null } };
  } catch (err) {
    if (err instanceof TlsFilesError) throw usageErrorOf(err);
    throw err;
  }
}
