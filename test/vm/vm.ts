// Runs a shell script as root inside a QEMU (TCG) guest booting one of Debian's own kernels, with
// the host's / shared read-only and the repository shared read-write at the same path. This is how
// the test suite proves the kprobe/kretprobe/fexit paths that the host kernel (no kprobes, lockdown)
// refuses. Kernels and initramfs come from test/vm/kernels.sh; see test/vm/README.md.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export type GuestKernel = '6.1' | '6.12';

export interface GuestOptions {
  /** Limit for the boot and the script together (not the first-use kernel download). Default 120 s. */
  timeoutMs?: number;
  /** Guest memory. Default 2048. */
  memMb?: number;
  /** Directory shared read-write at the same path and used as the script's cwd. Default: this repo. */
  repoRoot?: string;
}

export interface GuestResult {
  /** Exit code of the script inside the guest. */
  exitCode: number;
  /** stdout+stderr of the script (no kernel console noise). */
  output: string;
  /** `uname -r` of the guest. */
  kernelRelease: string;
  /** Wall time of the QEMU run (boot, script, power-off). */
  durationMs: number;
  /** From QEMU's start to the guest starting the script (boot + mounts). */
  bootMs: number;
}

export interface PreparedKernel {
  flavor: GuestKernel;
  kver: string;
  dir: string;
  vmlinux: string;
  initrd: string;
  tree: string;
}

const HERE = path.dirname(fileURLToPath(import.meta.url));
const KERNELS_SH = path.join(HERE, 'kernels.sh');
export const REPO_ROOT = path.resolve(HERE, '..', '..');
const CACHE_ROOT = process.env.ICMPWATCH_CACHE ?? path.join(os.homedir(), '.cache', 'icmpwatch');
const PREPARE_TIMEOUT_MS = 15 * 60_000;
const SEARCH_PATH = (process.env.PATH ?? '') + ':/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const CMDLINE_BASE = [
  'console=ttyS0', 'panic=-1', 'quiet', 'mitigations=off', 'tsc=reliable', 'no_timer_check',
  'i8042.noaux', 'i8042.nokbd', 'i8042.nopnp', 'cryptomgr.notests',
];
const JOBS_MAX_AGE_MS = 24 * 3600_000;

// ---- no QEMU outlives this process ------------------------------------------------------------
// Each QEMU runs as `setpriv --pdeathsig KILL -- timeout -s KILL T setpriv --pdeathsig KILL -- qemu`:
// if this process dies (even by SIGKILL) `timeout` is killed and takes QEMU with it; `timeout` is a
// hard backstop if this process hangs; and on a normal exit the handler below kills what is left.
const live = new Set<ChildProcess>();
function killTree(child: ChildProcess): void {
  if (child.pid === undefined) return;
  // `timeout` puts itself (and QEMU) into a process group of its own.
  for (const target of [-child.pid, child.pid]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.on('exit', () => {
  for (const child of live) killTree(child);
});

function which(tool: string): string | null {
  for (const dir of SEARCH_PATH.split(':')) {
    if (!dir) continue;
    const p = path.join(dir, tool);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

function cachedKernelReady(flavor: GuestKernel): boolean {
  try {
    const name = fs.readFileSync(path.join(CACHE_ROOT, 'kernels', `current-${flavor}`), 'utf8').trim();
    return fs.existsSync(path.join(CACHE_ROOT, 'kernels', name, 'ready'));
  } catch {
    return false;
  }
}

/**
 * Whether guests can run here. `ok` false means a test should skip (or fail under CI, through
 * requirePrerequisite); `missing` says why. Tools that kernels.sh installs itself count as present
 * when this process may install them (root with apt-get).
 */
export function guestPrerequisites(): { ok: boolean; missing: string } {
  const missing: string[] = [];
  if (process.platform !== 'linux' || process.arch !== 'x64') missing.push('an x86-64 Linux host');
  for (const tool of ['bash', 'setpriv', 'timeout', 'flock']) if (!which(tool)) missing.push(tool);
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const canInstall = isRoot && which('apt-get') !== null && which('dpkg-deb') !== null;
  const installable = ['qemu-system-x86_64', 'busybox', 'modprobe', 'depmod', 'cpio', 'xz', 'zstd', 'lz4'];
  const absent = installable.filter((t) => !which(t));
  if (absent.length > 0 && !canInstall) {
    missing.push(`${absent.join(', ')} (root with apt-get installs them: qemu-system-x86 busybox-static kmod cpio xz-utils zstd lz4)`);
  }
  const uncached = (['6.1', '6.12'] as const).filter((k) => !cachedKernelReady(k));
  if (uncached.length > 0 && !canInstall) {
    missing.push(`cached guest kernels ${uncached.join(', ')} (root with apt-get fetches them)`);
  }
  return { ok: missing.length === 0, missing: missing.join('; ') };
}

// ---- kernels ------------------------------------------------------------------------------------
const prepared = new Map<GuestKernel, Promise<PreparedKernel>>();

/** Runs kernels.sh for one kernel (once per process): installs, downloads, builds as needed. */
export function prepareKernel(flavor: GuestKernel): Promise<PreparedKernel> {
  let p = prepared.get(flavor);
  if (!p) {
    p = new Promise<PreparedKernel>((resolve, reject) => {
      execFile(
        'bash',
        [KERNELS_SH, flavor],
        { timeout: PREPARE_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 64 << 20, env: { ...process.env, ICMPWATCH_CACHE: CACHE_ROOT } },
        (err, stdout, stderr) => {
          if (err) {
            reject(new Error(`test/vm/kernels.sh ${flavor} failed: ${err.message}\n${tail(String(stderr), 40)}`));
            return;
          }
          const line = String(stdout).split('\n').find((l) => l.startsWith(`ICMPWATCH-KERNEL flavor=${flavor} `));
          const fields = new Map<string, string>();
          for (const kv of (line ?? '').split(' ').slice(1)) {
            const eq = kv.indexOf('=');
            if (eq > 0) fields.set(kv.slice(0, eq), kv.slice(eq + 1));
          }
          const get = (k: string): string => {
            const v = fields.get(k);
            if (!v) throw new Error(`test/vm/kernels.sh ${flavor}: no ${k} in its output:\n${String(stdout)}`);
            return v;
          };
          try {
            resolve({ flavor, kver: get('kver'), dir: get('dir'), vmlinux: get('vmlinux'), initrd: get('initrd'), tree: get('tree') });
          } catch (e) {
            reject(e instanceof Error ? e : new Error(String(e)));
          }
        },
      );
    });
    prepared.set(flavor, p);
    p.catch(() => prepared.delete(flavor)); // let a later call retry
  }
  return p;
}

// ---- running a guest ----------------------------------------------------------------------------
function tail(text: string, lines: number): string {
  return text.split('\n').slice(-lines).join('\n');
}

function sweepOldJobs(jobsDir: string): void {
  let entries: string[];
  try {
    entries = fs.readdirSync(jobsDir);
  } catch {
    return;
  }
  const now = Date.now();
  for (const e of entries) {
    const p = path.join(jobsDir, e);
    try {
      if (now - fs.statSync(p).mtimeMs > JOBS_MAX_AGE_MS) fs.rmSync(p, { recursive: true, force: true });
    } catch {
      // raced with another sweeper
    }
  }
}

function assertCmdlineSafe(what: string, value: string): void {
  if (!/^[A-Za-z0-9._+~\/:@%,-]+$/.test(value)) {
    throw new Error(`runInGuest: ${what} '${value}' cannot go on a kernel command line (spaces or odd characters)`);
  }
}

/**
 * Boots `kernel` under QEMU/TCG and runs `script` (text of a /bin/sh script) as root inside it, with
 * cwd = repo root and PATH = <repo>/node_modules/.bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin.
 * Resolves with the script's exit code and its stdout+stderr; rejects if the guest never reports
 * (timeout, panic, harness error), with the tail of the serial console and the kept log's path.
 */
export async function runInGuest(kernel: GuestKernel, script: string, opts: GuestOptions = {}): Promise<GuestResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const memMb = opts.memMb ?? 2048;
  const repo = path.resolve(opts.repoRoot ?? REPO_ROOT);
  const k = await prepareKernel(kernel);

  const jobsDir = path.join(repo, '.cache', 'vm', 'jobs');
  fs.mkdirSync(jobsDir, { recursive: true });
  sweepOldJobs(jobsDir);
  const nonce = `${kernel}-${Date.now().toString(36)}-${process.pid}-${randomBytes(4).toString('hex')}`;
  const runDir = path.join(jobsDir, nonce);
  fs.mkdirSync(runDir);
  const scriptPath = path.join(runDir, 'script.sh');
  const outPath = path.join(runDir, 'output.log');
  const serialPath = path.join(runDir, 'serial.log');
  fs.writeFileSync(scriptPath, script, { mode: 0o755 });
  fs.writeFileSync(outPath, '');

  for (const [what, v] of [['repo root', repo], ['job path', scriptPath], ['output path', outPath]] as const) {
    assertCmdlineSafe(what, v);
  }
  const debug = process.env.ICMPWATCH_VM_DEBUG === '1';
  const append = [
    ...CMDLINE_BASE.filter((a) => !(debug && a === 'quiet')),
    `vmjob=${scriptPath}`, `vmrepo=${repo}`, `vmout=${outPath}`, `vmnonce=${nonce}`,
  ].join(' ');
  if (append.length > 2000) throw new Error(`runInGuest: kernel command line too long (${append.length} bytes)`);

  const virtfs = (p: string, tag: string, ro: boolean): string[] => {
    if (p.includes(',')) throw new Error(`runInGuest: a comma in shared path ${p}`);
    return ['-virtfs', `local,path=${p},mount_tag=${tag},security_model=none,multidevs=remap${ro ? ',readonly=on' : ''}`];
  };
  const qemuArgs = [
    '-accel', 'tcg,thread=multi,tb-size=256', '-cpu', 'max', '-machine', 'q35', '-smp', '2', '-m', String(memMb),
    '-nodefaults', '-no-reboot', '-display', 'none',
    '-kernel', k.vmlinux, '-initrd', k.initrd, '-append', append,
    '-chardev', `stdio,id=s0,signal=off,logfile=${serialPath}`, '-serial', 'chardev:s0',
    ...virtfs('/', 'hostroot', true),
    ...virtfs(repo, 'repo', false),
    ...virtfs(k.tree, 'kmods', true),
  ];
  const hardLimitS = Math.ceil(timeoutMs / 1000) + 30;
  const argv = [
    '--pdeathsig', 'KILL', '--', 'timeout', '-s', 'KILL', String(hardLimitS),
    'setpriv', '--pdeathsig', 'KILL', '--', 'qemu-system-x86_64', ...qemuArgs,
  ];

  const started = Date.now();
  const child = spawn('setpriv', argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PATH: SEARCH_PATH },
  });
  live.add(child);

  let serial = '';
  let stderr = '';
  let bootMs = -1;
  const exitRe = new RegExp(`ICMPWATCH-VM-EXIT ${nonce} (\\d+)`);
  const krelRe = new RegExp(`ICMPWATCH-VM-KREL ${nonce} (\\S+)`);
  const errRe = new RegExp(`ICMPWATCH-VM-ERROR ${nonce} (.*)`);

  const outcome = await new Promise<{ code: number | null; why: string }>((resolve) => {
    let settled = false;
    let grace: NodeJS.Timeout | undefined;
    const finish = (code: number | null, why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (grace) clearTimeout(grace);
      resolve({ code, why });
    };
    const timer = setTimeout(() => {
      killTree(child);
      finish(null, `timed out after ${timeoutMs} ms`);
    }, timeoutMs);
    let exitCode: number | null = null;
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      serial += chunk;
      if (bootMs < 0 && krelRe.test(serial)) bootMs = Date.now() - started;
      if (exitCode === null) {
        const m = exitRe.exec(serial);
        if (m) {
          exitCode = Number(m[1]);
          // poweroff -f follows at once; don't wait long for QEMU to notice.
          grace = setTimeout(() => killTree(child), 5_000);
        }
      }
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('error', (e) => finish(null, `cannot start QEMU: ${e.message}`));
    child.on('close', (code, signal) => {
      if (exitCode !== null) finish(exitCode, '');
      else finish(null, `QEMU exited (${signal ?? `code ${code}`}) before the guest reported an exit code`);
    });
  });
  killTree(child);
  live.delete(child);
  const durationMs = Date.now() - started;

  const guestErr = errRe.exec(serial)?.[1];
  if (outcome.code === null || guestErr !== undefined) {
    throw new Error(
      `runInGuest(${kernel}): ${guestErr !== undefined ? `guest harness error: ${guestErr}` : outcome.why}\n` +
        `run dir kept: ${runDir} (serial.log, output.log)\n` +
        `--- QEMU stderr ---\n${tail(stderr, 20)}\n--- serial console (tail) ---\n${tail(serial, 40)}`,
    );
  }
  const output = fs.readFileSync(outPath, 'utf8');
  const kernelRelease = krelRe.exec(serial)?.[1] ?? '';
  if (!debug && process.env.ICMPWATCH_VM_KEEP !== '1') fs.rmSync(runDir, { recursive: true, force: true });
  return { exitCode: outcome.code, output, kernelRelease, durationMs, bootMs };
}
