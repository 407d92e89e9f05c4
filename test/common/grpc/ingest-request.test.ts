// The collector's IngestRequest reading: each event in the bytes the agent sent, not decoded, with
// the fields the collector reads; what protobufjs would not decode is refused.
import { expect } from 'chai';
import $protobuf from 'protobufjs/minimal.js';
import { encodeEvent } from '../../../src/agent/export/event-encoder.js';
import { decodeIngestRequest } from '../../../src/common/grpc/ingest-request.js';
import { icmpwatch } from '../../../src/common/proto.js';
import { batchRequest } from '../../collector/harness.js';

const v1 = icmpwatch.v1;
const event = (sequence: number): icmpwatch.v1.IEvent => ({ node: 'n', sequence, source: { ip: '10.0.0.1', labels: { app: `a${sequence}` } }, flags: [1, 2] });
const batchBytes = (...sequences: number[]) => batchRequest(sequences.map(event), { counters: { lost: 1 } });
const helloBytes = () => Buffer.from(v1.IngestRequest.encode({ hello: { node: 'n', agentInstance: 'i' } }).finish());
const toObject = (e: icmpwatch.v1.IEvent) => v1.Event.toObject(v1.Event.decode(v1.Event.encode(e).finish()), { longs: Number, defaults: true });

describe('common: IngestRequest as the collector receives it', () => {
  it('gives each event the exact bytes the agent encoded it in', () => {
    const received = decodeIngestRequest(batchBytes(1, 2, 3));
    expect(received.hello).to.equal(null);
    expect(received.batch!.events.map((e) => toObject(v1.Event.decode(e.bytes)))).to.deep.equal([1, 2, 3].map((s) => toObject(event(s))));
    expect(received.batch!.events.map((e) => Buffer.from(e.bytes).toString('hex'))).to.deep.equal([1, 2, 3].map((s) => Buffer.from(encodeEvent(event(s))).toString('hex')));
    expect(received.batch!.events.map((e) => [e.node, e.sequence, e.time])).to.deep.equal([1, 2, 3].map((s) => ['n', s, null]));
    expect(Number(received.batch!.counters!.lost)).to.equal(1);
  });

  it('reads repeated and superseded oneof members as protobufjs does: batches merge, a hello drops what came before', () => {
    const merged = decodeIngestRequest(Buffer.concat([batchBytes(1), batchBytes(2, 3)]));
    expect(merged.batch!.events.map((e) => e.sequence)).to.deep.equal([1, 2, 3]);
    expect(merged.batch!.events.map((e) => Number(v1.Event.decode(e.bytes).sequence))).to.deep.equal([1, 2, 3]);
    // Counters of merged batches merge too: the last one's fields win.
    expect(Number(merged.batch!.counters!.lost)).to.equal(1);
    const afterHello = decodeIngestRequest(Buffer.concat([batchBytes(1), helloBytes(), batchBytes(4)]));
    expect(afterHello.hello).to.equal(null);
    expect(afterHello.batch!.events.map((e) => Number(v1.Event.decode(e.bytes).sequence))).to.deep.equal([4]);
    const hello = decodeIngestRequest(Buffer.concat([batchBytes(1), helloBytes()]));
    expect([hello.hello?.agentInstance, hello.batch]).to.deep.equal(['i', null]);
  });

  it('throws for bytes that are no IngestRequest, naming the event that is not an Event', () => {
    expect(() => decodeIngestRequest(Buffer.from([0x12, 0x05, 0x0a, 0x10]))).to.throw();
    // A batch of two events whose second holds a string that is not UTF-8.
    const bad = Buffer.from(v1.Event.encode({ sequence: 2 }).finish());
    const badEvent = Buffer.concat([bad, Buffer.from([0x12, 0x02, 0xc3, 0x28])]);
    const request = $protobuf.Writer.create();
    const batch = $protobuf.Writer.create().uint32((1 << 3) | 2).bytes(encodeEvent(event(1))).uint32((1 << 3) | 2).bytes(badEvent).finish();
    request.uint32((2 << 3) | 2).bytes(batch);
    expect(() => decodeIngestRequest(request.finish())).to.throw('batch.events[1]: not an Event: field 2: invalid UTF-8');
  });
});
