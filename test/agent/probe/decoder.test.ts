import { expect } from 'chai';
import { blankPacket, decodeEvent, flagNames, formatIpv4, formatIpv6, RecordMemory } from '../../../src/agent/probe/decoder.js';
import { EVENT_FIELDS as F, EVENT_SIZE, FLAG_BITS } from '../../../src/agent/probe/event-layout.js';

const v6 = (hex: string) => Uint8Array.from(Buffer.from(hex.replace(/[: ]/g, ''), 'hex'));

describe('decoder', () => {
  it('formats IPv6 addresses as RFC 5952 text', () => {
    expect(formatIpv6(v6('00000000000000000000000000000001'), 0)).to.equal('::1');
    expect(formatIpv6(v6('fd000148000200000000000000000002'), 0)).to.equal('fd00:148:2::2');
    expect(formatIpv6(v6('20010db8000000010000000000000001'), 0)).to.equal('2001:db8:0:1::1'); // single zero group stays
    expect(formatIpv6(v6('20010db8000000000001000000000001'), 0)).to.equal('2001:db8::1:0:0:1'); // first longest run
    expect(formatIpv6(v6('00000000000000000000ffff0a000001'), 0)).to.equal('::ffff:10.0.0.1');
    expect(formatIpv6(v6('fe800000000000000000000000000000'), 0)).to.equal('fe80::');
  });

  it('formats IPv4 addresses from its cache of recent ones without mixing up addresses that share a slot', () => {
    const all: [Uint8Array, string][] = [];
    for (let i = 0; i < 3000; i++) {
      const b = Uint8Array.of((i * 7) & 255, (i * 13) & 255, i & 255, (i >> 8) & 255);
      all.push([b, `${b[0]}.${b[1]}.${b[2]}.${b[3]}`]);
    }
    for (let round = 0; round < 2; round++) for (const [b, text] of all) expect(formatIpv4(b, 0)).to.equal(text);
    expect(formatIpv4(Uint8Array.of(9, 10, 0, 1, 2, 3), 2)).to.equal('0.1.2.3');
  });

  it('decodes a record at any offset of the ring', () => {
    const buf = new Uint8Array(8 + EVENT_SIZE);
    const dv = new DataView(buf.buffer);
    const at = 8;
    dv.setUint32(at + F.mono_ns.offset, 0x89abcdef, true);
    dv.setUint32(at + F.mono_ns.offset + 4, 0x1, true);
    dv.setUint32(at + F.netns.offset, 4026531833, true);
    dv.setUint16(at + F.echo_id.offset, 0xbeef, true);
    dv.setUint8(at + F.family.offset, 4);
    dv.setUint8(at + F.hook.offset, 2);
    dv.setUint8(at + F.type.offset, 8);
    buf.set([10, 0, 0, 1], at + F.saddr.offset);
    buf.set([192, 168, 7, 9], at + F.daddr.offset);
    dv.setUint32(at + F.flags.offset, FLAG_BITS.vlan | FLAG_BITS.padded, true);
    const p = decodeEvent(new RecordMemory(buf.buffer), at);
    expect(p.monoNs).to.equal(0x189abcdef);
    expect(p).to.include({ netns: 4026531833, echoId: 0xbeef, family: 4, hook: 'raw_tp', type: 8, src: '10.0.0.1', dst: '192.168.7.9' });
    expect(p.quoted).to.equal(null);
    expect(flagNames(p.flags)).to.deep.equal(['vlan', 'padded']);
  });

  it('keeps family 0 (frame not readable as far as its IP header) with empty addresses', () => {
    const buf = new Uint8Array(EVENT_SIZE);
    const dv = new DataView(buf.buffer);
    dv.setUint8(F.hook.offset, 1);
    dv.setUint32(F.flags.offset, FLAG_BITS.nonlinear | FLAG_BITS['vlan-unsupported'], true);
    const p = decodeEvent(new RecordMemory(buf.buffer), 0);
    expect(p).to.include({ family: 0, src: '', dst: '', hook: 'tp_btf' });
    expect(flagNames(p.flags)).to.deep.equal(['nonlinear', 'vlan-unsupported']);
  });

  it('decodes into one reused object with nothing left over from the record before', () => {
    const quoting = new Uint8Array(EVENT_SIZE);
    const q = new DataView(quoting.buffer);
    q.setUint8(F.family.offset, 6);
    q.setUint8(F.type.offset, 1);
    q.setUint8(F.inner_family.offset, 6);
    q.setUint8(F.inner_proto.offset, 17);
    q.setUint16(F.inner_sport.offset, 40000, true);
    quoting.set(v6('fd000000000000000000000000000001'), F.saddr.offset);
    const plain = new Uint8Array(EVENT_SIZE);
    const d = new DataView(plain.buffer);
    d.setUint32(F.flags.offset, FLAG_BITS.truncated, true);
    const into = blankPacket();
    const fresh = (bytes: Uint8Array) => decodeEvent(new RecordMemory(bytes.buffer), 0);
    expect(decodeEvent(new RecordMemory(quoting.buffer), 0, into)).to.equal(into).and.deep.equal(fresh(quoting));
    expect(into.quoted).to.include({ family: 6, protocol: 17, sport: 40000 });
    expect(decodeEvent(new RecordMemory(plain.buffer), 0, into)).to.deep.equal(fresh(plain));
    expect(into).to.include({ family: 0, src: '', quoted: null, flags: FLAG_BITS.truncated, type: 0 });
  });
});
