import { expect } from 'chai';
import { eventToJson, eventToText } from '../../src/common/event-format.js';
import { EventJsonWriter } from '../../src/common/event-json-writer.js';
import { icmpName, parseIcmpSelector } from '../../src/common/icmp-names.js';
import { icmpwatch } from '../../src/common/proto.js';
import { Random, flowEnds, fuzzSeed, reportSeedOnFailure } from '../fuzz.js';

const { Family, Flag, Hook, ObservationPoint } = icmpwatch.v1;

const ping: icmpwatch.v1.IEvent = {
  time: { seconds: Date.parse('2026-11-25T05:55:01Z') / 1000, nanos: 123_456_789 },
  node: 'node-a',
  family: Family.FAMILY_IPV4,
  source: { ip: '10.1.0.2', namespace: 'demo', pod: 'pod-a' },
  destination: { ip: '10.2.0.2', namespace: 'demo', pod: 'pod-b' },
  icmp: { type: 8, code: 0, id: 1234, seq: 1 },
  ttl: 63,
  length: 84,
  observation: { hook: Hook.HOOK_TP_BTF, point: ObservationPoint.OBSERVATION_POINT_DESTINATION, ifindex: 3, netns: 4026532001 },
  sequence: 7,
};

describe('common: ICMP names', () => {
  it('names types and codes per family', () => {
    expect(icmpName('ipv4', 8, 0)).to.equal('echo-request');
    expect(icmpName('ipv4', 3, 3)).to.equal('port-unreachable');
    expect(icmpName('ipv4', 3, 4)).to.equal('frag-needed');
    expect(icmpName('ipv4', 3, 99)).to.equal('destination-unreachable');
    expect(icmpName('ipv6', 1, 4)).to.equal('port-unreachable');
    expect(icmpName('ipv6', 2, 0)).to.equal('packet-too-big');
    expect(icmpName('ipv6', 3, 0)).to.equal('hop-limit-exceeded');
    expect(icmpName('ipv4', 11, 0)).to.equal('ttl-exceeded');
    expect(icmpName('ipv6', 134, 0)).to.equal('router-advertisement');
    expect(icmpName('ipv6', 200, 0)).to.equal('type-200');
  });

  it('resolves names and numbers back to selectors', () => {
    expect(parseIcmpSelector('echo-reply')).to.deep.equal([
      { family: 'ipv4', type: 0 },
      { family: 'ipv6', type: 129 },
    ]);
    expect(parseIcmpSelector('Port-Unreachable')).to.deep.equal([
      { family: 'ipv4', type: 3, code: 3 },
      { family: 'ipv6', type: 1, code: 4 },
    ]);
    expect(parseIcmpSelector('3/4')).to.deep.equal([{ type: 3, code: 4 }]);
    expect(parseIcmpSelector('256')).to.equal(null);
    expect(parseIcmpSelector('ping')).to.equal(null);
  });
});

describe('common: event format', () => {
  it('prints one text line with both ends, echo id/seq and where it was seen', () => {
    expect(eventToText(ping)).to.equal(
      '2026-11-25T05:55:01.123Z node-a echo-request 10.1.0.2 (demo/pod-a) -> 10.2.0.2 (demo/pod-b) id=1234 seq=1 ttl=63 len=84 [destination if=3 netns=4026532001]',
    );
    const summary = { ...ping, flags: [Flag.FLAG_FRAGMENT, Flag.FLAG_PADDED], summary: { packets: 1234 } };
    expect(eventToText(summary)).to.match(/ flags=fragment,padded x1234 packets suppressed$/);
    expect(eventToText({ ...ping, icmp: { type: 3, code: 4, mtu: 1400 }, destination: { ip: '10.9.9.9' } })).to.contain(
      'frag-needed 10.1.0.2 (demo/pod-a) -> 10.9.9.9 mtu=1400 ttl=63',
    );
  });

  it('prints a time outside the protobuf Timestamp range as its raw fields instead of throwing', () => {
    // Any agent can send such a time, and the collector passes it on to every `observe`.
    const far = { ...ping, time: { seconds: 1e15, nanos: 0 } };
    expect(eventToText(far)).to.match(/^invalid-time\(seconds=1000000000000000,nanos=0\) node-a /);
    expect(eventToJson({ ...ping, time: { seconds: 0, nanos: -1 } }).time).to.equal('invalid-time(seconds=0,nanos=-1)');
    expect(eventToJson({ ...ping, time: { seconds: 253_402_300_799, nanos: 999_999_999 } }).time).to.equal('9999-12-31T23:59:59.999999999Z');
    expect(eventToJson({ ...ping, time: { seconds: 253_402_300_800, nanos: 0 } }).time).to.match(/^invalid-time/);
    expect(eventToJson({ ...ping, time: { seconds: -62_135_596_800, nanos: 0 } }).time).to.equal('0001-01-01T00:00:00.000000000Z');
  });

  it('gives the JSON fields of the capture issue, with nanoseconds', () => {
    expect(eventToJson(ping)).to.deep.equal({
      time: '2026-11-25T05:55:01.123456789Z',
      node: 'node-a',
      family: 'ipv4',
      source: { ip: '10.1.0.2', namespace: 'demo', pod: 'pod-a' },
      destination: { ip: '10.2.0.2', namespace: 'demo', pod: 'pod-b' },
      icmp: { type: 8, code: 0, name: 'echo-request', id: 1234, seq: 1 },
      ttl: 63,
      length: 84,
      observation: { hook: 'tp_btf', point: 'destination', ifindex: 3, netns: 4026532001 },
      flags: [],
      sequence: 7,
    });
    const v6 = eventToJson({ ...ping, family: Family.FAMILY_IPV6, icmp: { type: 1, code: 4 } });
    expect([v6.family, v6.icmp]).to.deep.equal(['ipv6', { type: 1, code: 4, name: 'port-unreachable' }]);
  });

  it('writes every key by its proto3 JSON name (lowerCamelCase), the names the Event message defines', () => {
    const full: icmpwatch.v1.IEvent = {
      ...ping,
      source: { ...ping.source, podUid: 'uid-a', labels: { 'app.kubernetes.io/name': 'a' }, workload: { kind: 'Deployment', name: 'a' }, node: 'node-a' },
      icmp: { type: 3, code: 3, name: 'port-unreachable', quoted: { source: '10.2.0.2', destination: '10.1.0.2', protocol: 17, sourcePort: 40000, destinationPort: 33434 } },
      ipId: 4321,
      fragmentOffset: 1480,
      flags: [Flag.FLAG_MORE_FRAGMENTS],
      summary: { packets: 3, sightings: 6, first: ping.time, last: ping.time },
    };
    const json = eventToJson(full);
    expect(json).to.deep.include({ ipId: 4321, fragmentOffset: 1480 });
    expect(json.source).to.deep.include({ podUid: 'uid-a' });
    expect((json.icmp as Record<string, unknown>).quoted).to.deep.equal({
      source: '10.2.0.2', destination: '10.1.0.2', protocol: 17, sourcePort: 40000, destinationPort: 33434,
    });
    const echoQuoted: icmpwatch.v1.IEvent = { ...full, icmp: { type: 3, code: 3, name: 'port-unreachable', quoted: { source: 'a', destination: 'b', protocol: 1, echoId: 9, echoSeq: 2 } } };
    expect((eventToJson(echoQuoted).icmp as Record<string, unknown>).quoted).to.deep.include({ echoId: 9, echoSeq: 2 });
    // Every key path of the JSON is a path of the message itself under its proto3 JSON names
    // (protobufjs names fields lowerCamelCase); label keys are data, timestamps print as strings.
    const paths = (o: unknown, at: string): string[] =>
      typeof o !== 'object' || o === null || Array.isArray(o) || at.endsWith('.labels')
        ? []
        : Object.entries(o).flatMap(([k, v]) => [`${at}.${k}`, ...paths(v, `${at}.${k}`)]);
    for (const ev of [full, echoQuoted]) {
      const fields = new Set(paths(icmpwatch.v1.Event.toObject(icmpwatch.v1.Event.fromObject(ev)), ''));
      for (const path of paths(eventToJson(ev), '')) {
        expect(path).to.match(/^(\.[a-z][a-zA-Z0-9]*)+$/);
        expect(fields.has(path), path).to.equal(true);
      }
    }
  });
});

describe('common: events without a decoded ICMP header', () => {
  const fragment: icmpwatch.v1.IEvent = {
    ...ping,
    icmp: null,
    fragmentOffset: 1480,
    flags: [Flag.FLAG_FRAGMENT],
    observation: { ...ping.observation, symbol: 'netif_receive_skb' },
  };

  it('never prints type 0 as an echo reply: no icmp object in JSON, a plain label in text', () => {
    const json = eventToJson(fragment);
    expect(json).to.not.have.property('icmp');
    expect(json.flags).to.deep.equal(['fragment']);
    expect(json.fragmentOffset).to.equal(1480);
    expect(json.observation).to.deep.include({ symbol: 'netif_receive_skb' });
    const text = eventToText(fragment);
    expect(text).to.contain(' fragment 10.1.0.2 (demo/pod-a) -> 10.2.0.2 (demo/pod-b) ').and.contain('frag=1480');
    expect(text).to.not.contain('echo').and.not.contain('id=');
    expect(eventToText({ ...fragment, flags: [Flag.FLAG_BAD_IHL], fragmentOffset: 0 })).to.contain(' undecoded ');
  });
});

describe('common: the node log JSON line writer', () => {
  const seed = fuzzSeed(0x1c3a7);
  afterEach(function () {
    reportSeedOnFailure(this, seed);
  });

  /** Any field present or not, strings that need escaping (quotes, controls, lone surrogates), enum values out of range. */
  function randomEvent(r: Random): icmpwatch.v1.IEvent {
    const maybe = <T>(value: () => T): T | undefined => (r.chance(0.5) ? value() : undefined);
    const text = () => (r.chance(0.1) ? `${r.string()}\ud800${r.string()}` : r.chance(0.5) ? r.pick(['10.1.0.2', 'fd00::1', 'demo', 'pod-a']) : r.string());
    const small = () => r.pick([0, 1, 63, 84, 1480, 65535, r.int(1 << 20)]);
    const enumValue = (max: number) => r.pick([0, 1 + r.int(max), 99]);
    const timestamp = () => (r.chance(0.1) ? { seconds: r.extremeInt(), nanos: r.extremeInt() } : { seconds: 1_764_000_000 + r.int(1000), nanos: r.int(1e9) });
    const endpoint = (): icmpwatch.v1.IEndpoint => ({
      ip: maybe(text),
      namespace: maybe(text),
      pod: maybe(text),
      podUid: maybe(text),
      labels: maybe(() => Object.fromEntries(Array.from({ length: r.int(4) }, () => [text(), text()]))),
      workload: maybe(() => ({ kind: maybe(text), name: maybe(text) })),
      node: maybe(text),
      service: maybe(text),
      kind: maybe(() => enumValue(4)),
      enrichment: maybe(() => enumValue(4)),
    });
    return {
      time: maybe(timestamp),
      node: maybe(text),
      family: maybe(() => enumValue(2)),
      source: maybe(endpoint),
      destination: maybe(endpoint),
      icmp: maybe(() => ({
        type: r.pick([0, 3, 8, 11, 128, 129, 135, r.int(256)]),
        code: maybe(() => r.int(16)),
        name: maybe(text),
        id: maybe(small),
        seq: maybe(small),
        mtu: maybe(small),
        quoted: maybe(() => ({
          source: maybe(text), destination: maybe(text), protocol: maybe(() => r.pick([1, 6, 17, 58])),
          sourcePort: maybe(small), destinationPort: maybe(small), echoId: maybe(small), echoSeq: maybe(small),
        })),
      })),
      ttl: maybe(small),
      length: maybe(small),
      ipId: maybe(small),
      fragmentOffset: maybe(small),
      observation: maybe(() => ({
        hook: maybe(() => enumValue(4)),
        point: maybe(() => enumValue(4)),
        ifindex: maybe(small),
        interface: maybe(text),
        netns: maybe(() => r.pick([4026531840, 4026532001, 0])),
        sightings: maybe(() => r.int(4)),
        symbol: maybe(text),
      })),
      flags: maybe(() => Array.from({ length: r.int(4) }, () => enumValue(12))),
      summary: maybe(() => ({ packets: maybe(small), first: maybe(timestamp), last: maybe(timestamp) })),
      sequence: maybe(() => r.pick([1, 7, 2 ** 40])),
    };
  }

  it('writes exactly JSON.stringify(eventToJson(event)) for random events, as built and as decoded from the wire', () => {
    const r = new Random(seed);
    // A small first buffer: lines with long strings must grow it, never be cut.
    const writer = new EventJsonWriter(256);
    const expected: string[] = [];
    let decodedCount = 0;
    for (let i = 0; i < 5000; i++) {
      const ev = randomEvent(r);
      writer.event(ev);
      expected.push(JSON.stringify(eventToJson(ev)));
      // What a subscriber gets: defaults filled in, unknown enum numbers kept.
      let decoded: icmpwatch.v1.IEvent;
      try {
        decoded = icmpwatch.v1.Event.decode(icmpwatch.v1.Event.encode(ev).finish());
      } catch {
        continue; // out-of-range timestamps the encoder refuses
      }
      decodedCount++;
      writer.event(decoded);
      expected.push(JSON.stringify(eventToJson(decoded)));
      if (i % 97 === 0) {
        writer.text('{"notice":"lost","events":3}');
        expected.push('{"notice":"lost","events":3}');
      }
      if (i % 500 === 0) expect(writer.take().toString('utf8').split('\n')).to.deep.equal([...expected.splice(0), '']);
    }
    expect(decodedCount).to.be.greaterThan(2500);
    writer.event(ping);
    expected.push(JSON.stringify(eventToJson(ping)));
    expect(writer.take().toString('utf8').split('\n')).to.deep.equal([...expected, '']);
  });

  it('writes the same when events share endpoint and observation objects (bytes reused) as when each has its own', () => {
    const r = new Random(seed);
    const parts = Array.from({ length: 24 }, () => randomEvent(r));
    const writer = new EventJsonWriter(256);
    const expected: string[] = [];
    for (let i = 0; i < 3000; i++) {
      // Parts of earlier events, as the agent's resolver and builder hand the same objects over again.
      const ev: icmpwatch.v1.IEvent = {
        ...randomEvent(r),
        node: r.pick(parts).node,
        family: r.pick(parts).family,
        source: r.pick(parts).source,
        destination: r.pick(parts).destination,
        icmp: r.pick(parts).icmp,
        observation: r.pick(parts).observation,
      };
      writer.event(ev);
      expected.push(JSON.stringify(eventToJson(ev)));
    }
    expect(writer.take().toString('utf8').split('\n')).to.deep.equal([...expected, '']);
  });

  it('writes the same for echo flows (lines from kept parts of the flow) as for each event on its own', () => {
    const r = new Random(seed);
    const { sources, peers, observations } = flowEnds(Array.from({ length: 12 }, () => randomEvent(r)));
    const writer = new EventJsonWriter(256);
    const expected: string[] = [];
    for (let i = 0; i < 6000; i++) {
      const family = r.often([Family.FAMILY_IPV4], () => Family.FAMILY_IPV6);
      const echo = family === Family.FAMILY_IPV4 ? r.pick([0, 8]) : r.pick([128, 129]);
      const varied = randomEvent(r);
      const ev: icmpwatch.v1.IEvent = {
        // What changes with every packet of a flow.
        time: varied.time,
        ipId: r.chance(0.8) ? varied.ipId : 0,
        sequence: r.chance(0.95) ? i + 1 : varied.sequence,
        icmp: {
          type: r.chance(0.9) ? echo : varied.icmp?.type,
          code: r.chance(0.9) ? 0 : varied.icmp?.code,
          name: r.often([undefined], () => r.pick(['echo-request', 'echo-reply', 'x"y'])),
          id: r.chance(0.9) ? r.int(65536) : varied.icmp?.id,
          seq: r.chance(0.9) ? r.int(65536) : varied.icmp?.seq,
          // Now and then a part no flow line has.
          mtu: r.chance(0.03) ? 1280 : 0,
          quoted: r.chance(0.03) ? (varied.icmp?.quoted ?? null) : null,
        },
        // What stays the same for a flow's packets, mostly.
        node: r.often(['node-a'], () => r.pick(['node-b', varied.node ?? ''])),
        family,
        source: r.pick(sources),
        destination: r.often(peers.slice(0, 2), () => r.pick(peers)),
        observation: r.often(observations.slice(0, 2), () => r.pick(observations)),
        ttl: r.often([64], () => r.pick([63, 0, varied.ttl ?? 1])),
        length: r.often([84], () => r.pick([104, 0])),
        fragmentOffset: r.chance(0.03) ? 8 : 0,
        flags: r.chance(0.05) ? (varied.flags ?? []) : [],
        summary: r.chance(0.02) ? varied.summary : null,
      };
      writer.event(ev);
      expected.push(JSON.stringify(eventToJson(ev)));
    }
    expect(writer.take().toString('utf8').split('\n')).to.deep.equal([...expected, '']);
  });
});
