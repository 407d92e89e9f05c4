// The wire-format pieces against protobufjs: the same varints, and fields found where it reads them.
import { expect } from 'chai';
import $protobuf from 'protobufjs/minimal.js';
import { delimitedFields, varintLength, withStringField, writeVarint } from '../../src/common/protobuf-wire.js';
import { icmpwatch } from '../../src/common/proto.js';

describe('common: protobuf wire format', () => {
  it('writes varints as protobufjs writes uint64 and, for negative numbers, int64', () => {
    const values = [0, 1, 127, 128, 300, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 60, 1.8e19, -1, -2, -(2 ** 31), -(2 ** 53 - 1), -(2 ** 63)];
    for (const n of values) {
      const theirs = (n < 0 ? $protobuf.Writer.create().int64(n) : $protobuf.Writer.create().uint64(n)).finish();
      const ours = new Uint8Array(varintLength(n));
      expect(writeVarint(ours, 0, n), `length of ${n}`).to.equal(theirs.length);
      expect(Buffer.from(ours).toString('hex'), String(n)).to.equal(Buffer.from(theirs).toString('hex'));
    }
  });

  it('adds a string field that decoders take over the one inside', () => {
    const event = icmpwatch.v1.Event.encode({ node: 'old', ttl: 5 }).finish();
    const decoded = icmpwatch.v1.Event.decode(withStringField(event, 2, 'nœud'));
    expect([decoded.node, decoded.ttl]).to.deep.equal(['nœud', 5]);
  });

  it('finds every occurrence of a length-delimited field, skipping others and emptied by a oneof sibling', () => {
    const writer = $protobuf.Writer.create();
    writer.uint32((1 << 3) | 2).string('a'); // field 1
    writer.uint32((7 << 3) | 0).uint64(2 ** 40); // unknown varint
    writer.uint32((2 << 3) | 2).string('b'); // field 2: resets
    writer.uint32((1 << 3) | 0).uint32(9); // field 1 with the wrong wire type: not it
    writer.uint32((1 << 3) | 2).bytes(new Uint8Array([1, 2, 3]));
    writer.uint32((9 << 3) | 5).fixed32(1); // unknown fixed32
    writer.uint32((1 << 3) | 2).string('');
    const found = delimitedFields(writer.finish(), 1, [2]).map((b) => Buffer.from(b).toString('hex'));
    expect(found).to.deep.equal(['010203', '']);
  });
});
