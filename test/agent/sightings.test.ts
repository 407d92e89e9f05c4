import { expect } from 'chai';
import { SightingMerger, type ReportedPacket } from '../../src/agent/sightings.js';
import type { CapturedPacket } from '../../src/agent/probe/decoder.js';
import { FLAG_BITS } from '../../src/agent/probe/event-layout.js';
import { DemoNetwork } from '../../src/cli/demo-network.js';
import { icmpwatch } from '../../src/common/proto.js';
import { isRoot, requirePrerequisite } from '../setup.js';
import { startAgent } from './harness.js';

const Point = icmpwatch.v1.ObservationPoint;

const packet = (netns: number, seq: number, extra: Partial<CapturedPacket> = {}): CapturedPacket => ({
  monoNs: 0, ifindex: 2, netns, skbLen: 84, flags: 0, mtu: 0, totLen: 84, ipId: seq, fragOff: 0, echoId: 7, echoSeq: seq,
  family: 4, hook: 'tp_btf', type: 8, code: 0, ttl: 64, pktType: 0, src: '10.0.1.2', dst: '10.0.2.2', quoted: null, ...extra,
});

describe('sighting merger', () => {
  const NODE = 100;
  const POD_B = 200;
  const HOST = 1;
  let reports: ReportedPacket[];
  let merger: SightingMerger;
  beforeEach(() => {
    reports = [];
    merger = new SightingMerger({
      holdMs: 30,
      rememberMs: 200,
      maxPending: 4,
      owns: (netns, ip) => (netns === POD_B && ip === '10.0.2.2' ? 'local' : netns === HOST && ip === '192.0.2.1' ? 'local' : netns === 999 ? 'unknown' : 'remote'),
      hostNetns: () => HOST,
      // The merger hands one object over for every report: kept, it is copied.
      report: (r) => reports.push({ ...r, packet: { ...r.packet } }),
    });
  });
  afterEach(() => merger.flush());

  it('reports a packet once, from its destination, after a sighting on the way', () => {
    merger.add(packet(NODE, 1));
    expect(reports).to.have.length(0); // held: the destination may follow
    merger.add(packet(POD_B, 1, { ttl: 63 }));
    expect(reports).to.have.length(1);
    expect(reports[0]).to.deep.include({ point: 'destination', sightings: 2 });
    expect(reports[0]!.packet.netns).to.equal(POD_B);
  });

  it('keeps its own copy of a held packet: the capture path decodes every record into one object', async () => {
    const scratch = packet(NODE, 1, { ttl: 64 });
    merger.add(scratch); // held: on the way
    Object.assign(scratch, packet(NODE, 2, { ttl: 64 })); // the next record, into the same object
    merger.add(scratch);
    Object.assign(scratch, packet(POD_B, 1, { ttl: 63 })); // packet 1 at its destination
    merger.add(scratch);
    Object.assign(scratch, packet(POD_B, 9, { ttl: 1 }));
    await new Promise((r) => setTimeout(r, 80));
    expect(reports.map((r) => [r.packet.echoSeq, r.packet.netns, r.packet.ttl, r.point, r.sightings])).to.deep.equal([
      [1, POD_B, 63, 'destination', 2],
      [2, NODE, 64, 'forwarded', 1],
    ]);
  });

  it('reports a packet seen only on the way after the hold time, as forwarded', async () => {
    merger.add(packet(NODE, 2));
    await new Promise((r) => setTimeout(r, 80));
    expect(reports.map((r) => r.point)).to.deep.equal(['forwarded']);
  });

  it('merges a destination sighting that comes after the hold time instead of reporting it again', async () => {
    merger.add(packet(NODE, 3));
    await new Promise((r) => setTimeout(r, 80));
    merger.add(packet(POD_B, 3));
    expect(reports).to.have.length(1);
    expect(merger.merged).to.equal(1);
  });

  it('says host when the node itself owns the destination, unknown when the namespace is unknown', () => {
    merger.add(packet(HOST, 4, { dst: '192.0.2.1' }));
    expect(reports[0]!.point).to.equal('host');
    merger.add(packet(999, 5));
    merger.flush();
    expect(reports[1]!.point).to.equal('unknown');
  });

  it('keeps different packets apart and never merges unvalidated headers', () => {
    merger.add(packet(POD_B, 6));
    merger.add(packet(POD_B, 7));
    const bad = packet(POD_B, 0, { flags: 1 << 5, src: '0.0.0.0', dst: '0.0.0.0', type: 0, echoId: 0 });
    merger.add(bad);
    merger.add({ ...bad });
    expect(reports).to.have.length(4);
  });

  it('never merges packets whose key cannot tell them apart: undecoded with no IP id', () => {
    // NONLINEAR / TRUNCATED / QinQ: no ICMP header read; IPv6 without a fragment header: no IP id.
    const blank = { ipId: 0, type: 0, code: 0, echoId: 0, echoSeq: 0 };
    for (const flags of [FLAG_BITS.nonlinear, FLAG_BITS.truncated, FLAG_BITS['vlan-unsupported']]) {
      merger.add(packet(POD_B, 0, { ...blank, flags, family: 6, src: 'fd00::1', dst: 'fd00::2', totLen: 30048 }));
      merger.add(packet(POD_B, 0, { ...blank, flags, family: 6, src: 'fd00::1', dst: 'fd00::2', totLen: 30048 }));
    }
    merger.add(packet(POD_B, 0, { ...blank, flags: FLAG_BITS.nonlinear, family: 0, src: '', dst: '' }));
    merger.add(packet(POD_B, 0, { ...blank, flags: FLAG_BITS.nonlinear, family: 0, src: '', dst: '' }));
    // Decoded but without an id either: IPv6 neighbour solicitations of one length.
    merger.add(packet(POD_B, 0, { ...blank, type: 135, family: 6, src: 'fd00::1', dst: 'fd00::2', totLen: 72 }));
    merger.add(packet(POD_B, 0, { ...blank, type: 135, family: 6, src: 'fd00::1', dst: 'fd00::2', totLen: 72 }));
    expect(reports).to.have.length(10);
    expect(reports.every((r) => r.sightings === 1)).to.equal(true);
    expect(merger.merged).to.equal(0);
  });

  it('still merges sightings of one packet that an IP id, an echo or a quote identifies', () => {
    const undecodedV4 = packet(NODE, 0, { ipId: 4711, flags: FLAG_BITS.nonlinear, type: 0, echoId: 0, echoSeq: 0 });
    merger.add(undecodedV4);
    merger.add({ ...undecodedV4, netns: POD_B });
    const echoV6 = packet(NODE, 3, { ipId: 0, family: 6, type: 128, src: 'fd00::1', dst: '10.0.2.2' });
    merger.add(echoV6);
    merger.add({ ...echoV6, netns: POD_B });
    const quote = { family: 6 as const, protocol: 17, src: '10.0.2.2', dst: 'fd00::1', sport: 40404, dport: 33434 };
    const error = packet(NODE, 0, { ipId: 0, family: 6, type: 1, code: 4, echoId: 0, echoSeq: 0, src: 'fd00::1', dst: '10.0.2.2', quoted: quote });
    merger.add(error);
    merger.add({ ...error, netns: POD_B });
    merger.add({ ...error, netns: POD_B, quoted: { ...quote, sport: 40405 } }); // another datagram's error
    expect(reports.map((r) => r.sightings)).to.deep.equal([2, 2, 2, 1]);
  });

  it('tells apart packets that differ in any one identity field, merges their repeats, forgets them after rememberMs to twice that', async () => {
    const big = new SightingMerger({
      holdMs: 30, rememberMs: 100, maxPending: 100_000, owns: () => 'local', hostNetns: () => HOST,
      report: (r) => reports.push({ ...r, packet: { ...r.packet } }),
    });
    try {
      const quote = { family: 4 as const, protocol: 17, src: '10.0.2.2', dst: '10.0.1.2', sport: 40000, dport: 33434 };
      const variants: CapturedPacket[] = [];
      for (let i = 1; i <= 2000; i++) {
        variants.push(packet(POD_B, i), packet(POD_B, 7, { echoId: i + 7 }), packet(POD_B, 7, { totLen: 84 + i }));
        variants.push(packet(POD_B, 7, { src: `10.0.${i >> 8}.${i & 255}` }), packet(POD_B, 7, { dst: `10.1.${i >> 8}.${i & 255}` }));
        variants.push(packet(POD_B, 0, { ipId: 0, type: 3, code: 3, echoId: 0, echoSeq: 0, quoted: { ...quote, sport: 40000 + i } }));
        variants.push(packet(POD_B, 0, { ipId: 0, type: 3, code: 3, echoId: 0, echoSeq: 0, quoted: { ...quote, src: `10.2.${i >> 8}.${i & 255}` } }));
      }
      for (const p of variants) big.add(p);
      // Identical identities (TTL and namespace aside) once each: the variants above repeat a few.
      const distinct = new Set(variants.map((p) => JSON.stringify({ ...p, ttl: 0, netns: 0 }))).size;
      expect(reports).to.have.length(distinct);
      expect(big.merged).to.equal(variants.length - distinct);
      for (const p of variants) big.add({ ...p, ttl: 1 });
      expect(reports).to.have.length(distinct);
      await new Promise((r) => setTimeout(r, 250));
      big.add(variants[0]!);
      expect(reports).to.have.length(distinct + 1);
    } finally {
      big.flush();
    }
  });

  it('reports without merging once its bound is reached, and counts that', () => {
    for (let seq = 10; seq < 16; seq++) merger.add(packet(POD_B, seq));
    expect(reports).to.have.length(6);
    expect(merger.overflowed).to.equal(2);
  });
});

describe('one event per packet on a bridged topology (real kernel)', function () {
  it('reports each echo once, from the destination pod, with both sightings counted', async function () {
    requirePrerequisite(this, isRoot, 'root (BPF, network namespaces)');
    const net = await DemoNetwork.create('bridged');
    const run = await startAgent();
    try {
      await net.ping('a', 'b', 4, ['-c', '3', '-i', '0.1']);
      const a = net.pod('a').ipv4;
      const b = net.pod('b').ipv4;
      const reqs = await run.waitFor((e) => e.source?.ip === a && e.destination?.ip === b && e.icmp?.type === 8, 3);
      await new Promise((r) => setTimeout(r, 200));
      expect(run.events.filter((e) => e.source?.ip === a && e.destination?.ip === b && e.icmp?.type === 8)).to.have.length(3);
      for (const ev of reqs) {
        expect(ev.observation?.point).to.equal(Point.OBSERVATION_POINT_DESTINATION);
        expect(ev.observation?.netns).to.equal(net.netnsInode(net.pod('b').netns));
        expect(ev.observation?.sightings).to.equal(2); // bridge port in the node, then pod b
        expect(ev.ttl).to.equal(64); // bridged: no routing hop
      }
    } finally {
      await run.stop();
      await net.destroy();
    }
  });
});
