// `make bench`: capture cost and loss of the real agent beside a C libbpf floor and bpftrace, on
// the same generated ICMP traffic, plus the flood accounting check. Never part of `make test`.
//
//   tsx test/bench/run.ts            full run; writes the raw tables into BENCHMARKS.md
//   QUICK=1 tsx test/bench/run.ts    the key figures in under 3 minutes; BENCHMARKS.md untouched
//   STEPS=agent@300000,floor@300000 tsx test/bench/run.ts    only those capture steps (A/B of a change)
//   RING_BYTES=N (every consumer's ring), SINK_CPU=1 (the line counter off the consumer's CPU): experiments
//
// Layout: namespaces A and B joined by one veth (or A - node - B routed, for the merge check).
// The generator (test/bench/icmpgen.c) runs in A pinned to CPU 1 and sends echo requests to B;
// B's kernel replies. On a veth the whole receive path runs inside the sender's sendmmsg, so a
// costly BPF program slows the sender: its achieved rate is reported beside loss. Consumers and
// the line counter are pinned to CPU 0. Each consumer runs alone, one after the other, on the
// same traffic (same count, rate, addresses): running them together would charge each one's BPF
// cost to the others' sender rate. Everything measured from outside the consumer processes:
// /proc/PID/stat (user/sys CPU of all threads), /proc/PID/status (RSS), /proc/PID/fdinfo of
// their BPF program fds (run_time_ns/run_cnt with kernel.bpf_stats_enabled=1), the agent's
// /metrics, and its stdout lines counted by test/bench/linesink.c.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CACHE, NODE, QUICK, ROOT, STEPS, int, machine, publish } from './report.js';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const LOGS = join(CACHE, 'logs');
const OBJECT = join(ROOT, 'build/bpf/icmpwatch.bpf.o');
const RING_BYTES = Number(process.env.RING_BYTES ?? 4 * 1024 * 1024); // the agent's default --ring-bytes
const CONSUMER_CPU = '0';
const SENDER_CPU = '1';
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

// ---------------------------------------------------------------------------------------------
// Plan

type ConsumerName = 'none' | 'agent' | 'agent-export' | 'capture' | 'floor' | 'bpftrace';
/** The real agent: alone, or streaming every event to a collector as well. */
const isAgent = (c: ConsumerName) => c === 'agent' || c === 'agent-export';
interface Step {
  /** Offered ICMP packets received per second in the bench namespaces (requests + replies); 0 = as fast as possible. */
  events: number;
  requests: number;
  consumers: ConsumerName[];
}
const ALL: ConsumerName[] = ['none', 'agent', 'capture', 'floor', 'bpftrace'];
const SECONDS = QUICK ? 2 : 5;
const MAX_REQUESTS = QUICK ? 400_000 : 1_500_000;
const step = (events: number, consumers: ConsumerName[] = ALL): Step => ({
  events,
  requests: events ? Math.round((events / 2) * SECONDS) : MAX_REQUESTS,
  consumers,
});
const CAPTURE_PLAN: Step[] = STEPS !== null
  ? STEPS.split(',').map((s) => {
      const [consumer, events] = s.split('@');
      if (!ALL.includes(consumer as ConsumerName) && consumer !== 'agent-export') throw new Error(`STEPS: unknown consumer '${consumer}' in '${s}'`);
      if (!/^\d+$/.test(events ?? '')) throw new Error(`STEPS: '${s}' is not CONSUMER@EVENTS_PER_SECOND`);
      return step(Number(events), [consumer as ConsumerName]);
    })
  : QUICK
    ? // The key figures in under 3 minutes with the other benches' quick modes: each stage and the
      // alternatives once beside the floor, the agent with export, and the machine's limit.
      [step(100_000, ['agent', 'capture', 'floor', 'bpftrace']), step(300_000, ['agent', 'agent-export']), step(0, ['none', 'agent', 'capture', 'floor'])]
    : [10_000, 50_000, 100_000, 200_000, 300_000, 400_000, 0].map((e) => step(e, e >= 100_000 || e === 0 ? [...ALL, 'agent-export'] : ALL));
const FLOOD_LIMIT = 10_000;
const FLOOD_PLAN = STEPS !== null ? [] : QUICK ? [{ events: 100_000, seconds: 4 }] : [{ events: 100_000, seconds: 10 }, { events: 0, seconds: 5 }];
const ROUTED_PLAN: Step[] = QUICK || STEPS !== null ? [] : [50_000, 200_000].map((e) => step(e, ['agent', 'floor']));

// ---------------------------------------------------------------------------------------------
// Cleanup: namespaces and children are removed on success, failure and signals.

const namespaces = new Set<string>();
const children = new Set<ChildProcess>();
let savedBpfStats: string | null = null;

function cleanupSync(): void {
  for (const child of children) {
    try {
      if (child.pid && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  children.clear();
  for (const ns of namespaces) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      // gone
    }
  }
  namespaces.clear();
  if (savedBpfStats !== null) {
    try {
      writeFileSync('/proc/sys/kernel/bpf_stats_enabled', savedBpfStats);
    } catch {
      // best effort
    }
    savedBpfStats = null;
  }
}
process.on('exit', cleanupSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    process.stderr.write(`bench: ${sig}, cleaning up\n`);
    cleanupSync();
    process.exit(130);
  });
}

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

// ---------------------------------------------------------------------------------------------
// Topology

interface Topology {
  kind: 'veth' | 'routed';
  a: string;
  b: string;
  node: string | null;
  aIp: string;
  bIp: string;
  /** Address prefix of every bench packet, e.g. "10.231." */
  marker: string;
  /** "10.231" for the C floor's --net */
  net: string;
  /** Kernel records per received packet (sightings): 1 on a veth pair, 2 routed (node + pod). */
  sightings: number;
}

const tag = `${process.pid.toString(36)}${Math.random().toString(36).slice(2, 5)}`;
const second = 200 + Math.floor(Math.random() * 50);

async function ip(...args: string[]): Promise<void> {
  await run('ip', args);
}
async function nsExec(ns: string, ...cmd: string[]): Promise<string> {
  return (await run('ip', ['netns', 'exec', ns, ...cmd], { maxBuffer: 16 << 20 })).stdout;
}
async function addNs(name: string): Promise<void> {
  await ip('netns', 'add', name);
  namespaces.add(name);
  await nsExec(name, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
  await ip('-n', name, 'link', 'set', 'lo', 'up');
}

async function createTopology(kind: 'veth' | 'routed'): Promise<Topology> {
  const third = kind === 'veth' ? 1 : 2;
  const a = `ibench-${tag}-${kind[0]}a`;
  const b = `ibench-${tag}-${kind[0]}b`;
  const net = `10.${second}`;
  await addNs(a);
  await addNs(b);
  if (kind === 'veth') {
    await ip('-n', a, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', b);
    await ip('-n', a, 'addr', 'add', `${net}.${third}.1/24`, 'dev', 'eth0');
    await ip('-n', b, 'addr', 'add', `${net}.${third}.2/24`, 'dev', 'eth0');
    await ip('-n', a, 'link', 'set', 'eth0', 'up');
    await ip('-n', b, 'link', 'set', 'eth0', 'up');
    return { kind, a, b, node: null, aIp: `${net}.${third}.1`, bIp: `${net}.${third}.2`, marker: `${net}.`, net, sightings: 1 };
  }
  const node = `ibench-${tag}-rn`;
  await addNs(node);
  await nsExec(node, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
  for (const [pod, subnet] of [
    [a, 10],
    [b, 11],
  ] as const) {
    const hostEnd = pod === a ? 'va' : 'vb';
    await ip('-n', node, 'link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod);
    await ip('-n', node, 'addr', 'add', `${net}.${subnet}.1/24`, 'dev', hostEnd);
    await ip('-n', pod, 'addr', 'add', `${net}.${subnet}.2/24`, 'dev', 'eth0');
    await ip('-n', node, 'link', 'set', hostEnd, 'up');
    await ip('-n', pod, 'link', 'set', 'eth0', 'up');
    await ip('-n', pod, 'route', 'add', 'default', 'via', `${net}.${subnet}.1`);
  }
  return { kind, a, b, node, aIp: `${net}.10.2`, bIp: `${net}.11.2`, marker: `${net}.`, net, sightings: 2 };
}

async function destroyTopology(t: Topology): Promise<void> {
  for (const ns of [t.a, t.b, t.node]) {
    if (!ns) continue;
    await ip('netns', 'del', ns).catch(() => undefined);
    namespaces.delete(ns);
  }
}

/** ICMP messages received in a namespace (Icmp InMsgs of /proc/net/snmp). */
async function icmpInMsgs(ns: string): Promise<number> {
  const lines = (await nsExec(ns, 'cat', '/proc/net/snmp')).split('\n').filter((l) => l.startsWith('Icmp:'));
  const names = lines[0]!.split(/\s+/);
  const values = lines[1]!.split(/\s+/);
  return Number(values[names.indexOf('InMsgs')]);
}
const receivedIn = async (t: Topology) => (await icmpInMsgs(t.a)) + (await icmpInMsgs(t.b));

// ---------------------------------------------------------------------------------------------
// Measuring processes from outside

interface Cpu {
  /** Seconds, all threads (/proc/PID/stat utime/stime: clock-tick resolution). */
  user: number;
  sys: number;
  /** Seconds on CPU, user + sys, summed over live threads' schedstat (nanosecond resolution). */
  total: number;
}
function cpuOf(pid: number): Cpu {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // thread exited
    }
  }
  return { user: Number(f[11]) / CLK_TCK, sys: Number(f[12]) / CLK_TCK, total: ns / 1e9 };
}
function memOf(pid: number): { rssKb: number; hwmKb: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
  return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
}
/** run_time_ns/run_cnt summed over the BPF program fds a process holds. */
function bpfStatsOf(pid: number): { ns: number; cnt: number; progs: number } {
  let ns = 0;
  let cnt = 0;
  let progs = 0;
  for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
    let info: string;
    try {
      info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      continue;
    }
    const t = /^run_time_ns:\s+(\d+)/m.exec(info);
    const c = /^run_cnt:\s+(\d+)/m.exec(info);
    if (!t || !c || !/^prog_type:/m.test(info)) continue;
    ns += Number(t[1]);
    cnt += Number(c[1]);
    progs++;
  }
  return { ns, cnt, progs };
}

/** Lines of a child's stdout, one at a time. */
class Lines {
  private readonly queue: string[] = [];
  private waiter: ((l: string | null) => void) | null = null;
  private ended = false;
  constructor(child: ChildProcess) {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (l) => {
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = null;
        w(l);
      } else this.queue.push(l);
    });
    rl.on('close', () => {
      this.ended = true;
      this.waiter?.(null);
      this.waiter = null;
    });
  }
  next(timeoutMs = 15000): Promise<string | null> {
    if (this.queue.length) return Promise.resolve(this.queue.shift()!);
    if (this.ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`no output within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (l) => {
        clearTimeout(timer);
        resolve(l);
      };
    });
  }
  /** Skips lines that are not JSON objects. */
  async json<T>(timeoutMs?: number): Promise<T> {
    for (;;) {
      const l = await this.next(timeoutMs);
      if (l === null) throw new Error('stream ended');
      if (l.startsWith('{')) return JSON.parse(l) as T;
    }
  }
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.pid && child.exitCode === null) child.kill(signal);
  if (!(await waitExit(child, 8000)) && child.pid) {
    child.kill('SIGKILL');
    await waitExit(child, 2000);
  }
}

// ---------------------------------------------------------------------------------------------
// Consumers

interface SinkCounts {
  lines: number;
  matched: number;
  summaries: number;
  summary_packets: number;
  bytes: number;
  /** bpftrace's "Lost N events" lines, N summed. */
  lost: number;
}
interface Counts {
  /** Records/lines for the bench's addresses, as the consumer reported them. */
  reported: number;
  /** Records the consumer's BPF program submitted (all ICMP on the machine), if known. */
  kernelRecords?: number;
  ringFull?: number;
  sink?: SinkCounts;
  metrics?: Record<string, number>;
}
interface Consumer {
  name: ConsumerName;
  pid: number;
  counts(): Promise<Counts>;
  stop(): Promise<Counts>;
}

/** A line counter (pinned with the consumer) reading the consumer's stdout through a FIFO. */
function startSink(name: string, marker: string): { sink: ChildProcess; lines: Lines; writeFd: number } {
  const fifo = join(CACHE, `${name}-${tag}.fifo`);
  execFileSync('rm', ['-f', fifo]);
  execFileSync('mkfifo', [fifo]);
  const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const writeFd = openSync(fifo, constants.O_WRONLY);
  const sink = track(spawn('taskset', ['-c', process.env.SINK_CPU ?? CONSUMER_CPU, join(CACHE, 'linesink'), marker], { stdio: [readFd, 'pipe', 'inherit'] }));
  closeSync(readFd);
  execFileSync('rm', ['-f', fifo]);
  return { sink, lines: new Lines(sink), writeFd };
}
async function sinkCounts(sink: ChildProcess, lines: Lines): Promise<SinkCounts> {
  sink.kill('SIGUSR1');
  return lines.json<SinkCounts>();
}

function logFile(name: string): number {
  mkdirSync(LOGS, { recursive: true });
  return openSync(join(LOGS, `${name}.log`), 'w');
}

async function metricsOf(port: number): Promise<Record<string, number>> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  const out: Record<string, number> = {};
  for (const line of (await res.text()).split('\n')) {
    const m = /^(icmpwatch_[a-z_]+)(?:\{[^}]*\})?\s+([0-9.e+-]+)$/.exec(line);
    if (m) out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[2]);
  }
  return out;
}

let portSeq = 0;
/**
 * Both bench addresses named as pods (namespace, pod, uid, labels, workload, node), as the
 * Kubernetes resolver names pods: the agent's lines and exported events carry what they would in
 * a cluster.
 */
function endpointsFile(t: Topology): string {
  const path = join(CACHE, `endpoints-${t.kind}.json`);
  const pod = (ip: string, name: string) => ({
    ip, namespace: 'bench', pod: `${name}-7d9f8c6b5-x2k4q`, node: 'bench',
    labels: { app: name, 'app.kubernetes.io/part-of': 'icmpwatch-bench', 'pod-template-hash': '7d9f8c6b5' },
    workload: { kind: 'Deployment', name },
  });
  writeFileSync(path, JSON.stringify({ endpoints: [pod(t.aIp, 'pinger'), pod(t.bIp, 'echo-server')] }));
  return path;
}

/** A collector for the agent-export consumer, unpinned (in a cluster it runs elsewhere). */
async function startCollector(label: string): Promise<{ address: string; child: ChildProcess }> {
  const port = 19800 + (process.pid % 100) + portSeq++ * 7;
  const err = logFile(`collector-${label}`);
  const child = track(
    spawn(join(ROOT, 'bin/icmpwatch'), ['collector', '--insecure-plaintext', '--authorization', 'off', '--listen', `127.0.0.1:${port}`, '--metrics-addr', `127.0.0.1:${port + 1}`], {
      stdio: ['ignore', 'ignore', err],
      cwd: ROOT,
    }),
  );
  closeSync(err);
  const deadline = Date.now() + 30000;
  while (!(await fetch(`http://127.0.0.1:${port + 1}/readyz`).then((r) => r.ok, () => false))) {
    if (child.exitCode !== null) throw new Error(`collector exited ${child.exitCode}; see ${LOGS}/collector-${label}.log`);
    if (Date.now() > deadline) throw new Error('collector not ready within 30 s');
    await sleep(100);
  }
  return { address: `127.0.0.1:${port}`, child };
}

async function startAgent(t: Topology, eventsPerSecond: number, label: string, exportEvents = false): Promise<Consumer> {
  const port = 19400 + (process.pid % 400) + portSeq++ * 7;
  const collector = exportEvents ? await startCollector(label) : null;
  const { sink, lines, writeFd } = startSink(`agent-${label}`, `"ip":"${t.marker}`);
  const err = logFile(`agent-${label}`);
  const agent = track(
    spawn(
      'taskset',
      ['-c', CONSUMER_CPU, join(ROOT, 'bin/icmpwatch'), 'agent', '--log-format', 'json', '--events-per-second', String(eventsPerSecond),
        '--metrics-addr', `127.0.0.1:${port}`, '--probe', 'tracepoint', '--node-name', 'bench', '--ring-bytes', String(RING_BYTES),
        '--endpoints-file', endpointsFile(t), ...(collector ? ['--collector', collector.address, '--insecure-plaintext'] : [])],
      { stdio: ['ignore', writeFd, err], cwd: ROOT },
    ),
  );
  closeSync(writeFd);
  closeSync(err);
  const deadline = Date.now() + 30000;
  for (;;) {
    if (agent.exitCode !== null) throw new Error(`agent exited ${agent.exitCode}; see ${LOGS}/agent-${label}.log`);
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > deadline) throw new Error('agent not ready within 30 s');
    await sleep(100);
  }
  const counts = async (): Promise<Counts> => {
    const m = await metricsOf(port);
    const s = await sinkCounts(sink, lines);
    return { reported: s.matched, kernelRecords: m.icmpwatch_kernel_events_total, ringFull: m.icmpwatch_kernel_ring_full_total, sink: s, metrics: m };
  };
  const consumer: Consumer = {
    name: exportEvents ? 'agent-export' : 'agent',
    pid: agent.pid!,
    counts,
    async stop() {
      const m = await metricsOf(port).catch(() => ({}) as Record<string, number>);
      await stopChild(agent, 'SIGTERM');
      if (collector) await stopChild(collector.child, 'SIGTERM');
      const s = await lines.json<SinkCounts>(20000); // printed at EOF
      await waitExit(sink, 5000);
      return { reported: s.matched, kernelRecords: m.icmpwatch_kernel_events_total, ringFull: m.icmpwatch_kernel_ring_full_total, sink: s, metrics: m };
    },
  };
  agentSinks.set(consumer, [sink, lines]);
  return consumer;
}

interface FloorStats {
  records: number;
  matched: number;
  kernel_events: number;
  ring_full: number;
}
async function startFloor(t: Topology, label: string): Promise<Consumer> {
  const err = logFile(`floor-${label}`);
  const floor = track(
    spawn('taskset', ['-c', CONSUMER_CPU, join(CACHE, 'floor'), OBJECT, '--ring-bytes', String(RING_BYTES), '--net', t.net], {
      stdio: ['ignore', 'pipe', err],
    }),
  );
  closeSync(err);
  const lines = new Lines(floor);
  if ((await lines.next(20000)) !== 'ready') throw new Error(`floor did not start; see ${LOGS}/floor-${label}.log`);
  const toCounts = (s: FloorStats): Counts => ({ reported: s.matched, kernelRecords: s.kernel_events, ringFull: s.ring_full });
  return {
    name: 'floor',
    pid: floor.pid!,
    async counts() {
      floor.kill('SIGUSR1');
      return toCounts(await lines.json<FloorStats>());
    },
    async stop() {
      floor.kill('SIGTERM');
      const s = await lines.json<FloorStats>();
      await waitExit(floor, 5000);
      return toCounts(s);
    },
  };
}

async function startCapture(t: Topology, label: string): Promise<Consumer> {
  const err = logFile(`capture-${label}`);
  const cap = track(
    spawn('taskset', ['-c', CONSUMER_CPU, NODE, '--import', 'tsx', join(ROOT, 'test/bench/capture-only.ts'), t.marker], {
      stdio: ['ignore', 'pipe', err],
      cwd: ROOT,
    }),
  );
  closeSync(err);
  const lines = new Lines(cap);
  if ((await lines.next(30000)) !== 'ready') throw new Error(`capture-only did not start; see ${LOGS}/capture-${label}.log`);
  return {
    name: 'capture',
    pid: cap.pid!,
    async counts() {
      cap.kill('SIGUSR1');
      const s = await lines.json<{ records: number; matched: number }>();
      return { reported: s.matched };
    },
    async stop() {
      cap.kill('SIGTERM');
      const s = await lines.json<{ records: number; matched: number }>();
      await waitExit(cap, 5000);
      return { reported: s.matched };
    },
  };
}

async function startBpftrace(t: Topology, label: string): Promise<Consumer> {
  const { sink, lines, writeFd } = startSink(`bpftrace-${label}`, t.marker);
  const errPath = join(LOGS, `bpftrace-${label}.log`);
  const err = logFile(`bpftrace-${label}`);
  const bt = track(
    spawn('taskset', ['-c', CONSUMER_CPU, 'bpftrace', join(ROOT, 'test/bench/icmp-lines.bt')], { stdio: ['ignore', writeFd, err] }),
  );
  closeSync(writeFd);
  closeSync(err);
  const deadline = Date.now() + 30000;
  // Ready once its program is loaded (its stdout may be block-buffered), plus time to attach.
  while (bpfStatsOf(bt.pid!).progs === 0) {
    if (bt.exitCode !== null) throw new Error(`bpftrace exited ${bt.exitCode}; see ${errPath}`);
    if (Date.now() > deadline) throw new Error('bpftrace not attached within 30 s');
    await sleep(100);
  }
  await sleep(1500);
  return {
    name: 'bpftrace',
    pid: bt.pid!,
    async counts() {
      const s = await sinkCounts(sink, lines);
      return { reported: s.matched, sink: s, ringFull: s.lost };
    },
    async stop() {
      await stopChild(bt, 'SIGINT');
      const s = await lines.json<SinkCounts>(20000);
      await waitExit(sink, 5000);
      // bpftrace prints "Lost N events" (perf buffer full) on stdout; the line counter sums them.
      const lostOnStderr = [...readFileSync(errPath, 'utf8').matchAll(/Lost (\d+) events/g)].reduce((n, m) => n + Number(m[1]), 0);
      return { reported: s.matched, sink: s, ringFull: s.lost + lostOnStderr };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// One measurement

interface GenResult {
  sent: number;
  errors: number;
  elapsed_s: number;
  rate: number;
}
async function generate(t: Topology, requests: number, requestsPerSecond: number, id: number): Promise<GenResult> {
  const out = await nsExec(t.a, 'taskset', '-c', SENDER_CPU, join(CACHE, 'icmpgen'), '-d', t.bIp, '-n', String(requests),
    '-r', String(requestsPerSecond), '-i', String(id));
  return JSON.parse(out.trim().split('\n').pop()!) as GenResult;
}

export interface Row {
  topology: string;
  consumer: ConsumerName;
  offeredEvents: number;
  requests: number;
  elapsedS: number;
  /** Requests/s the sender achieved. */
  requestRate: number;
  /** Packets received per second in the namespaces (requests + replies) the sender achieved. */
  eventRate: number;
  /** Packets that entered the namespaces (Icmp InMsgs of A and B). */
  expected: number;
  /** Kernel records expected: expected x sightings per packet. */
  expectedRecords: number;
  reported: number;
  kernelRecords: number | null;
  ringFull: number | null;
  lossPct: number | null;
  userS: number;
  sysS: number;
  /** On-CPU seconds of all threads (schedstat). */
  cpuS: number;
  cpuUsPerEvent: number | null;
  userUsPerEvent: number | null;
  sysUsPerEvent: number | null;
  cpuCoresDuringTraffic: number | null;
  bpfNsPerRun: number | null;
  bpfNsPerRecord: number | null;
  bpfRuns: number | null;
  rssMb: number | null;
  hwmMb: number | null;
  merged: number | null;
  /** agent-export: events its exporter dropped (collector behind, buffer full); counted, announced. */
  exportDropped: number | null;
  /** The agent's node log lines dropped while stdout's reader (the line counter) was behind; counted, announced. */
  logDropped: number | null;
  drainS: number;
  extra?: Record<string, number>;
}

let genId = 1000;
/** Requests sent in the second before each measured step (see measure()); quick mode, half a second's. */
const WARMUP_REQUESTS = 20_000;
const WARMUP_SECONDS = QUICK ? 0.5 : 1;
/** A started consumer's time to settle, before the warm-up and after it. */
const SETTLE_MS = QUICK ? 500 : 1000;
async function measure(t: Topology, s: { events: number; requests: number }, name: ConsumerName, label: string): Promise<Row> {
  const consumer =
    name === 'agent' ? await startAgent(t, 0, label)
    : name === 'agent-export' ? await startAgent(t, 0, label, true)
    : name === 'floor' ? await startFloor(t, label)
    : name === 'capture' ? await startCapture(t, label)
    : name === 'bpftrace' ? await startBpftrace(t, label)
    : null;
  try {
    await sleep(consumer ? SETTLE_MS : 200);
    // Steady state: the same warm-up for every consumer (a fresh Node process otherwise spends its
    // first second compiling the hot path, which at low rates came out as several us per event).
    if (consumer) {
      await generate(t, WARMUP_REQUESTS * WARMUP_SECONDS, WARMUP_REQUESTS, (genId += 40));
      await sleep(SETTLE_MS);
    }
    const id = (genId += 40);
    const before = consumer ? await consumer.counts() : null;
    const inBefore = await receivedIn(t);
    const cpu0 = consumer ? cpuOf(consumer.pid) : null;
    const bpf0 = consumer ? bpfStatsOf(consumer.pid) : null;
    const gen = await generate(t, s.requests, s.events / 2, id);
    const cpuEnd = consumer ? cpuOf(consumer.pid) : null;
    const inAfter = await receivedIn(t);
    const expected = inAfter - inBefore;
    const expectedRecords = expected * t.sightings;
    // The agent reports each packet once (sightings merged); the others report every record.
    const target = isAgent(name) ? expected : expectedRecords;
    // Drain: until everything arrived or nothing more for 600 ms.
    const drainStart = Date.now();
    let after = before;
    if (consumer) {
      let last = -1;
      let stableSince = Date.now();
      for (;;) {
        await sleep(100);
        after = isAgent(name) ? { reported: (await sinkCounts(...agentSink(consumer))).matched } : await consumer.counts();
        const got = after.reported - before!.reported;
        if (got >= target) break;
        if (got !== last) {
          last = got;
          stableSince = Date.now();
        } else if (Date.now() - stableSince > 600) break;
        if (Date.now() - drainStart > 30000) break;
      }
    }
    const drainS = (Date.now() - drainStart) / 1000;
    const cpu1 = consumer ? cpuOf(consumer.pid) : null;
    const bpf1 = consumer ? bpfStatsOf(consumer.pid) : null;
    const mem = consumer ? memOf(consumer.pid) : null;
    const fin = consumer ? await consumer.stop() : null;
    const reported = consumer ? fin!.reported - before!.reported : 0;
    const user = cpu1 && cpu0 ? cpu1.user - cpu0.user : 0;
    const sys = cpu1 && cpu0 ? cpu1.sys - cpu0.sys : 0;
    const cpuS = cpu1 && cpu0 ? cpu1.total - cpu0.total : 0;
    const bpfNs = bpf1 && bpf0 ? bpf1.ns - bpf0.ns : 0;
    const bpfCnt = bpf1 && bpf0 ? bpf1.cnt - bpf0.cnt : 0;
    const kernelRecords = fin?.kernelRecords !== undefined && before?.kernelRecords !== undefined ? fin.kernelRecords - before.kernelRecords : null;
    const ringFull = fin?.ringFull !== undefined ? fin.ringFull - (before?.ringFull ?? 0) : null;
    const perEvent = (x: number) => (consumer && reported > 0 ? (x * 1e6) / reported : null);
    const metricDelta = (name: string) => (fin?.metrics && before?.metrics ? (fin.metrics[name] ?? 0) - (before.metrics[name] ?? 0) : null);
    const merged = metricDelta('icmpwatch_agent_merged_sightings_total');
    const row: Row = {
      topology: t.kind,
      consumer: name,
      offeredEvents: s.events,
      requests: gen.sent,
      elapsedS: gen.elapsed_s,
      requestRate: gen.rate,
      eventRate: expected / gen.elapsed_s,
      expected,
      expectedRecords,
      reported,
      kernelRecords,
      ringFull,
      lossPct: consumer ? (100 * (target - reported)) / target : null,
      userS: user,
      sysS: sys,
      cpuS,
      cpuUsPerEvent: perEvent(cpuS),
      userUsPerEvent: perEvent(user),
      sysUsPerEvent: perEvent(sys),
      cpuCoresDuringTraffic: cpuEnd && cpu0 ? (cpuEnd.total - cpu0.total) / gen.elapsed_s : null,
      bpfNsPerRun: bpfCnt ? bpfNs / bpfCnt : null,
      bpfNsPerRecord: consumer && bpfNs ? bpfNs / expectedRecords : null,
      bpfRuns: consumer ? bpfCnt : null,
      rssMb: mem ? mem.rssKb / 1024 : null,
      hwmMb: mem ? mem.hwmKb / 1024 : null,
      merged,
      exportDropped: name === 'agent-export' ? metricDelta('icmpwatch_agent_export_dropped_events_total') : null,
      logDropped: isAgent(name) ? metricDelta('icmpwatch_agent_log_lines_dropped_total') : null,
      drainS,
    };
    log(formatRow(row));
    return row;
  } catch (err) {
    if (consumer) await consumer.stop().catch(() => undefined);
    throw err;
  }
}

// The agent's drain check reads only its line counter: scraping /metrics costs the agent CPU.
const agentSinks = new WeakMap<Consumer, [ChildProcess, Lines]>();
function agentSink(c: Consumer): [ChildProcess, Lines] {
  const s = agentSinks.get(c);
  if (!s) throw new Error('no sink');
  return s;
}

// ---------------------------------------------------------------------------------------------
// Flood: 10x the per-node limit, every packet accounted for.

interface FloodRow {
  offeredEvents: number;
  limit: number;
  requests: number;
  requestRate: number;
  eventRate: number;
  expected: number;
  captured: number;
  suppressedReported: number;
  summaries: number;
  kernelEvents: number;
  kernelSuppressed: number;
  ringFull: number;
  aggFull: number;
  /** Distinct packets taken for one already reported (same identity within 1-2 s), counted by the agent. */
  merged: number;
  /** Event lines the agent dropped and counted while its stdout reader lagged. */
  logLinesDropped: number;
  unaccounted: number;
  cpuCoresDuringTraffic: number;
  userUsPerPacket: number;
  bpfNsPerRecord: number;
  rssMb: number;
}

async function flood(t: Topology, events: number, seconds: number): Promise<FloodRow> {
  const label = `flood-${events || 'max'}`;
  const agent = await startAgent(t, FLOOD_LIMIT, label);
  try {
    await sleep(1000);
    const before = await agent.counts();
    const inBefore = await receivedIn(t);
    const cpu0 = cpuOf(agent.pid);
    const bpf0 = bpfStatsOf(agent.pid);
    const requests = events ? Math.round((events / 2) * seconds) : MAX_REQUESTS;
    const gen = await generate(t, requests, events / 2, (genId += 40));
    const cpu1 = cpuOf(agent.pid);
    const bpf1 = bpfStatsOf(agent.pid);
    const expected = (await receivedIn(t)) - inBefore;
    await sleep(2500); // the summaries of the last second are drained by the agent's next ticks
    const mem = memOf(agent.pid);
    const fin = await agent.stop(); // stop() drains both aggregation maps into summaries
    const m0 = before.metrics!;
    const m1 = fin.metrics!;
    const d = (k: string) => (m1[k] ?? 0) - (m0[k] ?? 0);
    const s0 = before.sink!;
    const s1 = fin.sink!;
    const captured = s1.matched - s1.summaries - (s0.matched - s0.summaries);
    const suppressedReported = s1.summary_packets - s0.summary_packets;
    const ringFull = d('icmpwatch_kernel_ring_full_total');
    const aggFull = d('icmpwatch_kernel_agg_full_total');
    // On one veth each packet is seen once: a merged sighting is another packet with the same
    // identity, which repeats every 65,536 packets between one pair (16-bit IP id and echo seq).
    const merged = d('icmpwatch_agent_merged_sightings_total');
    const logLinesDropped = d('icmpwatch_agent_log_lines_dropped_total');
    const cpu = cpu1.total - cpu0.total;
    const row: FloodRow = {
      offeredEvents: events,
      limit: FLOOD_LIMIT,
      requests: gen.sent,
      requestRate: gen.rate,
      eventRate: expected / gen.elapsed_s,
      expected,
      captured,
      suppressedReported,
      summaries: s1.summaries - s0.summaries,
      kernelEvents: d('icmpwatch_kernel_events_total'),
      kernelSuppressed: d('icmpwatch_kernel_suppressed_total'),
      ringFull,
      aggFull,
      merged,
      logLinesDropped,
      unaccounted: expected - captured - suppressedReported - ringFull - aggFull - merged - logLinesDropped,
      cpuCoresDuringTraffic: cpu / gen.elapsed_s,
      userUsPerPacket: ((cpu1.user - cpu0.user) * 1e6) / expected,
      bpfNsPerRecord: (bpf1.ns - bpf0.ns) / expected,
      rssMb: mem.rssKb / 1024,
    };
    log(`flood ${events || 'max'}: ${JSON.stringify(row)}`);
    return row;
  } catch (err) {
    await agent.stop().catch(() => undefined);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Output

const t0 = Date.now();
function log(msg: string): void {
  process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${msg}\n`);
}
const k = (n: number) => (n === 0 ? 'max' : `${n / 1000}k`);
const f = (n: number | null | undefined, d = 0) => (n === null || n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(d));

function formatRow(r: Row): string {
  return `${r.topology} ${k(r.offeredEvents).padStart(4)} ${r.consumer.padEnd(8)} sent ${int(r.requests)} at ${int(r.requestRate)} req/s ` +
    `(${int(r.eventRate)} ev/s) expected ${int(r.expected)} reported ${int(r.reported)} loss ${f(r.lossPct, 2)}% ` +
    `cpu ${f(r.cpuUsPerEvent, 3)} (user ${f(r.userUsPerEvent, 3)} sys ${f(r.sysUsPerEvent, 3)}) us/ev bpf ${f(r.bpfNsPerRecord)} ns/rec rss ${f(r.rssMb, 0)} MB`;
}

function captureTable(rows: Row[], none: Map<string, Row>): string {
  const out = [
    '| offered ev/s | consumer | requests sent | sender req/s | vs no reader | events expected | kernel records | reported | loss % | ring full / lost | log lines dropped | CPU us/ev | user us/ev | sys us/ev | CPU cores in traffic | BPF ns/record | BPF ns/run | RSS MB (peak) |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const base = none.get(`${r.topology}/${r.offeredEvents}`);
    const vs = base && r.consumer !== 'none' ? `${f((100 * r.requestRate) / base.requestRate - 100, 1)}%` : '-';
    out.push(
      `| ${k(r.offeredEvents)} | ${r.consumer} | ${int(r.requests)} | ${int(r.requestRate)} | ${vs} | ${int(isAgent(r.consumer) || r.consumer === 'none' ? r.expected : r.expectedRecords)} | ` +
        `${int(r.kernelRecords)} | ${int(r.reported)} | ${f(r.lossPct, 2)} | ${int(r.ringFull)} | ${int(r.logDropped)} | ${f(r.cpuUsPerEvent, 3)} | ${f(r.userUsPerEvent, 3)} | ${f(r.sysUsPerEvent, 3)} | ` +
        `${f(r.cpuCoresDuringTraffic, 2)} | ${f(r.bpfNsPerRecord)} | ${f(r.bpfNsPerRun)} | ${r.rssMb === null ? '-' : `${f(r.rssMb)} (${f(r.hwmMb)})`} |`,
    );
  }
  return out.join('\n');
}

function ratioTable(rows: Row[]): string {
  const out = [
    '| offered ev/s | agent / floor (CPU per event) | capture stage / floor | bpftrace / agent | agent user us/ev | agent+export user us/ev (target 1.5) | export dropped | sender: agent / no reader | sender: floor / no reader |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  const by = (c: ConsumerName, e: number) => rows.find((r) => r.consumer === c && r.offeredEvents === e && r.topology === 'veth');
  const cpu = (r: Row | undefined) => r?.cpuUsPerEvent ?? null;
  const sender = (r: Row | undefined, base: Row | undefined) => (r && base ? `${f((100 * r.requestRate) / base.requestRate, 0)}%` : '-');
  for (const e of [...new Set(rows.map((r) => r.offeredEvents))]) {
    const a = cpu(by('agent', e));
    const fl = cpu(by('floor', e));
    const c = cpu(by('capture', e));
    const b = cpu(by('bpftrace', e));
    const ratio = (x: number | null, y: number | null) => (x !== null && y ? `${f(x / y, 1)}x` : '-');
    out.push(
      `| ${k(e)} | ${ratio(a, fl)} | ${ratio(c, fl)} | ${ratio(b, a)} | ${f(by('agent', e)?.userUsPerEvent, 3)} | ${f(by('agent-export', e)?.userUsPerEvent, 3)} | ${int(by('agent-export', e)?.exportDropped)} | ` +
        `${sender(by('agent', e), by('none', e))} | ${sender(by('floor', e), by('none', e))} |`,
    );
  }
  return out.join('\n');
}

function floodTable(rows: FloodRow[]): string {
  const out = [
    '| offered ev/s | limit | requests | sender req/s | packets expected | captured (event lines) | suppressed (summary packets) | kernel suppressed | ring full | agg full | merged (same identity) | log lines dropped | unaccounted | agent CPU cores | user us/packet | RSS MB |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    out.push(
      `| ${k(r.offeredEvents)} (${int(r.eventRate)}) | ${int(r.limit)} | ${int(r.requests)} | ${int(r.requestRate)} | ${int(r.expected)} | ${int(r.captured)} | ${int(r.suppressedReported)} (${r.summaries} lines) | ` +
        `${int(r.kernelSuppressed)} | ${int(r.ringFull)} | ${int(r.aggFull)} | ${int(r.merged)} | ${int(r.logLinesDropped)} | ${int(r.unaccounted)} | ${f(r.cpuCoresDuringTraffic, 3)} | ${f(r.userUsPerPacket, 3)} | ${f(r.rssMb)} |`,
    );
  }
  return out.join('\n');
}

function machineWithBpftrace(): Record<string, string> {
  return { ...machine(), bpftrace: bpftraceAvailable ? execFileSync('bpftrace', ['--version']).toString().trim() : 'no bpftrace' };
}

let bpftraceAvailable = false;

// ---------------------------------------------------------------------------------------------
// Main

async function prepare(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench needs root (BPF, network namespaces)');
  mkdirSync(CACHE, { recursive: true });
  for (const bin of ['icmpgen', 'linesink', 'floor']) {
    const libbpf = bin === 'floor' ? ['-I', join(ROOT, 'bpf'), '-lbpf'] : [];
    execFileSync('cc', ['-O2', '-Wall', '-o', join(CACHE, bin), join(ROOT, `test/bench/${bin}.c`), ...libbpf], { stdio: 'inherit' });
  }
  if (!existsSync(OBJECT)) throw new Error(`${OBJECT} missing: run make build`);
  if (!existsSync('/sys/kernel/tracing/events')) {
    // bpftrace finds tracepoints through tracefs; mount it where it is expected.
    await run('mount', ['-t', 'tracefs', 'tracefs', '/sys/kernel/tracing']);
    log('mounted tracefs on /sys/kernel/tracing (left mounted)');
  }
  try {
    execFileSync('bpftrace', ['--version'], { stdio: 'ignore' });
    bpftraceAvailable = true;
  } catch {
    log('bpftrace not installed: its rows are skipped (Debian 12 packages it: apt-get install bpftrace)');
  }
  savedBpfStats = readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim();
  writeFileSync('/proc/sys/kernel/bpf_stats_enabled', '1');
}

async function main(): Promise<void> {
  const load0 = loadavg();
  log(`icmpwatch bench (${QUICK ? 'quick' : 'full'}); load average ${load0.map((x) => x.toFixed(2)).join(' ')}`);
  if (load0[0]! > 1) log('WARNING: load average above 1 at start: other work is running, numbers will be noisy');
  await prepare();
  const info = machineWithBpftrace();
  const rows: Row[] = [];
  const none = new Map<string, Row>();
  const floods: FloodRow[] = [];

  const veth = await createTopology('veth');
  try {
    for (const s of CAPTURE_PLAN) {
      for (const c of s.consumers) {
        if (c === 'bpftrace' && !bpftraceAvailable) continue;
        const r = await measure(veth, s, c, `${k(s.events)}-${c}`);
        rows.push(r);
        if (c === 'none') none.set(`veth/${s.events}`, r);
      }
    }
    for (const fl of FLOOD_PLAN) floods.push(await flood(veth, fl.events, fl.seconds));
  } finally {
    await destroyTopology(veth);
  }
  if (ROUTED_PLAN.length) {
    const routed = await createTopology('routed');
    try {
      for (const s of ROUTED_PLAN) for (const c of s.consumers) rows.push(await measure(routed, s, c, `routed-${k(s.events)}-${c}`));
    } finally {
      await destroyTopology(routed);
    }
  }
  const load1 = loadavg();

  const vethRows = rows.filter((r) => r.topology === 'veth');
  const routedRows = rows.filter((r) => r.topology === 'routed');
  const md = [
    `Command: \`make bench${QUICK ? ' QUICK=1' : ''}\` (\`tsx test/bench/run.ts\`), ${info.date}.`,
    `Machine: ${info.nproc} vCPU (${info.cpu}), ${info.memory}, Linux ${info.kernel}, Node ${info.node}, libbpf ${info.libbpf}, ${info.bpftrace}.`,
    `Load average at start ${load0.map((x) => x.toFixed(2)).join(' ')}, at end ${load1.map((x) => x.toFixed(2)).join(' ')}. ` +
      `Sender pinned to CPU ${SENDER_CPU}, consumers and line counter to CPU ${CONSUMER_CPU}; ring ${RING_BYTES / 2 ** 20} MiB; ${SECONDS} s of traffic per paced rate, ${int(MAX_REQUESTS)} requests at max.`,
    '',
    '#### Capture, one veth between two namespaces (1 kernel record per packet)',
    '',
    captureTable(vethRows, none),
    '',
    '#### Ratios (CPU per event, user + sys, same run)',
    '',
    ratioTable(vethRows),
    '',
    ...(routedRows.length
      ? ['#### Routed: A -> node namespace -> B (2 kernel records per packet, merged by the agent)', '', captureTable(routedRows, none), '',
        `Merged sightings (agent): ${routedRows.filter((r) => r.consumer === 'agent').map((r) => `${k(r.offeredEvents)}: ${int(r.merged)} of ${int(r.expected)} packets`).join('; ')}.`, '']
      : []),
    `#### Flood: --events-per-second ${FLOOD_LIMIT}`,
    '',
    floodTable(floods),
    '',
  ].join('\n');
  publish('capture', md, { info, load0, load1, quick: QUICK, rows, floods });
}

main().then(
  () => {
    cleanupSync();
    process.exit(0);
  },
  (err: Error) => {
    process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
    cleanupSync();
    process.exit(1);
  },
);
