// Events reach subscribers in the bytes the agent sent them in: the collector frames them into its
// journal and into each SubscribeResponse without encoding them again. Proven with an agent
// speaking the protocol with the agent's own encoder, and subscribers reading raw message bytes, on
// both RPCs, live and from history, and from history recovered out of the journal after a restart.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { encodeEvent } from '../../src/agent/export/event-encoder.js';
import type { Collector } from '../../src/collector/collector.js';
import { eventResponse } from '../../src/collector/encoded-response.js';
import { timestampFromMs } from '../../src/collector/timestamps.js';
import { IngestClient, ObserverClient } from '../../src/common/grpc/clients.js';
import { timestampMs } from '../../src/common/grpc/subscribe-request.js';
import { delimitedFields } from '../../src/common/protobuf-wire.js';
import { icmpwatch } from '../../src/common/proto.js';
import { batchRequest, eventually, startCollector } from './harness.js';

const v1 = icmpwatch.v1;
const NODE = 'node-bytes';
const SECONDS = Math.floor(Date.now() / 1000);

/** Every field set, nested ones too: labels (one not ASCII), workload, quoted packet, flags, summary. */
const fullEvent: icmpwatch.v1.IEvent = {
  time: { seconds: SECONDS, nanos: 123_456_789 },
  node: NODE,
  family: v1.Family.FAMILY_IPV6,
  source: {
    ip: 'fd00::2', namespace: 'demo', pod: 'pod-a', podUid: '3f1c-uid', labels: { app: 'web', tier: 'café' }, workload: { kind: 'Deployment', name: 'web' },
    node: 'node-b', service: 'web-svc', kind: v1.EndpointKind.ENDPOINT_KIND_POD, enrichment: v1.Enrichment.ENRICHMENT_RESOLVED,
  },
  destination: { ip: 'fd00::3', namespace: 'other', pod: 'pod-b', kind: v1.EndpointKind.ENDPOINT_KIND_POD, enrichment: v1.Enrichment.ENRICHMENT_STALE },
  icmp: {
    type: 1, code: 4, name: 'port-unreachable', mtu: 1280,
    quoted: { source: 'fd00::3', destination: 'fd00::2', protocol: 17, sourcePort: 40000, destinationPort: 53, echoId: 7, echoSeq: 9 },
  },
  ttl: 64,
  length: 1280,
  ipId: 4242,
  fragmentOffset: 8,
  observation: { hook: v1.Hook.HOOK_TP_BTF, point: v1.ObservationPoint.OBSERVATION_POINT_DESTINATION, ifindex: 7, interface: 'eth0', netns: 4026532001, sightings: 2, symbol: 'netif_receive_skb' },
  flags: [1, 2, 3],
  summary: { packets: 1000, first: { seconds: SECONDS - 1, nanos: 5 }, last: { seconds: SECONDS, nanos: 6 }, sightings: 2000 },
  sequence: 1,
  monotonicNs: 987_654_321_012_345,
};

/** Sent without a node: the collector fills in the stream's. */
const nodelessEvent: icmpwatch.v1.IEvent = { ...fullEvent, node: '', flags: [], summary: null, time: { seconds: SECONDS, nanos: 2000 }, sequence: 2 };
/** After a gap (3-4 lost) and with a ring-buffer loss in its batch. */
const afterGap: icmpwatch.v1.IEvent = { ...fullEvent, icmp: { type: 128, code: 0, name: 'echo-request', id: 77, seq: 5 }, time: { seconds: SECONDS, nanos: 5000 }, sequence: 5 };

const asObject = (event: icmpwatch.v1.IEvent) =>
  v1.Event.toObject(event instanceof v1.Event ? event : v1.Event.decode(v1.Event.encode(event).finish()), { longs: Number, defaults: true, arrays: true, objects: true });

/** What a subscriber must get for each event: the object, and the bytes its event field holds. */
const expected = [
  { event: asObject(fullEvent), bytes: Buffer.from(encodeEvent(fullEvent)) },
  { event: asObject({ ...nodelessEvent, node: NODE }), bytes: Buffer.from(encodeEvent(nodelessEvent)) },
  { event: asObject(afterGap), bytes: Buffer.from(encodeEvent(afterGap)) },
];

const PATHS = { subscribe: '/icmpwatch.v1.Observer/Subscribe', subscribeBatches: '/icmpwatch.v1.Observer/SubscribeBatches' } as const;
type Rpc = keyof typeof PATHS;
const identity = (b: Buffer) => b;

/** A subscriber keeping each SubscribeResponse's bytes as they came (out of SubscribeBatch messages too). */
class RawSubscriber {
  readonly responses: Buffer[] = [];
  readonly done: Promise<void>;
  private readonly call: grpc.ClientReadableStream<Buffer>;

  constructor(client: grpc.Client, rpc: Rpc, request: icmpwatch.v1.ISubscribeRequest) {
    this.call = client.makeServerStreamRequest(PATHS[rpc], identity, identity, Buffer.from(v1.SubscribeRequest.encode(request).finish()));
    this.call.on('data', (message: Buffer) => {
      if (rpc === 'subscribe') this.responses.push(message);
      else for (const response of delimitedFields(message, 1)) this.responses.push(Buffer.from(response));
    });
    this.done = new Promise((resolve, reject) => {
      this.call.on('error', (err: grpc.ServiceError) => (err.code === grpc.status.CANCELLED ? resolve() : reject(err)));
      this.call.on('end', resolve);
    });
  }

  cancel(): void {
    this.call.cancel();
  }

  get decoded(): icmpwatch.v1.SubscribeResponse[] {
    return this.responses.map((r) => v1.SubscribeResponse.decode(r));
  }

  /** The bytes of each event record's event field (field 3), in order. */
  get eventBytes(): Buffer[] {
    return this.responses.flatMap((r) => delimitedFields(r, 3).map((e) => Buffer.from(e)));
  }
}

/** Checks the records of one stream: the events as sent, each loss notice, node status unaffected. */
function expectRecords(s: RawSubscriber, live: boolean): void {
  const decoded = s.decoded;
  const records = decoded.filter((r) => !r.nodeStatus);
  expect(records.map((r) => r.response)).to.deep.equal(['event', 'event', 'lostEvents', 'event', 'lostEvents']);
  const events = records.filter((r) => r.event);
  expect(events.map((r) => asObject(r.event!))).to.deep.equal(expected.map((e) => e.event));
  for (const r of events) {
    expect(r.nodeName).to.equal(NODE);
    expect(timestampMs(r.time!)).to.be.closeTo(timestampMs(r.event!.time!), 1e-6);
  }
  // The agent's bytes themselves: the event with a node filled in has that field added at its end.
  const bytes = s.eventBytes;
  expect(bytes[0]!.equals(expected[0]!.bytes)).to.equal(true);
  expect(bytes[1]!.subarray(0, expected[1]!.bytes.length).equals(expected[1]!.bytes)).to.equal(true);
  expect(v1.Event.decode(bytes[1]!).node).to.equal(NODE);
  expect(bytes[2]!.equals(expected[2]!.bytes)).to.equal(true);
  const lost = records.filter((r) => r.lostEvents).map((r) => ({ source: r.lostEvents!.source, count: Number(r.lostEvents!.count), node: r.lostEvents!.nodeName, nodeName: r.nodeName }));
  expect(lost).to.deep.equal([
    { source: v1.LostEventsSource.LOST_EVENTS_SOURCE_AGENT_EXPORT_BUFFER, count: 2, node: NODE, nodeName: NODE },
    { source: v1.LostEventsSource.LOST_EVENTS_SOURCE_RING_BUFFER, count: 3, node: NODE, nodeName: NODE },
  ]);
  const statuses = decoded.filter((r) => r.nodeStatus).map((r) => [r.nodeName, r.nodeStatus!.state, r.nodeStatus!.symbol]);
  expect(statuses).to.deep.equal(live ? [[NODE, v1.NodeState.NODE_STATE_CONNECTED, 'netif_receive_skb']] : []);
}

describe('collector: events reach subscribers in the bytes the agent sent', () => {
  it('frames a response that decodes as the one protobufjs encodes, at any record time, from node after node', () => {
    const options = { longs: Number, defaults: true, arrays: true, objects: true };
    // The node's field is kept from one response to the next: a change of node must change it.
    for (const nodeName of [NODE, 'node-2', 'nœud-3', NODE]) {
      for (const timeMs of [0, 1, Date.now() + 0.123456, -1500.25, 9.2e21, -9.2e21]) {
        const framed = eventResponse(nodeName, encodeEvent(fullEvent), timeMs);
        const theirs = v1.SubscribeResponse.encode({ nodeName, time: timestampFromMs(timeMs), event: fullEvent }).finish();
        expect(framed.nodeName).to.equal(nodeName);
        expect(v1.SubscribeResponse.toObject(v1.SubscribeResponse.decode(framed.encoded), options), `${nodeName} ${timeMs}`).to.deep.equal(
          v1.SubscribeResponse.toObject(v1.SubscribeResponse.decode(theirs), options),
        );
      }
    }
  });

  let dataDir: string;
  let collector: Collector | null = null;
  let client: grpc.Client | null = null;
  const open: RawSubscriber[] = [];

  beforeEach(async () => {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'icmpwatch-bytes-'));
  });

  afterEach(async () => {
    for (const s of open.splice(0)) s.cancel();
    client?.close();
    await collector?.stop(1000);
    collector = null;
    await fs.rm(dataDir, { recursive: true, force: true });
  });

  const start = async () => {
    client?.close();
    collector = await startCollector({ dataDir });
    client = new grpc.Client(collector.address, grpc.credentials.createInsecure());
  };
  const subscribe = (rpc: Rpc, request: icmpwatch.v1.ISubscribeRequest) => {
    const s = new RawSubscriber(client!, rpc, request);
    open.push(s);
    return s;
  };
  const history = async (rpc: Rpc) => {
    const s = subscribe(rpc, {});
    await s.done;
    return s;
  };

  it('on Subscribe and SubscribeBatches, live, from history, and from the journal after a restart', async () => {
    await start();
    const live = { subscribe: subscribe('subscribe', { follow: true }), subscribeBatches: subscribe('subscribeBatches', { follow: true }) };
    const observer = new ObserverClient(collector!.address);
    await eventually(async () => (await observer.getStatus()).subscribers === 2);
    observer.close();

    const ingest = new IngestClient(collector!.address);
    const agent = ingest.stream();
    const acks: number[] = [];
    agent.on('data', (r: icmpwatch.v1.IIngestResponse) => acks.push(Number(r.ackedSequence)));
    agent.write({ hello: { node: NODE, agentInstance: 'bytes-1', hook: v1.Hook.HOOK_TP_BTF, symbol: 'netif_receive_skb' } });
    // As the agent sends them: each event encoded once, the batch framed around their bytes.
    agent.write(batchRequest([fullEvent, nodelessEvent], { counters: {} }));
    agent.write(batchRequest([afterGap], { counters: { lost: 3 } }));
    await eventually(() => acks.at(-1) === 5);
    agent.end();
    ingest.close();

    await eventually(() => live.subscribe.decoded.filter((r) => r.lostEvents).length === 2 && live.subscribeBatches.decoded.filter((r) => r.lostEvents).length === 2);
    expectRecords(live.subscribe, true);
    expectRecords(live.subscribeBatches, true);
    expectRecords(await history('subscribe'), false);
    expectRecords(await history('subscribeBatches'), false);

    for (const s of open.splice(0)) s.cancel();
    await collector!.stop(1000);
    await start();
    expectRecords(await history('subscribe'), false);
    expectRecords(await history('subscribeBatches'), false);
  });
});
