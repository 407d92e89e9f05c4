import { expect } from 'chai';
import { status } from '@grpc/grpc-js';
import type { CollectorExporter } from '../../src/agent/export/exporter.js';
import type { Collector } from '../../src/collector/collector.js';
import { ObserverClient } from '../../src/common/grpc/clients.js';
import { google, icmpwatch } from '../../src/common/proto.js';
import { CollectingSubscriber, echoEvent, eventually, range, sequences, startCollector, startExporter } from './harness.js';

const { LostEventsSource, NodeState } = icmpwatch.v1;

describe('collector: Subscribe', () => {
  let collector: Collector;
  let client: ObserverClient;
  const exporters: CollectorExporter[] = [];
  const subscribers: CollectingSubscriber[] = [];

  afterEach(async () => {
    for (const s of subscribers.splice(0)) s.stream.cancel();
    await Promise.all(exporters.splice(0).map((e) => e.close(100)));
    client?.close();
    await collector?.stop(1000);
  });

  const subscribe = (request: icmpwatch.v1.ISubscribeRequest) => {
    const s = new CollectingSubscriber(client, request);
    subscribers.push(s);
    return s;
  };
  const exporter = (...args: Parameters<typeof startExporter>) => {
    const e = startExporter(...args);
    exporters.push(e);
    return e;
  };

  it('joins history and live with no gap and no duplicate while events keep arriving', async () => {
    collector = await startCollector();
    client = new ObserverClient(collector.address);
    const agent = exporter(collector.address, { batchSize: 7 });
    const total = 3000;
    const stored = async () => Number((await client.getStatus()).eventsSeen);
    let published = 0;
    const publishThrough = async (last: number) => {
      while (published < last) {
        agent.publish(echoEvent(++published));
        if (published % 50 === 0) await new Promise((r) => setImmediate(r));
      }
    };
    // Each subscriber joins once some events are stored, while later batches are still in flight.
    const joined: { s: CollectingSubscriber; storedBefore: number; storedAfter: number }[] = [];
    for (const joinAt of [500, 1000, 1500, 2000, 2500]) {
      await publishThrough(joinAt);
      await eventually(async () => (await stored()) >= joinAt - 200);
      const storedBefore = await stored();
      const s = subscribe({ last: 100_000, follow: true });
      await publishThrough(joinAt + 100);
      await eventually(async () => (await client.getStatus()).subscribers === joined.length + 1);
      joined.push({ s, storedBefore, storedAfter: await stored() });
    }
    await publishThrough(total);
    for (const { s, storedBefore, storedAfter } of joined) {
      // 1..storedBefore were stored before it subscribed (history); storedAfter+1..total after it had
      // joined the live fan-out.
      expect(storedBefore).to.be.greaterThan(0);
      expect(storedAfter).to.be.below(total);
      await s.until((x) => x.events.length > 0 && Number(x.events.at(-1)!.sequence) === total);
      expect(sequences(s.events)).to.deep.equal(range(1, total));
    }
  });

  it('gives the last N events, then live ones, and node status notices to followers', async () => {
    collector = await startCollector();
    client = new ObserverClient(collector.address);
    const agent = exporter(collector.address);
    for (let seq = 1; seq <= 50; seq++) agent.publish(echoEvent(seq));
    await eventually(() => agent.state().bufferedEvents === 0);

    const last = subscribe({ last: 10 });
    expect(await last.done).to.equal(null);
    expect(sequences(last.events)).to.deep.equal(range(41, 50));

    const follower = subscribe({ last: 5, follow: true });
    await follower.until((s) => s.events.length === 5);
    for (let seq = 51; seq <= 60; seq++) agent.publish(echoEvent(seq));
    await follower.until((s) => s.events.length === 15);
    expect(sequences(follower.events)).to.deep.equal(range(46, 60));

    await agent.close(1000);
    await follower.until((s) => s.received.some((r) => r.nodeStatus?.state === NodeState.NODE_STATE_UNAVAILABLE));
    const notice = follower.received.find((r) => r.nodeStatus)!;
    expect(notice.nodeName).to.equal('node-a');
    expect(notice.time).to.not.equal(null);
  });

  it('serves since/until from history, and a reconnect with since its last event leaves no gap', async () => {
    collector = await startCollector();
    client = new ObserverClient(collector.address);
    const agent = exporter(collector.address);
    for (let seq = 1; seq <= 100; seq++) agent.publish(echoEvent(seq));

    const first = subscribe({ last: 100_000, follow: true });
    await first.until((s) => s.events.length >= 40);
    first.stream.cancel();
    const seen = sequences(first.events);
    const lastTime = first.events.at(-1)!.time!;

    const again = subscribe({ since: lastTime, follow: true });
    await again.until((s) => Number(s.events.at(-1)?.sequence) === 100);
    const union = new Set([...seen, ...sequences(again.events)]);
    expect([...union].sort((a, b) => a - b)).to.deep.equal(range(1, 100));
    expect(sequences(again.events)[0]).to.equal(seen.at(-1));

    const window = subscribe({ since: echoEvent(20).time, until: echoEvent(29).time });
    expect(await window.done).to.equal(null);
    expect(sequences(window.events)).to.deep.equal(range(20, 29));
  });

  it('follows until a far-off until (beyond the 24.8-day timer limit) instead of ending at once', async () => {
    collector = await startCollector();
    client = new ObserverClient(collector.address);
    const agent = exporter(collector.address);
    const farOff = { seconds: Math.floor(Date.now() / 1000) + 30 * 86_400 };
    const follower = subscribe({ follow: true, until: farOff });
    await new Promise((r) => setTimeout(r, 200));
    agent.publish(echoEvent(1));
    await follower.until((s) => s.events.length === 1);
    expect(follower.stream.readable).to.equal(true);
  });

  it('says so first when since reaches back past what the bounded history already dropped', async () => {
    collector = await startCollector({ historyEvents: 50 });
    client = new ObserverClient(collector.address);
    const agent = exporter(collector.address);
    for (let seq = 1; seq <= 100; seq++) agent.publish(echoEvent(seq));
    await eventually(() => agent.state().bufferedEvents === 0);

    const partial = subscribe({ since: echoEvent(1).time });
    expect(await partial.done).to.equal(null);
    const plain = (t: google.protobuf.ITimestamp | null | undefined) => ({ seconds: Number(t?.seconds), nanos: t?.nanos ?? 0 });
    expect(partial.lost.map((l) => [l.source, Number(l.count), plain(l.first), plain(l.last)])).to.deep.equal([
      [LostEventsSource.LOST_EVENTS_SOURCE_HISTORY_EXPIRED, 0, plain(echoEvent(1).time), plain(echoEvent(50).time)],
    ]);
    expect(partial.received[0]!.lostEvents).to.not.equal(null);
    expect(sequences(partial.events)).to.deep.equal(range(51, 100));

    const covered = subscribe({ since: echoEvent(51).time });
    expect(await covered.done).to.equal(null);
    expect(covered.lost).to.deep.equal([]);
    expect(sequences(covered.events)).to.deep.equal(range(51, 100));
  });

  it('keeps a stalled subscriber from slowing the others, and tells it what it lost', async () => {
    collector = await startCollector({ subscriberQueue: 1000 });
    client = new ObserverClient(collector.address);
    // Its own connection: a paused stream holds back HTTP/2 flow control of the connection it is on.
    const stalledClient = new ObserverClient(collector.address, { 'grpc.use_local_subchannel_pool': 1 });
    const stalled = new CollectingSubscriber(stalledClient, { follow: true });
    subscribers.push(stalled);
    stalled.stream.pause();
    const keeping = Array.from({ length: 3 }, () => subscribe({ follow: true }));
    await eventually(async () => (await client.getStatus()).subscribers === 4);

    const agent = exporter(collector.address, { batchSize: 500 });
    const total = 20_000;
    const padding = { labels: Object.fromEntries(range(1, 20).map((i) => [`label-${i}`, 'x'.repeat(40)])) };
    // Bursts of one batch at the pace of the readers that keep up; the stalled one is never waited for.
    for (let seq = 1; seq <= total; seq++) {
      agent.publish(echoEvent(seq, { source: { ip: '10.1.0.2', namespace: 'demo', pod: 'pod-a', ...padding } }));
      if (seq % 500 === 0) for (const s of keeping) await s.until((x) => x.events.length === seq);
    }
    for (const s of keeping) {
      expect(sequences(s.events)).to.deep.equal(range(1, total));
      expect(s.lost).to.deep.equal([]);
    }

    stalled.stream.resume();
    const lostCount = (s: CollectingSubscriber) => s.lost.reduce((n, l) => n + Number(l.count), 0);
    await stalled.until((s) => s.events.length + lostCount(s) === total);
    expect(stalled.lost.length).to.be.greaterThan(0);
    expect(stalled.lost.every((l) => l.source === LostEventsSource.LOST_EVENTS_SOURCE_SUBSCRIBER_QUEUE)).to.equal(true);
    // What it did get is in order, with nothing repeated.
    const got = sequences(stalled.events);
    expect(got).to.deep.equal([...got].sort((a, b) => a - b));
    expect(new Set(got).size).to.equal(got.length);
    const statusNow = await client.getStatus();
    expect(Number(statusNow.subscriberDrops)).to.equal(lostCount(stalled));
    stalledClient.close();
  });

  it('streams several agents to many subscribers, each node in order', async () => {
    collector = await startCollector();
    client = new ObserverClient(collector.address);
    const nodes = ['node-a', 'node-b', 'node-c'];
    const perNode = 1000;
    const subs = Array.from({ length: 25 }, () => subscribe({ follow: true }));
    await eventually(async () => (await client.getStatus()).subscribers === subs.length);
    const agents = nodes.map((node) => exporter(collector.address, { node, batchSize: 50 }));
    for (let seq = 1; seq <= perNode; seq++) agents.forEach((a, i) => a.publish(echoEvent(seq, { node: nodes[i]! })));
    for (const s of subs) {
      await s.until((x) => x.events.length === nodes.length * perNode);
      for (const node of nodes) expect(sequences(s.events.filter((e) => e.node === node))).to.deep.equal(range(1, perNode));
    }
    const nodeList = await client.listNodes();
    expect(nodeList.nodes!.map((n) => [n.name, n.state, Number(n.lastSequence)])).to.deep.equal(
      nodes.map((n) => [n, NodeState.NODE_STATE_CONNECTED, perNode]),
    );
  });

  describe('invalid requests', () => {
    const cases: [string, icmpwatch.v1.ISubscribeRequest, string][] = [
      ['bad CIDR', { allow: [{}, { ip: ['10.0.0.1', '10.0.0.0/33'] }] }, "allow[1].ip[1]: invalid CIDR '10.0.0.0/33'"],
      ['bad address', { deny: [{ sourceIp: ['10.0.0.256'] }] }, "deny[0].source_ip[0]: invalid IP address '10.0.0.256'"],
      ['unknown type name', { allow: [{ icmpType: ['echo-request', 'ping'] }] }, "allow[0].icmp_type[1]: unknown ICMP type 'ping'"],
      ['negative last', { last: -1 }, 'last: must not be negative'],
      ['since after until', { since: { seconds: 200 }, until: { seconds: 100 } }, 'since: must not be after until'],
      ['unknown family', { allow: [{ family: [7 as icmpwatch.v1.Family] }] }, 'allow[0].family[0]: unknown family 7'],
      ['unknown point', { allow: [{ observationPoint: [0] }] }, 'allow[0].observation_point[0]: unknown observation point 0'],
      ['code out of range', { allow: [{ icmpCode: [300] }] }, 'allow[0].icmp_code[0]:'],
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
