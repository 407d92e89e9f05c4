// Hostile input against a real collector over real gRPC on loopback: random and mutated protobuf
// bytes, oversized messages and abusive call patterns on both services, while a well-behaved agent
// publishes and two following subscribers read throughout (from 127.0.0.1; floods come from ::1, a
// client address of their own for the collector's per-address limits). Bounded in count and time;
// the inputs come from a seeded generator (FUZZ_SEED=<n> repeats a run, the seed is printed on failure).
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import type { CollectorExporter } from '../../src/agent/export/exporter.js';
import type { Collector } from '../../src/collector/collector.js';
import { eventToJson, eventToText } from '../../src/common/event-format.js';
import { ObserverClient } from '../../src/common/grpc/clients.js';
import { lostEventsToText, noticeToJson, nodeStatusToText } from '../../src/common/notice-format.js';
import { icmpwatch, type google } from '../../src/common/proto.js';
import { fuzzSeed, Random, reportSeedOnFailure } from '../fuzz.js';
import { CollectingSubscriber, echoEvent, eventually, range, sequences, startCollector, startExporter } from './harness.js';

const v1 = icmpwatch.v1;
const { status } = grpc;

const PATHS = {
  ingest: '/icmpwatch.v1.Ingest/Stream',
  subscribe: '/icmpwatch.v1.Observer/Subscribe',
  subscribeBatches: '/icmpwatch.v1.Observer/SubscribeBatches',
  getStatus: '/icmpwatch.v1.Observer/GetStatus',
  listNodes: '/icmpwatch.v1.Observer/ListNodes',
};
const GOOD_NODE = 'fuzz-good-node';
/** Hostile hellos' node names, mostly these few (the same nodes reconnecting), now and then a new one. */
const HOSTILE_NODES = ['fuzz-hostile-a', 'fuzz-hostile-b', 'fuzz-hostile-c'];
/** The collector's limits in this run: the rounds of 150 streams opened at once below from one address fit. */
const LIMITS = { maxSubscribers: 180, maxSubscribersPerPeer: 170, requestsPerSecond: 1000 };
/** The server's default maximum received message (grpc-js: 4 MiB). */
const MAX_RECEIVE_BYTES = 4 * 1024 * 1024;

/** How a call ended; `cancelledHere` when this side gave up waiting and cancelled it. */
interface Outcome {
  code: grpc.status;
  details: string;
  cancelledHere: boolean;
}

const identity = (b: Buffer) => b;

/** A client sending and receiving raw message bytes: what it sends is never checked on this side. */
class RawClient extends grpc.Client {
  constructor(address: string) {
    super(address, grpc.credentials.createInsecure());
  }

  unary(method: string, bytes: Buffer, timeoutMs = 5000): Promise<Outcome> {
    return new Promise((resolve) => {
      this.makeUnaryRequest(method, identity, identity, bytes, { deadline: Date.now() + timeoutMs }, (err, res) =>
        resolve({ code: err?.code ?? (res ? status.OK : status.UNKNOWN), details: err?.details ?? '', cancelledHere: false }),
      );
    });
  }

  serverStream(method: string, bytes: Buffer): grpc.ClientReadableStream<Buffer> {
    return this.makeServerStreamRequest(method, identity, identity, bytes);
  }

  bidi(method: string): grpc.ClientDuplexStream<Buffer, Buffer> {
    return this.makeBidiStreamRequest(method, identity, identity);
  }
}

/** Reads a streaming call to its end; after `timeoutMs` (a follow that stays open) cancels it. */
function outcomeOf(call: grpc.ClientReadableStream<Buffer> | grpc.ClientDuplexStream<Buffer, Buffer>, timeoutMs: number): Promise<Outcome> {
  return new Promise((resolve) => {
    let cancelledHere = false;
    const timer = setTimeout(() => {
      cancelledHere = true;
      call.cancel();
    }, timeoutMs);
    // Read what comes (flow control), nothing more: the outcome is the status.
    call.on('data', () => {});
    call.on('error', () => {});
    call.on('status', (s: grpc.StatusObject) => {
      clearTimeout(timer);
      resolve({ code: s.code, details: s.details, cancelledHere });
    });
  });
}

const hex = (b: Uint8Array) => Buffer.from(b).subarray(0, 64).toString('hex') + (b.length > 64 ? `... (${b.length} bytes)` : '');

/**
 * What an answer to hostile bytes may be: success, INVALID_ARGUMENT (also for bytes that are no
 * message of the method's type), or, for a follow that stays open, our own cancellation. Never
 * UNKNOWN, never INTERNAL.
 */
function isAcceptable(o: Outcome, mayStayOpen: boolean): boolean {
  if (o.code === status.CANCELLED) return o.cancelledHere && mayStayOpen;
  return o.code === status.OK || o.code === status.INVALID_ARGUMENT;
}

/** Unacceptable answers of one test, each kind once with the first input that produced it. */
class Problems {
  private readonly seen = new Map<string, string>();

  check(o: Outcome, what: string, input: Uint8Array, mayStayOpen = false): void {
    const kind = `${what}: ${status[o.code]}${o.cancelledHere ? ' (no answer: cancelled here)' : ''} '${o.details}'`;
    if (!isAcceptable(o, mayStayOpen) && !this.seen.has(kind)) this.seen.set(kind, hex(input));
  }

  expectNone(): void {
    expect([...this.seen].map(([kind, input]) => `${kind} for ${input}`)).to.deep.equal([]);
  }
}

// Valid messages of each kind, with random (often extreme) field values: the encoder never checks
// what the collector must.
function randomTimestamp(r: Random): google.protobuf.ITimestamp {
  return r.chance(0.5) ? { seconds: Math.floor(Date.now() / 1000) - r.int(7200), nanos: r.int(1e9) } : { seconds: r.extremeInt(), nanos: r.extremeInt() };
}

function randomEndpoint(r: Random): icmpwatch.v1.IEndpoint {
  return {
    ip: r.pick(['10.1.0.2', 'fd00::1', 'fe80::1%eth0', '::ffff:1.2.3.4', '999.1.1.1', r.string()]),
    namespace: r.string(),
    pod: r.string(),
    labels: r.chance(0.3) ? { [r.string()]: r.string(), app: r.string() } : {},
    workload: r.chance(0.3) ? { kind: r.string(), name: r.string() } : null,
    kind: r.extremeInt(),
    enrichment: r.int(6),
  };
}

function randomEvent(r: Random, sequence: number): icmpwatch.v1.IEvent {
  return {
    time: randomTimestamp(r),
    node: r.chance(0.5) ? '' : r.pick(HOSTILE_NODES),
    family: r.pick([0, 1, 2, r.extremeInt()]),
    source: r.chance(0.9) ? randomEndpoint(r) : null,
    destination: r.chance(0.9) ? randomEndpoint(r) : null,
    icmp: r.chance(0.9) ? { type: r.pick([0, 3, 8, 128, r.extremeInt()]), code: r.extremeInt(), id: r.extremeInt(), seq: r.extremeInt(), mtu: r.extremeInt(), name: r.chance(0.5) ? r.string() : '' } : null,
    ttl: r.extremeInt(),
    length: r.extremeInt(),
    observation: r.chance(0.8) ? { hook: r.extremeInt(), point: r.pick([0, 1, 2, 3, 4, r.extremeInt()]), netns: r.extremeInt(), symbol: r.string() } : null,
    flags: Array.from({ length: r.int(4) }, () => r.extremeInt()),
    summary: r.chance(0.2) ? { packets: r.extremeInt(), first: randomTimestamp(r), last: randomTimestamp(r) } : null,
    sequence,
  };
}

function randomHello(r: Random): icmpwatch.v1.IIngestRequest {
  return {
    hello: {
      node: r.chance(0.1) ? '' : r.chance(0.8) ? r.pick(HOSTILE_NODES) : `fuzz-hostile-${r.int(1e9)}`,
      // Mostly new instances (the collector keeps a few per node), sometimes one seen before.
      agentInstance: r.chance(0.1) ? '' : `fuzz-instance-${r.int(r.chance(0.5) ? 4 : 1e9)}`,
      hook: r.extremeInt(),
      symbol: r.string(),
      ackedSequence: r.chance(0.7) ? 0 : r.extremeInt(),
      ackedRingLost: r.chance(0.7) ? 0 : r.extremeInt(),
    },
  };
}

function randomBatch(r: Random): icmpwatch.v1.IIngestRequest {
  let sequence = r.chance(0.5) ? r.int(10) : r.extremeInt();
  return {
    batch: {
      events: Array.from({ length: r.int(20) }, () => randomEvent(r, r.chance(0.8) ? ++sequence : r.extremeInt())),
      counters: r.chance(0.5) ? { events: r.extremeInt(), lost: r.extremeInt(), malformed: r.extremeInt() } : null,
      // Announced drops: near the sequences sent (some ranges reversed) or anywhere.
      dropped: r.chance(0.4)
        ? r.chance(0.5)
          ? { firstSequence: r.int(50), lastSequence: r.int(50), first: randomTimestamp(r), last: randomTimestamp(r) }
          : { firstSequence: r.extremeInt(), lastSequence: r.extremeInt() }
        : null,
    },
  };
}

function randomFilter(r: Random): icmpwatch.v1.IFilter {
  const strings = (values: string[]) => Array.from({ length: r.int(3) }, () => (r.chance(0.7) ? r.pick(values) : r.string()));
  return {
    node: strings(HOSTILE_NODES),
    namespace: strings(['demo', '']),
    pod: strings(['demo/pod-', 'pod-', '/x', 'a/b/c']),
    ip: strings(['10.0.0.0/8', 'fd00::/64', '10.1.0.2', 'fe80::1%eth0', '10.0.0.0/33', '::/0']),
    icmpType: strings(['echo-request', '8', '3/1', 'port-unreachable', 'constructor', '__proto__', '999/999']),
    icmpCode: Array.from({ length: r.int(3) }, () => r.extremeInt()),
    family: Array.from({ length: r.int(3) }, () => r.pick([0, 1, 2, r.extremeInt()])),
    observationPoint: Array.from({ length: r.int(3) }, () => r.pick([0, 1, 4, r.extremeInt()])),
  };
}

function randomSubscribeRequest(r: Random): icmpwatch.v1.ISubscribeRequest {
  return {
    last: r.chance(0.5) ? r.int(50) : r.extremeInt(),
    follow: r.chance(0.5),
    since: r.chance(0.3) ? randomTimestamp(r) : null,
    until: r.chance(0.3) ? randomTimestamp(r) : null,
    allow: Array.from({ length: r.int(3) }, () => randomFilter(r)),
    deny: Array.from({ length: r.int(2) }, () => randomFilter(r)),
  };
}

const encodeIngest = (m: icmpwatch.v1.IIngestRequest) => Buffer.from(v1.IngestRequest.encode(m).finish());
const encodeSubscribe = (m: icmpwatch.v1.ISubscribeRequest) => Buffer.from(v1.SubscribeRequest.encode(m).finish());

/** A valid hello of a hostile agent and its first acknowledgement. */
async function openHostileIngest(raw: RawClient, r: Random): Promise<grpc.ClientDuplexStream<Buffer, Buffer>> {
  const call = raw.bidi(PATHS.ingest);
  call.on('error', () => {});
  const acked = new Promise<void>((resolve, reject) => {
    call.once('data', () => resolve());
    call.once('status', (s: grpc.StatusObject) => reject(new Error(`hello refused: ${status[s.code]} ${s.details}`)));
  });
  call.write(encodeIngest({ hello: { node: r.pick(HOSTILE_NODES), agentInstance: `fuzz-instance-${r.int(4)}`, hook: 1, symbol: 'fuzz' } }));
  await acked;
  return call;
}

function healthCheck(address: string): Promise<string> {
  const Health = grpc.makeClientConstructor(healthService, 'grpc.health.v1.Health');
  const client = new Health(address, grpc.credentials.createInsecure());
  return new Promise<string>((resolve, reject) =>
    client.check({ service: '' }, { deadline: Date.now() + 5000 }, (err: Error | null, res: { status: string }) => {
      client.close();
      if (err) reject(err);
      else resolve(res.status);
    }),
  );
}

/** V8's collector, exposed at run time (mocha starts node without --expose-gc). */
function collectGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

/** V8's heap and what it holds outside it (large strings decoded from buffers are external). */
function heapAfterGc(): number {
  collectGarbage();
  collectGarbage();
  const { heapUsed, external } = process.memoryUsage();
  return heapUsed + external;
}

describe('collector: hostile input (fuzz)', () => {
  const seed = fuzzSeed(0x1c3b5a7);
  const r = new Random(seed);
  let dataDir: string;
  let collector: Collector;
  /** The collector at 127.0.0.1 (the well-behaved clients and most hostile ones) and at ::1 (floods). */
  let address: string;
  let flooderAddress: string;
  let raw: RawClient;
  let observer: ObserverClient;
  let exporter: CollectorExporter;
  let publisher: NodeJS.Timeout;
  let published = 0;
  let filtered: CollectingSubscriber;
  let unfiltered: CollectingSubscriber;
  let baselineHeap = 0;

  const goodSequences = (s: CollectingSubscriber) => sequences(s.events.filter((e) => e.node === GOOD_NODE));

  /** Both subscribers have every good event published so far; the collector answers and is healthy. */
  async function expectServing(): Promise<void> {
    const target = published;
    for (const s of [filtered, unfiltered]) await s.until(() => goodSequences(s).length >= target, 20_000);
    const st = await observer.getStatus({ deadline: Date.now() + 5000 });
    expect(Number(st.eventsSeen)).to.be.at.least(target);
    expect(await healthCheck(address)).to.equal('SERVING');
    expect((await fetch(`http://${collector.opsAddress}/healthz`)).status).to.equal(200);
  }

  before(async () => {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'icmpwatch-fuzz-'));
    // A small history: after the run it is full, and the heap is compared against that.
    collector = await startCollector({ listen: '[::]:0', dataDir, historyEvents: 5000, historyBytes: 32 << 20, limits: LIMITS, metricsAddr: '127.0.0.1:0' });
    const port = collector.address.slice(collector.address.lastIndexOf(':') + 1);
    address = `127.0.0.1:${port}`;
    flooderAddress = `[::1]:${port}`;
    raw = new RawClient(address);
    observer = new ObserverClient(address);
    filtered = new CollectingSubscriber(observer, { follow: true, allow: [{ node: [GOOD_NODE] }] });
    unfiltered = new CollectingSubscriber(observer, { follow: true });
    await eventually(async () => Number((await observer.getStatus()).subscribers) === 2);
    exporter = startExporter(address, { node: GOOD_NODE });
    publisher = setInterval(() => {
      for (let i = 0; i < 5; i++) exporter.publish(echoEvent(++published, { node: GOOD_NODE }));
    }, 5);
    await expectServing();
    baselineHeap = heapAfterGc();
  });

  afterEach(function () {
    reportSeedOnFailure(this, seed);
  });

  after(async () => {
    clearInterval(publisher);
    await exporter?.close(1000);
    filtered?.stream.cancel();
    unfiltered?.stream.cancel();
    raw?.close();
    observer?.close();
    await collector?.stop(1000);
    await fs.rm(dataDir, { recursive: true, force: true });
  });

  it('answers random bytes on every method with success or INVALID_ARGUMENT, never INTERNAL', async () => {
    const problems = new Problems();
    for (let i = 0; i < 300; i++) {
      const bytes = r.bytes(r.chance(0.8) ? r.int(64) : r.int(8192));
      const method = r.pick(Object.values(PATHS));
      if (method === PATHS.ingest) {
        const call = raw.bidi(method);
        const done = outcomeOf(call, 3000);
        call.write(bytes);
        call.end();
        problems.check(await done, method, bytes);
      } else if (method === PATHS.subscribe || method === PATHS.subscribeBatches) {
        problems.check(await outcomeOf(raw.serverStream(method, bytes), 300), method, bytes, true);
      } else {
        problems.check(await raw.unary(method, bytes), method, bytes);
      }
    }
    problems.expectNone();
    await expectServing();
  });

  it('answers mutated and extreme Subscribe requests with success or INVALID_ARGUMENT naming the field', async () => {
    const problems = new Problems();
    let invalid = 0;
    for (let i = 0; i < 200; i++) {
      const valid = encodeSubscribe(randomSubscribeRequest(r));
      const bytes = r.chance(0.5) ? r.mutate(valid) : valid;
      const o = await outcomeOf(raw.serverStream(PATHS.subscribe, bytes), 300);
      problems.check(o, PATHS.subscribe, bytes, true);
      if (o.code === status.INVALID_ARGUMENT) {
        invalid++;
        expect(o.details, hex(bytes)).to.match(/^(last|since|until|allow|deny|request)[^:]*: /);
      }
    }
    problems.expectNone();
    // The generator produces invalid requests often: the run above did test the refusal path.
    expect(invalid).to.be.greaterThan(10);
    await expectServing();
  });

  it('answers mutated and extreme Ingest streams with acknowledgements or INVALID_ARGUMENT, and never stalls', async () => {
    const problems = new Problems();
    for (let i = 0; i < 300; i++) {
      const messages = [r.chance(0.8) ? encodeIngest(randomHello(r)) : r.mutate(encodeIngest(randomHello(r)))];
      for (let b = r.int(5); b > 0; b--) {
        const batch = encodeIngest(randomBatch(r));
        messages.push(r.chance(0.5) ? r.mutate(batch) : batch);
      }
      const call = raw.bidi(PATHS.ingest);
      // A half-closed stream is answered, whatever it held: never left hanging (the timeout cancels).
      const done = outcomeOf(call, 5000);
      for (const m of messages) call.write(m);
      call.end();
      problems.check(await done, PATHS.ingest, Buffer.concat(messages));
    }
    problems.expectNone();
    await expectServing();
  });

  it('refuses messages beyond the maximum size with RESOURCE_EXHAUSTED', async () => {
    const big = Buffer.alloc(MAX_RECEIVE_BYTES + 1024, 0x41);
    for (const method of [PATHS.getStatus, PATHS.listNodes]) {
      expect((await raw.unary(method, big)).code, method).to.equal(status.RESOURCE_EXHAUSTED);
    }
    expect((await outcomeOf(raw.serverStream(PATHS.subscribe, big), 5000)).code).to.equal(status.RESOURCE_EXHAUSTED);
    // After a hello, as a batch: an agent's stream is cut, nothing of it stored.
    const ingest = await openHostileIngest(raw, r);
    const done = outcomeOf(ingest, 5000);
    ingest.write(encodeIngest({ batch: { events: [echoEvent(1, { node: HOSTILE_NODES[0], source: { ip: 'x'.repeat(MAX_RECEIVE_BYTES) } })] } }));
    expect((await done).code).to.equal(status.RESOURCE_EXHAUSTED);
    await expectServing();
  });

  it('survives many Subscribe streams opened and cancelled at once, and forgets them', async () => {
    for (let round = 0; round < 3; round++) {
      const calls = Array.from({ length: 150 }, () => raw.serverStream(PATHS.subscribe, encodeSubscribe({ follow: true, last: r.int(100) })));
      for (const c of calls) c.on('error', () => {});
      await eventually(async () => Number((await observer.getStatus()).subscribers) === 2 + calls.length);
      for (const c of calls) c.cancel();
      await eventually(async () => Number((await observer.getStatus()).subscribers) === 2);
    }
    await expectServing();
  });

  it('ends Ingest streams that send a hello and then garbage, and marks their nodes unavailable', async () => {
    const outcomes = await Promise.all(
      Array.from({ length: 60 }, async () => {
        const call = await openHostileIngest(raw, r);
        const done = outcomeOf(call, 5000);
        const garbage = r.bytes(1 + r.int(512));
        call.write(garbage);
        // Bytes that happen to decode to a request of neither kind are ignored (a newer agent's
        // message kind); the half-close then ends the stream normally.
        call.end();
        return { o: await done, garbage };
      }),
    );
    const problems = new Problems();
    for (const { o, garbage } of outcomes) problems.check(o, PATHS.ingest, garbage);
    problems.expectNone();
    await eventually(async () => {
      const { nodes } = await observer.listNodes();
      const connected = (nodes ?? []).filter((n) => n.state === v1.NodeState.NODE_STATE_CONNECTED).map((n) => n.name);
      return connected.length === 1 && connected[0] === GOOD_NODE;
    });
    await expectServing();
  });

  it('keeps serving while streams and connections are left half-open, and releases them when they go', async () => {
    // Agents that said hello and then went silent without closing.
    const silentAgents = await Promise.all(Array.from({ length: 20 }, () => openHostileIngest(raw, r)));
    // Followers that never read: their queues fill to the bound, and nobody else waits for them.
    const stalled = new ObserverClient(address);
    const stalledReaders = Array.from({ length: 5 }, () => {
      const s = stalled.subscribe({ follow: true });
      s.on('error', () => {});
      s.pause();
      return s;
    });
    // Connections that never finish the HTTP/2 preface, or talk something else entirely.
    const [host, port] = ['127.0.0.1', Number(address.split(':').at(-1))];
    const sockets = await Promise.all(
      Array.from(
        { length: 20 },
        (_, i) =>
          new Promise<net.Socket>((resolve, reject) => {
            const socket = net.connect(port, host, () => {
              socket.write(i % 2 === 0 ? Buffer.from('PRI * HTTP/2.0\r\n\r\nSM') : r.bytes(1 + r.int(1024)));
              resolve(socket);
            });
            socket.on('error', reject);
          }),
      ),
    );
    for (const s of sockets) s.removeAllListeners('error').on('error', () => {});
    try {
      await eventually(async () => Number((await observer.getStatus()).subscribers) === 2 + stalledReaders.length);
      // Events keep flowing to everyone else for a while with all of that open.
      const before = published;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect(published).to.be.greaterThan(before);
      await expectServing();
    } finally {
      for (const s of sockets) s.destroy();
      for (const a of silentAgents) a.cancel();
      for (const s of stalledReaders) s.cancel();
      stalled.close();
    }
    await eventually(async () => {
      const st = await observer.getStatus();
      const connected = (st.nodes ?? []).filter((n) => n.state === v1.NodeState.NODE_STATE_CONNECTED);
      return Number(st.subscribers) === 2 && connected.length === 1;
    });
    await expectServing();
  });

  it('refuses more Subscribe streams from one address than its limit with RESOURCE_EXHAUSTED while everyone else keeps flowing', async () => {
    const flooder = new RawClient(flooderAddress);
    const follows: grpc.ClientReadableStream<Buffer>[] = [];
    try {
      // More follows than one address may hold: those beyond its limit end at once, refused.
      const ended: Outcome[] = [];
      for (let i = 0; i < LIMITS.maxSubscribersPerPeer + 30; i++) {
        const call = flooder.serverStream(PATHS.subscribe, encodeSubscribe({ follow: true, allow: [{ node: ['nothing'] }] }));
        follows.push(call);
        void outcomeOf(call, 120_000).then((o) => ended.push(o));
      }
      await eventually(async () => ended.length === 30 && Number((await observer.getStatus()).subscribers) === 2 + LIMITS.maxSubscribersPerPeer, 20_000);
      for (const o of ended) {
        expect(o.code).to.equal(status.RESOURCE_EXHAUSTED);
        expect(o.details).to.equal(`too many subscribers from ::1: at most ${LIMITS.maxSubscribersPerPeer} Subscribe streams per client address (--max-subscribers-per-peer)`);
      }
      const metrics = await (await fetch(`http://${collector.opsAddress}/metrics`)).text();
      expect(metrics).to.match(/^icmpwatch_collector_observer_refused_total\{reason="subscribers_per_peer"\} 30$/m);
      // Meanwhile 127.0.0.1's subscribers, agent and calls went on as before.
      await expectServing();
    } finally {
      for (const c of follows) c.cancel();
      flooder.close();
    }
    await eventually(async () => Number((await observer.getStatus()).subscribers) === 2);
    await expectServing();
  });

  it('refuses calls from one address beyond its rate with RESOURCE_EXHAUSTED while another address streams on', async () => {
    // A collector of its own with a low rate: the refusals do not depend on how fast this machine is.
    const requestsPerSecond = 50;
    const limited = await startCollector({ listen: '[::]:0', limits: { ...LIMITS, requestsPerSecond } });
    const port = limited.address.slice(limited.address.lastIndexOf(':') + 1);
    const flooder = new RawClient(`[::1]:${port}`);
    const good = new ObserverClient(`127.0.0.1:${port}`);
    const agent = startExporter(`127.0.0.1:${port}`, { node: GOOD_NODE });
    try {
      const follower = new CollectingSubscriber(good, { follow: true });
      let sent = 0;
      const publishing = setInterval(() => agent.publish(echoEvent(++sent, { node: GOOD_NODE })), 2);
      try {
        const calls = await Promise.all(Array.from({ length: 2000 }, (_, i) => flooder.unary(i % 2 ? PATHS.listNodes : PATHS.getStatus, Buffer.alloc(0), 20_000)));
        const refused = calls.filter((c) => c.code === status.RESOURCE_EXHAUSTED);
        expect(calls.length - refused.length, 'answered: the burst and what refilled while the calls went out').to.be.at.least(requestsPerSecond).and.below(500);
        expect(new Set(refused.map((c) => c.details))).to.deep.equal(
          new Set([`rate limit: at most ${requestsPerSecond} Observer calls per second from one client address (--max-requests-per-second)`]),
        );
        const { values } = await limited.metrics.requestsRefused.get();
        expect(values.find((v) => v.labels.reason === 'rate')?.value).to.equal(refused.length);
        // The other address: its calls answered, its stream following every event published meanwhile.
        expect(Number((await good.getStatus()).subscribers)).to.equal(1);
      } finally {
        clearInterval(publishing);
      }
      await follower.until((s) => s.events.length === sent, 20_000);
      expect(sequences(follower.events)).to.deep.equal(range(1, sent));
      follower.stream.cancel();
    } finally {
      await agent.close(1000);
      flooder.close();
      good.close();
      await limited.stop(1000);
    }
    await expectServing();
  });

  it('keeps a history of huge events within its byte bound: memory and its files stay bounded', async () => {
    const historyBytes = 8 << 20;
    const smallDir = await fs.mkdtemp(path.join(os.tmpdir(), 'icmpwatch-fuzz-bytes-'));
    const small = await startCollector({ historyBytes, dataDir: smallDir });
    const smallRaw = new RawClient(small.address);
    const smallObserver = new ObserverClient(small.address);
    try {
      const before = heapAfterGc();
      const ingest = await openHostileIngest(smallRaw, r);
      let acked = 0;
      ingest.on('data', (b: Buffer) => (acked = Number(v1.IngestResponse.decode(b).ackedSequence)));
      // 40 events of 2 MB each (one per batch: a message holds at most 4 MiB), 80 MB in all.
      const huge = 40;
      for (let i = 1; i <= huge; i++) {
        ingest.write(encodeIngest({ batch: { events: [echoEvent(i, { node: HOSTILE_NODES[0], source: { ip: '10.1.0.2', namespace: 'demo', pod: 'p'.repeat(2_000_000) } })] } }));
      }
      await eventually(() => acked === huge, 30_000);
      ingest.end();
      const growth = heapAfterGc() - before;
      expect(growth, `heap grew by ${(growth / 1e6).toFixed(1)} MB`).to.be.below(40 * 1024 * 1024);
      // On disk: the retained bytes, one segment (an eighth) beyond them, and the one being written.
      const files = await fs.readdir(smallDir);
      const onDisk = (await Promise.all(files.map(async (f) => (await fs.stat(path.join(smallDir, f))).size))).reduce((a, b) => a + b, 0);
      expect(onDisk, `${(onDisk / 1e6).toFixed(1)} MB in ${files.length} files`).to.be.below(historyBytes * 1.25 + 2 * 2_000_000 + 4096);
      // What is kept: the newest events, as many as the bound holds.
      const kept = new CollectingSubscriber(smallObserver, { last: 1000 });
      expect(await kept.done).to.equal(null);
      const seqs = sequences(kept.events);
      expect(seqs.length).to.be.within(1, Math.floor(historyBytes / 2_000_000));
      expect(seqs).to.deep.equal(range(huge - seqs.length + 1, huge));
      // A subscriber asking since the start is told the history dropped some.
      const since = new CollectingSubscriber(smallObserver, { since: { seconds: 0 } });
      expect(await since.done).to.equal(null);
      expect(since.lost.map((l) => l.source)).to.deep.equal([v1.LostEventsSource.LOST_EVENTS_SOURCE_HISTORY_EXPIRED]);
    } finally {
      smallRaw.close();
      smallObserver.close();
      await small.stop(1000);
      await fs.rm(smallDir, { recursive: true, force: true });
    }
    await expectServing();
  });

  it('delivered every good event exactly once, all it sent prints, and its heap stays bounded', async () => {
    clearInterval(publisher);
    await exporter.close(5000);
    await expectServing();
    for (const s of [filtered, unfiltered]) {
      expect(goodSequences(s)).to.deep.equal(range(1, published));
      const queueLosses = s.lost.filter((l) => l.source === v1.LostEventsSource.LOST_EVENTS_SOURCE_SUBSCRIBER_QUEUE);
      expect(queueLosses, 'no subscriber-queue losses for readers that keep up').to.deep.equal([]);
    }
    expect(filtered.events.every((e) => e.node === GOOD_NODE)).to.equal(true);
    // What hostile agents got stored reaches `observe` too: every response must print in both formats.
    for (const response of unfiltered.received) {
      if (response.event) {
        eventToText(response.event);
        JSON.stringify(eventToJson(response.event));
      } else {
        JSON.stringify(noticeToJson(response));
        if (response.lostEvents) lostEventsToText(response);
        else nodeStatusToText(response);
      }
    }
    expect(unfiltered.events.length).to.be.greaterThan(published, 'hostile events were stored and delivered too');
    // Streams and calls above are gone; what remains is bounded by the history (5000 records).
    const growth = heapAfterGc() - baselineHeap;
    expect(growth, `heap grew by ${(growth / 1e6).toFixed(1)} MB`).to.be.below(128 * 1024 * 1024);
  });
});
