// Shared by the fuzz tests: a seeded pseudo-random source, so that a failing run can be repeated
// exactly (FUZZ_SEED=<seed>), and the byte-level mutations applied to valid inputs.
import type { Context } from 'mocha';
import type { icmpwatch } from '../src/common/proto.js';

/** The seed of this run: FUZZ_SEED when set, else a fixed one (the same inputs on every run). */
export function fuzzSeed(fallback: number): number {
  const env = process.env.FUZZ_SEED;
  return env === undefined ? fallback : Number(env) >>> 0;
}

/** Prints the seed of a failed test, so that it can be rerun with the same inputs. */
export function reportSeedOnFailure(ctx: Context, seed: number): void {
  if (ctx.currentTest?.state === 'failed') {
    process.stderr.write(`fuzz: '${ctx.currentTest.fullTitle()}' failed with FUZZ_SEED=${seed}\n`);
  }
}

/** mulberry32: small, fast and good enough to pick test inputs. */
export class Random {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** In [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  /** Mostly one of `common`, now and then `rare()`: inputs that repeat, as a flow's packets do. */
  often<T>(common: readonly T[], rare: () => T): T {
    return this.chance(0.9) ? this.pick(common) : rare();
  }

  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }

  /**
   * Mostly short strings of mixed ASCII, control and non-BMP characters; now and then a long one.
   * Always well-formed Unicode: protobuf strings must be valid UTF-8 to decode at all.
   */
  string(maxLength = 24): string {
    const length = this.chance(0.05) ? this.int(4096) : this.int(maxLength + 1);
    const alphabet = ['a', 'z', '0', '9', '.', ':', '/', '-', '%', ' ', '\u0000', '\n', 'é', '\u{1f600}', '"', '\\'];
    let s = '';
    for (let i = 0; i < length; i++) s += this.pick(alphabet);
    return s;
  }

  /** Integers where parsers break: zero, signs, 2^31, 2^32, 2^53 and beyond, and small ones. */
  extremeInt(): number {
    return this.pick([0, 1, -1, 255, 256, 65535, 2 ** 31 - 1, -(2 ** 31), 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 63, 1e15, -1e15, this.int(1000)]);
  }

  /** `valid` changed at a few random places: bit flips, new bytes, cuts, insertions, repeats. */
  mutate(valid: Uint8Array): Buffer {
    let out = Buffer.from(valid);
    const edits = 1 + this.int(4);
    for (let e = 0; e < edits; e++) {
      const at = out.length === 0 ? 0 : this.int(out.length);
      switch (this.int(6)) {
        case 0:
          if (out.length) out[at] = out[at]! ^ (1 << this.int(8));
          break;
        case 1:
          if (out.length) out[at] = this.pick([0x00, 0x7f, 0x80, 0xff, this.int(256)]);
          break;
        case 2:
          out = out.subarray(0, at);
          break;
        case 3:
          out = Buffer.concat([out.subarray(0, at), this.bytes(1 + this.int(16)), out.subarray(at)]);
          break;
        case 4:
          out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1 + this.int(8))]);
          break;
        default: {
          const piece = out.subarray(at, at + 1 + this.int(32));
          out = Buffer.concat([out.subarray(0, at), piece, piece, out.subarray(at)]);
        }
      }
    }
    return out;
  }
}

/**
 * Ends and observations for tests of what is kept per flow (FlowMemo), taken from `events`: three
 * sources, each with more peers than a source keeps flows for; the first two peers and
 * observations are the ones to pick often (most events find their flow kept, the rest replace one).
 */
export function flowEnds(events: icmpwatch.v1.IEvent[]): { sources: icmpwatch.v1.IEndpoint[]; peers: icmpwatch.v1.IEndpoint[]; observations: icmpwatch.v1.IObservation[] } {
  return {
    sources: events.slice(0, 3).map((e) => e.source ?? { ip: '10.0.0.1' }),
    peers: events.map((e) => e.destination ?? { ip: '10.0.0.2' }),
    observations: events.map((e) => e.observation ?? { hook: 1, point: 1 }),
  };
}
