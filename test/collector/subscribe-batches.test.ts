import { expect } from 'chai';
import { status } from '@grpc/grpc-js';
import type { CollectorExporter } from '../../src/agent/export/exporter.js';
import type { Collector } from '../../src/collector/collector.js';
import { MAX_BATCH_BYTES, MAX_BATCH_RECORDS } from '../../src/collector/subscriber.js';
import { ObserverClient } from '../../src/common/grpc/clients.js';
import { icmpwatch } from '../../src/common/proto.js';
import { CollectingSubscriber, echoEvent, eventually, range, sequences, startCollector, startExporter } from './harness.js';

const { LostEventsSource } = icmpwatch.v1;

/** Bytes of the SubscribeBatch message a batch came in (protobuf encoding is deterministic here). */
const messageBytes = (batch: icmpwatch.v1.ISubscribeResponse[]) => icmpwatch.v1.SubscribeBatch.encode({ responses: batch }).finish().byteLength;

/** Events of several namespaces and types, so that filters select some of each. */
function variedEvent(seq: number): icmpwatch.v1.IEvent {
  const namespace = ['demo', 'other', 'third'][seq % 3]!;
  return echoEvent(seq, {
    source: { ip: `10.1.${seq % 3}.2`, namespace, pod: `pod-${seq % 5}` },
    icmp: seq % 4 === 0 ? { type: 0, code: 0, id: 1234, seq } : { type: 8, code: 0, id: 1234, seq },
  });
}

describe('collector: SubscribeBatches', () => {
  let collector: Collector;
  let client: ObserverClient;
  const exporters: CollectorExporter[] = [];
  const subscribers: CollectingSubscriber[] = [];
  const extraClients: ObserverClient[] = [];

  afterEach(async () => {
    for (const s of subscribers.splice(0)) s.stream.cancel();
    await Promise.all(exporters.splice(0).map((e) => e.close(100)));
    for (const c of extraClients.splice(0)) c.close();
    client?.close();
    await collector?.stop(1000);
  });

  const subscribe = (request: icmpwatch.v1.ISubscribeRequest, rpc: 'subscribe' | 'subscribeBatches' = 'subscribeBatches', on = client) => {
    const s = new CollectingSubscriber(on, request, undefined, rpc);
    subscribers.push(s);
    return s;
  };
  const exporter = (...args: Parameters<typeof startExporter>) => {
    const e = startExporter(...args);
    exporters.push(e);
    return e;
  };
  /** Its own connection: a paused stream holds back HTTP/2 flow control of the connection it is on. */
  // A connection of its own, with HTTP/2's default 64 KiB receive window: a paused reader stops the
  // collector's writes after 64 KiB, not after the 4 MiB the CLI's client opens.
  const ownClient = () => {
    const c = new ObserverClient(collector.address, { 'grpc.use_local_subchannel_pool': 1, 'grpc-node.flow_control_window': 65535 });
    extraClients.push(c);
    return c;
  };

  it('delivers exactly what Subscribe delivers, in the same order: history then live, with filters', async () => {
    collector = await startCollector();
    client = new ObserverClient(collector.address);
    const agent = exporter(collector.address, { batchSize: 50 });
    for (let seq = 1; seq <= 1500; seq++) agent.publish(variedEvent(seq));
    await eventually(async () => Number((await client.getStatus()).eventsSeen) === 1500);
    const requests: icmpwatch.v1.ISubscribeRequest[] = [
      { last: 0, follow: true },
      { last: 200, follow: true, allow: [{ sourceIp: ['10.1.0.0/24', '10.1.2.0/24'] }], deny: [{ icmpType: ['echo-reply'] }] },
      { since: echoEvent(700).time, follow: true, allow: [{ pod: ['pod-1', 'pod-3'] }, { sourceIp: ['10.1.2.0/24'] }] },
      { last: 300, allow: [{ namespace: ['other'] }] },
      { since: echoEvent(100).time, until: echoEvent(900).time },
    ];
    const pairs = requests.map((request) => [subscribe(request, 'subscribe'), subscribe(request)] as const);
    await eventually(async () => (await client.getStatus()).subscribers === 6);
    for (let seq = 1501; seq <= 3000; seq++) agent.publish(variedEvent(seq));
    await eventually(async () => Number((await client.getStatus()).eventsSeen) === 3000);
    for (const [i, [single, batched]] of pairs.entries()) {
      if (requests[i]!.follow) {
        // Both have the newest events, and nothing more arrives.
        let seen = -1;
        await eventually(async () => {
          await new Promise((r) => setTimeout(r, 100));
          const n = single.received.length;
          const settled = n === batched.received.length && n === seen && single.events.some((e) => Number(e.sequence) >= 2990);
          seen = n;
          return settled;
        });
      } else {
        expect(await single.done).to.equal(null);
        expect(await batched.done).to.equal(null);
      }
      expect(batched.received.length, `request ${i}`).to.be.greaterThan(0);
      expect(batched.received, `request ${i}`).to.deep.equal(single.received);
    }
    // The filters did select: request 1 saw no echo replies and only its source addresses.
    const filtered = pairs[1]![1].events;
    expect(filtered.length).to.be.greaterThan(500);
    expect(filtered.every((e) => e.icmp?.type === 8 && !e.source?.ip?.startsWith('10.1.1.'))).to.equal(true);
  });

  it('sends a record at a time at low rates, and many to a message under load within the count bound', async () => {
    collector = await startCollector();
    client = new ObserverClient(collector.address);
    const live = subscribe({ follow: true });
    await eventually(async () => (await client.getStatus()).subscribers === 1);
    const agent = exporter(collector.address, { batchSize: 1, batchDelayMs: 0 });
    for (let seq = 1; seq <= 20; seq++) {
      agent.publish(echoEvent(seq));
      await live.until((s) => s.events.length === seq);
    }
    // Node status first, then each event in a message of its own: no waiting for a batch to fill.
    expect(live.batches.filter((b) => b.some((r) => r.event)).map((b) => b.length)).to.deep.equal(new Array(20).fill(1));

    // Under load: a reader that paused finds everything queued meanwhile in few, full messages.
    const paused = subscribe({ follow: true }, 'subscribeBatches', ownClient());
    await eventually(async () => (await client.getStatus()).subscribers === 2);
    paused.stream.pause();
    // Agent batches beyond the count bound: every burst is cut into messages of at most the bound.
    const bulk = exporter(collector.address, { node: 'node-b', batchSize: 2500 });
    const total = 5000;
    for (let seq = 1; seq <= total; seq++) bulk.publish(echoEvent(seq, { node: 'node-b' }));
    await live.until((s) => s.events.length === 20 + total);
    paused.stream.resume();
    await paused.until((s) => s.events.length === total);
    expect(sequences(paused.events)).to.deep.equal(range(1, total));
    expect(paused.lost).to.deep.equal([]);
    const sizes = paused.batches.map((b) => b.length);
    expect(Math.max(...sizes)).to.equal(MAX_BATCH_RECORDS);
    expect(paused.batches.length).to.be.lessThan(total / 20);
  });

  it('keeps each message within the byte bound, and tells a slow reader what it lost', async () => {
    collector = await startCollector({ subscriberQueue: 3000 });
    client = new ObserverClient(collector.address);
    const paused = subscribe({ follow: true }, 'subscribeBatches', ownClient());
    await eventually(async () => (await client.getStatus()).subscribers === 1);
    paused.stream.pause();
    // About 4 KiB each: the byte bound, not the count, limits a batch.
    const padding = { labels: Object.fromEntries(range(1, 40).map((i) => [`label-${i}`, 'x'.repeat(90)])) };
    const agent = exporter(collector.address, { batchSize: 200 });
    const total = 8000;
    for (let seq = 1; seq <= total; seq++) agent.publish(echoEvent(seq, { source: { ip: '10.1.0.2', namespace: 'demo', pod: 'pod-a', ...padding } }));
    await eventually(async () => Number((await client.getStatus()).eventsSeen) === total, 20_000);
    paused.stream.resume();
    const lostCount = () => paused.lost.reduce((n, l) => n + Number(l.count), 0);
    await paused.until((s) => s.events.length + lostCount() === total, 20_000);

    const bytes = paused.batches.map(messageBytes);
    expect(Math.max(...bytes)).to.be.at.most(MAX_BATCH_BYTES);
    expect(Math.max(...bytes), 'batches filled up to the bound').to.be.greaterThan(MAX_BATCH_BYTES - 8192);
    expect(Math.max(...paused.batches.map((b) => b.length))).to.be.lessThan(MAX_BATCH_RECORDS);

    expect(paused.lost.length).to.be.greaterThan(0);
    expect(paused.lost.every((l) => l.source === LostEventsSource.LOST_EVENTS_SOURCE_SUBSCRIBER_QUEUE)).to.equal(true);
    const got = sequences(paused.events);
    expect(got).to.deep.equal([...got].sort((a, b) => a - b));
    expect(new Set(got).size).to.equal(got.length);
    expect(Number((await client.getStatus()).subscriberDrops)).to.equal(lostCount());
  });

  it('ends followers after what is queued for them when the collector stops', async () => {
    collector = await startCollector();
    client = new ObserverClient(collector.address);
    const live = subscribe({ follow: true });
    await eventually(async () => (await client.getStatus()).subscribers === 1);
    const agent = exporter(collector.address, { batchSize: 500 });
    for (let seq = 1; seq <= 2000; seq++) agent.publish(echoEvent(seq));
    await eventually(async () => Number((await client.getStatus()).eventsSeen) === 2000);
    await collector.stop(5000);
    expect(await live.done).to.equal(null);
    expect(sequences(live.events)).to.deep.equal(range(1, 2000));
  });

  it('counts against the same subscriber limits as Subscribe', async () => {
    collector = await startCollector({ limits: { maxSubscribers: 2, maxSubscribersPerPeer: 2, requestsPerSecond: 100 } });
    client = new ObserverClient(collector.address);
    subscribe({ follow: true }, 'subscribe');
    subscribe({ follow: true });
    await eventually(async () => (await client.getStatus()).subscribers === 2);
    for (const rpc of ['subscribeBatches', 'subscribe'] as const) {
      const err = (await subscribe({ follow: true }, rpc).done) as Error & { code: number; details: string };
      expect(err.code, rpc).to.equal(status.RESOURCE_EXHAUSTED);
      expect(err.details).to.contain('--max-subscribers');
    }
  });

  describe('invalid requests', () => {
    const cases: [string, icmpwatch.v1.ISubscribeRequest, string][] = [
      ['bad CIDR', { allow: [{}, { ip: ['10.0.0.1', '10.0.0.0/33'] }] }, "allow[1].ip[1]: invalid CIDR '10.0.0.0/33'"],
      ['since after until', { since: { seconds: 200 }, until: { seconds: 100 } }, 'since: must not be after until'],
    ];
    for (const [name, request, message] of cases) {
      it(`rejects ${name} naming the field`, async () => {
        collector = await startCollector();
        client = new ObserverClient(collector.address);
        const err = (await subscribe(request).done) as Error & { code: number; details: string };
        expect(err.code).to.equal(status.INVALID_ARGUMENT);
        expect(err.details).to.contain(message);
      });
    }
  });
});
