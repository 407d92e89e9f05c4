// The agent as an operator runs it: the real binary, flags, stdout/stderr, endpoints, signals.
import { expect } from 'chai';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DemoNetwork } from '../../src/cli/demo-network.js';
import { isRoot, requirePrerequisite } from '../setup.js';
import { CLI } from './cli-runner.js';


function runCli(args: string[]) {
  return spawnSync(CLI, args, { encoding: 'utf8', timeout: 30000 });
}

describe('icmpwatch agent (CLI)', function () {
  it('exits 2 naming the flag on bad flags', () => {
    const cases: [string[], RegExp][] = [
      [['--probe', 'kprobe'], /--probe: /],
      [['--ring-bytes', '1000'], /--ring-bytes: /],
      [['--ring-bytes', '12288'], /--ring-bytes: must be a power of two/],
      [['--ring-bytes', String(2 ** 31)], /--ring-bytes: /],
      [['--events-per-second', '-1'], /--events-per-second: /],
      [['--metrics-addr', 'nope'], /--metrics-addr: /],
      [['--no-such-flag'], /unknown flag --no-such-flag/],
      [['--log-format'], /--log-format: needs a value/],
      [['--btf', '/nonexistent/vmlinux.btf', '--metrics-addr', 'off'], /--btf \/nonexistent\/vmlinux.btf: no such file/],
    ];
    for (const [args, message] of cases) {
      const r = runCli(['agent', ...args]);
      expect(r.status, args.join(' ')).to.equal(2);
      expect(r.stderr).to.match(message);
    }
  });

  it('exits 2 naming the file and field of a bad endpoints file', function () {
    const dir = mkdtempSync(join(tmpdir(), 'icmpwatch-cli-'));
    try {
      const file = join(dir, 'endpoints.json');
      writeFileSync(file, JSON.stringify({ endpoints: [{ ip: '10.0.0.1', namespace: 'a' }] }));
      const r = runCli(['agent', '--endpoints-file', file, '--metrics-addr', 'off']);
      expect(r.status).to.equal(2);
      expect(r.stderr).to.contain('--endpoints-file').and.contain(file).and.contain('endpoints.0.pod');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports the selected hook with `probe -o json`', function () {
    requirePrerequisite(this, isRoot, 'root (BPF)');
    const r = runCli(['probe', '-o', 'json']);
    expect(r.status, r.stderr).to.equal(0);
    const report = JSON.parse(r.stdout) as { selected: string; hooks: { hook: string; program: string; attached: boolean }[] };
    expect(report.selected).to.equal('tracepoint'); // this kernel has BTF and tracepoints
    expect(report.hooks.map((h) => [h.hook, h.program, h.attached])).to.deep.equal([
      ['fexit', 'fexit', false],
      ['kretprobe', 'kretprobe', false],
      ['tracepoint', 'tp_btf', true],
      ['tracepoint', 'raw_tp', true],
    ]);
  });

  describe('running', function () {
    let net: DemoNetwork;
    let dir: string;
    let agent: ChildProcess;
    let stdout = '';
    let stderr = '';
    const port = 19000 + (process.pid % 1000);

    before(async function () {
      requirePrerequisite(this, isRoot, 'root (BPF, network namespaces)');
      net = await DemoNetwork.create('routed');
      dir = mkdtempSync(join(tmpdir(), 'icmpwatch-cli-'));
      const file = join(dir, 'endpoints.json');
      writeFileSync(file, JSON.stringify({ endpoints: [{ ip: net.pod('a').ipv4, namespace: 'shop', pod: 'cart-1' }, { ip: net.pod('b').ipv4, namespace: 'shop', pod: 'db-0' }] }));
      agent = spawn(CLI, ['agent', '--node-name', 'node-7', '--log-format', 'json', '--endpoints-file', file, '--metrics-addr', `127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
      agent.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
      agent.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      await until(() => stderr.includes('agent running'), 15000, () => stderr);
    });

    after(async () => {
      if (agent && agent.exitCode === null) agent.kill('SIGKILL');
      await net?.destroy();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('prints one JSON object per event on stdout, named from the endpoints file', async () => {
      await net.ping('a', 'b', 4, ['-c', '2', '-i', '0.1']);
      await until(() => stdout.split('\n').filter((l) => l.includes('"echo-reply"')).length >= 2, 5000, () => stdout);
      interface EventLine {
        node: string;
        family: string;
        time: string;
        source: { ip: string };
        destination: { ip: string };
        icmp: { name: string };
      }
      const events = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as EventLine);
      const request = events.find((e) => e.icmp?.name === 'echo-request' && e.source?.ip === net.pod('a').ipv4)!;
      expect(request).to.deep.include({ node: 'node-7', family: 'ipv4' });
      expect(request.source).to.deep.include({ ip: net.pod('a').ipv4, namespace: 'shop', pod: 'cart-1' });
      expect(request.destination).to.deep.include({ ip: net.pod('b').ipv4, namespace: 'shop', pod: 'db-0' });
      expect(request.icmp).to.include.keys('type', 'code', 'name', 'id', 'seq');
      expect(request.time).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$/);
      // Operational logs stay on stderr, structured.
      for (const line of stderr.split('\n').filter(Boolean)) expect(JSON.parse(line)).to.include.keys('level', 'msg');
    });

    it('serves /healthz, /readyz and /metrics', async () => {
      const get = (path: string) => fetch(`http://127.0.0.1:${port}${path}`);
      expect((await get('/healthz')).status).to.equal(200);
      expect((await get('/readyz')).status).to.equal(200);
      const metrics = await (await get('/metrics')).text();
      expect(metrics).to.match(/icmpwatch_kernel_events_total\{hook="tp_btf",family="ipv4"\} [1-9]/);
      for (const family of ['ipv4', 'ipv6', 'unspecified']) {
        expect(metrics).to.contain(`icmpwatch_kernel_ring_full_total{hook="tp_btf",family="${family}"} 0`);
      }
      expect(metrics).to.match(/icmpwatch_agent_events_total\{hook="tp_btf",family="ipv4"\} [1-9]/);
      expect(metrics).to.match(/^icmpwatch_agent_merge_overflow_total 0$/m);
      expect(metrics).to.contain('icmpwatch_kernel_malformed_total');
      expect(metrics).to.contain('icmpwatch_kernel_suppressed_total');
      expect(metrics).to.contain('icmpwatch_agent_hook_info{hook="tp_btf",symbols="netif_receive_skb"} 1');
    });

    it('detaches and exits 0 on SIGTERM within a few seconds', async () => {
      const exited = new Promise<number | null>((r) => agent.once('exit', (code) => r(code)));
      const t0 = Date.now();
      agent.kill('SIGTERM');
      expect(await exited).to.equal(0);
      expect(Date.now() - t0).to.be.below(5000);
      expect(stderr).to.contain('agent stopped');
      const links = spawnSync('bpftool', ['link', 'list', '-j'], { encoding: 'utf8' });
      expect(links.stdout).to.not.contain('receive_tp_btf');
    });
  });
});

async function until(cond: () => boolean, timeoutMs: number, context: () => string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`condition not reached; output:\n${context().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
