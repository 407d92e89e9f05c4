// Protobuf's wire format, for messages put together from bytes already encoded: a message's fields
// may come in any order and a length-delimited field's bytes may be copied as they are. The agent
// frames events encoded once into its batches; the collector frames the events it received into its
// journal records and its subscribers' responses, and finds them in the requests it decodes.
import $protobuf from 'protobufjs/minimal.js';

export const WIRE_VARINT = 0;
export const WIRE_LENGTH_DELIMITED = 2;

export const fieldTag = (field: number, wireType: number) => (field << 3) | wireType;

/** Bytes of a varint: a non-negative integer, or a negative one as int64 (two's complement: ten bytes). */
export function varintLength(n: number): number {
  if (n < 0) return 10;
  let length = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    length++;
  }
  return length;
}

/** Writes `n` (an integer, see varintLength) as a varint at `at`; returns the position after it. */
export function writeVarint(out: Uint8Array, at: number, n: number): number {
  if (n < 0) {
    let v = BigInt.asUintN(64, BigInt(n));
    for (let i = 0; i < 9; i++, v >>= 7n) out[at++] = Number(v & 0x7fn) | 0x80;
    out[at++] = Number(v);
    return at;
  }
  while (n > 0x7fffffff) {
    // n >>> 0 is n modulo 2^32 for an integer up to 2^53: its low 7 bits without a float remainder.
    out[at++] = ((n >>> 0) & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  out[at++] = n;
  return at;
}

/** Bytes of a varint field (a zero one is left out, as proto3 does). */
export function varintFieldLength(field: number, n: number): number {
  return n === 0 ? 0 : varintLength(fieldTag(field, WIRE_VARINT)) + varintLength(n);
}

export function writeVarintField(out: Uint8Array, at: number, field: number, n: number): number {
  if (n === 0) return at;
  return writeVarint(out, writeVarint(out, at, fieldTag(field, WIRE_VARINT)), n);
}

/** Bytes of a length-delimited field whose value takes `length` bytes: its tag, its length, the value. */
export function delimitedFieldLength(field: number, length: number): number {
  return varintLength(fieldTag(field, WIRE_LENGTH_DELIMITED)) + varintLength(length) + length;
}

/** Writes a length-delimited field's tag and length; its `length` bytes of value are to follow. */
export function writeDelimitedHeader(out: Uint8Array, at: number, field: number, length: number): number {
  return writeVarint(out, writeVarint(out, at, fieldTag(field, WIRE_LENGTH_DELIMITED)), length);
}

/** Writes `value` (bytes already encoded: a message, a string) as a length-delimited field. */
export function writeDelimitedField(out: Uint8Array, at: number, field: number, value: Uint8Array): number {
  at = writeDelimitedHeader(out, at, field, value.byteLength);
  out.set(value, at);
  return at + value.byteLength;
}

/** Bytes of a string field (an empty one is left out, as proto3 does). */
export function stringFieldLength(field: number, value: string): number {
  return value === '' ? 0 : delimitedFieldLength(field, Buffer.byteLength(value));
}

export function writeStringField(out: Buffer, at: number, field: number, value: string): number {
  if (value === '') return at;
  const length = Buffer.byteLength(value);
  at = writeDelimitedHeader(out, at, field, length);
  return at + out.write(value, at, length, 'utf8');
}

/** `message` with a string field added at its end: where a field comes more than once, the last one counts. */
export function withStringField(message: Uint8Array, field: number, value: string): Buffer {
  const out = Buffer.allocUnsafe(message.byteLength + stringFieldLength(field, value));
  out.set(message, 0);
  writeStringField(out, message.byteLength, field, value);
  return out;
}

/**
 * Calls `onField(field, value)` for each length-delimited field of `message`, in order, with a view of
 * its value; other fields are skipped. Throws for bytes that are no message.
 */
export function eachDelimited(message: Uint8Array, onField: (field: number, value: Uint8Array) => void): void {
  const reader = $protobuf.Reader.create(message);
  while (reader.pos < reader.len) {
    const tag = reader.tag();
    if ((tag & 7) === WIRE_LENGTH_DELIMITED) {
      const length = reader.size();
      const start = reader.pos;
      reader.skip(length);
      onField(tag >>> 3, message.subarray(start, start + length));
    } else {
      reader.skipType(tag & 7, 0, tag >>> 3);
    }
  }
}

/**
 * The value of every occurrence of length-delimited `field` in `message`, in order, as views of its
 * bytes. An occurrence of a field listed in `resetBy` (of the same oneof) empties the list, as a
 * decoder setting that oneof member drops the others.
 */
export function delimitedFields(message: Uint8Array, field: number, resetBy: readonly number[] = []): Uint8Array[] {
  const out: Uint8Array[] = [];
  eachDelimited(message, (f, value) => {
    if (f === field) out.push(value);
    else if (resetBy.includes(f)) out.length = 0;
  });
  return out;
}
