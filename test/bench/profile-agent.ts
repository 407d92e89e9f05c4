// Where the agent's CPU per event goes: runs the real Agent in-process (same config as
// `icmpwatch agent --log-format json --events-per-second 0 --probe tracepoint`, stdout replaced by
// a counting sink) and records a V8 CPU profile AFTER the probe is loaded (the profiler's SIGPROF
// makes the verifier return EAGAIN if it runs during the BPF load). Send traffic meanwhile;
// SIGUSR2 prints the top self-time functions and writes the .cpuprofile; SIGTERM stops.
// Usage: [COLLECTOR=HOST:PORT] node --import tsx test/bench/profile-agent.ts OUT.cpuprofile
// (with COLLECTOR, events are exported to that plaintext collector as well)
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Agent, type AgentConfig } from '../../src/agent/agent.js';
import { DEFAULT_OBJECT } from '../../src/agent/probe/probe.js';

const outPath = process.argv[2] ?? 'agent.cpuprofile';
let lines = 0;
const out = new Writable({
  write(chunk: Buffer, _enc, cb) {
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) lines++;
    cb();
  },
});
// Cast: the agent's config grows while other work lands; fields not named here stay unset.
const config = {
  node: 'bench', hook: 'tracepoint', objectPath: DEFAULT_OBJECT, btfPath: null, ringBytes: 4 << 20, eventsPerSecond: 0,
  logFormat: 'json', metricsAddr: null, endpointsFile: null, kubeconfig: null, holdMs: 50, collector: process.env.COLLECTOR ?? null, exportBufferEvents: 10000, exportBufferBytes: 16 << 20,
} as unknown as AgentConfig;
const agent = await Agent.start(
  config,
  pino({ level: 'silent' }),
  out,
);
const session = new Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.setSamplingInterval', { interval: 200 });
await session.post('Profiler.start');
process.stdout.write('ready\n');

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
process.on('SIGUSR2', async () => {
  const { profile } = (await session.post('Profiler.stop')) as { profile: { nodes: Node[]; samples: number[] } };
  writeFileSync(outPath, JSON.stringify(profile));
  const self = new Map<number, number>();
  for (const s of profile.samples) self.set(s, (self.get(s) ?? 0) + 1);
  const byFn = new Map<string, number>();
  for (const n of profile.nodes) {
    const name = `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*\/(src|node_modules)\//, '$1/')}:${n.callFrame.lineNumber + 1}`;
    byFn.set(name, (byFn.get(name) ?? 0) + (self.get(n.id) ?? 0));
  }
  const total = profile.samples.length;
  const idle = [...profile.nodes].filter((n) => n.callFrame.functionName === '(idle)').reduce((a, n) => a + (self.get(n.id) ?? 0), 0);
  const mem = process.memoryUsage();
  process.stdout.write(`lines ${lines}; samples ${total}, idle ${idle}; rss ${(mem.rss / 2 ** 20).toFixed(0)} MB, heap used ${(mem.heapUsed / 2 ** 20).toFixed(0)} of ${(mem.heapTotal / 2 ** 20).toFixed(0)} MB\n`);
  for (const [name, n] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, 40)) {
    process.stdout.write(`${((100 * n) / (total - idle)).toFixed(1).padStart(5)}%  ${name}\n`);
  }
});
process.once('SIGTERM', async () => {
  await agent.stop();
  process.exit(0);
});
