import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { Registry } from 'prom-client';
import { Backoff } from '../../../src/agent/export/backoff.js';
import type { CollectorExporter } from '../../../src/agent/export/exporter.js';
import { SendBuffer } from '../../../src/agent/export/send-buffer.js';
import type { Collector } from '../../../src/collector/collector.js';
import { ObserverClient } from '../../../src/common/grpc/clients.js';
import { icmpwatch } from '../../../src/common/proto.js';
import { CollectingSubscriber, echoEvent, eventually, freePort, range, sequences, startCollector, startExporter } from '../../collector/harness.js';

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

    const collector = await collectorOn({ listen: `127.0.0.1:${port}` });
    await eventually(() => exporter.state().connected && exporter.state().bufferedEvents === 0);
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
    const exporter = exporterTo('127.0.0.1:1', { maxBufferedBytes: 10 * icmpwatch.v1.Event.encode(echoEvent(1)).finish().length });
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
  const entry = (sequence: number, bytes = 10) => ({ event: echoEvent(sequence), sequence, bytes });

  it('keeps one range of dropped sequences until an acknowledgement covers it', () => {
    const buffer = new SendBuffer(3, 1000);
    for (const seq of range(1, 6)) buffer.add(entry(seq));
    expect(buffer.dropped).to.include({ firstSequence: 1, lastSequence: 3 });
    expect(buffer.after(0, 10, 1000).map((e) => e.sequence)).to.deep.equal([4, 5, 6]);
    expect(buffer.after(4, 1, 1000).map((e) => e.sequence)).to.deep.equal([5]);
    expect(buffer.ack(2)).to.equal(0);
    expect(buffer.dropped).to.not.equal(null);
    expect(buffer.ack(4)).to.equal(1);
    expect(buffer.dropped).to.equal(null);
    expect([buffer.length, buffer.bytes]).to.deep.equal([2, 20]);
  });
});
