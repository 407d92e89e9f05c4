// Event messages encoded straight into bytes for the exporter: the generic protobufjs encoder (a
// queue of operations per field, an allocation per nested message) cost as much CPU per event as
// the node log line. Canonical proto3: default scalars are left out, present sub-messages are
// written even when empty (an Icmp without fields still says the header was decoded). A value this
// encoder does not handle (a Long, a negative or fractional number) makes it hand the event to
// protobufjs. test/agent/export/exporter.test.ts compares the two on random events.
//
// The exporter has events written framed (as EventBatch.events: tag, length, Event) straight into
// the chunks its send buffer keeps them in, so a batch is one run of bytes and an event costs no
// buffer of its own.
import { FlowMemo } from '../../common/flow-memo.js';
import { icmpwatch, type google } from '../../common/proto.js';
import { fieldTag, varintLength, WIRE_LENGTH_DELIMITED as LENGTH_DELIMITED, WIRE_VARINT as VARINT, writeVarint } from '../../common/protobuf-wire.js';

/** Field number of EventBatch.events, the field framed events are written as. */
const EVENT_BATCH_EVENTS = 1;

class Unsupported extends Error {}
/** The event ran past the end of a caller's chunk. */
class NoRoom extends Error {}

/** Bytes kept by the object they were encoded from; the last one asked for is checked first (packets of a flow come together). */
class KeptBytes<T extends object> {
  private readonly known = new WeakMap<T, Uint8Array>();
  private last: T | null = null;
  private lastBytes: Uint8Array | undefined = undefined;

  get(value: T): Uint8Array | undefined {
    if (value !== this.last) {
      this.last = value;
      this.lastBytes = this.known.get(value);
    }
    return this.lastBytes;
  }

  set(value: T, bytes: Uint8Array): void {
    this.known.set(value, bytes);
    this.last = value;
    this.lastBytes = bytes;
  }
}

/**
 * The fields of a flow's events that are the same for each of its packets, encoded: route (node,
 * family, source, destination), the ICMP header (type, code, name), sizes (ttl, length) and the
 * observation. Kept for what they were encoded from (the same objects, names and numbers).
 */
interface FlowFields {
  node: string | null | undefined;
  family: number | null | undefined;
  destination: icmpwatch.v1.IEndpoint;
  observation: icmpwatch.v1.IObservation;
  type: number | null | undefined;
  code: number | null | undefined;
  name: string | null | undefined;
  ttl: number | null | undefined;
  length: number | null | undefined;
  route: Uint8Array;
  icmpHeader: Uint8Array;
  sizes: Uint8Array;
  observationField: Uint8Array;
}

class EventEncoder {
  private readonly scratch: { buf: Buffer } = { buf: Buffer.allocUnsafe(4096) };
  private buf: Buffer = this.scratch.buf;
  private pos = 0;
  /** Writing into a caller's chunk, which cannot grow (other events live in it). */
  private fixed = false;
  /**
   * Fields (tag, length and message) encoded before, by the object they were encoded from: the
   * agent hands the same endpoint and observation objects over for every packet of a flow, and
   * never changes them.
   */
  private readonly sources = new KeptBytes<icmpwatch.v1.IEndpoint>();
  private readonly destinations = new KeptBytes<icmpwatch.v1.IEndpoint>();
  private readonly observations = new KeptBytes<icmpwatch.v1.IObservation>();
  private readonly flows = new FlowMemo<FlowFields>();

  encode(ev: icmpwatch.v1.IEvent): Uint8Array {
    this.buf = this.scratch.buf;
    this.fixed = false;
    this.pos = 0;
    try {
      this.event(ev);
    } catch (err) {
      if (err instanceof Unsupported) return icmpwatch.v1.Event.encode(ev).finish();
      throw err;
    } finally {
      this.scratch.buf = this.buf;
    }
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    return out;
  }

  /** See encodeFramedEvent. */
  framed(ev: icmpwatch.v1.IEvent, into: Buffer, at: number): number {
    this.buf = into;
    this.fixed = true;
    this.pos = at;
    try {
      this.tag(EVENT_BATCH_EVENTS, LENGTH_DELIMITED);
      // Two bytes for the length: enriched events are 128 bytes to 16 KiB long.
      const start = this.begin(2);
      this.event(ev);
      this.end(start, 2);
    } catch (err) {
      if (err instanceof NoRoom) return -1;
      if (!(err instanceof Unsupported)) throw err;
      const bytes = icmpwatch.v1.Event.encode(ev).finish();
      if (at + 1 + varintLength(bytes.length) + bytes.length > into.length) return -1;
      into[at] = fieldTag(EVENT_BATCH_EVENTS, LENGTH_DELIMITED);
      this.pos = writeVarint(into, at + 1, bytes.length);
      into.set(bytes, this.pos);
      this.pos += bytes.length;
    } finally {
      this.buf = this.scratch.buf;
      this.fixed = false;
    }
    return this.pos;
  }

  private event(ev: icmpwatch.v1.IEvent): void {
    if (ev.time != null) this.message(1, ev.time, this.timestamp);
    const flow = this.flowFields(ev);
    if (flow !== null) return this.fromFlow(ev, flow);
    this.string(2, ev.node);
    this.uint(3, ev.family, INT32);
    if (ev.source != null) this.cachedMessage(4, ev.source, this.endpoint, this.sources);
    if (ev.destination != null) this.cachedMessage(5, ev.destination, this.endpoint, this.destinations);
    if (ev.icmp != null) this.message(6, ev.icmp, this.icmp);
    this.uint(7, ev.ttl);
    this.uint(8, ev.length);
    this.uint(9, ev.ipId);
    this.uint(10, ev.fragmentOffset);
    if (ev.observation != null) this.cachedMessage(11, ev.observation, this.observation, this.observations);
    const flags = ev.flags;
    if (flags != null && flags.length > 0) {
      this.tag(12, LENGTH_DELIMITED);
      const start = this.begin();
      for (const f of flags) this.varint(checked(f, INT32));
      this.end(start);
    }
    if (ev.summary != null) this.message(13, ev.summary, this.summary);
    this.uint(14, ev.sequence, UINT64);
    this.uint(15, ev.monotonicNs, UINT64);
  }

  /**
   * The flow's encoded fields for an event whose other fields are only per-packet numbers (ICMP id
   * and seq, IP id, sequence, monotonic time: no MTU, quote, fragment, flags or summary); null for
   * any other event. Encoding from them copies four runs instead of some fifteen fields.
   */
  private flowFields(ev: icmpwatch.v1.IEvent): FlowFields | null {
    const { icmp, source, destination, observation } = ev;
    if (icmp == null || source == null || destination == null || observation == null) return null;
    if (icmp.mtu || icmp.quoted != null || ev.fragmentOffset || ev.summary != null || (ev.flags != null && ev.flags.length > 0)) return null;
    for (const f of this.flows.of(source)) {
      if (f.destination === destination && f.observation === observation && f.node === ev.node && f.family === ev.family && f.type === icmp.type &&
        f.code === icmp.code && f.name === icmp.name && f.ttl === ev.ttl && f.length === ev.length) return f;
    }
    // Encoded as the general way encodes them, then kept and taken back out.
    const start = this.pos;
    this.string(2, ev.node);
    this.uint(3, ev.family, INT32);
    this.cachedMessage(4, source, this.endpoint, this.sources);
    this.cachedMessage(5, destination, this.endpoint, this.destinations);
    const route = this.since(start);
    let at = this.pos;
    this.uint(1, icmp.type);
    this.uint(2, icmp.code);
    this.string(3, icmp.name);
    const icmpHeader = this.since(at);
    at = this.pos;
    this.uint(7, ev.ttl);
    this.uint(8, ev.length);
    const sizes = this.since(at);
    at = this.pos;
    this.cachedMessage(11, observation, this.observation, this.observations);
    const observationField = this.since(at);
    this.pos = start;
    const flow: FlowFields = {
      node: ev.node, family: ev.family, destination, observation, type: icmp.type, code: icmp.code, name: icmp.name, ttl: ev.ttl, length: ev.length,
      route, icmpHeader, sizes, observationField,
    };
    this.flows.remember(source, flow);
    return flow;
  }

  /** The event's fields after its time, the flow's from their bytes. */
  private fromFlow(ev: icmpwatch.v1.IEvent, flow: FlowFields): void {
    const icmp = ev.icmp!;
    this.bytes(flow.route);
    this.tag(6, LENGTH_DELIMITED);
    const start = this.begin();
    this.bytes(flow.icmpHeader);
    this.uint(4, icmp.id);
    this.uint(5, icmp.seq);
    this.end(start);
    this.bytes(flow.sizes);
    this.uint(9, ev.ipId);
    this.bytes(flow.observationField);
    this.uint(14, ev.sequence, UINT64);
    this.uint(15, ev.monotonicNs, UINT64);
  }

  private timestamp(t: google.protobuf.ITimestamp): void {
    this.uint(1, t.seconds, UINT64);
    this.uint(2, t.nanos, INT32);
  }

  private endpoint(ep: icmpwatch.v1.IEndpoint): void {
    this.string(1, ep.ip);
    this.string(2, ep.namespace);
    this.string(3, ep.pod);
    this.string(4, ep.podUid);
    if (ep.labels != null) {
      for (const key of Object.keys(ep.labels)) {
        this.tag(5, LENGTH_DELIMITED);
        const start = this.begin();
        this.string(1, key);
        this.string(2, ep.labels[key]);
        this.end(start);
      }
    }
    if (ep.workload != null) this.message(6, ep.workload, this.workload);
    this.string(7, ep.node);
    this.string(8, ep.service);
    this.uint(9, ep.kind, INT32);
    this.uint(10, ep.enrichment, INT32);
  }

  private workload(w: icmpwatch.v1.IWorkload): void {
    this.string(1, w.kind);
    this.string(2, w.name);
  }

  private icmp(i: icmpwatch.v1.IIcmp): void {
    this.uint(1, i.type);
    this.uint(2, i.code);
    this.string(3, i.name);
    this.uint(4, i.id);
    this.uint(5, i.seq);
    this.uint(6, i.mtu);
    if (i.quoted != null) this.message(7, i.quoted, this.quoted);
  }

  private quoted(q: icmpwatch.v1.IQuotedPacket): void {
    this.string(1, q.source);
    this.string(2, q.destination);
    this.uint(3, q.protocol);
    this.uint(4, q.sourcePort);
    this.uint(5, q.destinationPort);
    this.uint(6, q.echoId);
    this.uint(7, q.echoSeq);
  }

  private observation(o: icmpwatch.v1.IObservation): void {
    this.uint(1, o.hook, INT32);
    this.uint(2, o.point, INT32);
    this.uint(3, o.ifindex);
    this.string(4, o.interface);
    this.uint(5, o.netns, UINT64);
    this.uint(6, o.sightings);
    this.string(7, o.symbol);
  }

  private summary(s: icmpwatch.v1.IFloodSummary): void {
    this.uint(1, s.packets, UINT64);
    if (s.first != null) this.message(2, s.first, this.timestamp);
    if (s.last != null) this.message(3, s.last, this.timestamp);
    this.uint(4, s.sightings, UINT64);
  }

  private cachedMessage<T extends object>(field: number, value: T, write: (this: EventEncoder, value: T) => void, kept: KeptBytes<T>): void {
    const bytes = kept.get(value);
    if (bytes !== undefined) return this.bytes(bytes);
    const start = this.pos;
    this.message(field, value, write);
    kept.set(value, this.since(start));
  }

  /** Bytes encoded before. */
  private bytes(bytes: Uint8Array): void {
    if (this.pos + bytes.length > this.buf.length) this.makeRoom(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  /** A copy of what was encoded since `start`, to keep. */
  private since(start: number): Uint8Array {
    return new Uint8Array(this.buf.subarray(start, this.pos));
  }

  private message<T>(field: number, value: T, write: (this: EventEncoder, value: T) => void): void {
    this.tag(field, LENGTH_DELIMITED);
    const start = this.begin();
    write.call(this, value);
    this.end(start);
  }

  /** Reserves `bytes` for a length (one: most nested messages are shorter than 128 bytes). */
  private begin(bytes = 1): number {
    if (this.pos + bytes > this.buf.length) this.makeRoom(bytes);
    return (this.pos += bytes);
  }

  /** Writes the length of what follows `start`, moving it when the length needs other than the `reserved` bytes. */
  private end(start: number, reserved = 1): void {
    const length = this.pos - start;
    if (length < 0x80 && reserved === 1) {
      this.buf[start - 1] = length;
      return;
    }
    const shift = varintLength(length) - reserved;
    if (shift !== 0) {
      if (shift > 0 && this.pos + shift > this.buf.length) this.makeRoom(shift);
      this.buf.copyWithin(start + shift, start, this.pos);
      this.pos += shift;
    }
    writeVarint(this.buf, start - reserved, length);
  }

  private tag(field: number, wireType: number): void {
    if (this.pos + 1 > this.buf.length) this.makeRoom(1);
    this.buf[this.pos++] = (field << 3) | wireType;
  }

  /** A varint field (uint32 unless `max` says otherwise); 0 is left out. One reserve and store per byte: most fields of an event are this. */
  private uint(field: number, value: unknown, max = UINT32): void {
    if (value == null || value === 0) return;
    const n = checked(value, max);
    if (this.pos + 11 > this.buf.length) this.makeRoom(11);
    const buf = this.buf;
    let pos = this.pos;
    buf[pos++] = (field << 3) | VARINT;
    if (n > 0x7fffffff) {
      this.pos = writeVarint(buf, pos, n);
      return;
    }
    let rest = n;
    for (; rest >= 0x80; rest >>>= 7) buf[pos++] = (rest & 0x7f) | 0x80;
    buf[pos++] = rest;
    this.pos = pos;
  }

  private varint(n: number): void {
    if (this.pos + 10 > this.buf.length) this.makeRoom(10);
    this.pos = writeVarint(this.buf, this.pos, n);
  }

  private string(field: number, s: string | null | undefined): void {
    if (s == null || s === '') return;
    const n = s.length;
    if (this.pos + 11 + n > this.buf.length) this.makeRoom(11 + n);
    const buf = this.buf;
    buf[this.pos] = (field << 3) | LENGTH_DELIMITED;
    if (n < 0x80) {
      // The usual case, in one pass: short ASCII text, a one-byte length.
      const text = this.pos + 2;
      let i = 0;
      for (let c = 0; i < n && (c = s.charCodeAt(i)) < 0x80; i++) buf[text + i] = c;
      if (i === n) {
        buf[this.pos + 1] = n;
        this.pos = text + n;
        return;
      }
    }
    const length = Buffer.byteLength(s);
    this.pos = writeVarint(buf, this.pos + 1, length);
    if (this.pos + length > this.buf.length) this.makeRoom(length);
    this.pos += this.buf.write(s, this.pos);
  }

  /** The slow half of each `if (this.pos + n > this.buf.length)` check, apart so the check is inlined. */
  private makeRoom(bytes: number): void {
    if (this.fixed) throw new NoRoom();
    const grown = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.pos + bytes));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }
}

const UINT32 = 0xffffffff;
/** enum and int32 fields: negative values would take ten bytes, which this encoder leaves to protobufjs. */
const INT32 = 0x7fffffff;
const UINT64 = Number.MAX_SAFE_INTEGER;

/** A number this encoder writes as a varint; anything else goes to protobufjs. */
function checked(value: unknown, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) throw new Unsupported();
  return value;
}

const encoder = new EventEncoder();

/** The Event message's bytes, in a buffer of their own. */
export function encodeEvent(event: icmpwatch.v1.IEvent): Uint8Array {
  return encoder.encode(event);
}

/**
 * Writes the event as an EventBatch.events field (tag, length, Event message) into `into` from
 * `at`; returns where it ends, or -1 when it does not fit before the end of `into`.
 */
export function encodeFramedEvent(event: icmpwatch.v1.IEvent, into: Buffer, at: number): number {
  return encoder.framed(event, into, at);
}
