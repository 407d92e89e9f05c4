import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { status, type ClientDuplexStream } from '@grpc/grpc-js';
import type { Collector } from '../../src/collector/collector.js';
import { IngestClient, ObserverClient } from '../../src/common/grpc/clients.js';
import { icmpwatch } from '../../src/common/proto.js';
import { CollectingSubscriber, echoEvent, range, sequences, startCollector } from './harness.js';

type Stream = ClientDuplexStream<icmpwatch.v1.IIngestRequest, icmpwatch.v1.IIngestResponse>;

/** An agent speaking the protocol by hand: every ack, and the stream's end. */
class RawAgent {
  readonly acks: number[] = [];
  readonly stream: Stream;
  readonly ended: Promise<(Error & { code?: number; details?: string }) | null>;
  private waiters: (() => void)[] = [];

  constructor(client: IngestClient) {
    this.stream = client.stream();
    this.stream.on('data', (r: icmpwatch.v1.IIngestResponse) => {
      this.acks.push(Number(r.ackedSequence));
      for (const w of this.waiters.splice(0)) w();
    });
    this.ended = new Promise((resolve) => {
      this.stream.on('error', resolve);
      this.stream.on('end', () => resolve(null));
    });
  }

  /** Writes a request and waits for the ack it produces. */
  async send(request: icmpwatch.v1.IIngestRequest): Promise<number> {
    const before = this.acks.length;
    const acked = new Promise<void>((resolve) => this.waiters.push(resolve));
    this.stream.write(request);
    await Promise.race([acked, this.ended]);
    expect(this.acks.length).to.equal(before + 1);
    return this.acks.at(-1)!;
  }
}

const hello = (agentInstance: string, acked: icmpwatch.v1.IAgentHello = {}): icmpwatch.v1.IIngestRequest => ({
  hello: { node: 'node-a', agentInstance, hook: icmpwatch.v1.Hook.HOOK_TP_BTF, symbol: 'netif_receive_skb', ...acked },
});
const lostSummary = (lost: icmpwatch.v1.ILostEvents[]) => lost.map((l) => [icmpwatch.v1.LostEventsSource[l.source!], Number(l.count)]);

async function historyOf(observer: ObserverClient) {
  const s = new CollectingSubscriber(observer, {});
  expect(await s.done).to.equal(null);
  return s;
}
const batch = (seqs: number[], counters: icmpwatch.v1.INodeCounters = {}): icmpwatch.v1.IIngestRequest => ({
  batch: { events: seqs.map((s) => echoEvent(s)), counters },
});

describe('collector: Ingest', () => {
  let collector: Collector;
  let ingest: IngestClient;
  let observer: ObserverClient;

  beforeEach(async () => {
    collector = await startCollector();
    ingest = new IngestClient(collector.address);
    observer = new ObserverClient(collector.address);
  });
  afterEach(async () => {
    ingest.close();
    observer.close();
    await collector.stop(1000);
  });

  const history = () => historyOf(observer);

  it('acknowledges the highest contiguous sequence and stores a resent event once', async () => {
    const agent = new RawAgent(ingest);
    expect(await agent.send(hello('instance-1'))).to.equal(0);
    expect(await agent.send(batch(range(1, 10)))).to.equal(10);
    expect(await agent.send(batch(range(5, 15)))).to.equal(15);

    // The same agent process on a new stream (after a reconnect) learns what is stored.
    const again = new RawAgent(ingest);
    expect(await again.send(hello('instance-1'))).to.equal(15);
    expect(await again.send(batch(range(1, 20)))).to.equal(20);

    // A restarted agent process counts from 1 again.
    const restarted = new RawAgent(ingest);
    expect(await restarted.send(hello('instance-2'))).to.equal(0);
    expect(await restarted.send(batch([1, 2]))).to.equal(2);

    expect(sequences((await history()).events)).to.deep.equal([...range(1, 20), 1, 2]);
    const s = await observer.getStatus();
    expect(Number(s.eventsSeen)).to.equal(22);
    expect(Number(s.duplicates)).to.equal(6 + 15);
    for (const a of [agent, again, restarted]) a.stream.end();
  });

  it('turns announced buffer drops and ring-buffer losses into lost-events records, once', async () => {
    const agent = new RawAgent(ingest);
    await agent.send(hello('instance-1'));
    await agent.send(batch([1, 2], { lost: 0 }));
    const dropped = { firstSequence: 3, lastSequence: 7, first: echoEvent(3).time, last: echoEvent(7).time };
    expect(await agent.send({ batch: { dropped, events: [echoEvent(8)], counters: { lost: 4 } } })).to.equal(8);
    // Repeated until acknowledged: counted once.
    expect(await agent.send({ batch: { dropped, events: [echoEvent(9)], counters: { lost: 4 } } })).to.equal(9);
    // A gap nobody announced is still reported.
    expect(await agent.send(batch([12], { lost: 4 }))).to.equal(12);

    const { lost, events } = await history();
    expect(sequences(events)).to.deep.equal([1, 2, 8, 9, 12]);
    const summary = lost.map((l) => [icmpwatch.v1.LostEventsSource[l.source!], Number(l.count), l.nodeName]);
    expect(summary).to.deep.equal([
      ['LOST_EVENTS_SOURCE_AGENT_EXPORT_BUFFER', 5, 'node-a'],
      ['LOST_EVENTS_SOURCE_RING_BUFFER', 4, 'node-a'],
      ['LOST_EVENTS_SOURCE_AGENT_EXPORT_BUFFER', 2, 'node-a'],
    ]);
    const s = await observer.getStatus();
    expect([Number(s.exportDrops), Number(s.ringBufferLost)]).to.deep.equal([7, 4]);
    agent.stream.end();
  });

  it('starts an instance it does not know where the agent says it was acknowledged: no false loss', async () => {
    // The agent's previous collector acknowledged 1..40 and announced 3 ring-buffer losses.
    const agent = new RawAgent(ingest);
    expect(await agent.send(hello('instance-1', { ackedSequence: 40, ackedRingLost: 3 }))).to.equal(40);
    expect(await agent.send(batch([40, 41, 42], { lost: 5 }))).to.equal(42);

    const { lost, events } = await history();
    expect(sequences(events)).to.deep.equal([41, 42]);
    expect(lostSummary(lost)).to.deep.equal([['LOST_EVENTS_SOURCE_RING_BUFFER', 2]]);
    const s = await observer.getStatus();
    expect([Number(s.exportDrops), Number(s.ringBufferLost), Number(s.duplicates)]).to.deep.equal([0, 2, 1]);
    agent.stream.end();
  });

  it('rejects a stream that does not start with a hello, or events without a sequence', async () => {
    const noHello = new RawAgent(ingest);
    noHello.stream.write(batch([1]));
    const err = await noHello.ended;
    expect([err?.code, err?.details]).to.deep.equal([status.INVALID_ARGUMENT, 'batch: the first request must be a hello']);

    const noSequence = new RawAgent(ingest);
    await noSequence.send(hello('instance-1'));
    noSequence.stream.write({ batch: { events: [echoEvent(1, { sequence: 0 })] } });
    const err2 = await noSequence.ended;
    expect(err2?.code).to.equal(status.INVALID_ARGUMENT);
    expect(err2?.details).to.contain('batch.events[0].sequence');
  });
});

describe('collector: Ingest across a restart on the same data dir', () => {
  let dataDir: string;
  beforeEach(async () => {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'icmpwatch-ingest-'));
  });
  afterEach(async () => fs.rm(dataDir, { recursive: true, force: true }));

  it('on stop, stores and acknowledges what an agent already sent before ending its stream', async () => {
    const first = await startCollector({ dataDir });
    const ingest = new IngestClient(first.address);
    const agent = new RawAgent(ingest);
    await agent.send(hello('instance-1'));
    for (let b = 0; b < 20; b++) agent.stream.write(batch(range(b * 200 + 1, b * 200 + 200)));
    // Stop while the second batch is being stored.
    const received = async () => (await first.metrics.eventsReceived.get()).values[0]?.value ?? 0;
    while ((await received()) <= 200) await new Promise((r) => setImmediate(r));
    await first.stop(5000);
    expect(await agent.ended).to.equal(null);
    ingest.close();
    const lastAck = agent.acks.at(-1)!;
    expect(lastAck).to.be.greaterThan(200);
    expect(agent.acks.slice(1)).to.deep.equal(range(1, lastAck / 200).map((b) => b * 200));

    // What is stored is exactly what was acknowledged: the agent resends the rest, nothing twice.
    const second = await startCollector({ dataDir });
    const observer = new ObserverClient(second.address);
    try {
      expect(sequences((await historyOf(observer)).events)).to.deep.equal(range(1, lastAck));
    } finally {
      observer.close();
      await second.stop(1000);
    }
  });

  it('announces only the ring-buffer losses that are new since the journal', async () => {
    const first = await startCollector({ dataDir });
    const ingest = new IngestClient(first.address);
    const agent = new RawAgent(ingest);
    await agent.send(hello('instance-1'));
    expect(await agent.send(batch([1, 2], { lost: 3 }))).to.equal(2);
    ingest.close();
    await first.stop(1000);

    const second = await startCollector({ dataDir });
    const ingest2 = new IngestClient(second.address);
    const observer = new ObserverClient(second.address);
    try {
      // No acknowledged state in the hello (as when the last acknowledgement never reached the agent):
      // the journal alone says what was announced.
      const again = new RawAgent(ingest2);
      expect(await again.send(hello('instance-1'))).to.equal(2);
      expect(await again.send(batch([3], { lost: 5 }))).to.equal(3);
      const { events, lost } = await historyOf(observer);
      expect(sequences(events)).to.deep.equal([1, 2, 3]);
      expect(lostSummary(lost)).to.deep.equal([
        ['LOST_EVENTS_SOURCE_RING_BUFFER', 3],
        ['LOST_EVENTS_SOURCE_RING_BUFFER', 2],
      ]);
      expect(Number((await observer.getStatus()).ringBufferLost)).to.equal(2);
      again.stream.end();
    } finally {
      ingest2.close();
      observer.close();
      await second.stop(1000);
    }
  });
});
