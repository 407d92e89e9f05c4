import { randomFillSync } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { bpf, errno, errnoName, isNullOrErr, ObjectOpenOpts, type Pointer, setLibbpfPrint } from './libbpf.js';
import { KERNEL_BTF, readKernelFeatures, type KernelFeatures } from './kernel-features.js';
import { RingReader } from './ring-reader.js';
import { blankPacket, decodeEvent, formatIpv4, formatIpv6, type CapturedPacket } from './decoder.js';
import { AGG_KEY, AGG_VALUE, CONTROL, COUNTER_FAMILIES, COUNTERS, type CounterFamily, type CounterName, type HookName } from './event-layout.js';

/** The CO-RE object `make build` compiles from bpf/. */
export const DEFAULT_OBJECT = fileURLToPath(new URL('../../../build/bpf/icmpwatch.bpf.o', import.meta.url));

/** What the operator asks for; `auto` walks the ladder from the most precise hook down. */
export type HookChoice = 'auto' | 'fexit' | 'kretprobe' | 'tracepoint';

export const LADDER: Record<HookChoice, HookName[]> = {
  auto: ['fexit', 'kretprobe', 'tp_btf', 'raw_tp'],
  fexit: ['fexit'],
  kretprobe: ['kretprobe'],
  tracepoint: ['tp_btf', 'raw_tp'],
};

/** The `--probe` choice a hook belongs to: both tracepoint programs are `tracepoint`. */
export const CHOICE_OF_HOOK: Record<HookName, Exclude<HookChoice, 'auto'>> = {
  fexit: 'fexit',
  kretprobe: 'kretprobe',
  tp_btf: 'tracepoint',
  raw_tp: 'tracepoint',
};

/** Every program in bpf/icmpwatch.bpf.c, by hook; only the chosen hook's are loaded. */
const PROGRAMS: Record<HookName, { v4: string; v6: string | null }> = {
  fexit: { v4: 'fexit_ip_rcv_core', v6: 'fexit_ip6_rcv_core' },
  kretprobe: { v4: 'kretprobe_ip_rcv_core', v6: 'kretprobe_ip6_rcv_core' },
  tp_btf: { v4: 'receive_tp_btf', v6: null },
  raw_tp: { v4: 'receive_raw_tp', v6: null },
};

/** What to load for one hook: programs and, for kretprobes, the kallsyms names to attach. */
interface HookPlan {
  hook: HookName;
  programs: { name: string; symbols: string[] }[];
  /** Attached kernel functions, for status, metrics and events. */
  symbols: string[];
  /** Coverage the hook lacks on this kernel (e.g. no IPv6 function). */
  warnings: string[];
}

export interface HookAttempt {
  hook: HookName;
  attached: boolean;
  symbols?: string[];
  warnings?: string[];
  /** Why it was refused: the error and libbpf's last warnings. */
  reason?: string;
}

/** Decides whether a hook can work here and what it attaches to; a string is the refusal. */
export function planHook(hook: HookName, k: KernelFeatures): HookPlan | string {
  switch (hook) {
    case 'tp_btf':
      return k.kernelBtf
        ? { hook, programs: [{ name: PROGRAMS.tp_btf.v4, symbols: [] }], symbols: ['netif_receive_skb'], warnings: [] }
        : 'needs the kernel\'s own BTF (/sys/kernel/btf/vmlinux)';
    case 'raw_tp':
      return { hook, programs: [{ name: PROGRAMS.raw_tp.v4, symbols: [] }], symbols: ['netif_receive_skb'], warnings: [] };
    case 'fexit': {
      if (!k.kernelBtf) return 'needs the kernel\'s own BTF (/sys/kernel/btf/vmlinux)';
      const usable = (fn: 'ip_rcv_core' | 'ip6_rcv_core') => {
        const r = k.symbols[fn];
        if (!k.btfFunctions[fn]) return `${fn} has no BTF function (renamed or inlined by the compiler)`;
        if (r.status !== 'found') return r.reason;
        if (!r.symbols.includes(fn)) return `${fn} is only in kallsyms as ${r.symbols.join(', ')}`;
        return null;
      };
      // fexit attaches to the BTF function alone: traffic through a clone would go unseen, on
      // either family, so leave such kernels to the kretprobe, which attaches every clone.
      for (const fn of ['ip_rcv_core', 'ip6_rcv_core'] as const) {
        const r = k.symbols[fn];
        const clones = r.status === 'found' && r.symbols.includes(fn) ? r.symbols.filter((s) => s !== fn) : [];
        if (clones.length) return `${fn} also runs as ${clones.join(', ')}, which fexit cannot attach to (it attaches by BTF name; kretprobe attaches every clone)`;
      }
      const v4 = usable('ip_rcv_core');
      if (v4) return v4;
      const v6 = usable('ip6_rcv_core');
      return {
        hook,
        programs: [{ name: PROGRAMS.fexit.v4, symbols: [] }, ...(v6 ? [] : [{ name: PROGRAMS.fexit.v6!, symbols: [] }])],
        symbols: ['ip_rcv_core', ...(v6 ? [] : ['ip6_rcv_core'])],
        warnings: v6 ? [`IPv6 not covered: ${v6}`] : [],
      };
    }
    case 'kretprobe': {
      if (!k.kprobes) return 'kprobes are not available in this kernel (CONFIG_KPROBES, kprobe PMU)';
      const v4 = k.symbols.ip_rcv_core;
      if (v4.status !== 'found') return v4.reason;
      const v6 = k.symbols.ip6_rcv_core;
      return {
        hook,
        programs: [
          { name: PROGRAMS.kretprobe.v4, symbols: v4.symbols },
          ...(v6.status === 'found' ? [{ name: PROGRAMS.kretprobe.v6!, symbols: v6.symbols }] : []),
        ],
        symbols: [...v4.symbols, ...(v6.status === 'found' ? v6.symbols : [])],
        warnings: v6.status === 'found' ? [] : [`IPv6 not covered: ${v6.reason}`],
      };
    }
  }
}

export interface ProbeOptions {
  /** A choice walks its ladder; a hook name tries only that hook. */
  hook: HookChoice | HookName;
  objectPath: string;
  /** BTF for CO-RE on kernels without their own (`--btf`); null: the kernel's. */
  btfPath: string | null;
  /** Ring buffer size in bytes: a power of two, multiple of the page size. */
  ringBytes: number;
  /** Per-node packets per second before packets are only counted in-kernel; 0 = no limit. */
  eventsPerSecond: number;
  wakeupBytes: number;
  onLibbpfMessage: (level: 'warn' | 'info' | 'debug', message: string) => void;
}

/** Packets over the flood limit, counted per (family, src, dst, type, code) in the kernel. */
export interface FloodAggregate {
  family: 4 | 6;
  type: number;
  code: number;
  src: string;
  dst: string;
  packets: number;
  /** Sightings of those packets: a packet seen in the node and then a pod counts twice here. */
  sightings: number;
  firstNs: number;
  lastNs: number;
}

export class ProbeError extends Error {
  constructor(
    message: string,
    readonly attempts: HookAttempt[],
  ) {
    super(message);
  }
}

/** Loads the BPF object on the best hook the kernel allows and gives access to its maps. */
export class Probe {
  private reader: RingReader | null = null;
  private finalCounters: Record<CounterFamily, Record<CounterName, number>> | null = null;
  private readonly control = Buffer.alloc(CONTROL.size);
  private readonly zeroKey = Buffer.alloc(4);
  private readonly ncpus = bpf.numPossibleCpus();

  private constructor(
    private readonly obj: Pointer,
    private readonly links: Pointer[],
    readonly hook: HookName,
    /** Kernel functions or tracepoint the hook is attached to. */
    readonly symbols: string[],
    readonly attempts: HookAttempt[],
    private readonly opts: ProbeOptions,
  ) {
    this.control.writeBigUInt64LE(BigInt(opts.eventsPerSecond), CONTROL.eventsPerSecond);
    this.control.writeBigUInt64LE(BigInt(opts.wakeupBytes), CONTROL.wakeupBytes);
    randomFillSync(this.control, CONTROL.identitySeed, 8);
    this.writeControl();
  }

  static open(opts: ProbeOptions, kernel: KernelFeatures = readKernelFeatures(opts.btfPath)): Probe {
    if (!kernel.btfSource) {
      throw new ProbeError(
        `this kernel has no BTF (${KERNEL_BTF} is missing: CONFIG_DEBUG_INFO_BTF); pass --btf PATH with a BTF file for kernel ${kernel.release}`,
        [],
      );
    }
    const attempts: HookAttempt[] = [];
    const ladder = opts.hook in LADDER ? LADDER[opts.hook as HookChoice] : [opts.hook as HookName];
    for (const hook of ladder) {
      const plan = planHook(hook, kernel);
      if (typeof plan === 'string') {
        attempts.push({ hook, attached: false, reason: plan });
        continue;
      }
      const libbpfWarnings: string[] = [];
      setLibbpfPrint((level, message) => {
        if (level === 'warn') libbpfWarnings.push(message);
        opts.onLibbpfMessage(level, message);
      });
      try {
        const { obj, links } = attach(opts, plan);
        attempts.push({ hook, attached: true, symbols: plan.symbols, warnings: plan.warnings });
        return new Probe(obj, links, hook, plan.symbols, attempts, opts);
      } catch (err) {
        let reason = (err as Error).message;
        if (/EPERM/.test(reason) && kernel.lockdown && kernel.lockdown !== 'none') reason += ` (kernel lockdown: ${kernel.lockdown})`;
        const detail = libbpfWarnings.filter((w) => !/^libbpf: prog '.*': -- BEGIN|END PROG LOAD LOG/.test(w)).slice(-2).join(' | ');
        attempts.push({ hook, attached: false, symbols: plan.symbols, reason: `${reason}${detail ? `: ${detail}` : ''}` });
      }
    }
    throw new ProbeError(`no hook could be attached (${attempts.map((a) => `${a.hook}: ${a.reason}`).join('; ')})`, attempts);
  }

  private mapFd(name: string): number {
    const map = bpf.findMap(this.obj, name);
    if (isNullOrErr(map)) throw new Error(`map ${name} missing from the BPF object`);
    return bpf.mapFd(map);
  }

  private writeControl(): void {
    if (bpf.mapUpdate(this.mapFd('control'), this.zeroKey, this.control, 0n) !== 0) {
      throw new Error(`updating the control map failed: errno ${errno()}`);
    }
  }

  /**
   * Starts delivering decoded packets from the ring on the event loop. The packet is one object
   * reused for every record: valid during the call, copied by whoever keeps it.
   */
  startReading(onPacket: (packet: CapturedPacket) => void): void {
    const packet = blankPacket();
    this.reader = new RingReader(this.mapFd('events'), this.opts.ringBytes, (memory, off) => onPacket(decodeEvent(memory, off, packet)));
    this.reader.start();
  }

  /** Per-CPU counters summed over CPUs and families; after close(), their final values. */
  readCounters(): Record<CounterName, number> {
    const byFamily = this.readCountersByFamily();
    const out = {} as Record<CounterName, number>;
    for (const name of COUNTERS) out[name] = COUNTER_FAMILIES.reduce((sum, f) => sum + byFamily[f][name], 0);
    return out;
  }

  /** Per-CPU counters summed over CPUs, per family; after close(), their final values. */
  readCountersByFamily(): Record<CounterFamily, Record<CounterName, number>> {
    if (this.finalCounters) return this.finalCounters;
    const fd = this.mapFd('counters');
    const values = Buffer.alloc(8 * this.ncpus);
    const key = Buffer.alloc(4);
    const out = {} as Record<CounterFamily, Record<CounterName, number>>;
    COUNTER_FAMILIES.forEach((family, row) => {
      const counters = (out[family] = {} as Record<CounterName, number>);
      COUNTERS.forEach((name, column) => {
        key.writeUInt32LE(row * COUNTERS.length + column);
        let sum = 0;
        if (bpf.mapLookup(fd, key, values) === 0) {
          for (let cpu = 0; cpu < this.ncpus; cpu++) sum += Number(values.readBigUInt64LE(cpu * 8));
        }
        counters[name] = sum;
      });
    });
    return out;
  }

  /**
   * Switches the programs to the other aggregation map, waits until no program can still be
   * writing the old one, then empties it. Nothing is lost between the two maps.
   */
  async drainFloodAggregates(): Promise<FloodAggregate[]> {
    const slot = this.control.readUInt32LE(CONTROL.aggSlot);
    this.control.writeUInt32LE(slot ^ 1, CONTROL.aggSlot);
    this.writeControl();
    // A program that read the old slot finishes within microseconds.
    await new Promise((r) => setTimeout(r, 20));
    const fd = this.mapFd(slot === 0 ? 'agg_0' : 'agg_1');
    const keys: Buffer[] = [];
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(AGG_KEY.size);
      if (bpf.mapNextKey(fd, prev, next) !== 0) break;
      keys.push(next);
      prev = next;
    }
    const value = Buffer.alloc(AGG_VALUE.size);
    const out: FloodAggregate[] = [];
    for (const key of keys) {
      if (bpf.mapLookup(fd, key, value) !== 0) continue;
      const family = key[AGG_KEY.family] === 6 ? 6 : 4;
      const fmt = family === 4 ? formatIpv4 : formatIpv6;
      out.push({
        family,
        type: key[AGG_KEY.type]!,
        code: key[AGG_KEY.code]!,
        src: fmt(key, AGG_KEY.saddr),
        dst: fmt(key, AGG_KEY.daddr),
        packets: Number(value.readBigUInt64LE(AGG_VALUE.packets)),
        sightings: Number(value.readBigUInt64LE(AGG_VALUE.sightings)),
        firstNs: Number(value.readBigUInt64LE(AGG_VALUE.firstNs)),
        lastNs: Number(value.readBigUInt64LE(AGG_VALUE.lastNs)),
      });
      bpf.mapDelete(fd, key);
    }
    return out;
  }

  /** Detaches the programs, then delivers what is left in the ring. Maps stay readable. */
  detach(): void {
    for (const link of this.links) bpf.linkDestroy(link);
    this.links.length = 0;
    this.reader?.close();
    this.reader = null;
  }

  close(): void {
    if (this.finalCounters) return;
    this.detach();
    this.finalCounters = this.readCountersByFamily();
    bpf.objectClose(this.obj);
  }
}

function attach(opts: ProbeOptions, plan: HookPlan): { obj: Pointer; links: Pointer[] } {
  const openOpts = opts.btfPath ? { sz: koffi.sizeof(ObjectOpenOpts), btf_custom_path: opts.btfPath } : null;
  const obj = bpf.objectOpenFile(opts.objectPath, openOpts);
  if (isNullOrErr(obj)) throw new Error(`cannot open BPF object ${opts.objectPath}: ${errnoName(errno())}`);
  const links: Pointer[] = [];
  try {
    const wanted = new Set(plan.programs.map((p) => p.name));
    for (const { v4, v6 } of Object.values(PROGRAMS)) {
      for (const name of [v4, v6]) {
        if (name === null) continue;
        const prog = bpf.findProgram(obj, name);
        if (isNullOrErr(prog)) throw new Error(`program ${name} missing from the BPF object`);
        bpf.programSetAutoload(prog, wanted.has(name));
      }
    }
    const events = bpf.findMap(obj, 'events');
    if (isNullOrErr(events) || bpf.mapSetMaxEntries(events, opts.ringBytes) !== 0) {
      throw new Error(`cannot size the ring buffer to ${opts.ringBytes} bytes`);
    }
    const loaded = bpf.objectLoad(obj);
    if (loaded !== 0) throw new Error(`load failed: ${errnoName(loaded)}`);
    for (const { name, symbols } of plan.programs) {
      const prog = bpf.findProgram(obj, name)!;
      for (const symbol of symbols.length ? symbols : [null]) {
        const link = symbol === null ? bpf.programAttach(prog) : bpf.programAttachKprobe(prog, true, symbol);
        if (isNullOrErr(link)) throw new Error(`attach ${name}${symbol ? ` to ${symbol}` : ''} failed: ${errnoName(errno())}`);
        links.push(link);
      }
    }
    return { obj, links };
  } catch (err) {
    for (const link of links) bpf.linkDestroy(link);
    bpf.objectClose(obj);
    throw err;
  }
}
