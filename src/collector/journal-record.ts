// The journal's records (JournalRecord, ingest.proto) as bytes and back. An event record is framed
// around the Event's bytes as the agent sent them, and read back with them: an event is never
// encoded again on its way to the journal or from it to subscribers.
import { icmpwatch } from '../common/proto.js';
import {
  delimitedFieldLength,
  delimitedFields,
  stringFieldLength,
  varintFieldLength,
  writeDelimitedField,
  writeStringField,
  writeVarintField,
} from '../common/protobuf-wire.js';

// Field numbers (ingest.proto).
const AGENT_INSTANCE = 1;
const LAST_SEQUENCE = 2;
const EVENT = 3;
const LOST_EVENTS = 4;
const RING_LOST = 5;

/** A record and, for an event record, the bytes of its event. */
export interface RecordWithBytes {
  record: icmpwatch.v1.IJournalRecord;
  eventBytes: Uint8Array | null;
}

function eventRecordLength(record: icmpwatch.v1.IJournalRecord, eventBytes: Uint8Array): number {
  return (
    stringFieldLength(AGENT_INSTANCE, record.agentInstance ?? '') +
    varintFieldLength(LAST_SEQUENCE, Number(record.lastSequence ?? 0)) +
    delimitedFieldLength(EVENT, eventBytes.byteLength) +
    varintFieldLength(RING_LOST, Number(record.ringLost ?? 0))
  );
}

/** The record's encoded size, without encoding it when it is an event's. */
export function journalPayloadLength({ record, eventBytes }: RecordWithBytes): number {
  return eventBytes ? eventRecordLength(record, eventBytes) : icmpwatch.v1.JournalRecord.encode(record).finish().byteLength;
}

export function journalPayload({ record, eventBytes }: RecordWithBytes): Uint8Array {
  if (!eventBytes) return icmpwatch.v1.JournalRecord.encode(record).finish();
  const out = Buffer.allocUnsafe(eventRecordLength(record, eventBytes));
  let at = writeStringField(out, 0, AGENT_INSTANCE, record.agentInstance ?? '');
  at = writeVarintField(out, at, LAST_SEQUENCE, Number(record.lastSequence ?? 0));
  at = writeDelimitedField(out, at, EVENT, eventBytes);
  writeVarintField(out, at, RING_LOST, Number(record.ringLost ?? 0));
  return out;
}

/**
 * Throws for bytes that are no JournalRecord, and for an event record that is not the one event
 * this module writes (several would merge: no one set of bytes is that event).
 */
export function decodeJournalPayload(payload: Uint8Array): RecordWithBytes {
  const record = icmpwatch.v1.JournalRecord.decode(payload);
  if (!record.event) return { record, eventBytes: null };
  const events = delimitedFields(payload, EVENT, [LOST_EVENTS]);
  if (events.length !== 1) throw new Error(`event: ${events.length} in one record`);
  return { record, eventBytes: events[0]! };
}
