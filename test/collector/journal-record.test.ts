// Journal records framed around an event's bytes: what protobufjs would have written, read back with them.
import { expect } from 'chai';
import $protobuf from 'protobufjs/minimal.js';
import { encodeEvent } from '../../src/agent/export/event-encoder.js';
import { decodeJournalPayload, journalPayload, journalPayloadLength } from '../../src/collector/journal-record.js';
import { scanEvent } from '../../src/common/grpc/event-wire.js';
import { icmpwatch } from '../../src/common/proto.js';
import { echoEvent } from './harness.js';

const v1 = icmpwatch.v1;
const asObject = (payload: Uint8Array) => v1.JournalRecord.toObject(v1.JournalRecord.decode(payload), { longs: Number, defaults: true, arrays: true, objects: true });

describe('collector: journal records', () => {
  it('frames an event record that decodes as the record protobufjs encodes, and reads its event bytes back', () => {
    const event = echoEvent(7, { source: { ip: '10.1.0.2', labels: { app: 'ünïcode' } }, flags: [2] });
    const scanned = scanEvent(encodeEvent(event));
    for (const record of [
      { agentInstance: 'instance-é', lastSequence: 2 ** 40, ringLost: 3 },
      { agentInstance: '', lastSequence: 0, ringLost: 0 },
    ]) {
      const payload = journalPayload({ record, event: scanned });
      expect(asObject(payload)).to.deep.equal(asObject(v1.JournalRecord.encode({ ...record, event }).finish()));
      expect(journalPayloadLength({ record, event: scanned })).to.equal(payload.byteLength);
      const back = decodeJournalPayload(payload);
      expect(Buffer.from(back.event!.bytes).equals(Buffer.from(scanned.bytes))).to.equal(true);
      expect([back.event!.node, back.event!.sequence, back.event!.time]).to.deep.equal([scanned.node, 7, scanned.time]);
      // The history keeps bytes: the record read back holds no decoded event.
      expect(back.record.event ?? null).to.equal(null);
      expect(Number(back.record.lastSequence ?? 0)).to.equal(record.lastSequence);
    }
  });

  it('encodes and reads a loss record as before, and refuses an event record with two events', () => {
    const record = { agentInstance: 'i', lastSequence: 4, lostEvents: { source: 1, count: 2, nodeName: 'n' }, ringLost: 0 };
    const payload = journalPayload({ record, event: null });
    expect(Buffer.from(payload).equals(Buffer.from(v1.JournalRecord.encode(record).finish()))).to.equal(true);
    expect(journalPayloadLength({ record, event: null })).to.equal(payload.byteLength);
    expect(decodeJournalPayload(payload).event).to.equal(null);
    const twice = $protobuf.Writer.create();
    for (const seq of [1, 2]) twice.uint32((3 << 3) | 2).bytes(encodeEvent(echoEvent(seq)));
    expect(() => decodeJournalPayload(twice.finish())).to.throw('event: 2 in one record');
  });
});
