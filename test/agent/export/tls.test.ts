// The exporter over mutual TLS (real TLS on loopback, openssl-made certificates): a refused
// certificate is visible in the agent's state and log, and rotated client files are presented on the
// next connection without restarting the agent.
import { join } from 'node:path';
import { expect } from 'chai';
import { pino } from 'pino';
import type { Collector, CollectorTls } from '../../../src/collector/collector.js';
import { ObserverClient } from '../../../src/common/grpc/clients.js';
import { staticClientTransport, WatchedTlsFiles, type TlsFiles } from '../../../src/common/grpc/tls.js';
import { CollectingSubscriber, echoEvent, eventually, range, sequences, silentLog, startCollector, startExporter } from '../../collector/harness.js';
import { TestPki } from '../../collector/test-pki.js';

describe('exporter over mutual TLS', function () {
  this.timeout(60_000);
  let pki: TestPki;
  const collectors: Collector[] = [];
  const watched: WatchedTlsFiles[] = [];

  beforeEach(() => {
    pki = new TestPki();
  });

  afterEach(async () => {
    for (const w of watched.splice(0)) w.close();
    for (const c of collectors.splice(0)) await c.stop(1000);
    pki.cleanup();
  });

  it('a refused certificate: not connected, the reason in its state and a warning in its log', async () => {
    const ca = pki.ca('ca');
    const server = pki.issue(ca, 'collector', 'icmpwatch-collector', 'server');
    const notAgent = pki.issue(ca, 'observer', 'icmpwatch-observer', 'client');
    const collector = await startCollector({ ingestListen: '127.0.0.1:0', tls: { certFile: server.cert, keyFile: server.key, agentCaFile: ca.cert } });
    collectors.push(collector);
    const files = await WatchedTlsFiles.open({ caFile: ca.cert, certFile: notAgent.cert, keyFile: notAgent.key }, silentLog);
    watched.push(files);
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
    const exporter = startExporter(collector.ingestAddress, { transport: { credentials: files.channelCredentials(), serverName: null }, log });
    try {
      exporter.publish(echoEvent(1));
      await eventually(() => lines.some((l) => l.msg === 'collector stream down'));
      expect(exporter.state()).to.include({ connected: false, bufferedEvents: 1 });
      expect(exporter.state().lastError).to.match(/^7 client certificate CN="icmpwatch-observer" is not an agent's/);
      expect(lines.find((l) => l.msg === 'collector stream down')).to.include({ level: 40 });
    } finally {
      await exporter.close(100);
    }
  });

  it('rotated client files (new CA, new agent certificate) are used when it reconnects, without a restart', async () => {
    const oldCa = pki.ca('old-ca');
    const newCa = pki.ca('new-ca');
    const collectorTls = (ca: typeof oldCa, name: string): CollectorTls => {
      const server = pki.issue(ca, name, 'icmpwatch-collector', 'server');
      return { certFile: server.cert, keyFile: server.key, agentCaFile: ca.cert };
    };
    // The agent's mounted Secret.
    const mounted: TlsFiles = { caFile: join(pki.dir, 'ca.crt'), certFile: join(pki.dir, 'tls.crt'), keyFile: join(pki.dir, 'tls.key') };
    const mount = (ca: typeof oldCa, name: string) => {
      const agent = pki.issue(ca, name, 'icmpwatch-agent', 'client');
      TestPki.replace(ca.cert, mounted.caFile!);
      TestPki.replace(agent.cert, mounted.certFile!);
      TestPki.replace(agent.key, mounted.keyFile!);
    };
    mount(oldCa, 'old-agent');
    const files = await WatchedTlsFiles.open(mounted, silentLog, 100);
    watched.push(files);

    const first = await startCollector({ ingestListen: '127.0.0.1:0', tls: collectorTls(oldCa, 'old-collector') });
    collectors.push(first);
    const exporter = startExporter(first.ingestAddress, { transport: { credentials: files.channelCredentials(), serverName: null } });
    try {
      for (const seq of range(1, 10)) exporter.publish(echoEvent(seq));
      await eventually(() => exporter.state().connected && exporter.state().bufferedEvents === 0);

      // The whole PKI is replaced; then the collector moves to the new one (same address).
      mount(newCa, 'new-agent');
      await new Promise((r) => setTimeout(r, 500));
      await first.stop(1000);
      const second = await startCollector({ listen: '127.0.0.1:0', ingestListen: first.ingestAddress, tls: collectorTls(newCa, 'new-collector') });
      collectors.push(second);
      for (const seq of range(11, 20)) exporter.publish(echoEvent(seq));
      await eventually(() => exporter.state().connected && exporter.state().bufferedEvents === 0, 15_000);
      const observer = new ObserverClient(second.address, {}, staticClientTransport(newCa.cert, null));
      const subscriber = new CollectingSubscriber(observer, { last: 100 });
      await subscriber.done;
      observer.close();
      expect(sequences(subscriber.events)).to.deep.equal(range(11, 20));
    } finally {
      await exporter.close(1000);
    }
  });
});
