// `make bench`, items 3 and 5: the path after capture, with the real processes.
//   ingest:     N agents at once (CollectorExporter, the agent's own exporter, in one helper process,
//               publishing synthetic events as fast as their buffers take them) -> the collector
//               (`icmpwatch collector`): events/s stored, collector CPU per event, its memory.
//   end to end: pings between two demo pods (icmpgen, paced) -> the real agent (tracepoint) ->
//               collector -> S subscribers (SubscribeBatches follow as `icmpwatch observe` uses
//               it, or Subscribe with RPC=Subscribe; in one helper process): events each
//               subscriber got of those the agent exported, lost notices, and latency from the
//               kernel's timestamp of the packet to receipt by a subscriber (p50/p99/max).
//
//   tsx test/bench/pipeline.ts           full run; writes its block of BENCHMARKS.md
//   QUICK=1 tsx test/bench/pipeline.ts   fewer, shorter steps
//   ONLY=ingest tsx test/bench/pipeline.ts   the ingest rows alone, printed (A/B runs of the collector)
//   STEPS=10@50000,1@50000 tsx test/bench/pipeline.ts   those end-to-end steps alone (SUBSCRIBERS@EVENTS_PER_SECOND), printed
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Registry } from 'prom-client';
import { CollectorExporter } from '../../src/agent/export/exporter.js';
import { DemoNetwork } from '../../src/cli/demo-network.js';
import { ObserverClient } from '../../src/common/grpc/clients.js';
import { icmpwatch } from '../../src/common/proto.js';
import { silentLog } from '../collector/harness.js';
import { follow, RPC } from './follow.js';
import { CACHE, NODE, QUICK, ROOT, STEPS, fixed, header, int, log, machine, percentile, publish } from './report.js';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SELF = join(ROOT, 'test/bench/pipeline.ts');
const CLI = join(ROOT, 'bin/icmpwatch');

const INGEST_AGENTS = QUICK ? [1, 4] : [1, 4, 8];
const INGEST_EVENTS = QUICK ? 100_000 : 400_000; // in all, split between the agents
const E2E_SUBSCRIBERS = QUICK ? [10] : [1, 10, 50]; // quick: the target's figure
const E2E_RATES = QUICK ? [20_000] : [10_000, 25_000, 50_000]; // events/s: requests + replies
const E2E_SECONDS = QUICK ? 3 : 5;
/** The same traffic first, not counted: fresh processes compile their hot paths in the first second. */
const E2E_WARMUP_SECONDS = 1;
/**
 * Traffic has stopped and been delivered once no subscriber got more for this long (what the
 * pipeline holds: the sighting hold, batching, fan-out, and with many subscribers seconds of
 * backlog; a fixed wait cut those rows' counts short).
 */
const E2E_QUIET_MS = 1500;
const E2E_SETTLE_LIMIT_MS = 60_000;
const ONLY_INGEST = process.env.ONLY === 'ingest';
const E2E_PLAN: { subscribers: number; rate: number }[] =
  STEPS !== null
    ? STEPS.split(',').map((step) => {
        const match = /^(\d+)@(\d+)$/.exec(step);
        if (!match) throw new Error(`STEPS: '${step}' is not SUBSCRIBERS@EVENTS_PER_SECOND`);
        return { subscribers: Number(match[1]), rate: Number(match[2]) };
      })
    : E2E_SUBSCRIBERS.flatMap((subscribers) => E2E_RATES.map((rate) => ({ subscribers, rate })));

// ---------------------------------------------------------------------------------------------
// Processes measured from outside

const children = new Set<ChildProcess>();
function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** User + system CPU seconds of a process, all threads. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  const ticks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  return (Number(fields[11]) + Number(fields[12])) / ticks;
}

function rssMb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function metrics(port: number): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (m) out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[2]);
  }
  return out;
}

async function waitReady(child: ChildProcess, port: number, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false))) {
    if (child.exitCode !== null) throw new Error(`${what} exited ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error(`${what} not ready within 30 s`);
    await sleep(100);
  }
}

let nextPort = 21000 + (process.pid % 1000) * 8;
async function startCollector(): Promise<{ child: ChildProcess; address: string; metricsPort: number }> {
  const port = nextPort++;
  const metricsPort = nextPort++;
  const child = track(spawn(CLI, ['collector', '--authorization=off', '--insecure-plaintext', '--listen', `127.0.0.1:${port}`, '--metrics-addr', `127.0.0.1:${metricsPort}`,
    '--history-events', '1000000', '--subscriber-queue', '10000'], { stdio: ['ignore', 'ignore', 'inherit'], cwd: ROOT }));
  await waitReady(child, metricsPort, 'collector');
  return { child, address: `127.0.0.1:${port}`, metricsPort };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(10_000)]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

/**
 * Runs this file in a child (`--role ...`), which prints one JSON line when done; `said()`
 * resolves with the next line it prints before that.
 */
function helper<T>(args: string[]): { child: ChildProcess; said: () => Promise<unknown>; result: Promise<T> } {
  const child = track(spawn(NODE, ['--import', 'tsx', SELF, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] }));
  let out = '';
  const said = () => new Promise<unknown>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(JSON.parse(d.toString().trim().split('\n').pop()!))));
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const result = new Promise<T>((resolve, reject) =>
    child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!) as T) : reject(new Error(`${args[1]} helper exited ${code}`)))),
  );
  return { child, said, result };
}

// ---------------------------------------------------------------------------------------------
// Item 5: collector ingest from several agents

interface AgentsResult {
  elapsedS: number;
  dropped: number;
  unacked: number;
}

/** Role `agents`: K exporters publishing `total` synthetic events between them, then closing. */
async function runAgents(address: string, agents: number, total: number): Promise<AgentsResult> {
  const per = Math.floor(total / agents);
  const exporters = Array.from({ length: agents }, (_, k) => new CollectorExporter({
    address, node: `bench-node-${k}`, hook: icmpwatch.v1.Hook.HOOK_TP_BTF, symbol: 'netif_receive_skb', log: silentLog,
    registry: new Registry(), maxBufferedEvents: 100_000, maxBufferedBytes: 64 << 20, batchSize: 500, batchDelayMs: 100,
    counters: () => ({ events: 0, lost: 0, malformed: 0, suppressed: 0 }),
  }));
  const now = Date.now();
  const start = performance.now();
  const published = new Array<number>(agents).fill(0);
  while (published.some((n) => n < per)) {
    for (let k = 0; k < agents; k++) {
      const ex = exporters[k]!;
      // Like the agent: publish never waits; here the producer stays below the buffer's bound.
      for (let i = 0; i < 1000 && published[k]! < per && ex.state().bufferedEvents < 50_000; i++) {
        const seq = ++published[k]!;
        ex.publish({
          time: { seconds: Math.floor(now / 1000), nanos: (seq % 1_000_000) * 1000 },
          node: `bench-node-${k}`,
          family: icmpwatch.v1.Family.FAMILY_IPV4,
          source: { ip: '10.1.0.2', namespace: 'bench', pod: 'pod-a', enrichment: icmpwatch.v1.Enrichment.ENRICHMENT_RESOLVED },
          destination: { ip: '10.2.0.2', namespace: 'bench', pod: 'pod-b', enrichment: icmpwatch.v1.Enrichment.ENRICHMENT_RESOLVED },
          icmp: { type: 8, code: 0, id: 4242, seq: seq & 0xffff },
          ttl: 63,
          length: 84,
          observation: { hook: icmpwatch.v1.Hook.HOOK_TP_BTF, point: icmpwatch.v1.ObservationPoint.OBSERVATION_POINT_DESTINATION },
          sequence: seq,
        });
      }
    }
    await new Promise((r) => setImmediate(r));
  }
  await Promise.all(exporters.map((ex) => ex.close(120_000)));
  const states = exporters.map((ex) => ex.state());
  return {
    elapsedS: (performance.now() - start) / 1000,
    dropped: states.reduce((s, x) => s + x.droppedEvents, 0),
    unacked: states.reduce((s, x) => s + x.bufferedEvents, 0),
  };
}

interface IngestRow {
  agents: number;
  events: number;
  stored: number;
  elapsedS: number;
  eventsPerS: number;
  collectorCpuS: number;
  collectorUsPerEvent: number;
  collectorHwmMb: number;
  dropped: number;
}

async function ingest(agents: number): Promise<IngestRow> {
  const collector = await startCollector();
  try {
    const cpu0 = cpuSeconds(collector.child.pid!);
    const m0 = await metrics(collector.metricsPort);
    const r = await helper<AgentsResult>(['--role', 'agents', collector.address, String(agents), String(INGEST_EVENTS)]).result;
    const m1 = await metrics(collector.metricsPort);
    const cpu = cpuSeconds(collector.child.pid!) - cpu0;
    const stored = m1.icmpwatch_collector_events_stored_total! - (m0.icmpwatch_collector_events_stored_total ?? 0);
    return {
      agents, events: INGEST_EVENTS - (INGEST_EVENTS % agents), stored, elapsedS: r.elapsedS, eventsPerS: stored / r.elapsedS,
      collectorCpuS: cpu, collectorUsPerEvent: (cpu * 1e6) / stored, collectorHwmMb: rssMb(collector.child.pid!), dropped: r.dropped + r.unacked,
    };
  } finally {
    await stop(collector.child);
  }
}

// ---------------------------------------------------------------------------------------------
// Item 3: kernel -> agent -> collector -> subscribers

interface SubscribersResult {
  received: number[];
  lostNotices: number;
  lostEvents: number;
  latencyMs: { p50: number; p99: number; max: number; samples: number };
}

/**
 * Role `subscribers`: S follow streams; counts each one's events between the two pod addresses
 * and, on the first stream, the latency from the event's kernel time to receipt. SIGUSR1 starts
 * the counts again (after the warm-up), SIGUSR2 asks for the fewest events a stream got so far
 * (each answered with a line); SIGTERM ends it.
 */
async function runSubscribers(address: string, count: number, ips: string[]): Promise<SubscribersResult> {
  // Each on its own connection, as from S machines.
  const clients = Array.from({ length: count }, () => new ObserverClient(address, { 'grpc.use_local_subchannel_pool': 1 }));
  let received = new Array<number>(count).fill(0);
  let latencies: number[] = [];
  let lostNotices = 0;
  let lostEvents = 0;
  process.on('SIGUSR1', () => {
    received = new Array<number>(count).fill(0);
    latencies = [];
    lostNotices = 0;
    lostEvents = 0;
    process.stdout.write('{"reset":true}\n');
  });
  process.on('SIGUSR2', () => process.stdout.write(`${JSON.stringify({ least: Math.min(...received) })}\n`));
  const streams = Array.from({ length: count }, (_, i) => {
    const stream = follow(clients[i]!, { addresses: ips, times: i === 0 }, (r) => {
      if (r.kind === 'lost') {
        lostNotices++;
        lostEvents += r.lost;
      }
      if (!r.between) return;
      received[i]!++;
      if (i === 0) latencies.push(performance.timeOrigin + performance.now() - r.timeMs);
    });
    stream.on('error', () => {});
    return stream;
  });
  process.stdout.write('{"ready":true}\n');
  await new Promise((r) => process.once('SIGTERM', r));
  for (const s of streams) s.cancel();
  latencies.sort((a, b) => a - b);
  return {
    received,
    lostNotices,
    lostEvents,
    latencyMs: { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies[latencies.length - 1] ?? NaN, samples: latencies.length },
  };
}

interface EndToEndRow {
  subscribers: number;
  offeredEventsPerS: number;
  achievedEventsPerS: number;
  agentEvents: number;
  minReceived: number;
  maxReceived: number;
  lostNotices: number;
  latency: SubscribersResult['latencyMs'];
  agentUsPerEvent: number;
  collectorUsPerEvent: number;
  subscribersUsPerEvent: number;
}

async function endToEnd(net: DemoNetwork, subscribers: number, eventsPerS: number): Promise<EndToEndRow> {
  const [a, b] = [net.pod('a'), net.pod('b')];
  const collector = await startCollector();
  const agentMetrics = nextPort++;
  const agent = track(spawn(CLI, ['agent', '--probe', 'tracepoint', '--collector', collector.address, '--insecure-plaintext', '--log-format', 'json',
    '--events-per-second', '0', '--metrics-addr', `127.0.0.1:${agentMetrics}`, '--node-name', 'bench'], { stdio: ['ignore', 'ignore', 'inherit'], cwd: ROOT }));
  const subs = helper<SubscribersResult>(['--role', 'subscribers', collector.address, String(subscribers), a.ipv4, b.ipv4]);
  const streamsOpen = subs.said();
  // A helper that died answers nothing: its exit ends any wait for an answer.
  const helperGone = subs.result.then(() => Promise.reject(new Error('subscribers helper exited during the run')));
  helperGone.catch(() => {}); // raced below; the row's own wait on subs.result reports the failure
  /** Signals the helper and waits for its answer. */
  const ask = (signal: NodeJS.Signals) => {
    const answer = subs.said();
    subs.child.kill(signal);
    return Promise.race([answer, helperGone]);
  };
  /** Waits until the subscribers got nothing more for E2E_QUIET_MS. */
  const settle = async () => {
    const deadline = Date.now() + E2E_SETTLE_LIMIT_MS;
    let least = -1;
    let quietSince = Date.now();
    while (Date.now() - quietSince < E2E_QUIET_MS && Date.now() < deadline) {
      await sleep(250);
      const now = ((await ask('SIGUSR2')) as { least: number }).least;
      if (now !== least) quietSince = Date.now();
      least = now;
    }
  };
  const ping = async (seconds: number) => {
    const requests = Math.round((eventsPerS / 2) * seconds);
    const out = await net.exec(a.netns, [join(CACHE, 'icmpgen'), '-d', b.ipv4, '-n', String(requests), '-r', String(eventsPerS / 2), '-i', '7000'], 120_000);
    await settle();
    return JSON.parse(out.stdout.trim().split('\n').pop()!) as { sent: number; rate: number };
  };
  try {
    await waitReady(agent, agentMetrics, 'agent');
    await Promise.race([streamsOpen, helperGone]);
    await ping(E2E_WARMUP_SECONDS);
    await ask('SIGUSR1');
    const cpu0 = [agent.pid!, collector.child.pid!, subs.child.pid!].map(cpuSeconds);
    const e0 = (await metrics(agentMetrics)).icmpwatch_agent_events_total ?? 0;
    const gen = await ping(E2E_SECONDS);
    const agentEvents = ((await metrics(agentMetrics)).icmpwatch_agent_events_total ?? 0) - e0;
    const [agentCpu, collectorCpu, subscribersCpu] = [agent.pid!, collector.child.pid!, subs.child.pid!].map((pid, i) => cpuSeconds(pid) - cpu0[i]!);
    subs.child.kill('SIGTERM');
    const r = await subs.result;
    return {
      subscribers,
      offeredEventsPerS: eventsPerS,
      achievedEventsPerS: gen.rate * 2,
      agentEvents,
      minReceived: Math.min(...r.received),
      maxReceived: Math.max(...r.received),
      lostNotices: r.lostNotices,
      latency: r.latencyMs,
      agentUsPerEvent: (agentCpu * 1e6) / Math.max(1, agentEvents),
      collectorUsPerEvent: (collectorCpu * 1e6) / Math.max(1, agentEvents),
      subscribersUsPerEvent: (subscribersCpu! * 1e6) / Math.max(1, agentEvents),
    };
  } finally {
    subs.result.catch(() => {}); // failed already, or killed here
    if (subs.child.exitCode === null) subs.child.kill('SIGKILL');
    await stop(agent);
    await stop(collector.child);
  }
}

// ---------------------------------------------------------------------------------------------

function ingestTable(rows: IngestRow[]): string[] {
  return [
    `#### Collector ingest: agents streaming at once (${int(INGEST_EVENTS)} synthetic events in all, the agent's exporter, batches of 500)`,
    '',
    '| agents | events stored | of sent | seconds | events/s | collector CPU us/event | collector peak RSS (MiB) |',
    '|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.agents} | ${int(r.stored)} | ${int(r.events)} | ${fixed(r.elapsedS, 2)} | ${int(r.eventsPerS)} | ${fixed(r.collectorUsPerEvent, 2)} | ${fixed(r.collectorHwmMb)} |`),
  ];
}

async function main(): Promise<void> {
  const load0 = loadavg();
  if (ONLY_INGEST) {
    const rows: IngestRow[] = [];
    for (const agents of INGEST_AGENTS) rows.push(await ingest(agents));
    process.stdout.write(`${[`Load average at start ${load0.map((x) => x.toFixed(2)).join(' ')}, at end ${loadavg().map((x) => x.toFixed(2)).join(' ')}.`, '', ...ingestTable(rows)].join('\n')}\n`);
    return;
  }
  if (process.getuid?.() !== 0) throw new Error('bench needs root (BPF, network namespaces)');
  mkdirSync(CACHE, { recursive: true });
  if (!existsSync(join(CACHE, 'icmpgen'))) await run('cc', ['-O2', '-Wall', '-o', join(CACHE, 'icmpgen'), join(ROOT, 'test/bench/icmpgen.c')]);

  const ingestRows: IngestRow[] = [];
  for (const agents of STEPS === null ? INGEST_AGENTS : []) {
    log(`ingest: ${agents} agent(s), ${int(INGEST_EVENTS)} events`);
    ingestRows.push(await ingest(agents));
  }
  const e2eRows: EndToEndRow[] = [];
  const net = await DemoNetwork.create('routed', 2);
  try {
    for (const { subscribers, rate } of E2E_PLAN) {
      log(`end to end: ${subscribers} subscriber(s) at ${int(rate)} events/s`);
      e2eRows.push(await endToEnd(net, subscribers, rate));
    }
  } finally {
    await net.destroy();
  }

  const md = [
    header('test/bench/pipeline.ts', machine(), load0),
    '',
    ...ingestTable(ingestRows),
    '',
    `#### End to end: kernel -> agent -> collector -> subscribers (${RPC}; routed demo pods, icmpgen paced for ${E2E_SECONDS} s after ${E2E_WARMUP_SECONDS} s of the same traffic not counted; latency from the packet's kernel timestamp to receipt; the S subscribers' CPU is their one helper process's)`,
    '',
    '| subscribers | offered events/s | achieved | agent events | each subscriber got (min-max) | lost notices | p50 ms | p99 ms | max ms | agent CPU us/event | collector CPU us/event | subscribers\' CPU us/event |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...e2eRows.map((r) => `| ${r.subscribers} | ${int(r.offeredEventsPerS)} | ${int(r.achievedEventsPerS)} | ${int(r.agentEvents)} | ${int(r.minReceived)}-${int(r.maxReceived)} | ${r.lostNotices} | ` +
      `${fixed(r.latency.p50)} | ${fixed(r.latency.p99)} | ${fixed(r.latency.max)} | ${fixed(r.agentUsPerEvent, 2)} | ${fixed(r.collectorUsPerEvent, 2)} | ${fixed(r.subscribersUsPerEvent, 2)} |`),
  ].join('\n');
  publish('pipeline', md, { load0, ingestRows, e2eRows });
}

function exitWith(p: Promise<unknown>): void {
  p.then(
    (value) => {
      if (value !== undefined) process.stdout.write(`${JSON.stringify(value)}\n`);
      process.exit(0);
    },
    (err: Error) => {
      process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
      for (const c of children) c.kill('SIGKILL');
      process.exit(1);
    },
  );
}

const [flag, role, ...args] = process.argv.slice(2);
if (flag === '--role' && role === 'agents') exitWith(runAgents(args[0]!, Number(args[1]), Number(args[2])));
else if (flag === '--role' && role === 'subscribers') exitWith(runSubscribers(args[0]!, Number(args[1]), args.slice(2)));
else exitWith(main().then(() => undefined));
