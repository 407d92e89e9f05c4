// The collector's IngestRequest decoding: each event with the bytes protobufjs decoded it from.
import { expect } from 'chai';
import { encodeBatchRequest } from '../../../src/agent/export/batch-request.js';
import { encodeEvent } from '../../../src/agent/export/event-encoder.js';
import { decodeIngestRequest } from '../../../src/common/grpc/ingest-request.js';
import { icmpwatch } from '../../../src/common/proto.js';

const v1 = icmpwatch.v1;
const event = (sequence: number): icmpwatch.v1.IEvent => ({ node: 'n', sequence, source: { ip: '10.0.0.1', labels: { app: `a${sequence}` } }, flags: [1, 2] });
const batchBytes = (...sequences: number[]) => Buffer.from(encodeBatchRequest(sequences.map((s) => encodeEvent(event(s))), { counters: { lost: 1 } }));
const helloBytes = () => Buffer.from(v1.IngestRequest.encode({ hello: { node: 'n', agentInstance: 'i' } }).finish());
const toObject = (e: icmpwatch.v1.IEvent) => v1.Event.toObject(v1.Event.decode(v1.Event.encode(e).finish()), { longs: Number, defaults: true });

describe('common: IngestRequest as the collector receives it', () => {
  it('gives each event the exact bytes the agent encoded it in', () => {
    const received = decodeIngestRequest(batchBytes(1, 2, 3));
    expect(received.hello).to.equal(null);
    expect(received.batch!.events!.map(toObject)).to.deep.equal([1, 2, 3].map((s) => toObject(event(s))));
    expect(received.eventBytes.map((b) => Buffer.from(b).toString('hex'))).to.deep.equal([1, 2, 3].map((s) => Buffer.from(encodeEvent(event(s))).toString('hex')));
    expect(Number(received.batch!.counters!.lost)).to.equal(1);
  });

  it('reads repeated and superseded oneof members as protobufjs does: batches merge, a hello drops what came before', () => {
    const merged = decodeIngestRequest(Buffer.concat([batchBytes(1), batchBytes(2, 3)]));
    expect(merged.batch!.events!.map((e) => Number(e.sequence))).to.deep.equal([1, 2, 3]);
    expect(merged.eventBytes.map((b) => Number(v1.Event.decode(b).sequence))).to.deep.equal([1, 2, 3]);
    const afterHello = decodeIngestRequest(Buffer.concat([batchBytes(1), helloBytes(), batchBytes(4)]));
    expect(afterHello.hello).to.equal(null);
    expect(afterHello.eventBytes.map((b) => Number(v1.Event.decode(b).sequence))).to.deep.equal([4]);
    const hello = decodeIngestRequest(Buffer.concat([batchBytes(1), helloBytes()]));
    expect([hello.hello?.agentInstance, hello.batch, hello.eventBytes]).to.deep.equal(['i', null, []]);
  });

  it('throws for bytes that are no IngestRequest', () => {
    expect(() => decodeIngestRequest(Buffer.from([0x12, 0x05, 0x0a, 0x10]))).to.throw();
  });
});
