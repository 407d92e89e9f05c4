// The ring reader on the real kernel: every record of a sustained stream delivered across the
// ring's wrap, one drain per batch interval while busy, none while idle, and a wake-up again once
// traffic resumes.
import { expect } from 'chai';
import { DemoNetwork } from '../../../src/cli/demo-network.js';
import { type CapturedPacket } from '../../../src/agent/probe/decoder.js';
import { DEFAULT_OBJECT, Probe } from '../../../src/agent/probe/probe.js';
import { RingReader } from '../../../src/agent/probe/ring-reader.js';
import { isRoot, requirePrerequisite } from '../../setup.js';

const BATCH_MS = 10; // RingReader's default

describe('ring reader on the real kernel', function () {
  let net: DemoNetwork;
  let probe: Probe;
  const packets: CapturedPacket[] = [];
  let drains = 0;
  const drain = RingReader.prototype.drain;

  before(async function () {
    requirePrerequisite(this, isRoot, 'root (BPF, network namespaces)');
    net = await DemoNetwork.create('routed');
    RingReader.prototype.drain = function (this: RingReader) {
      drains++;
      return drain.call(this);
    };
    probe = Probe.open({
      // 16 KiB: the stream below wraps the ring a dozen times, with room for a batch interval's records.
      hook: 'tp_btf', objectPath: DEFAULT_OBJECT, btfPath: null, ringBytes: 1 << 14, eventsPerSecond: 0, wakeupBytes: 4096,
      onLibbpfMessage: () => {},
    });
    probe.startReading((p) => packets.push({ ...p }));
  });

  after(async () => {
    RingReader.prototype.drain = drain;
    probe?.close();
    await net?.destroy();
  });

  const between = (p: CapturedPacket) => {
    const a = net.pod('a').ipv4;
    const b = net.pod('b').ipv4;
    return (p.src === a && p.dst === b) || (p.src === b && p.dst === a);
  };
  const delivered = () => packets.filter(between).length;
  async function until(ok: () => boolean, timeoutMs: number): Promise<void> {
    for (const deadline = Date.now() + timeoutMs; !ok(); await new Promise((r) => setTimeout(r, 20))) {
      if (Date.now() > deadline) throw new Error(`timed out; ${delivered()} records delivered`);
    }
  }

  it('delivers a sustained stream whole, draining once per batch interval, then idles until woken', async () => {
    // 400 echoes 2 ms apart: 800 packets, each seen in the node namespace and in its destination pod.
    const drainsBefore = drains;
    const started = Date.now();
    const out = await net.ping('a', 'b', 4, ['-c', '400', '-i', '0.002', '-W', '1']);
    expect(out.stdout).to.match(/400 received/);
    await until(() => delivered() >= 1600, 5000);
    const busyMs = Date.now() - started;
    expect(delivered()).to.equal(1600);
    // Busy: one drain per interval (a poll registration and a second drain per batch would double it).
    expect(drains - drainsBefore).to.be.at.most(busyMs / BATCH_MS + 3);

    // Idle: after the first drain that finds nothing the reader waits on the ring's fd, not a timer
    // (30 drains in 30 intervals if it kept polling; the host's other ICMP, such as the namespaces'
    // IPv6 neighbour discovery, wakes it now and then, two drains a wake-up).
    await new Promise((r) => setTimeout(r, 10 * BATCH_MS));
    const idleFrom = drains;
    await new Promise((r) => setTimeout(r, 30 * BATCH_MS));
    expect(drains - idleFrom).to.be.at.most(8);

    // And a single packet wakes it.
    await net.ping('b', 'a', 4, ['-c', '1', '-W', '1']);
    await until(() => delivered() >= 1604, 2000);
    expect(drains).to.be.greaterThan(idleFrom);
  });
});
