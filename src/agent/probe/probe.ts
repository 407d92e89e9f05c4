import { fileURLToPath } from 'node:url';
import { bpf, errno, isNullOrErr, type Pointer, setLibbpfPrint } from './libbpf.js';
import { RingReader } from './ring-reader.js';
import { decodeEvent, formatIpv4, formatIpv6, type CapturedPacket } from './decoder.js';
import { AGG_KEY, AGG_VALUE, CONTROL, COUNTERS, type CounterName, type HookName } from './event-layout.js';

/** The CO-RE object `make build` compiles from bpf/. */
export const DEFAULT_OBJECT = fileURLToPath(new URL('../../../build/bpf/icmpwatch.bpf.o', import.meta.url));

/** What the operator asks for; `auto` walks the ladder from the most precise hook down. */
export type HookChoice = 'auto' | 'tracepoint';

/** Programs (bpf/icmpwatch.bpf.c) and attach targets per hook. */
const HOOK_PROGRAMS: Record<HookName, string[]> = {
  tp_btf: ['receive_tp_btf'],
  raw_tp: ['receive_raw_tp'],
  fexit: [],
  kretprobe: [],
};

const LADDER: Record<HookChoice, HookName[]> = {
  auto: ['tp_btf', 'raw_tp'],
  tracepoint: ['tp_btf', 'raw_tp'],
};

export interface HookAttempt {
  hook: HookName;
  attached: boolean;
  /** Why it was refused: the error and libbpf's last warnings. */
  reason?: string;
}

export interface ProbeOptions {
  hook: HookChoice;
  objectPath: string;
  /** Ring buffer size in bytes: a power of two, multiple of the page size. */
  ringBytes: number;
  /** Per-node events per second before packets are only counted in-kernel; 0 = no limit. */
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
  private readonly control = Buffer.alloc(CONTROL.size);
  private readonly zeroKey = Buffer.alloc(4);
  private readonly ncpus = bpf.numPossibleCpus();

  private constructor(
    private readonly obj: Pointer,
    private readonly links: Pointer[],
    readonly hook: HookName,
    readonly attempts: HookAttempt[],
    private readonly opts: ProbeOptions,
  ) {
    this.control.writeBigUInt64LE(BigInt(opts.eventsPerSecond), CONTROL.eventsPerSecond);
    this.control.writeBigUInt64LE(BigInt(opts.wakeupBytes), CONTROL.wakeupBytes);
    this.writeControl();
  }

  static open(opts: ProbeOptions): Probe {
    const attempts: HookAttempt[] = [];
    for (const hook of LADDER[opts.hook]) {
      const warnings: string[] = [];
      setLibbpfPrint((level, message) => {
        if (level === 'warn') warnings.push(message);
        opts.onLibbpfMessage(level, message);
      });
      try {
        const { obj, links } = attach(opts, hook);
        attempts.push({ hook, attached: true });
        return new Probe(obj, links, hook, attempts, opts);
      } catch (err) {
        const detail = warnings.slice(-3).join(' | ');
        attempts.push({ hook, attached: false, reason: `${(err as Error).message}${detail ? `: ${detail}` : ''}` });
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

  /** Starts delivering decoded packets from the ring on the event loop. */
  startReading(onPacket: (packet: CapturedPacket) => void): void {
    this.reader = new RingReader(this.mapFd('events'), this.opts.ringBytes, (dv, bytes, off) =>
      onPacket(decodeEvent(dv, bytes, off)),
    );
    this.reader.start();
  }

  /** Per-CPU counters summed over CPUs. */
  readCounters(): Record<CounterName, number> {
    const fd = this.mapFd('counters');
    const values = Buffer.alloc(8 * this.ncpus);
    const key = Buffer.alloc(4);
    const out = {} as Record<CounterName, number>;
    COUNTERS.forEach((name, i) => {
      key.writeUInt32LE(i);
      let sum = 0;
      if (bpf.mapLookup(fd, key, values) === 0) {
        for (let cpu = 0; cpu < this.ncpus; cpu++) sum += Number(values.readBigUInt64LE(cpu * 8));
      }
      out[name] = sum;
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
    this.detach();
    bpf.objectClose(this.obj);
  }
}

function attach(opts: ProbeOptions, hook: HookName): { obj: Pointer; links: Pointer[] } {
  const obj = bpf.objectOpenFile(opts.objectPath, null);
  if (isNullOrErr(obj)) throw new Error(`cannot open BPF object ${opts.objectPath}: errno ${errno()}`);
  const links: Pointer[] = [];
  try {
    for (const programs of Object.values(HOOK_PROGRAMS)) {
      for (const name of programs) {
        const prog = bpf.findProgram(obj, name);
        if (isNullOrErr(prog)) throw new Error(`program ${name} missing from the BPF object`);
        bpf.programSetAutoload(prog, HOOK_PROGRAMS[hook].includes(name));
      }
    }
    const events = bpf.findMap(obj, 'events');
    if (isNullOrErr(events) || bpf.mapSetMaxEntries(events, opts.ringBytes) !== 0) {
      throw new Error(`cannot size the ring buffer to ${opts.ringBytes} bytes`);
    }
    const loaded = bpf.objectLoad(obj);
    if (loaded !== 0) throw new Error(`load failed: errno ${-loaded}`);
    for (const name of HOOK_PROGRAMS[hook]) {
      const link = bpf.programAttach(bpf.findProgram(obj, name)!);
      if (isNullOrErr(link)) throw new Error(`attach ${name} failed: errno ${errno()}`);
      links.push(link);
    }
    return { obj, links };
  } catch (err) {
    for (const link of links) bpf.linkDestroy(link);
    bpf.objectClose(obj);
    throw err;
  }
}
