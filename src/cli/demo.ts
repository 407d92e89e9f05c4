import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { Agent } from '../agent/agent.js';
import { DEFAULT_OBJECT } from '../agent/probe/probe.js';
import { DEFAULT_ADMISSION_LIMITS } from '../collector/admission.js';
import { Collector } from '../collector/collector.js';
import { parseFlags } from '../common/config.js';
import { createLogger } from '../common/log.js';
import { DemoNetwork, type DemoPod } from './demo-network.js';

export const summary = `icmpwatch demo: runs the collector and the agent on this kernel while two demo pods in
network namespaces (behind a routed "node" namespace) ping each other, and prints the enriched
stream as a subscriber sees it (\`icmpwatch observe --follow\`). Everything is removed afterwards.
Needs root.

  --node-log   also print the agent's own node log (what \`kubectl logs\` shows)`;

const CLI = fileURLToPath(new URL('../../bin/icmpwatch', import.meta.url));
const say = (line: string) => process.stderr.write(`\x1b[1m# ${line}\x1b[0m\n`);
/** Neighbour discovery and MLD are constant IPv6 background noise; the demo hides them. */
const QUIET_TYPES = ['neighbor-solicitation', 'neighbor-advertisement', 'router-solicitation', 'mld2-report'];

export async function run(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, z.object({ nodeLog: z.boolean().default(false) }), ['nodeLog']);
  process.env.ICMPWATCH_LOG_LEVEL ??= 'warn'; // the event stream is the show
  const dir = mkdtempSync(join(tmpdir(), 'icmpwatch-demo-'));
  say('creating demo pods a and b (network namespaces) behind a routed node namespace');
  const net = await DemoNetwork.create('routed');
  let agent: Agent | null = null;
  let collector: Collector | null = null;
  let observer: ReturnType<typeof spawn> | null = null;
  let cleanup: Promise<void> | null = null;
  /** Once, whether the demo ends or a signal stops it midway. */
  const cleanUp = () =>
    (cleanup ??= (async () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      observer?.kill('SIGINT');
      await agent?.stop();
      await collector?.stop();
      await net.destroy();
      rmSync(dir, { recursive: true, force: true });
      say('demo namespaces removed');
    })());
  // Ctrl-C or `kill`: the same cleanup, then the conventional 128 + signal number.
  const onSignal = (signal: NodeJS.Signals) => void cleanUp().then(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const a = net.pod('a');
    const b = net.pod('b');
    const endpointsFile = join(dir, 'endpoints.json');
    const endpoint = (pod: DemoPod, ip: string) => ({
      ip,
      namespace: 'demo',
      pod: `pod-${pod.name}`,
      labels: { app: `demo-${pod.name}` },
      node: 'demo-node',
      workload: { kind: 'Deployment', name: `demo-${pod.name}` },
    });
    writeFileSync(endpointsFile, JSON.stringify({ endpoints: [a, b].flatMap((p) => [endpoint(p, p.ipv4), endpoint(p, p.ipv6)]) }, null, 2));
    say(`pod-a = ${a.ipv4} ${a.ipv6}, pod-b = ${b.ipv4} ${b.ipv6}; named through ${endpointsFile}`);

    collector = await Collector.start({
      listen: '127.0.0.1:0',
      metricsAddr: null,
      dataDir: join(dir, 'collector'),
      historyEvents: 10_000,
      historyAgeMs: 3_600_000,
      historyBytes: 64 << 20,
      subscriberQueue: 10_000,
      limits: DEFAULT_ADMISSION_LIMITS,
      // Loopback only, torn down on exit: no Kubernetes API to ask, no certificates.
      ingestListen: null,
      tls: null,
      access: null,
      log: createLogger('collector'),
    });
    say(`collector listening on ${collector.address}`);
    agent = await Agent.start(
      {
        node: 'demo-node',
        hook: 'auto',
        objectPath: DEFAULT_OBJECT,
        btfPath: null,
        ringBytes: 1 << 20,
        eventsPerSecond: 10000,
        logFormat: 'text',
        metricsAddr: null,
        endpointsFile,
        kubeconfig: null,
        holdMs: 50,
        collector: collector.address,
        exportBufferEvents: 10_000,
        exportBufferBytes: 16 << 20,
      },
      createLogger('agent'),
      flags.nodeLog ? process.stdout : new Writable({ write: (_chunk, _enc, cb) => cb() }),
    );
    say(`agent attached on hook ${agent.probe.hook} (${agent.probe.symbols.join(', ')}), streaming to the collector`);
    const observeArgs = ['observe', '--server', collector.address, '--insecure-plaintext', '--follow', ...QUIET_TYPES.flatMap((t) => ['--deny-type', t])];
    say(`subscriber: icmpwatch ${observeArgs.join(' ')}`);
    observer = spawn(CLI, observeArgs, { stdio: ['ignore', 'inherit', 'inherit'] });
    await new Promise((r) => setTimeout(r, 500));

    say('pod-a pings pod-b (IPv4), pod-b pings pod-a (IPv6)');
    await net.ping('a', 'b', 4, ['-c', '3', '-i', '0.2']);
    await net.ping('b', 'a', 6, ['-c', '3', '-i', '0.2']);
    say('pod-a sends UDP to a closed port on pod-b: port unreachable');
    await net.exec(a.netns, [
      'python3',
      '-c',
      `import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("${b.ipv4}", 33434))`,
    ]);
    say('pod-a pings pod-b with TTL 1: the node answers time exceeded');
    await net.ping('a', 'b', 4, ['-c', '1', '-t', '1', '-W', '1']).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 800));
  } finally {
    await cleanUp();
  }
  return 0;
}
