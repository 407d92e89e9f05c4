import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { Registry } from 'prom-client';
import { Backoff } from '../../../src/agent/export/backoff.js';
import { encodeEvent, encodeFramedEvent } from '../../../src/agent/export/event-encoder.js';
import type { CollectorExporter } from '../../../src/agent/export/exporter.js';
import { SendBuffer } from '../../../src/agent/export/send-buffer.js';
import type { Collector } from '../../../src/collector/collector.js';
import { ObserverClient } from '../../../src/common/grpc/clients.js';
import { icmpwatch } from '../../../src/common/proto.js';
import { Random, flowEnds, fuzzSeed, reportSeedOnFailure } from '../../fuzz.js';
import { CollectingSubscriber, batchRequest, echoEvent, eventually, freePort, range, sequences, startCollector, startExporter } from '../../collector/harness.js';

async function history(address: string) {
  const client = new ObserverClient(address);
  const s = new CollectingSubscriber(client, {});
  expect(await s.done).to.equal(null);
  client.close();
  return s;
}

async function metricValue(registry: Registry, name: string): Promise<number> {
  const metric = registry.getSingleMetric(name);
  return (await metric!.get()).values[0]!.value;
}

describe('agent: CollectorExporter', () => {
  const running: { collectors: Collector[]; exporters: CollectorExporter[]; dirs: string[] } = { collectors: [], exporters: [], dirs: [] };
  afterEach(async () => {
    await Promise.all(running.exporters.splice(0).map((e) => e.close(100)));
    await Promise.all(running.collectors.splice(0).map((c) => c.stop(1000)));
    await Promise.all(running.dirs.splice(0).map((d) => fs.rm(d, { recursive: true, force: true })));
  });
  const collectorOn = async (...args: Parameters<typeof startCollector>) => {
    const c = await startCollector(...args);
    running.collectors.push(c);
    return c;
  };
  const exporterTo = (...args: Parameters<typeof startExporter>) => {
    const e = startExporter(...args);
    running.exporters.push(e);
    return e;
  };

  it('drops the oldest beyond its bound while the collector is down, counts them, and the loss is announced', async () => {
    const port = await freePort();
    const registry = new Registry();
    const exporter = exporterTo(`127.0.0.1:${port}`, { maxBufferedEvents: 100, registry });
    for (const seq of range(1, 300)) exporter.publish(echoEvent(seq));
    expect(exporter.state()).to.include({ connected: false, bufferedEvents: 100, droppedEvents: 200 });
    expect(await metricValue(registry, 'icmpwatch_agent_export_dropped_events_total')).to.equal(200);
    expect(await metricValue(registry, 'icmpwatch_agent_export_buffered_events')).to.equal(100);
    expect(await metricValue(registry, 'icmpwatch_agent_export_buffered_bytes')).to.equal(exporter.state().bufferedBytes).and.be.greaterThan(0);

    const collector = await collectorOn({ listen: `127.0.0.1:${port}` });
    await eventually(() => exporter.state().connected && exporter.state().bufferedEvents === 0);
    expect(await metricValue(registry, 'icmpwatch_agent_export_buffered_events')).to.equal(0);
    const { events, lost } = await history(collector.address);
    expect(sequences(events)).to.deep.equal(range(201, 300));
    expect(lost.map((l) => [l.source, Number(l.count), l.nodeName])).to.deep.equal([
      [icmpwatch.v1.LostEventsSource.LOST_EVENTS_SOURCE_AGENT_EXPORT_BUFFER, 200, 'node-a'],
    ]);
    expect(lost[0]!.first).to.deep.include(echoEvent(1).time!);
    expect(lost[0]!.last).to.deep.include(echoEvent(200).time!);
    const client = new ObserverClient(collector.address);
    const status = await client.getStatus();
    client.close();
    expect(Number(status.exportDrops)).to.equal(200);
    expect(Number(status.nodes![0]!.counters!.exportDropped)).to.equal(200);
  });

  it('bounds the buffer by bytes too', () => {
    const exporter = exporterTo('127.0.0.1:1', { maxBufferedBytes: 10 * encodeEvent(echoEvent(1)).length });
    for (const seq of range(1, 50)) exporter.publish(echoEvent(seq));
    expect(exporter.state().bufferedEvents).to.be.within(9, 10);
    expect(exporter.state().droppedEvents).to.equal(50 - exporter.state().bufferedEvents);
  });

  it('resends across a collector restart with the same data dir: nothing lost, nothing twice', async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'icmpwatch-export-'));
    running.dirs.push(dataDir);
    const first = await startCollector({ dataDir });
    const listen = first.address;
    const exporter = exporterTo(listen, { batchSize: 25 });
    for (const seq of range(1, 500)) exporter.publish(echoEvent(seq));
    await eventually(() => exporter.state().bufferedEvents === 0);
    // Batches in flight when it stops are resent and recognised.
    for (const seq of range(501, 700)) exporter.publish(echoEvent(seq));
    await first.stop(1000);
    for (const seq of range(701, 900)) exporter.publish(echoEvent(seq));
    await eventually(() => !exporter.state().connected);

    const second = await collectorOn({ dataDir, listen });
    for (const seq of range(901, 1000)) exporter.publish(echoEvent(seq));
    await eventually(() => exporter.state().connected && exporter.state().bufferedEvents === 0);
    const { events, lost } = await history(second.address);
    expect(sequences(events)).to.deep.equal(range(1, 1000));
    expect(lost).to.deep.equal([]);
    expect(exporter.state().droppedEvents).to.equal(0);
  });

  it('across a restart of an in-memory collector under a connected agent: no loss announced, nothing dropped', async () => {
    const first = await startCollector();
    const listen = first.address;
    // Ring-buffer losses the first collector announced are not announced again by the second.
    const exporter = exporterTo(listen, { counters: () => ({ events: 0, lost: 3, malformed: 0, suppressed: 0 }) });
    for (const seq of range(1, 200)) exporter.publish(echoEvent(seq));
    await eventually(() => exporter.state().bufferedEvents === 0);
    await first.stop(1000);
    await eventually(() => !exporter.state().connected);
    for (const seq of range(201, 300)) exporter.publish(echoEvent(seq));

    const second = await collectorOn({ listen });
    for (const seq of range(301, 400)) exporter.publish(echoEvent(seq));
    await eventually(() => exporter.state().connected && exporter.state().bufferedEvents === 0);
    const { events, lost } = await history(second.address);
    expect(sequences(events)).to.deep.equal(range(201, 400));
    expect(lost).to.deep.equal([]);
    const client = new ObserverClient(second.address);
    const status = await client.getStatus();
    client.close();
    expect([Number(status.exportDrops), Number(status.ringBufferLost)]).to.deep.equal([0, 0]);
    expect(exporter.state().droppedEvents).to.equal(0);
  });

  it('close() sends what is buffered and waits for the acknowledgement', async () => {
    const collector = await collectorOn();
    const exporter = startExporter(collector.address, { batchDelayMs: 1000 });
    await eventually(() => exporter.state().connected);
    for (const seq of range(1, 30)) exporter.publish(echoEvent(seq));
    await exporter.close(2000);
    expect(exporter.state()).to.include({ bufferedEvents: 0, connected: false });
    expect(sequences((await history(collector.address)).events)).to.deep.equal(range(1, 30));
  });

  it('never throws from publish: a sequence that does not increase is counted and reported', () => {
    const exporter = exporterTo('127.0.0.1:1');
    exporter.publish(echoEvent(5));
    expect(() => exporter.publish(echoEvent(5))).to.not.throw();
    expect(() => exporter.publish(echoEvent(0))).to.not.throw();
    expect(exporter.state()).to.include({ bufferedEvents: 1, droppedEvents: 2 });
    expect(exporter.state().lastError).to.contain('sequence 0');
  });
});

describe('agent: export Backoff', () => {
  it('grows from min to max with jitter inside the bounds, and resets', () => {
    let r = 1;
    const b = new Backoff(200, 1000, () => r);
    expect([b.next(), b.next(), b.next(), b.next(), b.next()]).to.deep.equal([200, 400, 800, 1000, 1000]);
    r = 0;
    expect(b.next()).to.equal(200);
    b.reset();
    r = 0.5;
    expect([b.next(), b.next()]).to.deep.equal([200, 300]);
  });
});

describe('agent: export SendBuffer', () => {
  const framed = (events: icmpwatch.v1.IEvent[]) => icmpwatch.v1.EventBatch.encode({ events }).finish();
  const sequencesIn = (bytes: Uint8Array) => icmpwatch.v1.EventBatch.decode(bytes).events.map((e) => Number(e.sequence));

  it('keeps one range of dropped sequences until an acknowledgement covers it', () => {
    const buffer = new SendBuffer(3, 1 << 20);
    for (const seq of range(1, 6)) buffer.add(echoEvent(seq), seq);
    expect(buffer.dropped).to.include({ firstSequence: 1, lastSequence: 3 });
    expect(buffer.dropped!.first).to.deep.equal(echoEvent(1).time);
    expect(buffer.dropped!.last).to.deep.equal(echoEvent(3).time);
    const all = buffer.after(0, 10, 1 << 20)!;
    expect(all).to.include({ count: 3, lastSequence: 6 });
    expect(Buffer.from(all.framed)).to.deep.equal(Buffer.from(framed(range(4, 6).map((seq) => echoEvent(seq)))));
    expect(sequencesIn(buffer.after(4, 1, 1 << 20)!.framed)).to.deep.equal([5]);
    expect(buffer.after(6, 10, 1 << 20)).to.equal(null);
    expect(buffer.ack(2)).to.equal(0);
    expect(buffer.dropped).to.not.equal(null);
    expect(buffer.ack(4)).to.equal(1);
    expect(buffer.dropped).to.equal(null);
    expect([buffer.length, buffer.bytes]).to.deep.equal([2, framed([echoEvent(5), echoEvent(6)]).length]);
  });

  describe('against a list of events, on random adds, acknowledgements and batches', () => {
    const seed = fuzzSeed(0x5bf0);
    afterEach(function () {
      reportSeedOnFailure(this, seed);
    });

    it('batches hold the next events in order, whole, within the bounds, across chunks', () => {
      const r = new Random(seed);
      for (let round = 0; round < 20; round++) {
        const maxEvents = r.pick([5, 200, 5000]);
        const maxBytes = r.pick([4096, 200_000, 1 << 30]);
        const buffer = new SendBuffer(maxEvents, maxBytes);
        // The model: the buffered events' sequences and framed sizes, dropped oldest first by the same bounds.
        let model: { sequence: number; size: number }[] = [];
        let modelDropped: [number, number] | null = null;
        let sequence = 0;
        let acked = 0;
        for (let op = 0; op < 1500; op++) {
          const what = r.int(10);
          if (what < 7) {
            // Sizes that fill chunks (64 KiB to 1 MiB) in tens of events; now and then one larger than a chunk.
            const pad = r.chance(0.002) ? 'p'.repeat(1_500_000) : 'n'.repeat(r.int(r.pick([100, 3000, 20_000])));
            const ev = echoEvent(++sequence, { node: `node-${pad}` });
            const size = framed([ev]).length;
            model.push({ sequence, size });
            let bytes = model.reduce((n, e) => n + e.size, 0);
            let expectDropped = 0;
            while (model.length > maxEvents || (bytes > maxBytes && model.length > 1)) {
              const gone = model.shift()!;
              bytes -= gone.size;
              modelDropped = [modelDropped?.[0] ?? gone.sequence, gone.sequence];
              expectDropped++;
            }
            expect(buffer.add(ev, sequence)).to.equal(expectDropped);
          } else if (what < 8) {
            acked = Math.min(sequence, acked + r.int(30));
            const removed = model.filter((e) => e.sequence <= acked).length;
            model = model.filter((e) => e.sequence > acked);
            if (modelDropped && modelDropped[1] <= acked) modelDropped = null;
            expect(buffer.ack(acked)).to.equal(removed);
          } else {
            const from = acked + r.int(Math.max(1, sequence - acked));
            const batchEvents = r.pick([1, 7, 500]);
            const batchBytes = r.pick([100, 64 << 10, 1 << 20]);
            const run = buffer.after(from, batchEvents, batchBytes);
            const next = model.filter((e) => e.sequence > from);
            if (next.length === 0) {
              expect(run).to.equal(null);
              continue;
            }
            expect(run).to.not.equal(null);
            const got = sequencesIn(run!.framed);
            expect(got).to.deep.equal(next.slice(0, run!.count).map((e) => e.sequence));
            expect(run!.lastSequence).to.equal(got.at(-1));
            expect(run!.count).to.be.within(1, batchEvents);
            if (run!.count > 1) expect(run!.framed.length).to.be.at.most(batchBytes);
          }
          expect(buffer.length).to.equal(model.length);
          expect(buffer.bytes).to.equal(model.reduce((n, e) => n + e.size, 0));
          expect(buffer.dropped && [buffer.dropped.firstSequence, buffer.dropped.lastSequence]).to.deep.equal(modelDropped);
        }
      }
    });
  });

  it('a dropped event without a time leaves the range\'s last time at the last one that had one', () => {
    const buffer = new SendBuffer(1, 1 << 20);
    const untimed = { ...echoEvent(2), time: null };
    buffer.add(echoEvent(1), 1);
    buffer.add(untimed, 2);
    buffer.add(echoEvent(3), 3);
    expect(buffer.dropped).to.include({ firstSequence: 1, lastSequence: 2 });
    expect(buffer.dropped!.last).to.deep.equal(echoEvent(1).time);
    buffer.add(echoEvent(4), 4);
    expect(buffer.dropped!.last).to.deep.equal(echoEvent(3).time);
    expect(buffer.dropped!.first).to.deep.equal(echoEvent(1).time);
  });
});

describe('agent: export batch request', () => {
  it('decodes to the same IngestRequest as the generic encoder, from events framed as the send buffer keeps them', () => {
    const long = 'x'.repeat(300); // an event longer than 127 bytes: a two-byte length
    const dropped = { firstSequence: 3, lastSequence: 9, first: echoEvent(3).time, last: echoEvent(9).time };
    const counters = { events: 2 ** 40, lost: 7, malformed: 0, suppressed: 1, exportDropped: 7 };
    for (const events of [[], [echoEvent(1)], range(1, 500).map((seq) => echoEvent(seq, seq % 7 ? {} : { node: long }))]) {
      for (const rest of [{ counters, dropped }, { counters, dropped: null }, {}]) {
        const expected = icmpwatch.v1.IngestRequest.encode({ batch: { events, ...rest } }).finish();
        const bytes = batchRequest(events, rest);
        expect(bytes.length).to.equal(expected.length);
        expect(icmpwatch.v1.IngestRequest.toObject(icmpwatch.v1.IngestRequest.decode(bytes))).to.deep.equal(
          icmpwatch.v1.IngestRequest.toObject(icmpwatch.v1.IngestRequest.decode(expected)),
        );
      }
    }
  });
});

describe('agent: export event encoder', () => {
  const seed = fuzzSeed(0x5e7d);
  afterEach(function () {
    reportSeedOnFailure(this, seed);
  });

  /** Fields present or not, zeros, values past 32 bits, and values it leaves to protobufjs (negative, fractional, too wide). */
  function randomEvent(r: Random): icmpwatch.v1.IEvent {
    const maybe = <T>(value: () => T): T | undefined => (r.chance(0.6) ? value() : undefined);
    const text = () => r.pick(['', '10.1.0.2', 'fd00::1', 'x'.repeat(200), r.string()]);
    const u32 = () => (r.chance(0.02) ? r.pick([-1, 1.5, 2 ** 32]) : r.pick([0, 1, 127, 128, 16_383, 16_384, 2 ** 31, 2 ** 32 - 1, r.int(70_000)]));
    const u64 = () => (r.chance(0.02) ? -1 : r.pick([0, 1, 2 ** 32, 2 ** 40 + 3, 2 ** 53 - 1, r.int(1e9)]));
    const enumValue = () => (r.chance(0.02) ? -2 : r.int(14));
    const timestamp = () => ({ seconds: maybe(() => r.pick([0, 1_764_000_000, 253_402_300_799])), nanos: maybe(() => r.int(1e9)) });
    const endpoint = (): icmpwatch.v1.IEndpoint => ({
      ip: maybe(text), namespace: maybe(text), pod: maybe(text), podUid: maybe(text),
      labels: maybe(() => Object.fromEntries(Array.from({ length: r.int(3) }, () => [text(), text()]))),
      workload: maybe(() => ({ kind: maybe(text), name: maybe(text) })),
      node: maybe(text), service: maybe(text), kind: maybe(enumValue), enrichment: maybe(enumValue),
    });
    return {
      time: maybe(timestamp), node: maybe(text), family: maybe(enumValue), source: maybe(endpoint), destination: maybe(endpoint),
      icmp: maybe(() => ({
        type: maybe(u32), code: maybe(u32), name: maybe(text), id: maybe(u32), seq: maybe(u32), mtu: maybe(u32),
        quoted: maybe(() => ({ source: maybe(text), destination: maybe(text), protocol: maybe(u32), sourcePort: maybe(u32), destinationPort: maybe(u32), echoId: maybe(u32), echoSeq: maybe(u32) })),
      })),
      ttl: maybe(u32), length: maybe(u32), ipId: maybe(u32), fragmentOffset: maybe(u32),
      observation: maybe(() => ({ hook: maybe(enumValue), point: maybe(enumValue), ifindex: maybe(u32), interface: maybe(text), netns: maybe(u64), sightings: maybe(u32), symbol: maybe(text) })),
      flags: maybe(() => Array.from({ length: r.int(20) }, enumValue)),
      summary: maybe(() => ({ packets: maybe(u64), first: maybe(timestamp), last: maybe(timestamp), sightings: maybe(u64) })),
      sequence: maybe(u64), monotonicNs: maybe(u64),
    };
  }

  const asObject = (bytes: Uint8Array) => icmpwatch.v1.Event.toObject(icmpwatch.v1.Event.decode(bytes), { defaults: true, longs: String });

  /** Whether the event was compared: the generic encoder refuses some values (then so may the fast one). */
  function encodesAsGeneric(ev: icmpwatch.v1.IEvent): boolean {
    let expected: Uint8Array;
    try {
      expected = icmpwatch.v1.Event.encode(ev).finish();
    } catch {
      return false;
    }
    expect(asObject(encodeEvent(ev)), JSON.stringify(ev)).to.deep.equal(asObject(expected));
    // Framed into a chunk, after what is there: the same event, nothing before it touched, and
    // -1 (not a partial event) when the chunk ends too soon.
    const chunk = Buffer.alloc(1 << 16, 0xee);
    const end = encodeFramedEvent(ev, chunk, 3);
    const batch = icmpwatch.v1.EventBatch.decode(chunk.subarray(3, end));
    expect(batch.events.map((e) => icmpwatch.v1.Event.toObject(e as icmpwatch.v1.Event, { defaults: true, longs: String }))).to.deep.equal([asObject(expected)]);
    expect([...chunk.subarray(0, 3)]).to.deep.equal([0xee, 0xee, 0xee]);
    expect(encodeFramedEvent(ev, Buffer.alloc(end - 1), 3)).to.equal(-1);
    return true;
  }

  it('encodes random events to bytes that decode to what the generic encoder gives', () => {
    const r = new Random(seed);
    let compared = 0;
    for (let i = 0; i < 3000; i++) if (encodesAsGeneric(randomEvent(r))) compared++;
    expect(compared).to.be.greaterThan(1000);
  });

  it('encodes the same when events share endpoint and observation objects (bytes reused) as when each has its own', () => {
    const r = new Random(seed);
    const parts = Array.from({ length: 24 }, () => randomEvent(r));
    let compared = 0;
    for (let i = 0; i < 3000; i++) {
      // As the agent's resolver and builder hand the same objects over again, in either end.
      const ev: icmpwatch.v1.IEvent = {
        ...randomEvent(r),
        source: r.pick([r.pick(parts).source, r.pick(parts).destination]),
        destination: r.pick([r.pick(parts).source, r.pick(parts).destination]),
        observation: r.pick(parts).observation,
      };
      if (encodesAsGeneric(ev)) compared++;
    }
    expect(compared).to.be.greaterThan(1000);
  });

  it('encodes the same for flows (fields kept from the flow, per-packet numbers written) as for each event on its own', () => {
    const r = new Random(seed);
    const { sources, peers, observations } = flowEnds(Array.from({ length: 12 }, () => randomEvent(r)));
    let compared = 0;
    for (let i = 0; i < 3000; i++) {
      const varied = randomEvent(r);
      const ev: icmpwatch.v1.IEvent = {
        // What changes with every packet of a flow.
        time: varied.time,
        ipId: varied.ipId,
        sequence: r.often([i + 1], () => varied.sequence),
        monotonicNs: r.often([1e15 + i], () => varied.monotonicNs),
        icmp: {
          type: r.often([8, 0], () => varied.icmp?.type),
          code: r.often([0], () => varied.icmp?.code),
          name: r.often(['echo-request'], () => varied.icmp?.name),
          id: varied.icmp?.id,
          seq: varied.icmp?.seq,
          // Now and then a part no kept flow has.
          mtu: r.chance(0.03) ? 1280 : 0,
          quoted: r.chance(0.03) ? (varied.icmp?.quoted ?? null) : null,
        },
        // What stays the same for a flow's packets, mostly.
        node: r.often(['node-a'], () => varied.node),
        family: r.often<icmpwatch.v1.Family | null | undefined>([icmpwatch.v1.Family.FAMILY_IPV4], () => varied.family),
        source: r.pick(sources),
        destination: r.often(peers.slice(0, 2), () => r.pick(peers)),
        observation: r.often(observations.slice(0, 2), () => r.pick(observations)),
        ttl: r.often([64], () => varied.ttl),
        length: r.often([84], () => varied.length),
        fragmentOffset: r.chance(0.03) ? 8 : 0,
        flags: r.chance(0.05) ? varied.flags : [],
        summary: r.chance(0.02) ? varied.summary : null,
      };
      if (encodesAsGeneric(ev)) compared++;
    }
    expect(compared).to.be.greaterThan(2000);
  });
});
