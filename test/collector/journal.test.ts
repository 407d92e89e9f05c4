import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { Journal } from '../../src/collector/journal.js';
import { ObserverClient } from '../../src/common/grpc/clients.js';
import { CollectingSubscriber, echoEvent, eventually, range, sequences, silentLog, startCollector, startExporter } from './harness.js';

const payload = (n: number) => Buffer.from(`record-${n}`.padEnd(40, '.'));

async function open(dir: string, options: { maxRecords?: number; maxAgeMs?: number; maxBytes?: number; segmentRecords?: number; segmentBytes?: number } = {}) {
  const recovered: string[] = [];
  const { journal, recovery } = await Journal.open(
    {
      dir,
      retention: { maxRecords: options.maxRecords ?? 1000, maxAgeMs: options.maxAgeMs ?? 3_600_000, maxBytes: options.maxBytes ?? 1 << 30 },
      segmentSize: { records: options.segmentRecords ?? 1000, bytes: options.segmentBytes ?? 1 << 30 },
      log: silentLog,
    },
    (p) => {
      recovered.push(Buffer.from(p).toString().replace(/\.+$/, ''));
      return Date.now();
    },
  );
  return { journal, recovery, recovered };
}

const segments = async (dir: string) => (await fs.readdir(dir)).filter((n) => n.startsWith('segment-')).sort();

describe('collector: journal', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'icmpwatch-journal-'));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('reads back what was appended, across segments', async () => {
    const first = await open(dir, { segmentRecords: 4 });
    for (const n of range(1, 10)) await first.journal.append([{ payload: payload(n), timeMs: Date.now() }]);
    await first.journal.close();
    const second = await open(dir, { segmentRecords: 4 });
    expect(second.recovered).to.deep.equal(range(1, 10).map((n) => `record-${n}`));
    expect(second.recovery).to.deep.equal({ records: 10, damagedRecords: 0, damagedBytes: 0 });
    await second.journal.close();
  });

  // Each record is 48 bytes on disk (8 header + 40 payload).
  for (const [damage, intact, corrupt] of [
    ['a torn last write', 4, (data: Buffer) => data.subarray(0, data.length - 5)],
    ['a flipped bit in the fourth record', 3, (data: Buffer) => Buffer.concat([data.subarray(0, 170), Buffer.from([data[170]! ^ 1]), data.subarray(171)])],
    ['a garbage length after the last record', 5, (data: Buffer) => Buffer.concat([data, Buffer.from([0xff, 0xff, 0xff, 0x7f, 1, 2])])],
  ] as const) {
    it(`drops and counts ${damage}, keeps what precedes it, and appends after it`, async () => {
      const first = await open(dir);
      await first.journal.append(range(1, 5).map((n) => ({ payload: payload(n), timeMs: Date.now() })));
      await first.journal.close();
      const [file] = await segments(dir);
      await fs.writeFile(path.join(dir, file!), corrupt(await fs.readFile(path.join(dir, file!))));

      const second = await open(dir);
      expect(second.recovery.damagedRecords).to.equal(1);
      expect(second.recovery.damagedBytes).to.be.greaterThan(0);
      const kept = intact;
      expect(second.recovered).to.deep.equal(range(1, kept).map((n) => `record-${n}`));
      await second.journal.append([{ payload: payload(99), timeMs: Date.now() }]);
      await second.journal.close();

      const third = await open(dir);
      expect(third.recovery.damagedRecords).to.equal(0);
      expect(third.recovered).to.deep.equal([...range(1, kept).map((n) => `record-${n}`), 'record-99']);
      await third.journal.close();
    });
  }

  it('deletes whole old segments beyond the retained count and age', async () => {
    const j = await open(dir, { maxRecords: 10, segmentRecords: 5 });
    for (const n of range(1, 30)) await j.journal.append([{ payload: payload(n), timeMs: Date.now() }]);
    await j.journal.close();
    const reopened = await open(dir, { maxRecords: 10, segmentRecords: 5 });
    // Segments are whole: at least the retained 10, fewer than 10 plus one segment.
    expect(reopened.recovered.length).to.be.within(10, 14);
    expect(reopened.recovered.at(-1)).to.equal('record-30');
    await reopened.journal.close();

    const aged = await open(dir, { maxAgeMs: -1 });
    await aged.journal.close();
    const empty = await open(dir);
    await empty.journal.close();
    expect(empty.recovered).to.deep.equal([]);
  });

  it('bounds its files by bytes too: segments end at their byte size, old ones go beyond the retained bytes', async () => {
    // 48-byte records on disk (8 header + 40 payload): segments of 5, 480 bytes retained.
    const bounds = { maxBytes: 480, segmentBytes: 240 };
    const j = await open(dir, bounds);
    for (const n of range(1, 100)) await j.journal.append([{ payload: payload(n), timeMs: Date.now() }]);
    await j.journal.close();
    const sizes = await Promise.all((await segments(dir)).map(async (f) => (await fs.stat(path.join(dir, f))).size));
    // The retained bytes in whole segments, plus at most one segment and the one being written.
    expect(sizes.reduce((a, b) => a + b, 0)).to.be.within(480, 480 + 2 * 240);
    expect(Math.max(...sizes)).to.be.at.most(240);
    const reopened = await open(dir, bounds);
    expect(reopened.recovered.at(-1)).to.equal('record-100');
    expect(reopened.recovered.length).to.be.within(10, 20);
    await reopened.journal.close();
  });

  it('a collector restarted on a damaged data dir starts, serves what was intact and reports the damage', async () => {
    const collector = await startCollector({ dataDir: dir });
    const agent = startExporter(collector.address);
    for (const seq of range(1, 100)) agent.publish(echoEvent(seq));
    await eventually(() => agent.state().bufferedEvents === 0);
    await agent.close(100);
    await collector.stop(1000);
    const [file] = await segments(dir);
    const data = await fs.readFile(path.join(dir, file!));
    await fs.writeFile(path.join(dir, file!), data.subarray(0, data.length - 10));

    const restarted = await startCollector({ dataDir: dir });
    const client = new ObserverClient(restarted.address);
    try {
      const history = new CollectingSubscriber(client, {});
      expect(await history.done).to.equal(null);
      expect(sequences(history.events)).to.deep.equal(range(1, 99));
      expect(Number((await client.getStatus()).journalDamagedRecords)).to.equal(1);
    } finally {
      client.close();
      await restarted.stop(1000);
    }
  });
});
