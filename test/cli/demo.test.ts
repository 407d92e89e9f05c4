// `icmpwatch demo` as a newcomer runs it: the enriched stream, and no namespace left behind,
// also when it is stopped midway.
import { expect } from 'chai';
import { execFileSync, spawn } from 'node:child_process';
import { isRoot, requirePrerequisite } from '../setup.js';
import { CLI } from './cli-runner.js';

interface DemoRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The demo's namespaces while it pinged (DemoNetwork names them `iw` + its pid in base 36 ...). */
  namespaces: string[];
}

const netnsNames = () => execFileSync('ip', ['netns', 'list']).toString().split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);

/** Runs the demo to its end, or sends `stopWith` once it starts pinging. */
function runDemo(stopWith?: NodeJS.Signals): Promise<DemoRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(CLI, ['demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const prefix = `iw${child.pid!.toString(36)}`;
    let stdout = '';
    let stderr = '';
    let namespaces: string[] | null = null;
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (namespaces || !stderr.includes('pod-a pings pod-b')) return;
      namespaces = netnsNames().filter((n) => n.startsWith(prefix) && /-(node|a|b)$/.test(n));
      if (stopWith) child.kill(stopWith);
    });
    child.on('error', reject);
    // 'close' waits for every holder of the pipes: the demo's subscriber child too.
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, namespaces: namespaces ?? [] });
    });
  });
}

/** The run created its three namespaces, and none is left. */
function expectCleanedUp(run: DemoRun): void {
  expect(run.namespaces, run.stderr).to.have.length(3);
  expect(run.stderr).to.contain('demo namespaces removed');
  const left = new Set(netnsNames());
  expect(run.namespaces.filter((n) => left.has(n))).to.deep.equal([]);
}

describe('icmpwatch demo (real kernel, built CLI)', function () {
  before(function () {
    requirePrerequisite(this, isRoot, 'root (BPF, network namespaces)');
  });

  it('shows both demo pods by name pinging each other and a port unreachable, then removes its namespaces', async () => {
    const run = await runDemo();
    expect(run.code, run.stderr).to.equal(0);
    const lines = run.stdout.split('\n');
    const between = (name: string, from: string, to: string) =>
      lines.some((l) => l.includes(` ${name} `) && new RegExp(`\\(demo/${from}\\) -> \\S+ \\(demo/${to}\\)`).test(l));
    expect(between('echo-request', 'pod-a', 'pod-b'), run.stdout).to.equal(true);
    expect(between('echo-reply', 'pod-b', 'pod-a'), run.stdout).to.equal(true);
    expect(between('echo-request', 'pod-b', 'pod-a'), run.stdout).to.equal(true);
    expect(between('echo-reply', 'pod-a', 'pod-b'), run.stdout).to.equal(true);
    const unreachable = lines.find((l) => l.includes(' port-unreachable ') && /\(demo\/pod-b\) -> \S+ \(demo\/pod-a\)/.test(l));
    expect(unreachable, run.stdout).to.match(/quoted=\S+->\S+:33434\/proto=17/);
    expectCleanedUp(run);
  });

  it('cleans up when SIGTERMed midway', async () => {
    const run = await runDemo('SIGTERM');
    expect([run.code, run.signal], run.stderr).to.deep.equal([143, null]);
    expectCleanedUp(run);
  });
});
