// Random flag vectors through parseFlags with the agent's, the collector's and observe's schemas:
// every vector gives flags that hold what the schema promises, or a UsageError naming the
// problem, never another exception. Seeded: FUZZ_SEED=<n> repeats a run.
import { expect } from 'chai';
import type { z } from 'zod';
import { Flags as agentFlags } from '../../src/cli/agent.js';
import { schema as collectorFlags } from '../../src/cli/collector.js';
import { schema as observeFlags } from '../../src/cli/observe.js';
import { parseFlags, UsageError } from '../../src/common/config.js';
import { icmpwatch } from '../../src/common/proto.js';
import { fuzzSeed, Random, reportSeedOnFailure } from '../fuzz.js';

const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

describe('common: flags (fuzz)', () => {
  const seed = fuzzSeed(0xf1a6);
  const r = new Random(seed);
  afterEach(function () {
    reportSeedOnFailure(this, seed);
  });

  /** Values flags are given: near-valid, numeric edge cases, object-property names, garbage. */
  function randomValue(): string {
    return r.pick([
      () => String(r.extremeInt()),
      // Powers of two and near misses, also beyond 32 bits (ring sizes are checked for that).
      () => String(2 ** (10 + r.int(38)) + (r.chance(0.5) ? 0 : 2 ** r.int(48))),
      () => r.pick(['', 'true', 'false', '1e3', '1e400', '0x10', '-0', 'NaN', 'Infinity', ' 5', '5 ']),
      () => r.pick(['90s', '1h30m', '0.5ms', '15m', '1d', '2x', 'ms', '1.5.5s', '99999999999999999999d']),
      () => r.pick(['127.0.0.1:0', ':9090', '[::1]:50051', 'host:99999', '[fe80::1%eth0]:1', 'off', 'a:b', ':']),
      () => r.pick(['2026-11-25T05:55:00Z', '2026-13-45T99:99:99Z', 'ipv4', '6', 'destination', 'echo-request', '3/1']),
      () => r.pick(['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']),
      () => r.string(),
    ])();
  }

  /** `required`: flags with a valid value that most vectors start with, so that some get through. */
  function randomArgv(schema: z.ZodObject, booleans: string[], required: string[]): string[] {
    const names = [...Object.keys(schema.shape).map(kebab), 'bogus', 'constructor', 'to-string', 'proto', 'has-own-property'];
    const argv: string[] = r.chance(0.8) ? [...required] : [];
    for (let n = r.int(8); n > 0; n--) {
      const name = r.pick(names);
      const form = r.int(10);
      if (form < 5) argv.push(`--${name}`, randomValue());
      else if (form < 8) argv.push(`--${name}=${randomValue()}`);
      else if (form === 8) argv.push(`--${r.pick(booleans.length ? booleans.map(kebab) : names)}`);
      else argv.push(r.pick(['-o', '--', '-', '---x', '--Upper', randomValue()]));
    }
    return argv;
  }

  /** Runs `count` random vectors; `check` asserts what a parsed result must hold. */
  function fuzz<S extends z.ZodObject>(
    schema: S,
    options: { booleans: string[]; required: string[] },
    check: (flags: z.infer<S>, argv: string[]) => void,
    count = 3000,
  ): void {
    const { booleans, required } = options;
    let parsed = 0;
    let refused = 0;
    for (let i = 0; i < count; i++) {
      const argv = randomArgv(schema, booleans, required);
      let flags: z.infer<S>;
      try {
        flags = parseFlags(argv, schema, booleans);
      } catch (err) {
        expect(err, `${JSON.stringify(argv)}: ${(err as Error).stack}`).to.be.instanceOf(UsageError);
        expect((err as Error).message, JSON.stringify(argv)).to.match(/--|unexpected argument/);
        refused++;
        continue;
      }
      check(flags, argv);
      parsed++;
    }
    // Both outcomes were exercised by the run above.
    expect(parsed, 'vectors accepted').to.be.greaterThan(count / 100);
    expect(refused, 'vectors refused').to.be.greaterThan(count / 10);
  }

  it('agent flags: a result or a UsageError, and ring sizes that are powers of two', () => {
    fuzz(agentFlags, { booleans: [], required: [] }, (flags, argv) => {
      expect(2 ** Math.round(Math.log2(flags.ringBytes)) === flags.ringBytes, `--ring-bytes ${flags.ringBytes} from ${JSON.stringify(argv)}`).to.equal(true);
      expect(Number.isSafeInteger(flags.eventsPerSecond) && flags.eventsPerSecond >= 0, JSON.stringify(argv)).to.equal(true);
    });
  });

  it('collector flags: a result or a UsageError, and finite positive bounds', () => {
    fuzz(collectorFlags, { booleans: [], required: ['--listen', '127.0.0.1:0'] }, (flags, argv) => {
      const bounds = [flags.historyEvents, flags.historyBytes, flags.subscriberQueue, flags.maxSubscribers, flags.maxSubscribersPerPeer, flags.maxRequestsPerSecond];
      for (const n of bounds) expect(Number.isSafeInteger(n) && n > 0, JSON.stringify(argv)).to.equal(true);
      expect(Number.isFinite(flags.historyAge) && flags.historyAge >= 0, JSON.stringify(argv)).to.equal(true);
    });
  });

  it('observe flags: a result or a UsageError, and families and points that are enum values', () => {
    const families = new Set(Object.values(icmpwatch.v1.Family));
    const points = new Set(Object.values(icmpwatch.v1.ObservationPoint));
    fuzz(observeFlags, { booleans: ['follow'], required: ['--server', '127.0.0.1:1'] }, (parsed, argv) => {
      // The filter flags are built from a table, so their types are not spelled out (as in observe).
      const flags = parsed as typeof parsed & Record<string, unknown[]>;
      for (const f of [...flags.family!, ...flags.denyFamily!]) expect(families.has(f as number), `${String(f)} from ${JSON.stringify(argv)}`).to.equal(true);
      for (const p of [...flags.point!, ...flags.denyPoint!]) expect(points.has(p as number), `${String(p)} from ${JSON.stringify(argv)}`).to.equal(true);
    });
  });
});
