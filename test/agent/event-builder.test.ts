import { expect } from 'chai';
import { EventBuilder, WallClock } from '../../src/agent/event-builder.js';
import type { CapturedPacket } from '../../src/agent/probe/decoder.js';
import { FLAG_BITS } from '../../src/agent/probe/event-layout.js';
import { NoResolver } from '../../src/agent/enrich/endpoints-file.js';
import { enumLabel, eventToJson, eventToText } from '../../src/common/event-format.js';
import { icmpwatch } from '../../src/common/proto.js';

const v1 = icmpwatch.v1;

const packet = (extra: Partial<CapturedPacket>): CapturedPacket => ({
  monoNs: 1, ifindex: 2, netns: 3, skbLen: 84, flags: 0, mtu: 0, totLen: 84, ipId: 9, fragOff: 0, echoId: 7, echoSeq: 1,
  family: 4, hook: 'tp_btf', type: 8, code: 0, ttl: 64, pktType: 0, src: '10.0.1.2', dst: '10.0.2.2', quoted: null, ...extra,
});

describe('event builder: kernel flags and families to API events', () => {
  const builder = new EventBuilder('node-a', new NoResolver(), new WallClock(), ['netif_receive_skb'], () => '');
  const build = (p: CapturedPacket) => builder.fromPacket({ packet: p, point: 'destination', sightings: 1 });

  it('maps every kernel flag to the proto Flag of the same name, in bit order', () => {
    const all = Object.values(FLAG_BITS).reduce((a, b) => a | b, 0);
    const ev = build(packet({ flags: all }));
    expect((ev.flags ?? []).map((f) => enumLabel(v1.Flag, 'FLAG_', f))).to.deep.equal(Object.keys(FLAG_BITS));
  });

  it('reports stacked VLAN (QinQ) packets flagged, with no ICMP header', () => {
    const ev = build(packet({ flags: FLAG_BITS['vlan-unsupported'], type: 0, echoId: 0, echoSeq: 0, src: '0.0.0.0', dst: '0.0.0.0' }));
    expect(ev.flags).to.deep.equal([v1.Flag.FLAG_VLAN_UNSUPPORTED]);
    expect(ev.icmp).to.equal(null);
    expect(eventToJson(ev)).to.deep.include({ flags: ['vlan-unsupported'] }).and.not.have.property('icmp');
    expect(eventToText(ev)).to.contain(' undecoded 0.0.0.0 -> 0.0.0.0 ').and.match(/flags=vlan-unsupported$/);
  });

  it('says the family is unknown when the frame was not readable as far as its IP header', () => {
    const ev = build(packet({ family: 0, flags: FLAG_BITS.nonlinear, type: 0, echoId: 0, echoSeq: 0, src: '', dst: '' }));
    expect(ev.family).to.equal(v1.Family.FAMILY_UNSPECIFIED);
    expect(ev.icmp).to.equal(null);
    expect(ev.observation?.symbol).to.equal('netif_receive_skb');
    expect(eventToJson(ev)).to.deep.include({ family: 'unspecified', flags: ['nonlinear'] });
  });

  it('decodes a valid echo with its id and seq', () => {
    const ev = build(packet({}));
    expect(ev.icmp).to.include({ type: 8, code: 0, name: 'echo-request', id: 7, seq: 1 });
    expect(ev.family).to.equal(v1.Family.FAMILY_IPV4);
  });
});
