import { existsSync, readFileSync } from 'node:fs';
import { bpf, isNullOrErr } from './libbpf.js';
import { resolveKernelSymbol, type SymbolResolution } from './symbols.js';

const BTF_KIND_FUNC = 12;
export const KERNEL_BTF = '/sys/kernel/btf/vmlinux';

/** What this kernel offers the probe, read once at start (and by `icmpwatch probe`). */
export interface KernelFeatures {
  release: string;
  /** The kernel's own BTF (needed by tp_btf and fexit; CO-RE can use --btf instead). */
  kernelBtf: boolean;
  /** BTF CO-RE relocations come from: the kernel's, or a file given with --btf. */
  btfSource: string | null;
  kprobes: boolean;
  /** The active lockdown mode ("none", "integrity", "confidentiality"), null if unknown. */
  lockdown: string | null;
  /** kallsyms names per function the hooks need. */
  symbols: Record<'ip_rcv_core' | 'ip6_rcv_core', SymbolResolution>;
  /** Whether the kernel BTF has a FUNC of that name (fexit attaches by BTF name). */
  btfFunctions: Record<'ip_rcv_core' | 'ip6_rcv_core', boolean>;
}

export class MissingBtfError extends Error {}

export function readKernelFeatures(btfPath: string | null, kernelBtfPath = KERNEL_BTF): KernelFeatures {
  const kernelBtf = existsSync(kernelBtfPath);
  if (btfPath !== null && !existsSync(btfPath)) throw new MissingBtfError(`--btf ${btfPath}: no such file`);
  const btfSource = btfPath ?? (kernelBtf ? kernelBtfPath : null);
  const kallsyms = readOr('/proc/kallsyms', '');
  const lockdown = /\[(\w+)\]/.exec(readOr('/sys/kernel/security/lockdown', ''))?.[1] ?? null;
  const funcs = kernelBtf ? btfFunctionsIn(kernelBtfPath, ['ip_rcv_core', 'ip6_rcv_core']) : new Set<string>();
  return {
    release: readOr('/proc/sys/kernel/osrelease', '').trim(),
    kernelBtf,
    btfSource,
    kprobes: existsSync('/sys/bus/event_source/devices/kprobe') || existsSync('/sys/kernel/tracing/kprobe_events'),
    lockdown,
    symbols: {
      ip_rcv_core: resolveKernelSymbol(kallsyms, 'ip_rcv_core'),
      ip6_rcv_core: resolveKernelSymbol(kallsyms, 'ip6_rcv_core'),
    },
    btfFunctions: { ip_rcv_core: funcs.has('ip_rcv_core'), ip6_rcv_core: funcs.has('ip6_rcv_core') },
  };
}

function btfFunctionsIn(path: string, names: string[]): Set<string> {
  const btf = bpf.btfParse(path, null);
  const found = new Set<string>();
  if (isNullOrErr(btf)) return found;
  for (const name of names) if (bpf.btfFindByNameKind(btf, name, BTF_KIND_FUNC) > 0) found.add(name);
  bpf.btfFree(btf);
  return found;
}

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
}
