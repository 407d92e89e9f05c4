// Hand-made frames sent with AF_PACKET from a demo pod into the node namespace: every case the
// parser must flag instead of decoding (shared/notes/kernel.md), plus the non-linear trap.
import { expect } from 'chai';
import { DemoNetwork } from '../../src/cli/demo-network.js';
import { icmpwatch } from '../../src/common/proto.js';
import { isRoot, requirePrerequisite } from '../setup.js';
import { authHeader, echo, ethernet, icmp, ipv4, ipv6, routingHeader, sendFrames, vlanTag } from './frames.js';
import { startAgent, type RunningAgent } from './harness.js';

const { Family, Flag } = icmpwatch.v1;

describe('malformed and tricky packets (real kernel, raw frames)', function () {
  let net: DemoNetwork;
  let run: RunningAgent;
  let nodeNetns: number;
  let srcMac: string;
  let dstMac: string;
  let srcIp: string;
  let dstIp: string;
  let src6: string;
  let dst6: string;

  before(async function () {
    requirePrerequisite(this, isRoot, 'root (BPF, network namespaces)');
    net = await DemoNetwork.create('routed');
    run = await startAgent();
    nodeNetns = net.netnsInode(net.node);
    const link = async (ns: string, dev: string) =>
      (JSON.parse((await net.exec(ns, ['ip', '-j', 'link', 'show', dev])).stdout) as { address: string }[])[0]!.address;
    srcMac = await link(net.pod('a').netns, 'eth0');
    dstMac = await link(net.node, 'va');
    srcIp = net.pod('a').ipv4;
    dstIp = srcIp.replace(/\.2$/, '.1');
    src6 = net.pod('a').ipv6;
    dst6 = src6.replace(/::2$/, '::1');
  });

  after(async () => {
    await run?.stop();
    await net?.destroy();
  });

  beforeEach(() => run?.mark());

  const send = (frames: Buffer[]) => sendFrames(net.pod('a').netns, 'eth0', frames);

  const v4 = (payload: Buffer) => ethernet(dstMac, srcMac, 0x0800, payload);
  const v6 = (payload: Buffer) => ethernet(dstMac, srcMac, 0x86dd, payload);
  const inNode = (e: icmpwatch.v1.IEvent) => Number(e.observation?.netns) === nodeNetns;
  const hasFlag = (f: icmpwatch.v1.Flag) => (e: icmpwatch.v1.IEvent) => inNode(e) && (e.flags ?? []).includes(f);
  const ofFamily = (family: icmpwatch.v1.Family, f: icmpwatch.v1.Flag) => (e: icmpwatch.v1.IEvent) => hasFlag(f)(e) && e.family === family;

  /** Sends one frame and returns the single event it produced. */
  async function one(frame: Buffer, match: (e: icmpwatch.v1.IEvent) => boolean): Promise<icmpwatch.v1.IEvent> {
    await send([frame]);
    const found = await run.waitFor(match);
    await new Promise((r) => setTimeout(r, 100));
    expect(run.recent().filter(match)).to.have.length(1);
    run.mark();
    return found[0]!;
  }

  it('decodes a valid echo and ignores link-layer padding after the IP length', async () => {
    const ev = await one(v4(Buffer.concat([ipv4({ src: srcIp, dst: dstIp, id: 501 }, echo(8, 1001, 7)), Buffer.alloc(12)])), (e) => inNode(e) && e.ipId === 501);
    expect(ev.icmp).to.include({ type: 8, id: 1001, seq: 7 });
    expect(ev.flags).to.deep.equal([Flag.FLAG_PADDED]);
    expect(ev.length).to.equal(20 + 8 + 16);
  });

  const undecoded: [string, () => Buffer, icmpwatch.v1.Flag][] = [
    ['an IP version that disagrees with the ethertype', () => v4(ipv4({ src: '0.0.0.0', dst: '0.0.0.0', version: 5 }, echo(8, 2001, 1))), Flag.FLAG_BAD_VERSION],
    ['a header length under 20 bytes', () => v4(ipv4({ src: '0.0.0.0', dst: '0.0.0.0', ihlWords: 4 }, echo(8, 2002, 1))), Flag.FLAG_BAD_IHL],
    ['a header length past the packet', () => v4(ipv4({ src: '0.0.0.0', dst: '0.0.0.0', ihlWords: 15, totLen: 28 }, Buffer.alloc(0)).subarray(0, 28)), Flag.FLAG_BAD_IHL],
    ['a total length past the packet', () => v4(ipv4({ src: '0.0.0.0', dst: '0.0.0.0', totLen: 1000 }, echo(8, 2004, 1))), Flag.FLAG_BAD_LENGTH],
    ['a total length under the header length', () => v4(ipv4({ src: '0.0.0.0', dst: '0.0.0.0', totLen: 10 }, echo(8, 2005, 1))), Flag.FLAG_BAD_LENGTH],
  ];
  for (const [what, frame, flag] of undecoded) {
    it(`flags ${what} and decodes nothing`, async () => {
      const ev = await one(frame(), hasFlag(flag));
      expect(ev.icmp ?? null).to.equal(null);
      expect(ev.source?.ip).to.equal('0.0.0.0');
    });
  }

  it('never decodes an ICMP header in a non-first fragment', async () => {
    // The fragment's first bytes look like an echo reply; they are payload, not a header.
    const ev = await one(v4(ipv4({ src: srcIp, dst: dstIp, id: 503, fragOffsetBytes: 1480 }, echo(0, 3003, 3))), hasFlag(Flag.FLAG_FRAGMENT));
    expect(ev.icmp ?? null).to.equal(null);
    expect(ev.fragmentOffset).to.equal(1480);
    expect(ev.source?.ip).to.equal(srcIp);
  });

  it('flags ICMP shorter than 4 bytes, and an echo shorter than 8', async () => {
    const short = await one(v4(ipv4({ src: srcIp, dst: dstIp, id: 504 }, Buffer.from([8, 0]))), (e) => inNode(e) && e.ipId === 504);
    expect(short.flags).to.deep.equal([Flag.FLAG_TRUNCATED]);
    expect(short.icmp ?? null).to.equal(null);
    const echoShort = await one(v4(ipv4({ src: srcIp, dst: dstIp, id: 505 }, Buffer.from([8, 0, 0, 0, 1, 2]))), (e) => inNode(e) && e.ipId === 505);
    expect(echoShort.flags).to.deep.equal([Flag.FLAG_TRUNCATED]);
    expect(echoShort.icmp ?? null).to.equal(null);
  });

  it('flags an error message that quotes too little of the original packet', async () => {
    const quote = Buffer.alloc(10, 0x45);
    const ev = await one(v4(ipv4({ src: srcIp, dst: dstIp, id: 506 }, icmp(3, 3, [0, 0, 0, 0], quote))), (e) => inNode(e) && e.ipId === 506);
    expect(ev.flags).to.include(Flag.FLAG_INNER_TRUNCATED);
    expect(ev.icmp?.quoted ?? null).to.equal(null);
  });

  it('decodes through a VLAN tag and says so', async () => {
    const frame = ethernet(dstMac, srcMac, 0x8100, vlanTag(100, 0x0800, ipv4({ src: srcIp, dst: dstIp, id: 507 }, echo(8, 1007, 9))));
    const ev = await one(frame, (e) => inNode(e) && e.ipId === 507);
    expect(ev.flags).to.deep.equal([Flag.FLAG_VLAN]);
    expect(ev.icmp).to.include({ type: 8, id: 1007, seq: 9 });
  });

  it('decodes through a single 802.1ad (0x88a8) tag', async () => {
    const frame = ethernet(dstMac, srcMac, 0x88a8, vlanTag(200, 0x0800, ipv4({ src: srcIp, dst: dstIp, id: 508 }, echo(8, 1010, 4))));
    const ev = await one(frame, (e) => inNode(e) && e.ipId === 508);
    expect(ev.flags).to.deep.equal([Flag.FLAG_VLAN]);
    expect(ev.icmp).to.include({ type: 8, id: 1010, seq: 4 });
  });

  it('reports stacked VLAN tags (QinQ) flagged, counted and not decoded', async () => {
    const before = run.agent.probe.readCounters().malformed;
    const qinq = (inner: number, packet: Buffer) => ethernet(dstMac, srcMac, 0x88a8, vlanTag(300, 0x8100, vlanTag(100, inner, packet)));
    const v4ev = await one(qinq(0x0800, ipv4({ src: srcIp, dst: dstIp, id: 509 }, echo(8, 1011, 5))), ofFamily(Family.FAMILY_IPV4, Flag.FLAG_VLAN_UNSUPPORTED));
    expect(v4ev.flags).to.deep.equal([Flag.FLAG_VLAN_UNSUPPORTED]);
    expect(v4ev.icmp ?? null).to.equal(null);
    const v6ev = await one(qinq(0x86dd, ipv6(src6, dst6, [], 58, echo(128, 1012, 6))), ofFamily(Family.FAMILY_IPV6, Flag.FLAG_VLAN_UNSUPPORTED));
    expect(v6ev.flags).to.deep.equal([Flag.FLAG_VLAN_UNSUPPORTED]);
    expect(v6ev.icmp ?? null).to.equal(null);
    expect(run.agent.probe.readCounters().malformed - before).to.be.at.least(2);
  });

  it('flags IP packets too short for their header instead of dropping them', async () => {
    const v4ev = await one(v4(ipv4({ src: srcIp, dst: dstIp, id: 510 }, Buffer.alloc(0)).subarray(0, 16)), ofFamily(Family.FAMILY_IPV4, Flag.FLAG_TRUNCATED));
    expect(v4ev.flags).to.deep.equal([Flag.FLAG_TRUNCATED]);
    expect(v4ev.icmp ?? null).to.equal(null);
    const v6ev = await one(v6(ipv6(src6, dst6, [], 58, Buffer.alloc(0)).subarray(0, 32)), ofFamily(Family.FAMILY_IPV6, Flag.FLAG_TRUNCATED));
    expect(v6ev.flags).to.deep.equal([Flag.FLAG_TRUNCATED]);
    expect(v6ev.icmp ?? null).to.equal(null);
  });

  it('flags an IPv6 version that disagrees with the ethertype', async () => {
    const packet = ipv6(src6, dst6, [], 58, echo(128, 1013, 1));
    packet[0] = 0x40;
    const ev = await one(v6(packet), ofFamily(Family.FAMILY_IPV6, Flag.FLAG_BAD_VERSION));
    expect(ev.flags).to.deep.equal([Flag.FLAG_BAD_VERSION]);
    expect(ev.icmp ?? null).to.equal(null);
  });

  it('flags an IPv6 payload length past the packet', async () => {
    const packet = ipv6(src6, dst6, [], 58, echo(128, 1014, 1));
    packet.writeUInt16BE(1000, 4);
    const ev = await one(v6(packet), ofFamily(Family.FAMILY_IPV6, Flag.FLAG_BAD_LENGTH));
    expect(ev.flags).to.deep.equal([Flag.FLAG_BAD_LENGTH]);
    expect(ev.icmp ?? null).to.equal(null);
  });

  it('flags ICMPv6 shorter than 4 bytes, and an echo shorter than 8', async () => {
    const fromA = (e: icmpwatch.v1.IEvent) => hasFlag(Flag.FLAG_TRUNCATED)(e) && e.source?.ip === src6;
    const short = await one(v6(ipv6(src6, dst6, [], 58, Buffer.from([128, 0]))), (e) => fromA(e) && e.length === 42);
    expect(short.flags).to.deep.equal([Flag.FLAG_TRUNCATED]);
    expect(short.icmp ?? null).to.equal(null);
    const echoShort = await one(v6(ipv6(src6, dst6, [], 58, Buffer.from([128, 0, 0, 0, 1, 2]))), (e) => fromA(e) && e.length === 46);
    expect(echoShort.flags).to.deep.equal([Flag.FLAG_TRUNCATED]);
    expect(echoShort.icmp ?? null).to.equal(null);
  });

  it('flags an IPv6 extension header chain that runs past the packet', async () => {
    const packet = ipv6(src6, dst6, [], 60, Buffer.from([58, 0, 1, 4])); // a destination-options header cut at 4 bytes
    const ev = await one(v6(packet), (e) => hasFlag(Flag.FLAG_TRUNCATED)(e) && e.source?.ip === src6 && e.length === 44);
    expect(ev.flags).to.deep.equal([Flag.FLAG_TRUNCATED]);
    expect(ev.icmp ?? null).to.equal(null);
  });

  it('walks ROUTING and AH extension headers (AH counts 4-byte words) to the ICMPv6 header', async () => {
    const ev = await one(v6(ipv6(src6, dst6, [routingHeader(1), authHeader(4)], 58, echo(128, 1015, 12))), (e) => inNode(e) && e.icmp?.id === 1015);
    expect(ev.icmp).to.include({ type: 128, id: 1015, seq: 12 });
    expect(ev.flags).to.deep.equal([]);
    const ahFirst = await one(v6(ipv6(src6, dst6, [authHeader(4), routingHeader(1)], 58, echo(128, 1016, 13))), (e) => inNode(e) && e.icmp?.id === 1016);
    expect(ahFirst.icmp).to.include({ type: 128, id: 1016, seq: 13 });
  });

  it('decodes the first IPv6 fragment and says more fragments follow', async () => {
    const frag = Buffer.from([0x00, 0x01, 0, 0, 0x56, 0x78]); // offset 0, M flag, id 0x5678
    const ev = await one(v6(ipv6(src6, dst6, [{ type: 44, body: frag }], 58, echo(128, 1017, 14))), (e) => inNode(e) && e.icmp?.id === 1017);
    expect(ev.flags).to.deep.equal([Flag.FLAG_MORE_FRAGMENTS]);
    expect(ev.icmp).to.include({ type: 128, id: 1017, seq: 14 });
    expect(ev.ipId).to.equal(0x5678);
    expect(ev.fragmentOffset ?? 0).to.equal(0);
  });

  it('walks IPv6 extension headers to the ICMPv6 header', async () => {
    const pad6 = Buffer.from([1, 4, 0, 0, 0, 0]); // PadN option: 6 bytes after next/len
    const ev = await one(
      v6(ipv6(src6, dst6, [{ type: 0, body: pad6 }, { type: 60, body: pad6 }], 58, echo(128, 1008, 11))),
      (e) => inNode(e) && e.icmp?.id === 1008,
    );
    expect(ev.icmp).to.include({ type: 128, seq: 11 });
    expect(ev.flags).to.deep.equal([]);
  });

  it('flags an IPv6 extension header chain longer than it walks', async () => {
    const pad6 = Buffer.from([1, 4, 0, 0, 0, 0]);
    const chain = Array.from({ length: 7 }, () => ({ type: 60, body: pad6 }));
    const ev = await one(v6(ipv6(src6, dst6, chain, 58, echo(128, 1009, 1))), hasFlag(Flag.FLAG_EXTHDR_LIMIT));
    expect(ev.icmp ?? null).to.equal(null);
  });

  it('flags an IPv6 non-first fragment of ICMPv6 without decoding it', async () => {
    const frag = Buffer.from([0x04, 0xd0, 0, 0, 0x12, 0x34]); // offset 1232, id 0x1234
    const ev = await one(v6(ipv6(src6, dst6, [{ type: 44, body: frag }], 58, echo(129, 3010, 1))), hasFlag(Flag.FLAG_FRAGMENT));
    expect(ev.icmp ?? null).to.equal(null);
    expect(ev.fragmentOffset).to.equal(1232);
  });

  it('counts every malformed packet in the kernel', async () => {
    const before = run.agent.probe.readCounters().malformed;
    await send(undecoded.map(([, frame]) => frame()));
    await run.waitFor((e) => inNode(e) && (e.flags ?? []).some((f) => f === Flag.FLAG_BAD_VERSION || f === Flag.FLAG_BAD_IHL || f === Flag.FLAG_BAD_LENGTH), undecoded.length);
    expect(run.agent.probe.readCounters().malformed - before).to.equal(undecoded.length);
  });

  it('counts malformed packets per family; unspecified for frames unreadable as far as their IP header', async () => {
    const reportedByFamily = async () => {
      const metric = await run.agent.registry.getSingleMetric('icmpwatch_agent_events_total')!.get();
      return Object.fromEntries(metric.values.map((v) => [v.labels.family, v.value]));
    };
    const reportedBefore = await reportedByFamily();
    const before = run.agent.probe.readCountersByFamily();
    const badV6 = ipv6(src6, dst6, [], 58, echo(128, 1014, 1));
    badV6[0] = 0x40;
    // Five stacked tags: deeper than the parser peels, so its family is never read.
    let deep = ipv4({ src: srcIp, dst: dstIp, id: 511 }, echo(8, 1015, 1));
    let inner = 0x0800;
    for (let i = 0; i < 5; i++) {
      deep = vlanTag(100 + i, inner, deep);
      inner = 0x8100;
    }
    await send([v4(ipv4({ src: '0.0.0.0', dst: '0.0.0.0', version: 5 }, echo(8, 2006, 1))), v6(badV6), ethernet(dstMac, srcMac, 0x8100, deep)]);
    await run.waitFor((e) => inNode(e) && (e.flags ?? []).some((f) => f === Flag.FLAG_BAD_VERSION || f === Flag.FLAG_VLAN_UNSUPPORTED), 3);
    const [unreadable] = run.recent().filter(hasFlag(Flag.FLAG_VLAN_UNSUPPORTED));
    expect(unreadable!.family ?? Family.FAMILY_UNSPECIFIED).to.equal(Family.FAMILY_UNSPECIFIED);
    const after = run.agent.probe.readCountersByFamily();
    const delta = (f: keyof typeof after) => after[f].malformed - before[f].malformed;
    expect({ ipv4: delta('ipv4'), ipv6: delta('ipv6'), unspecified: delta('unspecified') }).to.deep.equal({ ipv4: 1, ipv6: 1, unspecified: 1 });
    // The agent's reported events carry the same family labels.
    const reportedAfter = await reportedByFamily();
    for (const family of ['ipv4', 'ipv6', 'unspecified']) expect((reportedAfter[family] ?? 0) - (reportedBefore[family] ?? 0), family).to.be.at.least(1);
  });

  it('never decodes headers outside the linear area (the stale-read trap)', async () => {
    for (const ns of [net.pod('a').netns, net.pod('b').netns]) await net.exec(ns, ['ip', 'link', 'set', 'eth0', 'mtu', '65000']);
    for (const dev of ['va', 'vb']) await net.exec(net.node, ['ip', 'link', 'set', dev, 'mtu', '65000']);
    const id = 0x2b04; // ping -e: a known echo id, so a stale read (another id or type) cannot pass
    await net.ping('a', 'b', 4, ['-c', '3', '-i', '0.1', '-s', '30000', '-e', String(id)]);
    const a = net.pod('a').ipv4;
    const b = net.pod('b').ipv4;
    const flow = (e: icmpwatch.v1.IEvent) => e.source?.ip === a && e.destination?.ip === b;
    const nonlinear = (e: icmpwatch.v1.IEvent) => (e.flags ?? []).includes(Flag.FLAG_NONLINEAR);
    await run.waitFor((e) => flow(e) && nonlinear(e));
    await run.waitFor(flow, 3);
    await new Promise((r) => setTimeout(r, 200));
    const events = run.recent().filter(flow);
    expect(events.filter(nonlinear)).to.not.have.length(0);
    const seqs: number[] = [];
    for (const ev of events) {
      if (nonlinear(ev)) {
        expect(ev.icmp ?? null).to.equal(null);
        continue;
      }
      expect(ev.icmp).to.include({ type: 8, code: 0, id });
      seqs.push(ev.icmp!.seq!);
    }
    for (const seq of seqs) expect([1, 2, 3]).to.include(seq);
    expect(new Set(seqs).size).to.equal(seqs.length);
  });
});
