// Events as JSON lines written straight into bytes: the agent prints one per event, and building
// the generic object, stringifying it and encoding the joined lines cost more than the rest of its
// work per event. The bytes are exactly JSON.stringify(eventToJson(ev)) in UTF-8 (test/common/
// event-format.test.ts compares the two on random events).
import { enumLabel, familyOf, hookLabel, icmpLabel, isEcho, secondsText, timestampInRange } from './event-format.js';
import { FlowMemo } from './flow-memo.js';
import type { IpFamily } from './icmp-names.js';
import { icmpwatch, type google } from './proto.js';

const v1 = icmpwatch.v1;

/** ASCII text as bytes, for the fixed parts of a line. */
const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));

const K = {
  time: ascii('{"time":'),
  node: ascii(',"node":'),
  family: ascii(',"family":'),
  source: ascii(',"source":'),
  destination: ascii(',"destination":'),
  ip: ascii('{"ip":'),
  namespace: ascii(',"namespace":'),
  pod: ascii(',"pod":'),
  podUid: ascii(',"podUid":'),
  labels: ascii(',"labels":{'),
  workloadKind: ascii(',"workload":{"kind":'),
  name: ascii(',"name":'),
  nodeOf: ascii(',"node":'),
  service: ascii(',"service":'),
  kind: ascii(',"kind":'),
  enrichment: ascii(',"enrichment":'),
  icmpType: ascii(',"icmp":{"type":'),
  code: ascii(',"code":'),
  id: ascii(',"id":'),
  seq: ascii(',"seq":'),
  mtu: ascii(',"mtu":'),
  quotedSource: ascii(',"quoted":{"source":'),
  protocol: ascii(',"protocol":'),
  sourcePort: ascii(',"sourcePort":'),
  destinationPort: ascii(',"destinationPort":'),
  echoId: ascii(',"echoId":'),
  echoSeq: ascii(',"echoSeq":'),
  ttl: ascii(',"ttl":'),
  length: ascii(',"length":'),
  ipId: ascii(',"ipId":'),
  fragmentOffset: ascii(',"fragmentOffset":'),
  observationHook: ascii(',"observation":{"hook":'),
  point: ascii(',"point":'),
  ifindex: ascii(',"ifindex":'),
  interface: ascii(',"interface":'),
  netns: ascii(',"netns":'),
  sightings: ascii(',"sightings":'),
  symbol: ascii(',"symbol":'),
  flags: ascii(',"flags":['),
  summaryPackets: ascii(',"summary":{"packets":'),
  first: ascii(',"first":'),
  last: ascii(',"last":'),
  sequence: ascii(',"sequence":'),
};

const QUOTE = 0x22;
const COMMA = 0x2c;
const CLOSE = 0x7d;
/** The longest a line's fixed parts and numbers can make it, strings aside. */
const FIXED_BOUND = 2048;

function digitCount(n: number): number {
  if (n < 10) return 1;
  if (n < 100) return 2;
  if (n < 1000) return 3;
  if (n < 10000) return 4;
  if (n < 100000) return 5;
  let count = 6;
  for (let rest = Math.floor(n / 1e6); rest > 0; rest = Math.floor(rest / 10)) count++;
  return count;
}

/**
 * An echo flow's line as three runs of bytes that are the same for each of its packets, with the
 * numbers that change between them: head `,"node":..` to `"id":`, then id, `,"seq":`, seq; middle
 * `}` to `"ipId":`, then ipId; tail `,"observation":..` to `"sequence":`, then sequence. Kept for
 * what they were written from (the same objects, names and numbers; an echo type names its family).
 */
interface EchoFlowLine {
  node: string;
  destination: icmpwatch.v1.IEndpoint;
  observation: icmpwatch.v1.IObservation;
  type: number;
  code: number;
  name: string;
  ttl: number;
  length: number;
  hasIpId: boolean;
  head: Uint8Array;
  middle: Uint8Array;
  tail: Uint8Array;
}

/** Appends lines (events as JSON, other text as it is) to one growing buffer; `take()` hands the bytes over. */
export class EventJsonWriter {
  private buf: Buffer;
  private pos = 0;
  /** Bytes of parts written before, by the object they were written from (never changed after). */
  private readonly endpoints = new WeakMap<icmpwatch.v1.IEndpoint, Uint8Array>();
  private readonly observations = new WeakMap<icmpwatch.v1.IObservation, Uint8Array>();
  private readonly icmpHeaders = new Map<number, { name: string; bytes: Uint8Array }>();
  private readonly echoFlows = new FlowMemo<EchoFlowLine>();
  /** `"2026-12-02T08:00:00.` of the second most lines fall in. */
  private secondsOfPrefix = Number.NaN;
  private timePrefix = ascii('');
  /** `,"node":N,"family":F,"source":` by family (unspecified, ipv4, ipv6), for the node it was made for. */
  private readonly headers: ({ node: string; bytes: Uint8Array } | undefined)[] = [undefined, undefined, undefined];

  constructor(initialBytes = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  /** Bytes written since the last take(). */
  get length(): number {
    return this.pos;
  }

  /**
   * The lines written so far, copied into a buffer of their own sized to them: a queued write then
   * holds what it counts (a view would pin the whole working buffer), and the working buffer is
   * reused.
   */
  take(): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    this.pos = 0;
    return out;
  }

  /** Bytes the working buffer holds, written or not: what handOver() gives away with the lines. */
  get capacity(): number {
    return this.buf.length;
  }

  /**
   * The lines written so far as a view of the working buffer, which goes with them (no copy: a
   * full buffer copied, into fresh memory, cost a tenth of the agent's CPU at high rates); the
   * writer goes on in `next`.
   */
  handOver(next: Buffer): Buffer {
    const out = this.buf.subarray(0, this.pos);
    this.buf = next;
    this.pos = 0;
    return out;
  }

  /** Forgets the lines written since the last take() or handOver(). */
  discard(): void {
    this.pos = 0;
  }

  /** Appends the event's line and a newline. */
  event(ev: icmpwatch.v1.IEvent): void {
    this.reserve(FIXED_BOUND);
    const family = familyOf(ev);
    this.bytes(K.time);
    this.timestamp(ev.time);
    const flow = this.echoFlowLine(ev, family);
    if (flow !== null) return this.echoLine(ev, flow);
    this.header(ev.node ?? '', family);
    this.endpoint(ev.source);
    this.bytes(K.destination);
    this.endpoint(ev.destination);
    const icmp = ev.icmp;
    if (icmp) {
      const type = icmp.type ?? 0;
      this.icmpHeader(type, icmp.code ?? 0, icmpLabel(ev));
      if (isEcho(family, type)) {
        this.bytes(K.id);
        this.number(icmp.id ?? 0);
        this.bytes(K.seq);
        this.number(icmp.seq ?? 0);
      }
      if (icmp.mtu) this.field(K.mtu, icmp.mtu);
      const q = icmp.quoted;
      if (q) {
        this.bytes(K.quotedSource);
        this.string(q.source ?? '');
        this.bytes(K.destination);
        this.string(q.destination ?? '');
        this.field(K.protocol, q.protocol ?? 0);
        if (q.sourcePort) this.field(K.sourcePort, q.sourcePort);
        if (q.destinationPort) this.field(K.destinationPort, q.destinationPort);
        if (q.echoId || q.echoSeq) {
          this.field(K.echoId, q.echoId ?? 0);
          this.field(K.echoSeq, q.echoSeq ?? 0);
        }
        this.buf[this.pos++] = CLOSE;
      }
      this.buf[this.pos++] = CLOSE;
    }
    if (ev.ttl) this.field(K.ttl, ev.ttl);
    if (ev.length) this.field(K.length, ev.length);
    if (ev.ipId) this.field(K.ipId, ev.ipId);
    if (ev.fragmentOffset) this.field(K.fragmentOffset, ev.fragmentOffset);
    const obs = ev.observation;
    if (obs) this.cached(this.observations, obs, this.observation);
    this.bytes(K.flags);
    const flags = ev.flags ?? [];
    for (let i = 0; i < flags.length; i++) {
      this.reserve(FIXED_BOUND);
      if (i > 0) this.buf[this.pos++] = COMMA;
      this.label(enumLabel(v1.Flag, 'FLAG_', flags[i]));
    }
    this.buf[this.pos++] = 0x5d; // ]
    if (ev.summary) {
      this.field(K.summaryPackets, Number(ev.summary.packets ?? 0));
      this.field(K.sightings, Number(ev.summary.sightings ?? 0));
      this.bytes(K.first);
      this.timestamp(ev.summary.first);
      this.bytes(K.last);
      this.timestamp(ev.summary.last);
      this.buf[this.pos++] = CLOSE;
    }
    if (ev.sequence) this.field(K.sequence, Number(ev.sequence));
    this.buf[this.pos++] = CLOSE;
    this.buf[this.pos++] = 0x0a;
  }

  /**
   * The flow's line parts for an echo request or reply with nothing else that varies per packet
   * (no flags, quote, MTU, fragment or summary); null for any other event. Writing a line from
   * them copies three runs instead of some fifteen keys and parts (552-584 -> 328-352 ns per line
   * in a loop, enriched or not).
   */
  private echoFlowLine(ev: icmpwatch.v1.IEvent, family: IpFamily | null): EchoFlowLine | null {
    const { icmp, source, destination, observation } = ev;
    if (!icmp || !source || !destination || !observation || family === null || !ev.sequence) return null;
    if (icmp.mtu || icmp.quoted || ev.fragmentOffset || ev.summary || (ev.flags && ev.flags.length > 0)) return null;
    const type = icmp.type ?? 0;
    if (!isEcho(family, type)) return null;
    const node = ev.node ?? '';
    const code = icmp.code ?? 0;
    const name = icmpLabel(ev);
    const ttl = ev.ttl || 0;
    const length = ev.length || 0;
    const hasIpId = Boolean(ev.ipId);
    for (const f of this.echoFlows.of(source)) {
      if (f.destination === destination && f.observation === observation && f.node === node && f.type === type && f.code === code &&
        f.name === name && f.ttl === ttl && f.length === length && f.hasIpId === hasIpId) return f;
    }
    // Written as the general way writes them, then kept and taken back out of the line.
    const start = this.pos;
    this.header(node, family);
    this.endpoint(source);
    this.bytes(K.destination);
    this.endpoint(destination);
    this.icmpHeader(type, code, name);
    this.bytes(K.id);
    const head = this.since(start);
    let at = this.pos;
    this.buf[this.pos++] = CLOSE;
    if (ttl) this.field(K.ttl, ttl);
    if (length) this.field(K.length, length);
    if (hasIpId) this.bytes(K.ipId);
    const middle = this.since(at);
    at = this.pos;
    this.cached(this.observations, observation, this.observation);
    this.bytes(K.flags);
    this.buf[this.pos++] = 0x5d; // ]
    this.bytes(K.sequence);
    const tail = this.since(at);
    this.pos = start;
    const line = { node, destination, observation, type, code, name, ttl, length, hasIpId, head, middle, tail };
    this.echoFlows.remember(source, line);
    return line;
  }

  /** The rest of an echo line, after its time, from its flow's parts. */
  private echoLine(ev: icmpwatch.v1.IEvent, flow: EchoFlowLine): void {
    const icmp = ev.icmp!;
    this.copy(flow.head);
    this.number(icmp.id ?? 0);
    this.bytes(K.seq);
    this.number(icmp.seq ?? 0);
    this.copy(flow.middle);
    if (flow.hasIpId) this.number(ev.ipId!);
    this.copy(flow.tail);
    this.number(Number(ev.sequence));
    this.buf[this.pos++] = CLOSE;
    this.buf[this.pos++] = 0x0a;
  }

  /** Appends a line of other text as it is (a notice, a text-format event) and a newline. */
  text(line: string): void {
    this.reserve(Buffer.byteLength(line) + 1);
    this.pos += this.buf.write(line, this.pos);
    this.buf[this.pos++] = 0x0a;
  }

  private endpoint(ep: icmpwatch.v1.IEndpoint | null | undefined): void {
    if (ep) this.cached(this.endpoints, ep, this.endpointObject);
    else this.endpointObject(ep);
  }

  /**
   * `write(value)`, from bytes kept for `value`: the agent hands the same endpoint and observation
   * objects over for every packet of a flow (a few large copies cost far less than writing each
   * field and key, measured 2-3x per line).
   */
  private cached<T extends object>(known: WeakMap<T, Uint8Array>, value: T, write: (this: EventJsonWriter, value: T) => void): void {
    const bytes = known.get(value);
    if (bytes !== undefined) return this.copy(bytes);
    const start = this.pos;
    write.call(this, value);
    known.set(value, this.since(start));
  }

  /** Bytes kept from an earlier line, with room for the rest of this one. */
  private copy(bytes: Uint8Array): void {
    this.reserve(bytes.length + FIXED_BOUND);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  /** A copy of what was written since `start`, to keep. */
  private since(start: number): Uint8Array {
    return new Uint8Array(this.buf.subarray(start, this.pos));
  }

  /** `,"node":N,"family":F,"source":` from bytes kept per family. */
  private header(node: string, family: IpFamily | null): void {
    const index = family === 'ipv4' ? 1 : family === 'ipv6' ? 2 : 0;
    const known = this.headers[index];
    if (known !== undefined && known.node === node) return this.copy(known.bytes);
    const start = this.pos;
    this.bytes(K.node);
    this.string(node);
    this.bytes(K.family);
    this.label(family ?? 'unspecified');
    this.bytes(K.source);
    this.headers[index] = { node, bytes: this.since(start) };
  }

  /** `,"icmp":{"type":T,"code":C,"name":N` from bytes kept per type and code. */
  private icmpHeader(type: number, code: number, name: string): void {
    const key = type * 256 + code;
    const cacheable = Number.isInteger(type) && Number.isInteger(code) && type >= 0 && type < 256 && code >= 0 && code < 256;
    const known = cacheable ? this.icmpHeaders.get(key) : undefined;
    if (known !== undefined && known.name === name) return this.copy(known.bytes);
    const start = this.pos;
    this.bytes(K.icmpType);
    this.number(type);
    this.bytes(K.code);
    this.number(code);
    this.bytes(K.name);
    this.string(name);
    if (cacheable) this.icmpHeaders.set(key, { name, bytes: this.since(start) });
  }

  private observation(obs: icmpwatch.v1.IObservation): void {
    this.bytes(K.observationHook);
    this.label(hookLabel(obs.hook));
    this.bytes(K.point);
    this.label(enumLabel(v1.ObservationPoint, 'OBSERVATION_POINT_', obs.point ?? 0));
    if (obs.ifindex) this.field(K.ifindex, obs.ifindex);
    if (obs.interface) {
      this.bytes(K.interface);
      this.string(obs.interface);
    }
    if (obs.netns) this.field(K.netns, Number(obs.netns));
    if (obs.sightings) this.field(K.sightings, obs.sightings);
    if (obs.symbol) {
      this.bytes(K.symbol);
      this.string(obs.symbol);
    }
    this.buf[this.pos++] = CLOSE;
  }

  private endpointObject(ep: icmpwatch.v1.IEndpoint | null | undefined): void {
    this.bytes(K.ip);
    this.string(ep?.ip ?? '');
    if (ep) {
      if (ep.namespace) this.keyString(K.namespace, ep.namespace);
      if (ep.pod) this.keyString(K.pod, ep.pod);
      if (ep.podUid) this.keyString(K.podUid, ep.podUid);
      if (ep.labels) {
        const keys = Object.keys(ep.labels);
        if (keys.length > 0) {
          this.bytes(K.labels);
          for (let i = 0; i < keys.length; i++) {
            if (i > 0) this.buf[this.pos++] = COMMA;
            this.string(keys[i]!);
            this.buf[this.pos++] = 0x3a; // :
            this.string(ep.labels[keys[i]!]!);
          }
          this.buf[this.pos++] = CLOSE;
        }
      }
      if (ep.workload?.name) {
        this.keyString(K.workloadKind, ep.workload.kind ?? '');
        this.keyString(K.name, ep.workload.name);
        this.buf[this.pos++] = CLOSE;
      }
      if (ep.node) this.keyString(K.nodeOf, ep.node);
      if (ep.service) this.keyString(K.service, ep.service);
      if (ep.kind) {
        this.bytes(K.kind);
        this.label(enumLabel(v1.EndpointKind, 'ENDPOINT_KIND_', ep.kind));
      }
      if (ep.enrichment) {
        this.bytes(K.enrichment);
        this.label(enumLabel(v1.Enrichment, 'ENRICHMENT_', ep.enrichment));
      }
    }
    this.buf[this.pos++] = CLOSE;
  }

  private reserve(bytes: number): void {
    if (this.pos + bytes <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.pos + bytes + FIXED_BOUND));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }

  /** A fixed part: one native copy costs less than a loop over its bytes (measured about 2x per line). */
  private bytes(b: Uint8Array): void {
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  private field(key: Uint8Array, n: number): void {
    this.bytes(key);
    this.number(n);
  }

  private keyString(key: Uint8Array, s: string): void {
    this.bytes(key);
    this.string(s);
  }

  /** A quoted string as JSON.stringify writes it; plain ASCII is copied, anything else escaped by it. */
  private string(s: string): void {
    // Room for the string and the fixed parts after it, so that a line only grows the buffer here.
    this.reserve(s.length + 2 + FIXED_BOUND);
    const buf = this.buf;
    const start = this.pos;
    let pos = start;
    buf[pos++] = QUOTE;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x20 || c === QUOTE || c === 0x5c || c > 0x7e) {
        const text = JSON.stringify(s);
        this.reserve(Buffer.byteLength(text) + FIXED_BOUND);
        this.pos = start + this.buf.write(text, start);
        return;
      }
      buf[pos++] = c;
    }
    buf[pos++] = QUOTE;
    this.pos = pos;
  }

  /** An enum label or date: ASCII that needs no escaping. */
  private label(s: string): void {
    const buf = this.buf;
    let pos = this.pos;
    buf[pos++] = QUOTE;
    for (let i = 0; i < s.length; i++) buf[pos++] = s.charCodeAt(i);
    buf[pos++] = QUOTE;
    this.pos = pos;
  }

  /** A number as JSON.stringify writes it; integers digit by digit. */
  private number(n: number): void {
    if (!(Number.isInteger(n) && n >= 0 && n <= Number.MAX_SAFE_INTEGER)) {
      const text = Number.isFinite(n) ? String(n) : 'null';
      for (let i = 0; i < text.length; i++) this.buf[this.pos++] = text.charCodeAt(i);
      return;
    }
    this.digits(n, 1);
  }

  /** The decimal digits of a safe non-negative integer, zero-padded to `width`. */
  private digits(n: number, width: number): void {
    let count = digitCount(n);
    if (count < width) count = width;
    const buf = this.buf;
    let pos = this.pos + count;
    this.pos = pos;
    if (n <= 0x7fffffff) {
      // Integer division is cheaper than Math.floor where the number fits 31 bits.
      for (let i = 0; i < count; i++) {
        const rest = (n / 10) | 0;
        buf[--pos] = 0x30 + (n - rest * 10);
        n = rest;
      }
      return;
    }
    for (let i = 0; i < count; i++) {
      const rest = Math.floor(n / 10);
      buf[--pos] = 0x30 + (n - rest * 10);
      n = rest;
    }
  }

  private timestamp(ts: google.protobuf.ITimestamp | null | undefined): void {
    const seconds = Number(ts?.seconds ?? 0);
    const nanos = ts?.nanos ?? 0;
    if (!timestampInRange(seconds, nanos)) {
      this.label(`invalid-time(seconds=${seconds},nanos=${nanos})`);
      return;
    }
    if (seconds !== this.secondsOfPrefix) {
      this.secondsOfPrefix = seconds;
      this.timePrefix = ascii(`"${secondsText(seconds)}.`);
    }
    this.bytes(this.timePrefix);
    this.digits(nanos, 9);
    this.buf[this.pos++] = 0x5a; // Z
    this.buf[this.pos++] = QUOTE;
  }
}
