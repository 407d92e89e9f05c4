// Loss is never silent: with a ring too small for a burst, failed reservations are counted in the
// kernel, announced in the node log and exported on /metrics.
import { expect } from 'chai';
import { DemoNetwork } from '../../src/cli/demo-network.js';
import { freePort } from '../collector/harness.js';
import { isRoot, requirePrerequisite } from '../setup.js';
import { startAgent } from './harness.js';

describe('ring buffer loss (real kernel)', function () {
  it('counts, logs and exports events lost to a full ring', async function () {
    requirePrerequisite(this, isRoot, 'root (BPF, network namespaces)');
    const net = await DemoNetwork.create('routed');
    const port = await freePort();
    // The smallest ring the agent accepts holds about 31 records; a preloaded flood ping between
    // the test's own pods makes ~4 records per echo, back to back.
    const run = await startAgent({ ringBytes: 4096, metricsAddr: `127.0.0.1:${port}` });
    try {
      await net.ping('a', 'b', 4, ['-f', '-c', '2000', '-l', '64']);
      const ringFull = run.agent.probe.readCounters().ringFull;
      expect(ringFull).to.be.greaterThan(0);

      // The agent checks the counters once a second and writes a notice into the event stream.
      const deadline = Date.now() + 5000;
      const notices = () =>
        run.lines.filter((l) => l.startsWith('{"notice":"lost"')).map((l) => JSON.parse(l) as { events: number; ringFull: number });
      while (notices().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(notices()).to.not.have.length(0);
      const logged = notices().reduce((n, x) => n + x.ringFull, 0);
      expect(logged).to.be.greaterThan(0).and.at.most(run.agent.probe.readCounters().ringFull);
      for (const n of notices()) expect(n.events).to.be.at.least(n.ringFull);

      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      // One series per hook and family; the flood was IPv4.
      const series = [...metrics.matchAll(/^icmpwatch_kernel_ring_full_total\{hook="([a-z_]+)",family="([a-z0-9]+)"\} (\d+)$/gm)];
      expect(series.map((m) => m[2]).sort(), 'icmpwatch_kernel_ring_full_total families on /metrics').to.deep.equal(['ipv4', 'ipv6', 'unspecified']);
      expect(new Set(series.map((m) => m[1]))).to.deep.equal(new Set([run.agent.probe.hook]));
      const byFamily = Object.fromEntries(series.map((m) => [m[2]!, Number(m[3])]));
      expect(byFamily.ipv4).to.be.at.least(ringFull - run.agent.probe.readCountersByFamily().ipv6.ringFull);
      expect(byFamily.ipv4! + byFamily.ipv6! + byFamily.unspecified!).to.be.at.least(ringFull);
    } finally {
      await run.stop();
      await net.destroy();
    }
  });
});
