// The agent's per-event path in user space, alone and repeatable on a shared machine: synthetic
// ring records (echo requests and replies between two namespaces, as the capture bench sends) go
// through the real decodeEvent -> SightingMerger -> EventBuilder -> NodeLog (and, for `export`, the
// real CollectorExporter streaming to a real `icmpwatch collector` child process), in turns of
// 1000 records as the ring reader drains them. CPU per event of this process (process.cpuUsage,
// user + system), per stage, the median of several rounds. No kernel, no root.
//
//   tsx test/bench/agent-path.ts [STAGE ...]   stages: decode merge build text json export
//   ROUTED=1: every packet is also seen on the way (node namespace first, merged by the agent)
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Registry } from 'prom-client';
import { NoResolver } from '../../src/agent/enrich/endpoints-file.js';
import { EventBuilder, WallClock } from '../../src/agent/event-builder.js';
import { CollectorExporter } from '../../src/agent/export/exporter.js';
import { NodeLog } from '../../src/agent/node-log.js';
import { blankPacket, decodeEvent, RecordMemory } from '../../src/agent/probe/decoder.js';
import { EVENT_FIELDS as F, EVENT_SIZE } from '../../src/agent/probe/event-layout.js';
import { SightingMerger, type ReportedPacket } from '../../src/agent/sightings.js';
import { icmpwatch } from '../../src/common/proto.js';
import { silentLog } from '../collector/harness.js';
import { ROOT } from './report.js';

const STAGES = ['decode', 'merge', 'build', 'text', 'json', 'export'] as const;
type Stage = (typeof STAGES)[number];
const chosen = (process.argv.slice(2).length ? process.argv.slice(2) : STAGES) as Stage[];
const ROUTED = process.env.ROUTED === '1';
const PACKETS = Number(process.env.PACKETS ?? 200_000);
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const TURN = 1000;

const NS_A = 4026532001;
const NS_B = 4026532002;
const NS_NODE = 4026531840;
const RECORD = EVENT_SIZE + 8;

/** Records as the BPF program writes them: request A->B seen in B, its reply seen in A. */
function records(round: number): { view: DataView; bytes: Uint8Array; count: number } {
  const sightings = ROUTED ? 2 : 1;
  const bytes = new Uint8Array(PACKETS * sightings * RECORD);
  const view = new DataView(bytes.buffer);
  let off = 0;
  for (let i = 0; i < PACKETS; i++) {
    const request = i % 2 === 0;
    const seq = (round * PACKETS + i) >> 1;
    for (let s = 0; s < sightings; s++) {
      const atDestination = s === sightings - 1;
      const at = off + 8;
      view.setUint32(at + F.mono_ns.offset, 1_000_000 + i * 1000, true);
      view.setUint32(at + F.ifindex.offset, 2 + s, true);
      view.setUint32(at + F.netns.offset, atDestination ? (request ? NS_B : NS_A) : NS_NODE, true);
      view.setUint32(at + F.skb_len.offset, 84, true);
      view.setUint16(at + F.tot_len.offset, 84, true);
      view.setUint16(at + F.ip_id.offset, (seq * 2 + (request ? 0 : 1)) & 0xffff, true);
      view.setUint16(at + F.echo_id.offset, 0x4242 + (seq >> 16), true);
      view.setUint16(at + F.echo_seq.offset, seq & 0xffff, true);
      view.setUint8(at + F.family.offset, 4);
      view.setUint8(at + F.hook.offset, 1);
      view.setUint8(at + F.type.offset, request ? 8 : 0);
      view.setUint8(at + F.ttl.offset, 64 - s);
      bytes.set(request ? [10, 231, 0, 2] : [10, 231, 0, 3], at + F.saddr.offset);
      bytes.set(request ? [10, 231, 0, 3] : [10, 231, 0, 2], at + F.daddr.offset);
      off += RECORD;
    }
  }
  return { view, bytes, count: PACKETS * sightings };
}

let outBytes = 0;
const sink = new Writable({
  write(chunk: Buffer, _enc, cb) {
    outBytes += chunk.length;
    cb();
  },
});

async function startCollectorChild(): Promise<{ address: string; stop: () => void }> {
  const port = 23000 + (process.pid % 2000);
  const child = spawn(join(ROOT, 'bin/icmpwatch'), ['collector', '--authorization=off', '--insecure-plaintext', '--listen', `127.0.0.1:${port}`, '--history-events', '100000'], {
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  await new Promise((r) => setTimeout(r, 1500));
  return { address: `127.0.0.1:${port}`, stop: () => child.kill('SIGTERM') };
}

async function runStage(stage: Stage, exporterAddress: string | null): Promise<{ perEvent: number[]; systemPerEvent: number[]; mainThreadPerEvent: number[] }> {
  const level = STAGES.indexOf(stage);
  const clock = new WallClock();
  const builder = new EventBuilder('bench', new NoResolver(), clock, ['netif_receive_skb'], () => '');
  const nodeLog = new NodeLog(stage === 'text' ? 'text' : 'json', sink);
  const exporter =
    stage === 'export' && exporterAddress
      ? new CollectorExporter({
          address: exporterAddress, node: 'bench', hook: icmpwatch.v1.Hook.HOOK_TP_BTF, symbol: 'netif_receive_skb',
          log: silentLog, registry: new Registry(), maxBufferedEvents: 1_000_000, maxBufferedBytes: 1 << 30,
          batchSize: 500, batchDelayMs: 100, counters: () => ({ events: 0, lost: 0, malformed: 0, suppressed: 0 }),
        })
      : null;
  if (exporter) await new Promise((r) => setTimeout(r, 500));
  let reported = 0;
  const deliver = (r: ReportedPacket) => {
    reported++;
    if (level < STAGES.indexOf('build')) return;
    const ev = builder.fromPacket(r);
    if (level >= STAGES.indexOf('text')) nodeLog.event(ev);
    exporter?.publish(ev);
  };
  const merger = new SightingMerger({
    holdMs: 50, rememberMs: 1000, maxPending: 131072,
    owns: (netns, ip) => (netns === NS_NODE ? 'remote' : (netns === NS_A) === (ip === '10.231.0.2') ? 'local' : 'remote'),
    hostNetns: () => NS_NODE,
    report: deliver,
  });
  const perEvent: number[] = [];
  const systemPerEvent: number[] = [];
  const mainThreadPerEvent: number[] = [];
  const packet = blankPacket(); // as the probe decodes every record into one object
  for (let round = 0; round < ROUNDS; round++) {
    const { bytes, count } = records(round);
    const memory = new RecordMemory(bytes.buffer);
    reported = 0;
    const cpu0 = process.cpuUsage();
    const thread0 = process.threadCpuUsage();
    for (let first = 0; first < count; first += TURN) {
      const last = Math.min(count, first + TURN);
      for (let i = first; i < last; i++) {
        const p = decodeEvent(memory, i * RECORD + 8, packet);
        if (level >= 1) merger.add(p);
      }
      await new Promise((r) => setImmediate(r));
    }
    if (exporter) {
      const deadline = Date.now() + 60_000;
      while (exporter.state().bufferedEvents > 0) {
        if (Date.now() > deadline) throw new Error(`collector did not acknowledge: ${JSON.stringify(exporter.state())}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    const cpu = process.cpuUsage(cpu0);
    const thread = process.threadCpuUsage(thread0);
    mainThreadPerEvent.push((thread.user + thread.system) / PACKETS);
    perEvent.push((cpu.user + cpu.system) / PACKETS);
    systemPerEvent.push(cpu.system / PACKETS);
  }
  merger.flush();
  nodeLog.flush();
  await exporter?.close();
  return { perEvent, systemPerEvent, mainThreadPerEvent };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const collector = chosen.includes('export') ? await startCollectorChild() : null;
try {
  process.stdout.write(`agent path, ${PACKETS} packets x ${ROUNDS} rounds${ROUTED ? ', routed (2 sightings per packet)' : ''}; CPU us per reported event\n`);
  for (const stage of chosen) {
    const { perEvent: xs, systemPerEvent, mainThreadPerEvent } = await runStage(stage, collector?.address ?? null);
    // The first round warms up (compilation, first allocations): left out of median and min.
    process.stdout.write(
      `${stage.padEnd(7)} median ${median(xs.slice(1)).toFixed(3)}  min ${Math.min(...xs.slice(1)).toFixed(3)}  system ${median(systemPerEvent.slice(1)).toFixed(3)}  main thread ${median(mainThreadPerEvent.slice(1)).toFixed(3)}  (rounds ${xs.map((x) => x.toFixed(2)).join(' ')})\n`,
    );
  }
} finally {
  collector?.stop();
}
