// Runs the real CLI (src/cli/main.ts through tsx, so no build is needed) as a child process.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ARGS = ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts')];
/** The built CLI as operators run it (after `make build`). */
export const CLI = path.join(ROOT, 'bin/icmpwatch');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `onSpawn` gets the child, e.g. to signal it. */
export function runCli(args: string[], onSpawn?: (child: ChildProcess) => void): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...ARGS, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    onSpawn?.(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * A collector process; resolves once it logged the address it listens on. Without an
 * --authorization flag in `args` it runs with access control off (no API server to ask).
 */
export async function spawnCollector(args: string[]): Promise<{ child: ChildProcess; address: string; exited: Promise<number | null>; log: () => string }> {
  const access = args.some((a) => a.startsWith('--authorization')) ? [] : ['--authorization=off'];
  const child = spawn(process.execPath, [...ARGS, 'collector', ...access, ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let log = '';
  const address = await new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      log += d.toString();
      const m = /"address":"([^"]+)".*"msg":"collector listening"/.exec(log);
      if (m) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`collector exited (${code}) before listening:\n${log}`)));
  });
  return { child, address, exited, log: () => log };
}
