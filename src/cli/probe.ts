import { z } from 'zod';
import { parseFlags, UsageError } from '../common/config.js';
import { MissingBtfError, readKernelFeatures, type KernelFeatures } from '../agent/probe/kernel-features.js';
import { CHOICE_OF_HOOK, DEFAULT_OBJECT, LADDER, Probe, ProbeError, type HookAttempt, type HookChoice } from '../agent/probe/probe.js';
import type { HookName } from '../agent/probe/event-layout.js';

export const summary = `icmpwatch probe: report this kernel's BPF features, whether each hook loads and attaches
here (and why not), the kernel symbols it resolves to, and the hook \`agent --probe auto\` selects.

  -o text|json   output (json: {"selected": "fexit"|"kretprobe"|"tracepoint"|null, "kernel": {...},
                 "hooks": [{"hook", "program": "fexit"|"kretprobe"|"tp_btf"|"raw_tp", "attached", ...}]})
  --btf PATH     BTF file for a kernel without /sys/kernel/btf/vmlinux`;

type ProbeChoice = Exclude<HookChoice, 'auto'>;

/** One program tried: `hook` is its `--probe` choice, `program` which of the choice's programs. */
export type ProbedHook = Omit<HookAttempt, 'hook'> & { hook: ProbeChoice; program: HookName };

export interface ProbeReport {
  /** The `--probe` choice `auto` would run on. */
  selected: ProbeChoice | null;
  kernel: Omit<KernelFeatures, 'btfFunctions'> & { btfFunctions: string[] };
  hooks: ProbedHook[];
}

/** Tries every hook on its own (load, attach, detach) in the order `auto` would. */
export function probeKernel(btfPath: string | null, objectPath = DEFAULT_OBJECT): ProbeReport {
  const kernel = readKernelFeatures(btfPath);
  const attempts: HookAttempt[] = [];
  for (const hook of LADDER.auto) {
    try {
      const probe = Probe.open({ hook, objectPath, btfPath, ringBytes: 1 << 16, eventsPerSecond: 0, wakeupBytes: 1 << 14, onLibbpfMessage: () => {} }, kernel);
      attempts.push(...probe.attempts);
      probe.close();
    } catch (err) {
      if (!(err instanceof ProbeError)) throw err;
      attempts.push(...(err.attempts.length ? err.attempts : [{ hook, attached: false, reason: err.message }]));
    }
  }
  const hooks = attempts.map(({ hook, ...rest }): ProbedHook => ({ hook: CHOICE_OF_HOOK[hook], program: hook, ...rest }));
  return {
    selected: hooks.find((h) => h.attached)?.hook ?? null,
    kernel: { ...kernel, btfFunctions: Object.entries(kernel.btfFunctions).filter(([, v]) => v).map(([k]) => k) },
    hooks,
  };
}

export async function run(argv: string[]): Promise<number> {
  const flags = parseFlags(
    argv.map((a) => (a === '-o' ? '--output' : a)),
    z.object({ output: z.enum(['text', 'json']).default('text'), btf: z.string().min(1).optional(), bpfObject: z.string().default(DEFAULT_OBJECT) }),
  );
  let report: ProbeReport;
  try {
    report = probeKernel(flags.btf ?? null, flags.bpfObject);
  } catch (err) {
    if (err instanceof MissingBtfError) throw new UsageError(err.message);
    throw err;
  }
  if (flags.output === 'json') {
    process.stdout.write(JSON.stringify(report) + '\n');
  } else {
    const k = report.kernel;
    const chosen = report.hooks.find((h) => h.attached);
    const label = (h: ProbedHook) => (h.program === h.hook ? h.hook : `${h.hook} (${h.program})`);
    const sym = (r: (typeof k.symbols)['ip_rcv_core']) => (r.status === 'found' ? r.symbols.join(', ') : `${r.status}: ${r.reason}`);
    process.stdout.write(
      [
        `kernel      ${k.release}`,
        `btf         ${k.kernelBtf ? 'kernel' : 'none'}${k.btfSource && !k.kernelBtf ? ` (using ${k.btfSource})` : ''}; functions: ${k.btfFunctions.join(', ') || 'none'}`,
        `kprobes     ${k.kprobes ? 'available' : 'not available'}`,
        `lockdown    ${k.lockdown ?? 'unknown'}`,
        `ip_rcv_core ${sym(k.symbols.ip_rcv_core)}`,
        `ip6_rcv_core ${sym(k.symbols.ip6_rcv_core)}`,
        '',
        ...report.hooks.map((h) => `${label(h).padEnd(21)} ${h.attached ? `ok (${(h.symbols ?? []).join(', ')})${h.warnings?.length ? ` ${h.warnings.join('; ')}` : ''}` : `refused: ${h.reason}`}`),
        '',
        `selected: ${chosen ? label(chosen) : 'none'}`,
      ].join('\n') + '\n',
    );
  }
  return report.selected ? 0 : 1;
}
