// The agent's capture stage alone, for `make bench`: the real Probe (same object, tp_btf, same
// ring size and wake-up threshold as the agent) and the real RingReader + decodeEvent, with a
// callback that only counts. No sighting merge, enrichment, log line or export: this is the
// "ring to decoded event" stage the issue compares with the C floor.
//
// Prints "ready" once attached; on SIGUSR1 and at SIGTERM one JSON line {"records","matched"}.
// Usage: node --import tsx test/bench/capture-only.ts NET_PREFIX (e.g. "10.231.")
import { Probe, DEFAULT_OBJECT } from '../../src/agent/probe/probe.js';

const prefix = process.argv[2] ?? '10.';
const ringBytes = 4 * 1024 * 1024;
const probe = Probe.open({
  hook: 'tp_btf',
  objectPath: DEFAULT_OBJECT,
  btfPath: null,
  ringBytes,
  eventsPerSecond: 0,
  wakeupBytes: Math.min(64 * 1024, ringBytes / 4),
  onLibbpfMessage: () => {},
});
let records = 0;
let matched = 0;
let lastSrc = '';
let lastDst = '';
let lastMatched = false;
// BENCH_SPIN_NS: burn this much CPU per record (a stand-in for the agent's per-event work), to
// see how the reader behaves when each record costs as much as in the full agent.
const spinNs = BigInt(process.env.BENCH_SPIN_NS ?? '0');
probe.startReading((p) => {
  if (spinNs) {
    const until = process.hrtime.bigint() + spinNs;
    while (process.hrtime.bigint() < until);
  }
  records++;
  // The decoder hands a repeated address back as the same string: the prefix is tested once per
  // pair, as cheap as the C floor's byte compare (per record it was a tenth of this process's CPU).
  if (p.src !== lastSrc || p.dst !== lastDst) {
    lastSrc = p.src;
    lastDst = p.dst;
    lastMatched = p.src.startsWith(prefix) || p.dst.startsWith(prefix);
  }
  if (lastMatched) matched++;
});
const report = () => process.stdout.write(`${JSON.stringify({ records, matched, ...probe.readCounters() })}\n`);
process.on('SIGUSR1', report);
process.once('SIGTERM', () => {
  probe.close();
  report();
  process.exit(0);
});
process.stdout.write('ready\n');
