// The collector reads events without decoding them (event-wire.ts). What it lets through it forwards
// to subscribers, who decode with protobufjs: so whatever the walk accepts, protobufjs must decode,
// with the same node, time and sequence. Checked on real events, mutated, with a seeded generator.
import path from 'node:path';
import { expect } from 'chai';
import protobuf from 'protobufjs';
import { encodeEvent } from '../../../src/agent/export/event-encoder.js';
import { EVENT_SCHEMA, scanEvent, type WireSchema } from '../../../src/common/grpc/event-wire.js';
import { timestampMs } from '../../../src/common/grpc/subscribe-request.js';
import { icmpwatch } from '../../../src/common/proto.js';
import { fuzzSeed, Random, reportSeedOnFailure } from '../../fuzz.js';

const v1 = icmpwatch.v1;
const PROTO_DIR = path.resolve(import.meta.dirname, '../../../proto');

const events: icmpwatch.v1.IEvent[] = [
  {
    time: { seconds: 1_780_000_000, nanos: 123_456_789 },
    node: 'node-é',
    family: v1.Family.FAMILY_IPV6,
    source: { ip: 'fd00::2', namespace: 'demo', pod: 'pod-a', podUid: 'uid', labels: { app: 'web', tier: 'café' }, workload: { kind: 'Deployment', name: 'web' }, node: 'n', service: 's', kind: 1, enrichment: 1 },
    destination: { ip: 'fd00::3', namespace: 'other', pod: 'pod-b', kind: 1, enrichment: 4 },
    icmp: { type: 1, code: 4, name: 'port-unreachable', mtu: 1280, quoted: { source: 'fd00::3', destination: 'fd00::2', protocol: 17, sourcePort: 4, destinationPort: 53, echoId: 7, echoSeq: 9 } },
    ttl: 64, length: 1280, ipId: 4242, fragmentOffset: 8,
    observation: { hook: 1, point: 1, ifindex: 7, interface: 'eth0', netns: 4026532001, sightings: 2, symbol: 'netif_receive_skb' },
    flags: [1, 2, 3],
    summary: { packets: 1000, first: { seconds: 5, nanos: 5 }, last: { seconds: -6, nanos: -6 }, sightings: 2000 },
    sequence: 2 ** 40 + 3,
    monotonicNs: 987_654_321_012_345,
  },
  { time: { seconds: -1, nanos: 999 }, node: 'n', source: { ip: '10.0.0.1' }, icmp: { type: 8, id: 1, seq: 2 }, sequence: 1 },
  { sequence: 7 },
  {},
];

/** The schema the walk should have, read from the .proto files by protobufjs's parser. */
function schemaFromProto(type: protobuf.Type): WireSchema {
  const strings: number[] = [];
  const packed: number[] = [];
  const messages: Record<number, WireSchema> = {};
  for (const field of type.fieldsArray) {
    field.resolve();
    if (field instanceof protobuf.MapField) messages[field.id] = { strings: [1, 2], messages: {} };
    else if (field.resolvedType instanceof protobuf.Type) messages[field.id] = schemaFromProto(field.resolvedType);
    else if (field.type === 'string') strings.push(field.id);
    else if (field.repeated && field.resolvedType instanceof protobuf.Enum) packed.push(field.id);
  }
  return packed.length ? { strings, messages, packed } : { strings, messages };
}

describe('common: Event bytes read without decoding', () => {
  const seed = fuzzSeed(0x5eed_e7e7);
  afterEach(function () {
    reportSeedOnFailure(this, seed);
  });

  it('knows the strings and messages of every message an Event holds, as the .proto files say', () => {
    const root = new protobuf.Root();
    root.resolvePath = (_origin, target) => path.join(PROTO_DIR, target);
    root.loadSync('icmpwatch/v1/event.proto', { keepCase: true });
    expect(schemaFromProto(root.lookupType('icmpwatch.v1.Event'))).to.deep.equal(EVENT_SCHEMA);
  });

  it('reads node, time and sequence as protobufjs decodes them, repeated fields included', () => {
    for (const event of events) {
      const bytes = encodeEvent(event);
      const decoded = v1.Event.decode(bytes);
      const scanned = scanEvent(bytes);
      expect(scanned.bytes).to.equal(bytes);
      expect([scanned.node, scanned.sequence]).to.deep.equal([decoded.node, Number(decoded.sequence)]);
      expect(scanned.time && timestampMs(scanned.time)).to.deep.equal(decoded.time && timestampMs(decoded.time));
    }
    // Fields given twice: the last string wins and messages merge, as in protobufjs.
    const twice = Buffer.concat([encodeEvent(events[0]!), encodeEvent({ node: 'other', time: { nanos: 5 }, sequence: 9 })]);
    const scanned = scanEvent(twice);
    expect([scanned.node, scanned.sequence, scanned.time]).to.deep.equal(['other', 9, { seconds: 1_780_000_000, nanos: 5 }]);
  });

  it('accepts nothing protobufjs would not decode, and agrees with it on what it accepts (mutated events)', function () {
    this.timeout(60_000);
    const random = new Random(seed);
    let accepted = 0;
    let refusedByBoth = 0;
    let refusedOnlyHere = 0;
    for (let i = 0; i < 40_000; i++) {
      const input = random.mutate(encodeEvent(random.pick(events)));
      let decoded: icmpwatch.v1.Event | null = null;
      try {
        decoded = v1.Event.decode(input);
      } catch {
        // protobufjs refuses it
      }
      let scanned;
      try {
        scanned = scanEvent(input);
      } catch (err) {
        expect((err as Error).message).to.match(/^not an Event: /);
        if (decoded) refusedOnlyHere++;
        else refusedByBoth++;
        continue;
      }
      expect(decoded, `accepted what protobufjs refuses: ${input.toString('hex')}`).to.not.equal(null);
      expect([scanned.node, scanned.sequence]).to.deep.equal([decoded!.node, Number(decoded!.sequence)]);
      expect(scanned.time && timestampMs(scanned.time)).to.deep.equal(decoded!.time && timestampMs(decoded!.time));
      accepted++;
    }
    // Stricter than protobufjs only where it is lenient (groups, over-long tags, packed enums cut short).
    expect(accepted).to.be.greaterThan(5000);
    expect(refusedByBoth).to.be.greaterThan(5000);
    expect(refusedOnlyHere).to.be.lessThan(accepted / 100);
  });
});
