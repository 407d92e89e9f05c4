// What every benchmark of `make bench` shares: the machine line, number formatting, and writing its
// own block of BENCHMARKS.md (between `<!-- bench:NAME:begin ... -->` and `<!-- bench:NAME:end -->`).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
export const CACHE = join(ROOT, '.cache/bench');
export const NODE = join(ROOT, 'node_modules/node/bin/node');
export const QUICK = process.env.QUICK === '1' || process.argv.includes('--quick');
/**
 * Only these capture steps, e.g. `STEPS=agent@200000,agent@300000` (consumer@events/s, 0 = max),
 * for A/B runs of one change; results are printed, never written into BENCHMARKS.md.
 */
export const STEPS = process.env.STEPS ?? null;

export const int = (n: number | null | undefined) => (n === null || n === undefined ? '-' : Math.round(n).toLocaleString('en-US'));
export const fixed = (n: number | null | undefined, digits = 1) => (n === null || n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits));

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

export function machine(): Record<string, string> {
  return {
    date: new Date().toISOString(),
    nproc: String(cpus().length),
    memory: `${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    kernel: execFileSync('uname', ['-r']).toString().trim(),
    cpu: cpus()[0]?.model ?? '?',
    node: execFileSync(NODE, ['--version']).toString().trim(),
    libbpf: execFileSync('dpkg-query', ['-W', '-f=${Version}', 'libbpf1']).toString().trim(),
  };
}

/** The header every block starts with: command, machine, date, load. */
export function header(script: string, info: Record<string, string>, load0: number[]): string {
  return [
    `Command: \`make bench${QUICK ? ' QUICK=1' : ''}\` (\`tsx ${script}\`), ${info.date}.`,
    `Machine: ${info.nproc} vCPU (${info.cpu}), ${info.memory}, Linux ${info.kernel}, Node ${info.node}, libbpf ${info.libbpf}. ` +
      `Load average at start ${load0.map((x) => x.toFixed(2)).join(' ')}, at end ${loadavg().map((x) => x.toFixed(2)).join(' ')}.`,
  ].join('\n');
}

/**
 * Prints the block, keeps its raw data in .cache/bench, and in a full run replaces the block
 * `name` of BENCHMARKS.md (quick runs leave the file alone).
 */
export function publish(name: string, md: string, raw: unknown): void {
  mkdirSync(CACHE, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  writeFileSync(join(CACHE, `${name}-${stamp}.json`), JSON.stringify(raw, null, 2));
  writeFileSync(join(CACHE, `${name}-latest.md`), md);
  process.stdout.write(`\n${md}\n`);
  if (QUICK || STEPS !== null) return;
  const path = join(ROOT, 'BENCHMARKS.md');
  const begin = `<!-- bench:${name}:begin (written by make bench) -->`;
  const end = `<!-- bench:${name}:end -->`;
  const doc = existsSync(path) ? readFileSync(path, 'utf8') : '';
  const i = doc.indexOf(begin);
  const j = doc.indexOf(end);
  if (i >= 0 && j > i) {
    writeFileSync(path, `${doc.slice(0, i + begin.length)}\n${md}\n${doc.slice(j)}`);
    log(`results written into BENCHMARKS.md (${name})`);
  } else log(`BENCHMARKS.md has no ${begin} block; results are in ${CACHE}/${name}-latest.md`);
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}
