// An IngestRequest carrying a batch, put together from events encoded once each when published:
// the buffer's byte bound needs every event's encoded size anyway, and a resent batch (after a
// reconnect) costs no new encoding. Protobuf lets a message's fields come in any order and a
// repeated field's elements be written one by one, so the events' bytes are framed as they are.
import { icmpwatch } from '../../common/proto.js';
import { varintLength, writeVarint } from '../../common/protobuf-wire.js';

/** Tag of a length-delimited field. */
const tag = (field: number) => (field << 3) | 2;
const EVENT_BATCH_EVENTS = tag(1);
const INGEST_REQUEST_BATCH = tag(2);

/** `IngestRequest.encode({ batch: { events, counters, dropped } })` from events already encoded. */
export function encodeBatchRequest(
  events: readonly Uint8Array[],
  rest: Pick<icmpwatch.v1.IEventBatch, 'counters' | 'dropped'>,
): Buffer {
  const tail = icmpwatch.v1.EventBatch.encode(rest).finish();
  let batchLength = tail.length;
  for (const e of events) batchLength += 1 + varintLength(e.length) + e.length;
  const out = Buffer.allocUnsafe(1 + varintLength(batchLength) + batchLength);
  out[0] = INGEST_REQUEST_BATCH;
  let at = writeVarint(out, 1, batchLength);
  for (const e of events) {
    out[at++] = EVENT_BATCH_EVENTS;
    at = writeVarint(out, at, e.length);
    out.set(e, at);
    at += e.length;
  }
  out.set(tail, at);
  return out;
}
