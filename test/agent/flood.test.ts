// The in-kernel flood limit: past it packets are only counted per flow and summarised. It counts
// packets, not sightings: on a routed path each packet is seen twice (node, then pod).
import { expect } from 'chai';
import { DemoNetwork } from '../../src/cli/demo-network.js';
import type { icmpwatch } from '../../src/common/proto.js';
import { isRoot, requirePrerequisite } from '../setup.js';
import { echo, ethernet, ipv4, sendFrames } from './frames.js';
import { startAgent } from './harness.js';

describe('flood limit (real kernel)', function () {
  it('sends at most the per-node limit and accounts for every packet exactly once: sent = captured + suppressed', async function () {
    requirePrerequisite(this, isRoot, 'root (BPF, network namespaces)');
    const net = await DemoNetwork.create('routed');
    const limit = 200;
    const run = await startAgent({ eventsPerSecond: limit });
    try {
      const before = run.agent.probe.readCounters();
      const startNs = process.hrtime.bigint();
      const count = 3000;
      const out = await net.ping('a', 'b', 4, ['-f', '-c', String(count)]);
      expect(out.stdout).to.match(new RegExp(`${count} received`));
      await run.stop(); // drains the ring and both aggregation maps
      const after = run.agent.probe.readCounters();
      const delta = (name: keyof typeof after) => after[name] - before[name];
      expect(delta('ringFull'), 'records lost to a full ring').to.equal(0);
      expect(delta('aggFull'), 'packets lost to a full aggregation map').to.equal(0);

      // Only this run's echoes: the subnet is unique, other tests' traffic shares the node budget.
      const a = net.pod('a').ipv4;
      const b = net.pod('b').ipv4;
      const ours = (e: icmpwatch.v1.IEvent) =>
        (e.source?.ip === a && e.destination?.ip === b && e.icmp?.type === 8) || (e.source?.ip === b && e.destination?.ip === a && e.icmp?.type === 0);
      const captured = run.events.filter((e) => ours(e) && !e.summary);
      const summaries = run.events.filter((e) => ours(e) && e.summary);
      const suppressed = summaries.reduce((n, e) => n + Number(e.summary!.packets), 0);
      const sightings = summaries.reduce((n, e) => n + Number(e.summary!.sightings), 0);
      // 3000 requests and 3000 replies: each one either reported once or counted once in a summary.
      expect(captured.length + suppressed, `captured ${captured.length} + suppressed ${suppressed}`).to.equal(2 * count);
      expect(new Set(captured.map((e) => `${e.icmp?.type}/${e.icmp?.seq}`)).size).to.equal(captured.length);
      for (const e of captured) expect(e.observation?.sightings, 'captured packets keep both sightings').to.equal(2);
      // Each suppressed packet was seen in the node and in its destination pod.
      expect(sightings).to.equal(2 * suppressed);
      expect(suppressed).to.be.greaterThan(2 * count - 2000);

      // The kernel counters count the same packets (plus any other ICMP on the node meanwhile).
      expect(delta('suppressed')).to.be.at.least(suppressed);
      expect(delta('suppressedSightings')).to.be.at.least(sightings);
      expect(delta('suppressedSightings') - delta('suppressed')).to.be.at.least(suppressed);
      const summarised = run.events.filter((e) => e.summary).reduce((n, e) => n + Number(e.summary!.packets), 0);
      expect(summarised).to.equal(delta('suppressed'));

      const seconds = Math.ceil(Number(process.hrtime.bigint() - startNs) / 1e9) + 1;
      expect(captured.length).to.be.at.most(limit * seconds);
      const flows = new Set(summaries.map((e) => `${e.source?.ip}>${e.destination?.ip}/${e.icmp?.type}`));
      expect(flows).to.include(`${a}>${b}/8`);
      expect(flows).to.include(`${b}>${a}/0`);
    } finally {
      await run.stop();
      await net.destroy();
    }
  });
  it('counts a packet repeated on the same device as new packets: copies of one id/seq do not follow the first past the limit', async function () {
    requirePrerequisite(this, isRoot, 'root (BPF, network namespaces)');
    const net = await DemoNetwork.create('routed');
    const limit = 100;
    const run = await startAgent({ eventsPerSecond: limit });
    try {
      const link = async (ns: string, dev: string) =>
        (JSON.parse((await net.exec(ns, ['ip', '-j', 'link', 'show', dev])).stdout) as { address: string }[])[0]!.address;
      const [srcMac, dstMac] = [await link(net.pod('a').netns, 'eth0'), await link(net.node, 'va')];
      const src = net.pod('a').ipv4;
      const dst = src.replace(/\.2$/, '.1');
      // Echo replies nobody asked for: the node answers nothing, so only these copies are counted.
      const copy = ethernet(dstMac, srcMac, 0x0800, ipv4({ src, dst, id: 4242 }, echo(0, 77, 5)));
      const count = 2000;
      const startNs = process.hrtime.bigint();
      await sendFrames(net.pod('a').netns, 'eth0', Array<Buffer>(count).fill(copy));
      await run.stop();
      const seconds = Math.ceil(Number(process.hrtime.bigint() - startNs) / 1e9) + 1;
      const ours = (e: icmpwatch.v1.IEvent) => e.source?.ip === src && e.destination?.ip === dst && e.icmp?.type === 0;
      const suppressed = run.events.filter((e) => ours(e) && e.summary).reduce((n, e) => n + Number(e.summary!.packets), 0);
      expect(suppressed, 'copies counted as suppressed packets').to.be.at.least(count - limit * seconds);
    } finally {
      await run.stop();
      await net.destroy();
    }
  });
});
