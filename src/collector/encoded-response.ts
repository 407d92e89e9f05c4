// A SubscribeResponse with its bytes, encoded once and written as they are to every stream it goes
// to (Subscribe and SubscribeBatches, history and live). An event's response is framed around the
// Event's bytes as the agent sent them.
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

/**
 * A record as subscribers get it: its bytes, and the response as an object for filters and access
 * checks. An event's object is decoded from the bytes each time it is read, except within
 * `keepingDecoded`: the history holds bytes only (a million decoded events held as objects cost
 * the collector more in garbage collection than anything else it did).
 */
export interface EncodedResponse {
  readonly encoded: Uint8Array;
  readonly response: icmpwatch.v1.ISubscribeResponse;
  /** Whether it carries an event; read without decoding. */
  readonly carriesEvent: boolean;
  /** The node it is about ('' for notices about the stream itself); read without decoding. */
  readonly nodeName: string;
  /** Runs `use`, decoding at most once for every read of `response` in it. */
  keepingDecoded(use: () => void): void;
}

// Field numbers (observer.proto, google/protobuf/timestamp.proto).
const NODE_NAME = 1;
const TIME = 2;
const EVENT = 3;
const SECONDS = 1;
const NANOS = 2;

/** For the collector's own records and notices, which exist only as objects. */
export function encodeResponse(response: icmpwatch.v1.ISubscribeResponse): EncodedResponse {
  return {
    response,
    encoded: icmpwatch.v1.SubscribeResponse.encode(response).finish(),
    carriesEvent: Boolean(response.event),
    nodeName: response.nodeName ?? '',
    keepingDecoded: (use) => use(),
  };
}

class EventResponse implements EncodedResponse {
  readonly carriesEvent = true;
  private kept: icmpwatch.v1.ISubscribeResponse | null = null;
  private keeping = false;

  constructor(
    readonly nodeName: string,
    readonly encoded: Uint8Array,
  ) {}

  get response(): icmpwatch.v1.ISubscribeResponse {
    if (this.kept) return this.kept;
    const decoded = icmpwatch.v1.SubscribeResponse.decode(this.encoded);
    if (this.keeping) this.kept = decoded;
    return decoded;
  }

  keepingDecoded(use: () => void): void {
    this.keeping = true;
    try {
      use();
    } finally {
      this.keeping = false;
      this.kept = null;
    }
  }
}

/** The node name last framed, as its field: an agent's batch names one node in every event. */
let framedNode = '';
let framedNodeField: Uint8Array = new Uint8Array(0);

function nodeNameField(nodeName: string): Uint8Array {
  if (nodeName !== framedNode) {
    const field = Buffer.allocUnsafe(stringFieldLength(NODE_NAME, nodeName));
    writeStringField(field, 0, NODE_NAME, nodeName);
    framedNode = nodeName;
    framedNodeField = field;
  }
  return framedNodeField;
}

/** An event's response: the node it was seen on, the time of the record (ms), the event's bytes. */
export function eventResponse(nodeName: string, eventBytes: Uint8Array, timeMs: number): EncodedResponse {
  const time = timestampFromMs(timeMs);
  const seconds = Number(time.seconds);
  const nanos = time.nanos ?? 0;
  const node = nodeNameField(nodeName);
  const timeLength = varintFieldLength(SECONDS, seconds) + varintFieldLength(NANOS, nanos);
  const out = Buffer.allocUnsafe(node.byteLength + delimitedFieldLength(TIME, timeLength) + delimitedFieldLength(EVENT, eventBytes.byteLength));
  out.set(node, 0);
  let at = writeDelimitedHeader(out, node.byteLength, TIME, timeLength);
  at = writeVarintField(out, at, SECONDS, seconds);
  at = writeVarintField(out, at, NANOS, nanos);
  writeDelimitedField(out, at, EVENT, eventBytes);
  return new EventResponse(nodeName, out);
}
