import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import type { CollectorExporter } from '../../src/agent/export/exporter.js';
import type { Collector } from '../../src/collector/collector.js';
import { observerService } from '../../src/common/grpc/services.js';
import { ObserverClient } from '../../src/common/grpc/clients.js';
import { echoEvent, eventually, freePort, range, startCollector, startExporter } from '../collector/harness.js';
import { runCli, spawnCollector } from './cli-runner.js';

describe('cli: observe and status', function () {
  this.timeout(60_000);
  const cleanups: (() => Promise<unknown> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it('after the collector is SIGKILLed and restarted on its data dir mid-stream, --last returns every event once', async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'icmpwatch-crash-'));
    cleanups.push(() => fs.rm(dataDir, { recursive: true, force: true }));
    let collector = await spawnCollector(['--insecure-plaintext', '--listen', '127.0.0.1:0', '--data-dir', dataDir]);
    cleanups.push(() => void collector.child.kill('SIGKILL'));
    const exporter: CollectorExporter = startExporter(collector.address, { batchSize: 50 });
    cleanups.push(() => exporter.close(100));

    const total = 3000;
    for (let seq = 1; seq <= total; seq++) {
      exporter.publish(echoEvent(seq));
      if (seq % 100 === 0) await new Promise((r) => setTimeout(r, 5));
      if (seq === 1500) {
        collector.child.kill('SIGKILL');
        expect(await collector.exited).to.equal(null);
      }
      if (seq === 2200) collector = await spawnCollector(['--insecure-plaintext', '--listen', collector.address, '--data-dir', dataDir]);
    }
    await eventually(() => exporter.state().connected && exporter.state().bufferedEvents === 0, 20_000);

    const observed = await runCli(['observe', '--server', collector.address, '--insecure-plaintext', '--last', '100000', '-o', 'json']);
    expect(observed.stderr).to.equal('');
    expect(observed.code).to.equal(0);
    const lines = observed.stdout.trim().split('\n').map((l) => JSON.parse(l) as { sequence?: number; lostEvents?: unknown });
    expect(lines.filter((l) => l.lostEvents)).to.deep.equal([]);
    expect(lines.map((l) => l.sequence)).to.deep.equal(range(1, total));

    const status = await runCli(['status', '--server', collector.address, '--insecure-plaintext']);
    expect(status.code).to.equal(0);
    expect(status.stdout).to.match(/node-a connected hook=tp_btf\(netif_receive_skb\)/);

    // SIGTERM: the collector ends its streams and exits 0.
    collector.child.kill('SIGTERM');
    expect(await collector.exited).to.equal(0);
  });

  describe('against an in-process collector', () => {
    let collector: Collector;
    before(async () => {
      collector = await startCollector();
      const exporter = startExporter(collector.address, { maxBufferedEvents: 10 });
      // Two events dropped before the exporter connects: a LOST notice in the history.
      for (const seq of range(1, 12)) exporter.publish(echoEvent(seq, seq === 12 ? { family: 2, icmp: { type: 1, code: 4 }, source: { ip: 'fd00::1' }, destination: { ip: 'fd00::2' } } : {}));
      await eventually(() => exporter.state().bufferedEvents === 0);
      await exporter.close(100);
    });
    after(async () => collector.stop(1000));

    it('prints text lines, LOST notices apart, and applies filter flags', async () => {
      const all = await runCli(['observe', '--server', collector.address, '--insecure-plaintext', '--last', '3']);
      expect(all.code).to.equal(0);
      const lines = all.stdout.trim().split('\n');
      expect(lines).to.have.length(3);
      expect(lines[0]).to.match(/ node-a echo-request 10\.1\.0\.2 \(demo\/pod-a\) -> 10\.2\.0\.2 \(demo\/pod-b\) id=1234 seq=10 /);
      expect(lines[2]).to.contain(' port-unreachable fd00::1 -> fd00::2');

      const withLoss = await runCli(['observe', '--server', collector.address, '--insecure-plaintext', '--type', 'port-unreachable', '--deny-family', 'ipv4']);
      const out = withLoss.stdout.trim().split('\n');
      expect(out[0]).to.match(/^LOST \S+ node-a 2 events lost in agent-export-buffer between /);
      expect(out.slice(1)).to.have.length(1);
      expect(out[1]).to.contain('port-unreachable');
    });

    it('exits 2 naming the flag for bad arguments', async () => {
      for (const [args, message] of [
        [['--ip', '10.0.0.0/33'], "--ip: invalid CIDR '10.0.0.0/33'"],
        [['--deny-type', 'ping'], "--deny-type: unknown ICMP type 'ping'"],
        [['--family', 'ipv5'], "--family: unknown family 'ipv5'"],
        [['--last', '-1'], '--last: must not be negative'],
        [['--since', 'yesterday'], '--since: expected an RFC 3339 time'],
        [['-o', 'yaml'], '--output:'],
        [['--bogus'], 'unknown flag --bogus'],
        [['--since', '2026-01-02T00:00:00Z', '--until', '2026-01-01T00:00:00Z'], '--since: must not be after until'],
        [['--code', '300'], '--code: Too big'],
        [['--pod', 'shop/web/1'], "--pod: invalid pod 'shop/web/1'"],
      ] as const) {
        const r = await runCli(['observe', '--server', collector.address, '--insecure-plaintext', ...args]);
        expect([r.code, r.stderr]).to.satisfy(([code, err]: [number, string]) => code === 2 && err.includes(message), `${args.join(' ')}: ${r.stderr}`);
      }
      const noServer = await runCli(['observe', '--last', '5']);
      expect([noServer.code, noServer.stderr]).to.satisfy(([code, err]: [number, string]) => code === 2 && err.startsWith('icmpwatch observe: --server:'), noServer.stderr);
      const badStatus = await runCli(['status', '--server', collector.address, '--insecure-plaintext', '--bogus']);
      expect([badStatus.code, badStatus.stderr]).to.deep.equal([2, 'icmpwatch status: unknown flag --bogus\n']);
    });

    it('exits 0 when interrupted while following', async () => {
      const client = new ObserverClient(collector.address);
      const subscribers = async () => (await client.getStatus()).subscribers ?? 0;
      const before = await subscribers();
      const r = await runCli(['observe', '--server', collector.address, '--insecure-plaintext', '--follow'], (child) => {
        void eventually(async () => (await subscribers()) > before, 20_000).then(() => child.kill('SIGINT'));
      });
      client.close();
      expect([r.code, r.stderr]).to.deep.equal([0, '']);
    });
  });

  it('exits 1 with the status when the server cancels the call', async () => {
    const server = new grpc.Server();
    server.addService(observerService, {
      subscribe: () => undefined,
      subscribeBatches: (call: grpc.ServerWritableStream<unknown, unknown>) => call.emit('error', { code: grpc.status.CANCELLED, details: 'cancelled by the server' }),
      getStatus: () => undefined,
      listNodes: () => undefined,
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    cleanups.push(() => server.forceShutdown());
    const r = await runCli(['observe', '--server', `127.0.0.1:${port}`, '--insecure-plaintext', '--follow']);
    expect([r.code, r.stderr]).to.deep.equal([1, 'icmpwatch observe: CANCELLED: cancelled by the server\n']);
  });

  it('exits 1 with the gRPC status when the collector is unreachable', async () => {
    const server = `127.0.0.1:${await freePort()}`;
    const observed = await runCli(['observe', '--server', server, '--insecure-plaintext']);
    expect(observed.code).to.equal(1);
    expect(observed.stderr).to.match(/^icmpwatch observe: UNAVAILABLE: /);
    const status = await runCli(['status', '--server', server, '--insecure-plaintext']);
    expect(status.code).to.equal(1);
    expect(status.stderr).to.match(/^icmpwatch status: UNAVAILABLE: /);
  });
});
