// The benches' follow subscribers: SubscribeBatches, as `icmpwatch observe` uses it, or with
// RPC=Subscribe the stream of one record a message (grpcurl's, Hubble-style clients').
//
// They read of each record only what the benches count, straight from the wire bytes: whether it
// is an event and whether its addresses are the bench's (compared as bytes), its time when asked
// for, a loss notice's count. Ten subscribers in one process decoding every event in full
// (protobufjs, 2-4 us each) would need more CPU than the whole pipeline they measure on these
// 2-core machines. Even a walk through protobufjs's Reader that decoded the addresses to strings
// cost the helper process 0.37-0.49 cores at 10 x 50k events/s (this reader: 0.27-0.30, most of
// it grpc-js), CPU the collector and agent under test then lacked. A subscriber's own decoding is
// its own cost, not the collector's.
import type { ClientReadableStream } from '@grpc/grpc-js';
import type { ObserverClient } from '../../src/common/grpc/clients.js';
import { observerService } from '../../src/common/grpc/services.js';

const RPCS = ['SubscribeBatches', 'Subscribe'] as const;
export const RPC = (process.env.RPC ?? 'SubscribeBatches') as (typeof RPCS)[number];
if (!RPCS.includes(RPC)) throw new Error(`RPC: expected one of ${RPCS.join(', ')}, got '${RPC}'`);

/** One record as the benches count it; the same object is handed over for every record of a stream. */
export interface FollowedRecord {
  kind: 'event' | 'lost' | 'other';
  /** An event between two of the addresses asked for (any event when none were). */
  between: boolean;
  /** An event's time, ms since the epoch; read only when asked for (NaN otherwise). */
  timeMs: number;
  /** A loss notice's count. */
  lost: number;
}

export interface FollowOptions {
  /** The addresses an event's source and destination must both be among; none: any event. */
  addresses?: string[];
  /** Whether to read each event's time. */
  times?: boolean;
}

// Field numbers (observer.proto, google/protobuf/timestamp.proto) and wire types.
const BATCH_RESPONSES = 1;
const RESPONSE_EVENT = 3;
const RESPONSE_LOST_EVENTS = 4;
const EVENT_TIME = 1;
const EVENT_SOURCE = 4;
const EVENT_DESTINATION = 5;
const ENDPOINT_IP = 1;
const LOST_EVENTS_COUNT = 2;
const TIMESTAMP_SECONDS = 1;
const TIMESTAMP_NANOS = 2;
const VARINT = 0;
const FIXED64 = 1;
const LENGTH_DELIMITED = 2;
const FIXED32 = 5;

/**
 * Walks a message's fields: nextField reads the field at pos into field, wireType and value (a
 * varint) or start and end (a delimited field's bytes). One walker is reused for every message:
 * a walker object per message cost more than the walk itself.
 */
class Walker {
  buf: Uint8Array = new Uint8Array(0);
  pos = 0;
  field = 0;
  wireType = 0;
  value = 0;
  start = 0;
  end = 0;

  /** A varint as a number: exact to 2^53, which counts and times stay well below. */
  varint(): number {
    const buf = this.buf;
    let byte = buf[this.pos++]!;
    if (byte < 0x80) return byte;
    let result = byte & 0x7f;
    let scale = 128;
    for (;;) {
      byte = buf[this.pos++]!;
      result += (byte & 0x7f) * scale;
      if (byte < 0x80) return result;
      scale *= 128;
    }
  }

  /** False at the limit. */
  nextField(limit: number): boolean {
    if (this.pos >= limit) return false;
    const tag = this.varint();
    this.field = tag >>> 3;
    const wireType = (this.wireType = tag & 7);
    if (wireType === VARINT) {
      this.value = this.varint();
    } else if (wireType === LENGTH_DELIMITED) {
      const length = this.varint();
      this.start = this.pos;
      this.end = this.pos += length;
    } else if (wireType === FIXED64) {
      this.pos += 8;
    } else if (wireType === FIXED32) {
      this.pos += 4;
    } else {
      throw new Error(`wire type ${wireType} at byte ${this.pos}`);
    }
    return true;
  }

  /** Whether buf[start, end) holds `wanted`. */
  holds(wanted: Uint8Array): boolean {
    const { buf, start } = this;
    if (this.end - start !== wanted.length) return false;
    for (let i = 0; i < wanted.length; i++) if (buf[start + i] !== wanted[i]) return false;
    return true;
  }
}

const w = new Walker();

/** Reads SubscribeResponses into one reused FollowedRecord. */
class ResponseReader {
  private readonly record: FollowedRecord = { kind: 'other', between: false, timeMs: NaN, lost: 0 };
  private readonly addresses: Uint8Array[];
  private readonly times: boolean;

  constructor(
    options: FollowOptions,
    private readonly onRecord: (r: FollowedRecord) => void,
  ) {
    this.addresses = (options.addresses ?? []).map((a) => Buffer.from(a));
    this.times = options.times ?? false;
  }

  /** The response in bytes[from, to). */
  read(bytes: Uint8Array, from: number, to: number): void {
    const r = this.record;
    r.kind = 'other';
    r.between = false;
    r.timeMs = NaN;
    r.lost = 0;
    w.buf = bytes;
    w.pos = from;
    while (w.nextField(to)) {
      if (w.wireType !== LENGTH_DELIMITED) continue;
      if (w.field === RESPONSE_EVENT) this.event(w.start, w.end);
      else if (w.field === RESPONSE_LOST_EVENTS) this.lost(w.start, w.end);
    }
    this.onRecord(r);
  }

  /** Reads the event's fields until it has what was asked for; leaves pos past the event. */
  private event(from: number, to: number): void {
    const r = this.record;
    r.kind = 'event';
    const anyAddress = this.addresses.length === 0;
    let source: boolean | null = anyAddress ? true : null;
    let destination: boolean | null = source;
    let timeRead = !this.times;
    w.pos = from;
    while (!(timeRead && source !== null && destination !== null) && w.nextField(to)) {
      if (w.wireType !== LENGTH_DELIMITED) continue;
      if (w.field === EVENT_TIME && !timeRead) {
        r.timeMs = this.time(w.start, w.end);
        timeRead = true;
      } else if (w.field === EVENT_SOURCE && source === null) {
        source = this.known(w.start, w.end);
      } else if (w.field === EVENT_DESTINATION && destination === null) {
        destination = this.known(w.start, w.end);
      }
    }
    r.between = source === true && destination === true;
    w.pos = to;
  }

  /** Whether the endpoint's address is one of those asked for; leaves pos past the endpoint. */
  private known(from: number, to: number): boolean {
    w.pos = from;
    let found = false;
    while (w.nextField(to)) {
      if (w.field === ENDPOINT_IP && w.wireType === LENGTH_DELIMITED) {
        for (const a of this.addresses) if (w.holds(a)) found = true;
        break;
      }
    }
    w.pos = to;
    return found;
  }

  /** A Timestamp as ms since the epoch; leaves pos past it. */
  private time(from: number, to: number): number {
    let seconds = 0;
    let nanos = 0;
    w.pos = from;
    while (w.nextField(to)) {
      if (w.field === TIMESTAMP_SECONDS) seconds = w.value;
      else if (w.field === TIMESTAMP_NANOS) nanos = w.value;
    }
    return seconds * 1000 + nanos / 1e6;
  }

  private lost(from: number, to: number): void {
    this.record.kind = 'lost';
    w.pos = from;
    while (w.nextField(to)) if (w.field === LOST_EVENTS_COUNT && w.wireType === VARINT) this.record.lost = w.value;
  }
}

/** A follow stream handing each record to `onRecord`, whichever RPC carries it. */
export function follow(client: ObserverClient, options: FollowOptions, onRecord: (r: FollowedRecord) => void): ClientReadableStream<Buffer> {
  const request = { follow: true };
  const method = RPC === 'Subscribe' ? observerService.subscribe : observerService.subscribeBatches;
  const stream = client.makeServerStreamRequest(method.path, method.requestSerialize, (bytes: Buffer) => bytes, request);
  const responses = new ResponseReader(options, onRecord);
  return stream.on('data', (bytes: Buffer) => {
    if (RPC === 'Subscribe') return responses.read(bytes, 0, bytes.length);
    const batch = new Walker();
    batch.buf = bytes;
    while (batch.nextField(bytes.length)) if (batch.field === BATCH_RESPONSES && batch.wireType === LENGTH_DELIMITED) responses.read(bytes, batch.start, batch.end);
  });
}
