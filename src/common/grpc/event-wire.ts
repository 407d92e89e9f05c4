// An Event's bytes read without decoding it into objects: the collector needs only where it was
// seen, its time and its sequence to store and forward it, and decoding every event (and keeping
// the objects) was most of its CPU per event. What passes here is safe to forward: the walk is at
// least as strict as protobufjs's decoder (test/common/grpc/event-wire.test.ts compares the two
// on mutated events), so a subscriber can decode every event it gets.
import { isUtf8 } from 'node:buffer';
import type { google } from '../proto.js';

/** An event's bytes and what the collector reads of them. `time` is null when the event has none. */
export interface ScannedEvent {
  bytes: Uint8Array;
  node: string;
  time: google.protobuf.ITimestamp | null;
  sequence: number;
}

/** A message's length-delimited fields that are strings or messages; others are skipped as wire data. */
interface Schema {
  readonly strings: readonly number[];
  readonly messages: Readonly<Record<number, Schema>>;
  /** Repeated enums, packed or not. */
  readonly packed?: readonly number[];
}

// event.proto and google/protobuf/timestamp.proto; the test checks these against the .proto files.
const TIMESTAMP: Schema = { strings: [], messages: {} };
const WORKLOAD: Schema = { strings: [1, 2], messages: {} };
const LABEL_ENTRY: Schema = { strings: [1, 2], messages: {} };
const ENDPOINT: Schema = { strings: [1, 2, 3, 4, 7, 8], messages: { 5: LABEL_ENTRY, 6: WORKLOAD } };
const QUOTED_PACKET: Schema = { strings: [1, 2], messages: {} };
const ICMP: Schema = { strings: [3], messages: { 7: QUOTED_PACKET } };
const OBSERVATION: Schema = { strings: [4, 7], messages: {} };
const FLOOD_SUMMARY: Schema = { strings: [], messages: { 2: TIMESTAMP, 3: TIMESTAMP } };
export const EVENT_SCHEMA: Schema = {
  strings: [2],
  messages: { 1: TIMESTAMP, 4: ENDPOINT, 5: ENDPOINT, 6: ICMP, 11: OBSERVATION, 13: FLOOD_SUMMARY },
  packed: [12],
};
export type { Schema as WireSchema };

const EVENT_TIME = 1;
const EVENT_NODE = 2;
const EVENT_SEQUENCE = 14;
const TIMESTAMP_SECONDS = 1;
const TIMESTAMP_NANOS = 2;

class WireError extends Error {}

// What a length-delimited field of a message is, looked up by field number.
const SKIP = 0;
const STRING = 1;
const MESSAGE = 2;
const PACKED = 3;

/** A Schema as arrays indexed by field number: what the walk looks up per field. */
interface FieldTable {
  kinds: Uint8Array;
  nested: (FieldTable | undefined)[];
}

function fieldTable(schema: Schema): FieldTable {
  const numbers = [...schema.strings, ...Object.keys(schema.messages).map(Number), ...(schema.packed ?? [])];
  const kinds = new Uint8Array(Math.max(0, ...numbers) + 1);
  const nested: (FieldTable | undefined)[] = [];
  for (const n of schema.strings) kinds[n] = STRING;
  for (const n of schema.packed ?? []) kinds[n] = PACKED;
  for (const [n, sub] of Object.entries(schema.messages)) {
    kinds[Number(n)] = MESSAGE;
    nested[Number(n)] = fieldTable(sub);
  }
  return { kinds, nested };
}

const EVENT_TABLE = fieldTable(EVENT_SCHEMA);
// A Buffer, as the bytes walked are: one kind of array keeps element reads monomorphic.
const EMPTY = Buffer.alloc(0);

/** A cursor over one message's bytes; one walk at a time (synchronous). */
class Walker {
  buf: Uint8Array = EMPTY;
  pos = 0;
  /** The last varint read: its low and high 32 bits. */
  lo = 0;
  hi = 0;

  varint(end: number): void {
    const buf = this.buf;
    let pos = this.pos;
    if (pos < end && buf[pos]! < 0x80) {
      this.lo = buf[pos]!;
      this.hi = 0;
      this.pos = pos + 1;
      return;
    }
    let lo = 0;
    let hi = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (pos >= end) throw new WireError(`varint runs past its message at offset ${pos}`);
      const b = buf[pos++]!;
      const bits = b & 0x7f;
      if (shift < 28) lo |= bits << shift;
      else if (shift === 28) {
        lo |= (bits & 0x0f) << 28;
        hi = bits >>> 4;
      } else hi |= bits << (shift - 32);
      if (b < 0x80) {
        this.lo = lo >>> 0;
        this.hi = hi >>> 0;
        this.pos = pos;
        return;
      }
    }
    throw new WireError(`varint longer than 10 bytes at offset ${pos}`);
  }

  unsigned64(): number {
    return this.hi * 4294967296 + this.lo;
  }

  signed64(): number {
    return this.hi & 0x80000000 ? -((~this.hi >>> 0) * 4294967296 + ((~this.lo >>> 0) + 1)) : this.unsigned64();
  }

  /** Reads a field's tag: its field number times 8 plus its wire type. */
  tag(end: number): number {
    this.varint(end);
    if (this.hi !== 0) throw new WireError(`tag beyond 32 bits at offset ${this.pos}`);
    if (this.lo >>> 3 === 0) throw new WireError(`field number 0 at offset ${this.pos}`);
    return this.lo;
  }

  /** Reads a length-delimited field's length; returns where its value ends. */
  delimitedEnd(end: number): number {
    this.varint(end);
    if (this.hi !== 0 || this.lo > end - this.pos) throw new WireError(`length ${this.unsigned64()} runs past its message at offset ${this.pos}`);
    return this.pos + this.lo;
  }

  checkUtf8(valueEnd: number, field: number): void {
    const buf = this.buf;
    let bits = 0;
    for (let i = this.pos; i < valueEnd; i++) bits |= buf[i]!;
    // ASCII (the usual case) needs no more checking.
    if (bits & 0x80 && !isUtf8(buf.subarray(this.pos, valueEnd))) throw new WireError(`field ${field}: invalid UTF-8`);
  }

  /** Skips a field's value that this walk does not read. Groups are refused: no message here has one. */
  skip(wireType: number, end: number): void {
    switch (wireType) {
      case 0:
        this.varint(end);
        return;
      case 1:
      case 5: {
        const size = wireType === 1 ? 8 : 4;
        if (end - this.pos < size) throw new WireError(`fixed field runs past its message at offset ${this.pos}`);
        this.pos += size;
        return;
      }
      case 2:
        this.pos = this.delimitedEnd(end);
        return;
      default:
        throw new WireError(`wire type ${wireType} at offset ${this.pos}`);
    }
  }

  /** Walks the one field at `pos` of a message of `table` ending at `end`. */
  field(table: FieldTable, end: number): void {
    const tag = this.tag(end);
    const field = tag >>> 3;
    if ((tag & 7) !== 2) return this.skip(tag & 7, end);
    const valueEnd = this.delimitedEnd(end);
    switch (field < table.kinds.length ? table.kinds[field] : SKIP) {
      case MESSAGE: {
        const nested = table.nested[field]!;
        while (this.pos < valueEnd) this.field(nested, valueEnd);
        break;
      }
      case STRING:
        this.checkUtf8(valueEnd, field);
        break;
      case PACKED:
        while (this.pos < valueEnd) this.varint(valueEnd);
        break;
    }
    this.pos = valueEnd;
  }

  /** The Timestamp at [pos, end) merged into `time` (fields of later occurrences win, as protobufjs merges). */
  timestamp(time: google.protobuf.ITimestamp, end: number): void {
    while (this.pos < end) {
      const tag = this.tag(end);
      if (tag === ((TIMESTAMP_SECONDS << 3) | 0)) {
        this.varint(end);
        time.seconds = this.signed64();
      } else if (tag === ((TIMESTAMP_NANOS << 3) | 0)) {
        this.varint(end);
        time.nanos = this.lo | 0;
      } else {
        this.skip(tag & 7, end);
      }
    }
  }

  // The node name of the last event read, decoded once: every event of an agent names its node.
  private lastNodeBytes: Uint8Array = EMPTY;
  private lastNode = '';

  node(valueEnd: number): string {
    const buf = this.buf;
    const pos = this.pos;
    const length = valueEnd - pos;
    const last = this.lastNodeBytes;
    let same = length === last.length;
    for (let i = 0; same && i < length; i++) same = buf[pos + i] === last[i];
    if (!same) {
      this.lastNodeBytes = new Uint8Array(buf.subarray(pos, valueEnd)); // a copy: not a view keeping the request
      this.lastNode = Buffer.from(this.lastNodeBytes.buffer, 0, length).toString('utf8');
    }
    return this.lastNode;
  }
}

const walker = new Walker();

/**
 * Checks that `bytes` are an Event protobufjs decodes (and, where it is lenient, that they are
 * well-formed: no groups, varints within 10 bytes, packed enums whole) and reads node, time and
 * sequence.
 * Throws an Error saying what is wrong.
 */
export function scanEvent(bytes: Uint8Array): ScannedEvent {
  const w = walker;
  w.buf = bytes;
  w.pos = 0;
  const end = bytes.length;
  let node = '';
  let time: google.protobuf.ITimestamp | null = null;
  let sequence = 0;
  try {
    while (w.pos < end) {
      const start = w.pos;
      const tag = w.tag(end);
      if (tag === ((EVENT_TIME << 3) | 2)) {
        const valueEnd = w.delimitedEnd(end);
        w.timestamp((time ??= { seconds: 0, nanos: 0 }), valueEnd);
      } else if (tag === ((EVENT_NODE << 3) | 2)) {
        const valueEnd = w.delimitedEnd(end);
        w.checkUtf8(valueEnd, EVENT_NODE);
        node = w.node(valueEnd);
        w.pos = valueEnd;
      } else if (tag === ((EVENT_SEQUENCE << 3) | 0)) {
        w.varint(end);
        sequence = w.unsigned64();
      } else {
        // Everything else is walked as the schema says.
        w.pos = start;
        w.field(EVENT_TABLE, end);
      }
    }
  } catch (err) {
    if (err instanceof WireError) throw new Error(`not an Event: ${err.message}`);
    throw err;
  } finally {
    w.buf = EMPTY;
  }
  return { bytes, node, time, sequence };
}
