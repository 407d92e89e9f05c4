// Event messages encoded straight into bytes for the exporter: the generic protobufjs encoder (a
// queue of operations per field, an allocation per nested message) cost as much CPU per event as
// the node log line. Canonical proto3: default scalars are left out, present sub-messages are
// written even when empty (an Icmp without fields still says the header was decoded). A value this
// encoder does not handle (a Long, a negative or fractional number) makes it hand the event to
// protobufjs. test/agent/export/exporter.test.ts compares the two on random events.
import { icmpwatch, type google } from '../../common/proto.js';
import { varintLength, writeVarint } from '../../common/protobuf-wire.js';

const VARINT = 0;
const LENGTH_DELIMITED = 2;

class Unsupported extends Error {}

class EventEncoder {
  private buf = Buffer.allocUnsafe(4096);
  private pos = 0;
  /**
   * Fields (tag, length and message) encoded before, by the object they were encoded from: the
   * agent hands the same endpoint and observation objects over for every packet of a flow, and
   * never changes them.
   */
  private readonly sources = new WeakMap<icmpwatch.v1.IEndpoint, Uint8Array>();
  private readonly destinations = new WeakMap<icmpwatch.v1.IEndpoint, Uint8Array>();
  private readonly observations = new WeakMap<icmpwatch.v1.IObservation, Uint8Array>();

  encode(ev: icmpwatch.v1.IEvent): Uint8Array {
    this.pos = 0;
    try {
      this.event(ev);
    } catch (err) {
      if (err instanceof Unsupported) return icmpwatch.v1.Event.encode(ev).finish();
      throw err;
    }
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    return out;
  }

  private event(ev: icmpwatch.v1.IEvent): void {
    if (ev.time != null) this.message(1, ev.time, this.timestamp);
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

  private cachedMessage<T extends object>(field: number, value: T, write: (this: EventEncoder, value: T) => void, known: WeakMap<T, Uint8Array>): void {
    const bytes = known.get(value);
    if (bytes !== undefined) {
      this.reserve(bytes.length);
      this.buf.set(bytes, this.pos);
      this.pos += bytes.length;
      return;
    }
    const start = this.pos;
    this.message(field, value, write);
    known.set(value, new Uint8Array(this.buf.subarray(start, this.pos)));
  }

  private message<T>(field: number, value: T, write: (this: EventEncoder, value: T) => void): void {
    this.tag(field, LENGTH_DELIMITED);
    const start = this.begin();
    write.call(this, value);
    this.end(start);
  }

  /** Reserves one byte for a length (most nested messages are shorter than 128 bytes). */
  private begin(): number {
    this.reserve(1);
    return ++this.pos;
  }

  /** Writes the length of what follows `start`, moving it when the length needs more than a byte. */
  private end(start: number): void {
    const length = this.pos - start;
    if (length < 0x80) {
      this.buf[start - 1] = length;
      return;
    }
    const extra = varintLength(length) - 1;
    this.reserve(extra);
    this.buf.copyWithin(start + extra, start, this.pos);
    this.pos += extra;
    writeVarint(this.buf, start - 1, length);
  }

  private tag(field: number, wireType: number): void {
    this.reserve(1);
    this.buf[this.pos++] = (field << 3) | wireType;
  }

  /** A varint field (uint32 unless `max` says otherwise); 0 is left out. */
  private uint(field: number, value: unknown, max = UINT32): void {
    if (value == null) return;
    const n = checked(value, max);
    if (n === 0) return;
    this.tag(field, VARINT);
    this.varint(n);
  }

  private varint(n: number): void {
    this.reserve(10);
    this.pos = writeVarint(this.buf, this.pos, n);
  }

  private string(field: number, s: string | null | undefined): void {
    if (s == null || s === '') return;
    this.tag(field, LENGTH_DELIMITED);
    const ascii = isAscii(s);
    const length = ascii ? s.length : Buffer.byteLength(s);
    this.varint(length);
    this.reserve(length);
    if (ascii) {
      const buf = this.buf;
      let pos = this.pos;
      for (let i = 0; i < s.length; i++) buf[pos++] = s.charCodeAt(i);
      this.pos = pos;
    } else {
      this.pos += this.buf.write(s, this.pos);
    }
  }

  private reserve(bytes: number): void {
    if (this.pos + bytes <= this.buf.length) return;
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

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

const encoder = new EventEncoder();

/** The Event message's bytes, in a buffer of their own. */
export function encodeEvent(event: icmpwatch.v1.IEvent): Uint8Array {
  return encoder.encode(event);
}
