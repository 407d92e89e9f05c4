// A SubscribeResponse with its bytes, encoded once and written as they are to every stream it goes
// to (Subscribe and SubscribeBatches, history and live). An event's response is framed around the
// Event's bytes as the agent sent them; the object is what filters and access checks read.
import { icmpwatch } from '../common/proto.js';
import {
  delimitedFieldLength,
  stringFieldLength,
  varintFieldLength,
  writeDelimitedField,
  writeDelimitedHeader,
  writeStringField,
  writeVarintField,
} from '../common/protobuf-wire.js';
import { timestampFromMs } from './timestamps.js';

export interface EncodedResponse {
  readonly response: icmpwatch.v1.ISubscribeResponse;
  readonly encoded: Uint8Array;
}

// Field numbers (observer.proto, google/protobuf/timestamp.proto).
const NODE_NAME = 1;
const TIME = 2;
const EVENT = 3;
const SECONDS = 1;
const NANOS = 2;

/** For the collector's own records and notices, which exist only as objects. */
export function encodeResponse(response: icmpwatch.v1.ISubscribeResponse): EncodedResponse {
  return { response, encoded: icmpwatch.v1.SubscribeResponse.encode(response).finish() };
}

/** An event's response: the node it was seen on, the time of the record (ms), the event. */
export function eventResponse(event: icmpwatch.v1.IEvent, eventBytes: Uint8Array, timeMs: number): EncodedResponse {
  const nodeName = event.node ?? '';
  const time = timestampFromMs(timeMs);
  const seconds = Number(time.seconds);
  const nanos = time.nanos ?? 0;
  const timeLength = varintFieldLength(SECONDS, seconds) + varintFieldLength(NANOS, nanos);
  const out = Buffer.allocUnsafe(stringFieldLength(NODE_NAME, nodeName) + delimitedFieldLength(TIME, timeLength) + delimitedFieldLength(EVENT, eventBytes.byteLength));
  let at = writeStringField(out, 0, NODE_NAME, nodeName);
  at = writeDelimitedHeader(out, at, TIME, timeLength);
  at = writeVarintField(out, at, SECONDS, seconds);
  at = writeVarintField(out, at, NANOS, nanos);
  writeDelimitedField(out, at, EVENT, eventBytes);
  return { response: { nodeName, time, event }, encoded: out };
}
