// An IngestRequest carrying a batch, put together from events encoded once each when published
// (framed as EventBatch.events fields, see SendBuffer): the buffer's byte bound needs every event's
// encoded size anyway, and a resent batch (after a reconnect) costs no new encoding. Protobuf lets
// a message's fields come in any order and a repeated field's elements be written one by one, so
// the events' bytes are copied as they are.
import { icmpwatch } from '../../common/proto.js';
import { fieldTag, varintLength, WIRE_LENGTH_DELIMITED, writeVarint } from '../../common/protobuf-wire.js';

const INGEST_REQUEST_BATCH = fieldTag(2, WIRE_LENGTH_DELIMITED);

/** `IngestRequest.encode({ batch: { events, counters, dropped } })` from the events' framed bytes. */
export function encodeBatchRequest(framedEvents: Uint8Array, rest: Pick<icmpwatch.v1.IEventBatch, 'counters' | 'dropped'>): Buffer {
  const tail = icmpwatch.v1.EventBatch.encode(rest).finish();
  const batchLength = framedEvents.length + tail.length;
  const out = Buffer.allocUnsafe(1 + varintLength(batchLength) + batchLength);
  out[0] = INGEST_REQUEST_BATCH;
  const at = writeVarint(out, 1, batchLength);
  out.set(framedEvents, at);
  out.set(tail, at + framedEvents.length);
  return out;
}
