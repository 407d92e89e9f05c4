// The whole product on this machine: the real agent (real kernel) streams to the real collector
// over gRPC; `icmpwatch observe` and `status` read it back. Also across a collector crash.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DemoNetwork } from '../../src/cli/demo-network.js';
import { isRoot, requirePrerequisite } from '../setup.js';
import { CLI, runCli, spawnCollector } from './cli-runner.js';

interface EventLine {
  node: string;
  source: { ip: string; namespace?: string; pod?: string };
  destination: { ip: string; namespace?: string; pod?: string };
  icmp?: { name: string; id?: number; seq?: number };
  observation?: { hook: string };
}

describe('end to end: agent -> collector -> observe (real kernel, real gRPC)', function () {
  this.timeout(120_000);
  let net: DemoNetwork;
  let dir: string;
  let agent: ChildProcess;
  let agentOut = '';
  let agentErr = '';
  let collector: Awaited<ReturnType<typeof spawnCollector>>;
  const port = 21000 + (process.pid % 1000);
  const address = `127.0.0.1:${port}`;
  const ECHO_ID = 40000 + (process.pid % 20000);

  const observe = async (...args: string[]) => {
    const r = await runCli(['observe', '--server', address, '--insecure-plaintext', '-o', 'json', ...args]);
    expect(r.code, r.stderr).to.equal(0);
    return r.stdout.split('\n').filter((l) => l.startsWith('{"time"')).map((l) => JSON.parse(l) as EventLine);
  };
  const requestsFromA = (evs: EventLine[]) =>
    evs.filter((e) => e.icmp?.name === 'echo-request' && e.source.ip === net.pod('a').ipv4);

  before(async function () {
    requirePrerequisite(this, isRoot, 'root (BPF, network namespaces)');
    net = await DemoNetwork.create('routed');
    dir = mkdtempSync(join(tmpdir(), 'icmpwatch-e2e-'));
    writeFileSync(
      join(dir, 'endpoints.json'),
      JSON.stringify({ endpoints: [{ ip: net.pod('a').ipv4, namespace: 'shop', pod: 'web-1' }, { ip: net.pod('b').ipv4, namespace: 'shop', pod: 'db-0' }] }),
    );
    collector = await spawnCollector(['--insecure-plaintext', '--listen', address, '--data-dir', join(dir, 'data')]);
    agent = spawn(CLI, ['agent', '--node-name', 'node-e2e', '--log-format', 'json', '--metrics-addr', 'off', '--endpoints-file', join(dir, 'endpoints.json'), '--collector', address, '--insecure-plaintext'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    agent.stdout!.on('data', (d: Buffer) => (agentOut += d.toString()));
    agent.stderr!.on('data', (d: Buffer) => (agentErr += d.toString()));
    await until(() => agentErr.includes('connected to collector'), 15_000, () => agentErr);
  });

  after(async () => {
    agent?.kill('SIGKILL');
    collector?.child.kill('SIGKILL');
    await net?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('shows pings between pods to a live subscriber and from history, exactly once, with pod names', async () => {
    const live = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'observe', '--server', address, '--insecure-plaintext', '--follow', '-o', 'json', '--type', 'echo-request', '--source-ip', net.pod('a').ipv4], { stdio: ['ignore', 'pipe', 'inherit'] });
    let liveOut = '';
    live.stdout!.on('data', (d: Buffer) => (liveOut += d.toString()));
    try {
      await new Promise((r) => setTimeout(r, 1500)); // the subscription is open
      // ping's -e sets the echo identifier, so the exact id can be checked too.
      await net.ping('a', 'b', 4, ['-c', '5', '-i', '0.1', '-e', String(ECHO_ID)]);
      await until(() => liveOut.split('\n').filter(Boolean).length >= 5, 10_000, () => liveOut);
      const liveEvents = liveOut.split('\n').filter((l) => l.startsWith('{"time"')).map((l) => JSON.parse(l) as EventLine);
      const idSeq = (e: EventLine) => [e.icmp?.id, e.icmp?.seq];
      const expected = [1, 2, 3, 4, 5].map((seq) => [ECHO_ID, seq]);
      expect(liveEvents.map(idSeq)).to.deep.equal(expected);
      const history = requestsFromA(await observe('--last', '1000'));
      expect(history.map(idSeq)).to.deep.equal(expected);
      expect(history[0]).to.deep.include({ node: 'node-e2e' });
      expect(history[0]!.source).to.deep.include({ namespace: 'shop', pod: 'web-1' });
      expect(history[0]!.destination).to.deep.include({ namespace: 'shop', pod: 'db-0' });
      expect(history[0]!.observation).to.deep.include({ hook: 'tp_btf' });
    } finally {
      live.kill('SIGINT');
    }
  });

  it('reports the node, its hook and counters in `status`', async () => {
    const r = await runCli(['status', '--server', address, '--insecure-plaintext']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.contain('node-e2e').and.match(/tp_btf|TP_BTF/);
  });

  it('loses nothing across a collector crash: the agent keeps logging, then resends', async () => {
    const before = requestsFromA(await observe('--last', '1000')).length;
    collector.child.kill('SIGKILL');
    await collector.exited;
    await net.ping('a', 'b', 4, ['-c', '3', '-i', '0.1']);
    // The node log keeps printing while the collector is away.
    await until(() => agentOut.split('\n').filter((l) => l.includes('"echo-request"') && l.includes(net.pod('a').ipv4)).length >= before + 3, 10_000, () => agentOut);
    collector = await spawnCollector(['--insecure-plaintext', '--listen', address, '--data-dir', join(dir, 'data')]);
    await until(() => (agentErr.match(/connected to collector/g) ?? []).length >= 2, 40_000, () => agentErr);
    let all: EventLine[] = [];
    await untilAsync(async () => (all = requestsFromA(await observe('--last', '1000'))).length >= before + 3, 20_000);
    const seqs = all.map((e) => `${e.icmp?.id}/${e.icmp?.seq}`);
    expect(new Set(seqs).size).to.equal(seqs.length); // nothing twice
    expect(all).to.have.length(before + 3);
  });
});

async function until(cond: () => boolean, timeoutMs: number, context: () => string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`condition not reached; output:\n${context().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function untilAsync(cond: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 200));
  }
}
