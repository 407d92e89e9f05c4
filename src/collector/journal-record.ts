// The journal's records (JournalRecord, ingest.proto) as bytes and back. An event record is framed
// around the Event's bytes as the agent sent them, and read back with them: an event is never
// encoded again on its way to the journal or from it to subscribers.
import { scanEvent, type ScannedEvent } from '../common/grpc/event-wire.js';
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

/** A record; an event record's event is `event`, in its bytes, not `record.event`. */
export interface RecordWithBytes {
  record: icmpwatch.v1.IJournalRecord;
  event: ScannedEvent | null;
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
export function journalPayloadLength({ record, event }: RecordWithBytes): number {
  return event ? eventRecordLength(record, event.bytes) : icmpwatch.v1.JournalRecord.encode(record).finish().byteLength;
}

export function journalPayload({ record, event }: RecordWithBytes): Uint8Array {
  if (!event) return icmpwatch.v1.JournalRecord.encode(record).finish();
  const eventBytes = event.bytes;
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
  if (!record.event) return { record, event: null };
  const events = delimitedFields(payload, EVENT, [LOST_EVENTS]);
  if (events.length !== 1) throw new Error(`event: ${events.length} in one record`);
  // The record without its decoded event: the history keeps the event's bytes only.
  const { agentInstance, lastSequence, ringLost } = record;
  return { record: { agentInstance, lastSequence, ringLost }, event: scanEvent(events[0]!) };
}
