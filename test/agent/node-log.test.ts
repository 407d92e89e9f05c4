import { Writable } from 'node:stream';
import { expect } from 'chai';
import { MAX_UNWRITTEN_BYTES, NodeLog } from '../../src/agent/node-log.js';
import { icmpwatch } from '../../src/common/proto.js';

const v1 = icmpwatch.v1;

function echo(seq: number): icmpwatch.v1.IEvent {
  return {
    time: { seconds: 1_800_000_000, nanos: seq },
    node: 'node-a',
    family: v1.Family.FAMILY_IPV4,
    source: { ip: '10.0.0.1', namespace: 'shop', pod: 'cart-1' },
    destination: { ip: '10.0.0.2', namespace: 'shop', pod: 'db-0' },
    icmp: { type: 8, code: 0, id: 7, seq },
  };
}

/** stdout whose reader has stopped reading until release(): Node queues the writes in memory. */
function stalledPipe(): { out: Writable; received: () => string[]; retainedBytes: () => number; release: () => void } {
  const chunks: Buffer[] = [];
  let flowing = false;
  let waiting: (() => void) | null = null;
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      if (flowing) cb();
      else waiting = cb;
    },
  });
  return {
    out,
    received: () => Buffer.concat(chunks).toString('utf8').split('\n').filter((l) => l !== ''),
    // The memory the queued chunks keep alive: their backing stores, each counted once.
    retainedBytes: () => [...new Set(chunks.map((c) => c.buffer))].reduce((sum, b) => sum + b.byteLength, 0),
    release: () => {
      flowing = true;
      waiting?.();
    },
  };
}

describe('agent node log (stdout)', function () {
  for (const format of ['json', 'text'] as const) {
    it(`${format}: holds at most ${MAX_UNWRITTEN_BYTES / 2 ** 20} MiB unwritten when stdout's reader falls behind, counts the lines it drops and says so once it can write`, async function () {
      const pipe = stalledPipe();
      const log = new NodeLog(format, pipe.out);
      let written = 0;
      let peakUnwritten = 0;
      // Well past the bound: about 3x its size in lines.
      while (written < 200_000) {
        log.event(echo(++written));
        if (written % 512 === 0) peakUnwritten = Math.max(peakUnwritten, pipe.out.writableLength);
      }
      log.flush();
      expect(log.dropped, 'lines dropped').to.be.greaterThan(0);
      expect(peakUnwritten, 'unwritten bytes stay bounded').to.be.at.most(MAX_UNWRITTEN_BYTES);
      const dropped = log.dropped;

      pipe.release();
      await new Promise((r) => setImmediate(r));
      log.event(echo(++written));
      log.flush();
      const lines = pipe.received();
      // One notice, for all the lines dropped, before the first line written after them.
      const notices = lines.filter((l) => (format === 'json' ? l.includes('"notice"') : l.startsWith('LOST ')));
      expect(notices).to.have.length(1);
      if (format === 'json') expect(JSON.parse(notices[0]!)).to.deep.equal({ notice: 'lost', logLines: dropped, reason: 'stdout-backlog' });
      else expect(notices[0]).to.equal(`LOST logLines=${dropped} reason=stdout-backlog`);
      expect(lines.indexOf(notices[0]!)).to.be.lessThan(lines.length - 1);
      // Every line accounted for: written = printed + dropped (+ the one notice).
      expect(lines.length - 1 + dropped).to.equal(written);
      expect(lines.at(-1)).to.include(format === 'json' ? `"seq":${written}` : `seq=${written}`);
      expect(log.dropped, 'the count stays for /metrics').to.equal(dropped);
    });
  }

  it('a line per flush (a quiet node) keeps no more memory queued than the bound', function () {
    const pipe = stalledPipe();
    const log = new NodeLog('json', pipe.out);
    for (let seq = 1; seq <= 100_000; seq++) {
      log.event(echo(seq));
      log.flush();
    }
    expect(log.dropped, 'lines dropped').to.be.greaterThan(0);
    expect(pipe.retainedBytes()).to.be.at.most(MAX_UNWRITTEN_BYTES + 2 ** 20);
  });

  it('writes every line when stdout keeps up, with no notice', function () {
    const lines: string[] = [];
    const out = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
        cb();
      },
    });
    const log = new NodeLog('json', out);
    for (let seq = 1; seq <= 5000; seq++) log.event(echo(seq));
    log.flush();
    expect(lines.length).to.equal(5000);
    expect(log.dropped).to.equal(0);
    expect(lines.every((l) => !l.includes('"notice"'))).to.equal(true);
  });

  it('reuses a working buffer only once its write is done: every line arrives whole, in order', async function () {
    const lines: string[] = [];
    let handedOver = 0;
    // A reader that takes its time: the bytes are read when the write completes, not before.
    const out = new Writable({
      write(chunk: Buffer, _enc, cb) {
        if (chunk.byteOffset === 0 && chunk.buffer.byteLength > chunk.length) handedOver++;
        setTimeout(() => {
          lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
          cb();
        }, 1);
      },
    });
    const log = new NodeLog('json', out);
    for (let seq = 1; seq <= 20_000; seq++) {
      log.event(echo(seq));
      if (seq % 3000 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    log.flush();
    await new Promise((r) => setTimeout(r, 200));
    expect(handedOver, 'buffers handed to the writes').to.be.greaterThan(10);
    expect(lines.map((l) => (JSON.parse(l) as { icmp: { seq: number } }).icmp.seq)).to.deep.equal(Array.from({ length: 20_000 }, (_, i) => i + 1));
  });
});
