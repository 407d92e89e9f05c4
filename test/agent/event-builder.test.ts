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

  it('hands the same observation object over for packets seen at one place, and a new one where anything about the place differs', () => {
    const names = new Map([[2, 'eth0']]);
    const b = new EventBuilder('node-a', new NoResolver(), new WallClock(), ['netif_receive_skb'], (_netns, ifindex) => names.get(ifindex) ?? '');
    const at = (p: Partial<CapturedPacket>, point: 'destination' | 'host' | 'forwarded' = 'destination', sightings = 1) =>
      b.fromPacket({ packet: packet(p), point, sightings }).observation!;
    const first = at({ echoSeq: 1 });
    // The node log and the exporter reuse an observation's encoded bytes by object identity.
    expect(at({ echoSeq: 2, ttl: 9, ipId: 77 })).to.equal(first);
    const variants = [
      at({ netns: 4 }), at({ ifindex: 5 }), at({}, 'host'), at({}, 'forwarded'), at({}, 'destination', 2),
      at({ hook: 'raw_tp' }), at({ family: 6, src: 'fd00::1', dst: 'fd00::2' }),
      at({ ifindex: 1 << 20 }), // beyond the cached range: an object of its own each time
    ];
    for (const v of variants) expect(v).to.not.equal(first);
    expect(at({ ifindex: 1 << 20 })).to.not.equal(variants.at(-1));
    expect(new Set(variants).size).to.equal(variants.length);
    expect(at({ netns: 4 })).to.equal(variants[0]);
    expect(variants.map((v) => [v.netns, v.ifindex, v.point, v.sightings, v.hook])).to.deep.equal([
      [4, 2, v1.ObservationPoint.OBSERVATION_POINT_DESTINATION, 1, v1.Hook.HOOK_TP_BTF],
      [3, 5, v1.ObservationPoint.OBSERVATION_POINT_DESTINATION, 1, v1.Hook.HOOK_TP_BTF],
      [3, 2, v1.ObservationPoint.OBSERVATION_POINT_HOST, 1, v1.Hook.HOOK_TP_BTF],
      [3, 2, v1.ObservationPoint.OBSERVATION_POINT_FORWARDED, 1, v1.Hook.HOOK_TP_BTF],
      [3, 2, v1.ObservationPoint.OBSERVATION_POINT_DESTINATION, 2, v1.Hook.HOOK_TP_BTF],
      [3, 2, v1.ObservationPoint.OBSERVATION_POINT_DESTINATION, 1, v1.Hook.HOOK_RAW_TP],
      [3, 2, v1.ObservationPoint.OBSERVATION_POINT_DESTINATION, 1, v1.Hook.HOOK_TP_BTF],
      [3, 1 << 20, v1.ObservationPoint.OBSERVATION_POINT_DESTINATION, 1, v1.Hook.HOOK_TP_BTF],
    ]);
    // The host renamed the interface: the next packet there names the new one.
    names.set(2, 'uplink0');
    expect(at({}).interface).to.equal('uplink0');
    expect(first.interface).to.equal('eth0');
  });
});
