// The real kernel: pings between demo pods behind a routed node namespace, captured by the agent.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { DemoNetwork } from '../../src/cli/demo-network.js';
import { icmpwatch } from '../../src/common/proto.js';
import { isRoot, requirePrerequisite } from '../setup.js';
import { startAgent, type RunningAgent } from './harness.js';

const v1 = icmpwatch.v1;
const { Flag, ObservationPoint: Point } = v1;

describe('capture on the real kernel (routed pods)', function () {
  let net: DemoNetwork;
  let run: RunningAgent;

  before(async function () {
    requirePrerequisite(this, isRoot, 'root (BPF, network namespaces)');
    net = await DemoNetwork.create('routed');
    run = await startAgent();
  });

  after(async () => {
    await run?.stop();
    await net?.destroy();
  });

  beforeEach(() => run?.mark());

  const echoes = (src: string, dst: string, type: number) => (ev: icmpwatch.v1.IEvent) =>
    ev.source?.ip === src && ev.destination?.ip === dst && ev.icmp?.type === type;

  for (const size of [0, 56, 1400]) {
    it(`reports IPv4 echo request and reply once each with exact id/seq (payload ${size})`, async () => {
      const out = await net.ping('a', 'b', 4, ['-c', '3', '-i', '0.1', '-s', String(size)]);
      expect(out.stdout).to.match(/3 received/);
      const a = net.pod('a').ipv4;
      const b = net.pod('b').ipv4;
      const requests = await run.waitFor(echoes(a, b, 8), 3);
      const replies = await run.waitFor(echoes(b, a, 0), 3);
      await new Promise((r) => setTimeout(r, 200)); // any duplicate would have arrived by now
      const reqs = await run.waitFor(echoes(a, b, 8));
      expect(reqs.map((e) => e.icmp?.seq)).to.deep.equal([1, 2, 3]);
      expect(new Set(reqs.map((e) => e.icmp?.id)).size).to.equal(1);
      expect(replies.filter((e) => e.icmp?.id === requests[0]!.icmp?.id).map((e) => e.icmp?.seq)).to.deep.equal([1, 2, 3]);
      for (const ev of reqs) {
        expect(ev.length).to.equal(28 + size);
        expect(ev.ttl).to.equal(63); // seen in pod b, after the node's hop
        expect(ev.observation?.point).to.equal(Point.OBSERVATION_POINT_DESTINATION);
        expect(ev.observation?.netns).to.equal(net.netnsInode(net.pod('b').netns));
        expect(ev.observation?.sightings).to.equal(2);
        expect(ev.observation?.symbol).to.equal('netif_receive_skb');
        expect(ev.flags).to.deep.equal([]);
      }
    });
  }

  it('reports IPv6 echo request and reply with exact id/seq', async () => {
    await net.ping('b', 'a', 6, ['-c', '1', '-W', '3']); // resolve neighbours first
    run.mark();
    await net.ping('b', 'a', 6, ['-c', '3', '-i', '0.1', '-s', '100']);
    const a = net.pod('a').ipv6;
    const b = net.pod('b').ipv6;
    // By length: the neighbour-resolving ping's report may come in after mark().
    const last = await run.waitFor((ev) => echoes(b, a, 128)(ev) && ev.length === 40 + 8 + 100, 3);
    expect(last.map((e) => e.icmp?.seq)).to.deep.equal([1, 2, 3]);
    expect(new Set(last.map((e) => e.icmp?.id)).size).to.equal(1);
    for (const ev of last) {
      expect(ev.family).to.equal(v1.Family.FAMILY_IPV6);
      expect(ev.length).to.equal(40 + 8 + 100);
      expect(ev.observation?.point).to.equal(Point.OBSERVATION_POINT_DESTINATION);
    }
    const replies = await run.waitFor((e) => echoes(a, b, 129)(e) && e.icmp?.id === last[0]!.icmp?.id, 3);
    expect(replies.map((e) => e.icmp?.seq)).to.deep.equal([1, 2, 3]);
  });

  it('decodes the first fragment of a fragmented echo and flags the others', async () => {
    await net.ping('a', 'b', 4, ['-c', '1', '-s', '3000']);
    const a = net.pod('a').ipv4;
    const b = net.pod('b').ipv4;
    const [first] = await run.waitFor((e) => echoes(a, b, 8)(e) && e.flags!.includes(Flag.FLAG_MORE_FRAGMENTS));
    expect(first!.icmp?.seq).to.equal(1);
    const rest = await run.waitFor((e) => e.source?.ip === a && e.ipId === first!.ipId && e.flags!.includes(Flag.FLAG_FRAGMENT), 2);
    for (const frag of rest) {
      expect(frag.icmp ?? null).to.equal(null); // no ICMP header in a non-first fragment: never decoded
      expect(frag.fragmentOffset).to.be.greaterThan(0);
    }
    expect(rest.map((f) => f.fragmentOffset)).to.deep.equal([1480, 2960]);
  });

  it('reports port unreachable with the quoted UDP header', async () => {
    const a = net.pod('a');
    const b = net.pod('b');
    await net.exec(a.netns, [
      'python3',
      '-c',
      `import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("${a.ipv4}", 40404)); s.sendto(b"x", ("${b.ipv4}", 33434))`,
    ]);
    const [ev] = await run.waitFor((e) => e.icmp?.type === 3 && e.destination?.ip === a.ipv4);
    expect(ev!.icmp?.code).to.equal(3);
    expect(ev!.icmp?.name).to.equal('port-unreachable');
    expect(ev!.icmp?.quoted).to.include({ source: a.ipv4, destination: b.ipv4, protocol: 17, sourcePort: 40404, destinationPort: 33434 });
  });

  it('reports time exceeded from the node with the quoted echo', async () => {
    await net.ping('a', 'b', 4, ['-c', '1', '-t', '1', '-W', '1']).catch(() => undefined);
    const a = net.pod('a').ipv4;
    const [ev] = await run.waitFor((e) => e.icmp?.type === 11 && e.destination?.ip === a);
    expect(ev!.source?.ip).to.equal(a.replace(/\.2$/, '.1'));
    expect(ev!.icmp?.quoted?.protocol).to.equal(1);
    expect(ev!.icmp?.quoted?.destination).to.equal(net.pod('b').ipv4);
    expect(ev!.icmp?.quoted?.echoSeq).to.equal(1);
  });

  it('reports frag-needed and packet-too-big with the next-hop MTU', async () => {
    await net.exec(net.node, ['ip', 'link', 'set', 'vb', 'mtu', '1300']);
    try {
      await net.ping('a', 'b', 4, ['-c', '1', '-M', 'do', '-s', '1400', '-W', '1']).catch(() => undefined);
      const a = net.pod('a');
      const [v4] = await run.waitFor((e) => e.icmp?.type === 3 && e.icmp?.code === 4 && e.destination?.ip === a.ipv4);
      expect(v4!.icmp?.mtu).to.equal(1300);
      expect(v4!.icmp?.name).to.equal('frag-needed');
      await net.ping('a', 'b', 6, ['-c', '1', '-s', '1400', '-W', '1']).catch(() => undefined);
      const [v6] = await run.waitFor((e) => e.icmp?.type === 2 && e.destination?.ip === a.ipv6);
      expect(v6!.icmp?.mtu).to.equal(1300);
      expect(v6!.icmp?.quoted?.destination).to.equal(net.pod('b').ipv6);
    } finally {
      await net.exec(net.node, ['ip', 'link', 'set', 'vb', 'mtu', '1500']);
    }
  });

  it('says forwarded, once, for a packet the node routes off the node (only ever seen on the way)', async () => {
    // A VXLAN overlay towards "another node", as overlay CNIs build it: the node namespace forwards
    // pod a's echoes into it, so no namespace here owns the destination. (Between two pods of this
    // node the destination pod sees the packet too, and that sighting is reported: tests above.)
    const offNode = `198.51.${net.pod('a').ipv4.split('.')[1]}.7`;
    await net.exec(net.node, ['ip', 'link', 'add', 'overlay', 'type', 'vxlan', 'id', '42', 'remote', '192.0.2.2', 'dstport', '4789']);
    await net.exec(net.node, ['ip', 'link', 'set', 'overlay', 'up']);
    await net.exec(net.node, ['ip', 'route', 'add', `${offNode}/32`, 'dev', 'overlay']);
    await net.exec(net.node, ['ip', 'neigh', 'add', offNode, 'lladdr', '02:00:00:00:00:42', 'dev', 'overlay', 'nud', 'permanent']);
    await net.ping('a', 'b', 4, ['-c', '1', '-W', '1']).catch(() => undefined); // the address book knows the node by now
    run.mark();
    await net.exec(net.pod('a').netns, ['ping', '-4', '-n', '-q', '-c', '3', '-i', '0.1', '-W', '1', offNode]).catch(() => undefined);
    const a = net.pod('a').ipv4;
    const evs = await run.waitFor(echoes(a, offNode, 8), 3);
    await new Promise((r) => setTimeout(r, 300)); // past the hold time: any second report would be out
    const all = run.recent().filter(echoes(a, offNode, 8));
    expect(all.map((e) => e.icmp?.seq)).to.deep.equal([1, 2, 3]);
    for (const ev of evs) {
      expect(ev.observation?.point).to.equal(Point.OBSERVATION_POINT_FORWARDED);
      expect(ev.observation?.netns).to.equal(net.netnsInode(net.node));
      expect(ev.observation?.sightings).to.equal(1);
      expect(ev.ttl).to.equal(64); // seen as the node received it, before its hop
    }
  });

  it("says host for packets to the node's own addresses", async () => {
    await new Promise<void>((resolve, reject) =>
      execFile('ping', ['-c', '2', '-i', '0.1', '-p', 'c0ffee', '127.0.0.1'], (err) => (err ? reject(err) : resolve())),
    );
    const evs = await run.waitFor((e) => e.destination?.ip === '127.0.0.1' && e.icmp?.type === 8, 2);
    for (const ev of evs) {
      expect(ev.observation?.point).to.equal(Point.OBSERVATION_POINT_HOST);
      expect(ev.observation?.interface).to.equal('lo');
      expect(ev.observation?.sightings).to.equal(1);
    }
  });

  it('counts kernel records and loses none at this rate', () => {
    const c = run.agent.probe.readCounters();
    expect(c.events).to.be.greaterThan(20);
    expect(c.ringFull).to.equal(0);
    expect(c.aggFull).to.equal(0);
  });
});
