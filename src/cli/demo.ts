import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../agent/agent.js';
import { DEFAULT_OBJECT } from '../agent/probe/probe.js';
import { parseFlags } from '../common/config.js';
import { createLogger } from '../common/log.js';
import { z } from 'zod';
import { DemoNetwork } from './demo-network.js';

export const summary = `icmpwatch demo: two demo pods in network namespaces behind a routed node namespace ping
each other while the agent runs on this kernel and prints the enriched events; everything is
removed afterwards. Needs root.`;

const say = (line: string) => process.stderr.write(`\x1b[1m# ${line}\x1b[0m\n`);

export async function run(argv: string[]): Promise<number> {
  parseFlags(argv, z.object({}));
  const dir = mkdtempSync(join(tmpdir(), 'icmpwatch-demo-'));
  say('creating demo pods a and b (network namespaces) behind a routed node namespace');
  const net = await DemoNetwork.create('routed');
  const stopOnSignal = () => void net.destroy().then(() => process.exit(130));
  process.once('SIGINT', stopOnSignal);
  let agent: Agent | null = null;
  try {
    const a = net.pod('a');
    const b = net.pod('b');
    const endpointsFile = join(dir, 'endpoints.json');
    const endpoint = (pod: typeof a, ip: string) => ({
      ip,
      namespace: 'demo',
      pod: `pod-${pod.name}`,
      labels: { app: `demo-${pod.name}` },
      node: 'demo-node',
      workload: { kind: 'Deployment', name: `demo-${pod.name}` },
    });
    writeFileSync(
      endpointsFile,
      JSON.stringify({ endpoints: [a, b].flatMap((p) => [endpoint(p, p.ipv4), endpoint(p, p.ipv6)]) }, null, 2),
    );
    say(`pod-a = ${a.ipv4} ${a.ipv6}, pod-b = ${b.ipv4} ${b.ipv6}; labelled through ${endpointsFile}`);
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
        holdMs: 50,
      },
      createLogger('agent'),
    );
    say(`agent attached on hook ${agent.probe.hook}; events follow on stdout`);
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
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    await agent?.stop();
    await net.destroy();
    rmSync(dir, { recursive: true, force: true });
    process.off('SIGINT', stopOnSignal);
    say('demo namespaces removed');
  }
  return 0;
}
