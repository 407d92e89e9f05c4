// The in-kernel flood limit: past it packets are only counted per flow and summarised.
import { expect } from 'chai';
import { DemoNetwork } from '../../src/cli/demo-network.js';
import { isRoot, requirePrerequisite } from '../setup.js';
import { startAgent } from './harness.js';

describe('flood limit (real kernel)', function () {
  it('sends at most the per-node limit one by one and accounts for every other packet', async function () {
    requirePrerequisite(this, isRoot, 'root (BPF, network namespaces)');
    const net = await DemoNetwork.create('routed');
    const run = await startAgent({ eventsPerSecond: 200 });
    try {
      const before = run.agent.probe.readCounters();
      const startNs = process.hrtime.bigint();
            const count = 3000;
      const out = await net.ping('a', 'b', 4, ['-f', '-c', String(count)]);
      expect(out.stdout).to.match(new RegExp(`${count} received`));
      await run.stop(); // drains the ring and both aggregation maps
      const after = run.agent.probe.readCounters();
      const sent = after.events - before.events;
      const suppressed = after.suppressed - before.suppressed;
      // 3000 requests and 3000 replies, each seen in the node and in the destination pod.
      expect(sent + suppressed + (after.ringFull - before.ringFull) + (after.aggFull - before.aggFull)).to.be.at.least(4 * count);
      expect(after.ringFull - before.ringFull).to.equal(0);
      expect(suppressed).to.be.greaterThan(4 * count - 2000);
      const seconds = Math.ceil(Number(process.hrtime.bigint() - startNs) / 1e9) + 1;
      expect(sent).to.be.at.most(200 * seconds);
      const summaries = run.events.filter((e) => e.summary);
      const summarised = summaries.reduce((n, e) => n + Number(e.summary!.packets), 0);
      expect(summarised).to.equal(suppressed);
      const flows = new Set(summaries.map((e) => `${e.source?.ip}>${e.destination?.ip}/${e.icmp?.type}`));
      expect(flows).to.include(`${net.pod('a').ipv4}>${net.pod('b').ipv4}/8`);
      expect(flows).to.include(`${net.pod('b').ipv4}>${net.pod('a').ipv4}/0`);
    } finally {
      await run.stop();
      await net.destroy();
    }
  });
});
