// The collector's fan-out alone, without the kernel or the agent: a real `icmpwatch collector`
// (run from src through tsx, so it measures the tree as it is), one exporter (the agent's own)
// publishing synthetic events paced at RATE events/s for SECONDS, and S follow subscribers in one
// helper process (SubscribeBatches, or Subscribe with RPC=Subscribe). Per row: events each subscriber
// got of those published, lost notices, the collector's CPU per published event (/proc/PID/stat).
// No root.
//
//   tsx test/bench/fanout.ts [SUBSCRIBERS ...]    RATE=50000 SECONDS=3 RPC=SubscribeBatches
//                                                 (PROFILE_DIR=D: the collector's V8 CPU profile)
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { CollectorExporter } from '../../src/agent/export/exporter.js';
import { ObserverClient } from '../../src/common/grpc/clients.js';
import { icmpwatch } from '../../src/common/proto.js';
import { silentLog } from '../collector/harness.js';
import { follow, RPC } from './follow.js';
import { NODE, ROOT } from './report.js';

const RATE = Number(process.env.RATE ?? 50_000);
const SECONDS = Number(process.env.SECONDS ?? 3);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function syntheticEvent(seq: number, seconds: number): icmpwatch.v1.IEvent {
  return {
    time: { seconds, nanos: (seq % 1_000_000) * 1000 },
    node: 'bench-node',
    family: icmpwatch.v1.Family.FAMILY_IPV4,
    source: { ip: '10.1.0.2', namespace: 'bench', pod: 'pod-a', enrichment: icmpwatch.v1.Enrichment.ENRICHMENT_RESOLVED },
    destination: { ip: '10.2.0.2', namespace: 'bench', pod: 'pod-b', enrichment: icmpwatch.v1.Enrichment.ENRICHMENT_RESOLVED },
    icmp: { type: 8, code: 0, name: 'echo-request', id: 4242, seq: seq & 0xffff },
    ttl: 63,
    length: 84,
    observation: { hook: icmpwatch.v1.Hook.HOOK_TP_BTF, point: icmpwatch.v1.ObservationPoint.OBSERVATION_POINT_DESTINATION, netns: 4026532001, sightings: 1 },
    sequence: seq,
  };
}

/**
 * Role `subscribers`: S follow streams, each on its own connection as from S machines, counting
 * events and lost notices; prints them on SIGTERM. One process stands in for S subscribers, so it
 * reads records as follow.ts does instead of decoding them (their cost is not the collector's).
 */
async function subscribers(address: string, count: number): Promise<void> {
  const received = new Array<number>(count).fill(0);
  let lostNotices = 0;
  const clients = Array.from({ length: count }, () => new ObserverClient(address, { 'grpc.use_local_subchannel_pool': 1 }));
  const streams = clients.map((client, i) =>
    follow(client, {}, (r) => {
      if (r.kind === 'event') received[i]!++;
      else if (r.kind === 'lost') lostNotices++;
    }).on('error', () => {}),
  );
  process.stdout.write('ready\n');
  await new Promise((r) => process.once('SIGTERM', r));
  for (const s of streams) s.cancel();
  for (const c of clients) c.close();
  process.stdout.write(`${JSON.stringify({ received, lostNotices })}\n`);
  process.exit(0);
}

async function row(count: number): Promise<void> {
  const port = 24000 + (process.pid % 1000) * 4 + count;
  const profile = process.env.PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.PROFILE_DIR}`] : [];
  const collector = spawn(NODE, [...profile, '--import', 'tsx', join(ROOT, 'src/cli/main.ts'), 'collector', '--authorization=off', '--insecure-plaintext',
    '--listen', `127.0.0.1:${port}`, '--history-events', '100000', '--subscriber-queue', '10000'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  const address = `127.0.0.1:${port}`;
  let subs: ChildProcess | null = null;
  try {
    await sleep(4000);
    subs = spawn(NODE, ['--import', 'tsx', join(ROOT, 'test/bench/fanout.ts'), '--subscribers', address, String(count)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    subs.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    while (!out.includes('ready')) await sleep(50);
    await sleep(1000);
    const exporter = new CollectorExporter({
      address, node: 'bench-node', hook: icmpwatch.v1.Hook.HOOK_TP_BTF, symbol: 'netif_receive_skb', log: silentLog, registry: new Registry(),
      maxBufferedEvents: 1_000_000, maxBufferedBytes: 1 << 30, batchSize: 500, batchDelayMs: 100,
      counters: () => ({ events: 0, lost: 0, malformed: 0, suppressed: 0 }),
    });
    while (!exporter.state().connected) await sleep(20);
    const total = RATE * SECONDS;
    const seconds = Math.floor(Date.now() / 1000);
    const cpu0 = cpuSeconds(collector.pid!);
    const subsCpu0 = cpuSeconds(subs.pid!);
    const start = performance.now();
    // Paced in 10 ms steps against absolute deadlines.
    for (let seq = 1; seq <= total; ) {
      const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * RATE));
      for (; seq <= due; seq++) exporter.publish(syntheticEvent(seq, seconds));
      await sleep(10);
    }
    await exporter.close(60_000);
    await sleep(2000);
    const cpu = cpuSeconds(collector.pid!) - cpu0;
    const subsCpu = cpuSeconds(subs.pid!) - subsCpu0;
    const elapsed = (performance.now() - start) / 1000;
    subs.kill('SIGTERM');
    await new Promise((r) => subs!.once('exit', r));
    const { received, lostNotices } = JSON.parse(out.trim().split('\n').pop()!) as { received: number[]; lostNotices: number };
    process.stdout.write(
      `${String(count).padStart(3)} subscribers (${RPC}), ${RATE} ev/s x ${SECONDS} s: each got ${Math.min(...received)}-${Math.max(...received)} of ${total}, ` +
        `lost notices ${lostNotices}, collector CPU ${((cpu * 1e6) / total).toFixed(2)} us/event (${(cpu / elapsed).toFixed(2)} cores), ` +
        `subscriber process ${(subsCpu / elapsed).toFixed(2)} cores\n`,
    );
  } finally {
    subs?.kill('SIGKILL');
    collector.kill('SIGTERM');
  }
}

if (process.argv[2] === '--subscribers') {
  await subscribers(process.argv[3]!, Number(process.argv[4]));
} else {
  for (const count of (process.argv.length > 2 ? process.argv.slice(2) : ['1', '10']).map(Number)) await row(count);
}
