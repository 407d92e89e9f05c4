// Transport security over real TLS on loopback, with certificates made by openssl for each run:
// which clients may publish (Ingest needs a client certificate from the agent CA with CN
// icmpwatch-agent), TLS for subscribers, the listener layout, and certificate rotation on the
// collector without a restart.
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { pino, type Logger } from 'pino';
import type { Collector, CollectorTls } from '../../src/collector/collector.js';
import { IngestClient, ObserverClient } from '../../src/common/grpc/clients.js';
import { plaintextTransport, staticClientTransport, WatchedTlsFiles, type ClientTransport } from '../../src/common/grpc/tls.js';
import { CollectingSubscriber, echoEvent, eventually, range, sequences, silentLog, startCollector, startExporter } from './harness.js';
import { TestPki, type Ca, type KeyPair } from './test-pki.js';

/** A logger whose JSON lines land in `lines`. */
function capturingLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { log: pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) }), lines };
}

/** Opens an Ingest stream, sends a hello and resolves with how the collector ended it (null: it acknowledged). */
function tryIngest(address: string, transport: ClientTransport): Promise<ServiceError | null> {
  const client = new IngestClient(address, { minMs: 50, maxMs: 200 }, transport);
  const stream = client.stream();
  return new Promise<ServiceError | null>((resolve) => {
    stream.on('data', () => resolve(null));
    stream.on('error', (err: ServiceError) => resolve(err));
    stream.write({ hello: { node: 'node-x', agentInstance: 'probe-instance' } });
  }).finally(() => {
    stream.cancel();
    client.close();
  });
}

/** GetStatus over a fresh connection; resolves with the error, or null on success. */
async function tryStatus(address: string, transport: ClientTransport): Promise<ServiceError | null> {
  const client = new ObserverClient(address, { 'grpc.use_local_subchannel_pool': 1 }, transport);
  try {
    await client.getStatus({ deadline: Date.now() + 3000 });
    return null;
  } catch (err) {
    return err as ServiceError;
  } finally {
    client.close();
  }
}

const refusedCount = async (collector: Collector, reason: string) =>
  (await collector.metrics.ingestRefused.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;

describe('collector TLS: agents with client certificates, subscribers over TLS', function () {
  this.timeout(30_000);
  let pki: TestPki;
  let ca: Ca;
  let server: KeyPair;
  let agent: KeyPair;
  let notAgent: KeyPair;
  let rogueAgent: KeyPair;
  let collector: Collector;
  let logged: ReturnType<typeof capturingLog>;
  const opened: WatchedTlsFiles[] = [];
  const agentTransport = async (pair: KeyPair, caFile = ca.cert): Promise<ClientTransport> => {
    const files = await WatchedTlsFiles.open({ caFile, certFile: pair.cert, keyFile: pair.key }, silentLog);
    opened.push(files);
    return { credentials: files.channelCredentials(), serverName: null };
  };

  before(async () => {
    pki = new TestPki();
    ca = pki.ca('icmpwatch-ca');
    server = pki.issue(ca, 'collector', 'icmpwatch-collector', 'server');
    agent = pki.issue(ca, 'agent', 'icmpwatch-agent', 'client');
    notAgent = pki.issue(ca, 'observer', 'icmpwatch-observer', 'client');
    rogueAgent = pki.issue(pki.ca('rogue-ca'), 'rogue-agent', 'icmpwatch-agent', 'client');
    logged = capturingLog();
    collector = await startCollector({
      listen: '127.0.0.1:0',
      ingestListen: '127.0.0.1:0',
      tls: { certFile: server.cert, keyFile: server.key, agentCaFile: ca.cert },
      log: logged.log,
    });
  });

  after(async () => {
    for (const f of opened) f.close();
    await collector?.stop();
    pki?.cleanup();
  });

  it('refuses an Ingest client without a certificate: UNAUTHENTICATED, logged and counted', async () => {
    const err = await tryIngest(collector.ingestAddress, staticClientTransport(ca.cert, null));
    expect(err?.code, err?.message).to.equal(status.UNAUTHENTICATED);
    expect(err?.details).to.match(/client certificate signed by the collector's agent CA/);
    expect(await refusedCount(collector, 'no_certificate')).to.equal(1);
    const line = logged.lines.find((l) => l.msg === 'agent refused: Ingest needs an agent client certificate');
    expect(line, JSON.stringify(logged.lines)).to.include({ reason: 'no_certificate', level: 40 });
    expect(line?.peer).to.match(/^127\.0\.0\.1:\d+$/);
  });

  it('refuses an agent certificate from another CA: UNAUTHENTICATED', async () => {
    const before = await refusedCount(collector, 'no_certificate');
    const err = await tryIngest(collector.ingestAddress, await agentTransport(rogueAgent));
    expect(err?.code, err?.message).to.equal(status.UNAUTHENTICATED);
    expect(await refusedCount(collector, 'no_certificate')).to.equal(before + 1);
  });

  it("refuses a certificate from the agent CA that is not an agent's: PERMISSION_DENIED naming its CN", async () => {
    const err = await tryIngest(collector.ingestAddress, await agentTransport(notAgent));
    expect(err?.code, err?.message).to.equal(status.PERMISSION_DENIED);
    expect(err?.details).to.equal('client certificate CN="icmpwatch-observer" is not an agent\'s (CN=icmpwatch-agent)');
    expect(await refusedCount(collector, 'not_agent')).to.equal(1);
  });

  it('refuses plaintext on both listeners', async () => {
    expect((await tryStatus(collector.address, plaintextTransport()))?.code).to.equal(status.UNAVAILABLE);
    expect((await tryIngest(collector.ingestAddress, plaintextTransport()))?.code).to.equal(status.UNAVAILABLE);
  });

  it('serves Ingest only on the ingest listener and Observer only on the subscribers\' one', async () => {
    expect((await tryIngest(collector.address, await agentTransport(agent)))?.code).to.equal(status.UNIMPLEMENTED);
    expect((await tryStatus(collector.ingestAddress, await agentTransport(agent)))?.code).to.equal(status.UNIMPLEMENTED);
  });

  it('accepts the agent certificate: its events reach a subscriber over TLS (without a client certificate)', async () => {
    const observer = new ObserverClient(collector.address, {}, staticClientTransport(ca.cert, null));
    const subscriber = new CollectingSubscriber(observer, { follow: true });
    const exporter = startExporter(collector.ingestAddress, { transport: await agentTransport(agent), node: 'node-tls' });
    try {
      for (const seq of range(1, 50)) exporter.publish(echoEvent(seq, { node: 'node-tls' }));
      await subscriber.until((s) => s.events.length >= 50);
      expect(sequences(subscriber.events)).to.deep.equal(range(1, 50));
      expect(exporter.state()).to.include({ connected: true, lastError: null });
    } finally {
      subscriber.stream.cancel();
      observer.close();
      await exporter.close();
    }
  });

  it('a subscriber names the collector by --tls-server-name when dialing another address', async () => {
    expect(await tryStatus(collector.address, staticClientTransport(ca.cert, 'icmpwatch-collector.test.svc'))).to.equal(null);
    const wrongName = await tryStatus(collector.address, staticClientTransport(ca.cert, 'elsewhere.example'));
    expect(wrongName?.code).to.equal(status.UNAVAILABLE);
  });
});

describe('collector TLS on one listener (no --ingest-listen)', function () {
  this.timeout(30_000);
  let pki: TestPki;
  let ca: Ca;
  let collector: Collector;
  let agentFiles: WatchedTlsFiles;

  before(async () => {
    pki = new TestPki();
    ca = pki.ca('one-port-ca');
    const server = pki.issue(ca, 'collector', 'icmpwatch-collector', 'server');
    const agent = pki.issue(ca, 'agent', 'icmpwatch-agent', 'client');
    collector = await startCollector({ tls: { certFile: server.cert, keyFile: server.key, agentCaFile: ca.cert } });
    agentFiles = await WatchedTlsFiles.open({ caFile: ca.cert, certFile: agent.cert, keyFile: agent.key }, silentLog);
  });

  after(async () => {
    agentFiles?.close();
    await collector?.stop();
    pki?.cleanup();
  });

  it('serves agents (with their certificate) and subscribers (without one) on the same port; anonymous Ingest is refused', async () => {
    expect(collector.ingestAddress).to.equal(collector.address);
    expect(await tryIngest(collector.address, { credentials: agentFiles.channelCredentials(), serverName: null })).to.equal(null);
    expect(await tryStatus(collector.address, staticClientTransport(ca.cert, null))).to.equal(null);
    expect((await tryIngest(collector.address, staticClientTransport(ca.cert, null)))?.code).to.equal(status.UNAUTHENTICATED);
    expect((await tryStatus(collector.address, plaintextTransport()))?.code).to.equal(status.UNAVAILABLE);
  });
});

describe('collector TLS: certificate rotation without a restart', function () {
  this.timeout(60_000);
  let pki: TestPki;
  let collector: Collector;
  let logged: ReturnType<typeof capturingLog>;
  const opened: WatchedTlsFiles[] = [];
  const mTls = async (caFile: string, pair: KeyPair): Promise<ClientTransport> => {
    const files = await WatchedTlsFiles.open({ caFile, certFile: pair.cert, keyFile: pair.key }, silentLog, 100);
    opened.push(files);
    return { credentials: files.channelCredentials(), serverName: null };
  };

  before(() => {
    pki = new TestPki();
  });

  after(async () => {
    for (const f of opened) f.close();
    await collector?.stop();
    pki?.cleanup();
  });

  it('new connections use the replaced files (server certificate and agent CA); an established stream goes on', async () => {
    const oldCa = pki.ca('old-ca');
    const newCa = pki.ca('new-ca');
    const oldServer = pki.issue(oldCa, 'old-collector', 'icmpwatch-collector', 'server');
    const newServer = pki.issue(newCa, 'new-collector', 'icmpwatch-collector', 'server');
    const oldAgent = pki.issue(oldCa, 'old-agent', 'icmpwatch-agent', 'client');
    const newAgent = pki.issue(newCa, 'new-agent', 'icmpwatch-agent', 'client');
    // The files the collector reads, as a mounted Secret.
    const mounted: CollectorTls = { certFile: join(pki.dir, 'tls.crt'), keyFile: join(pki.dir, 'tls.key'), agentCaFile: join(pki.dir, 'ca.crt'), refreshMs: 100 };
    TestPki.replace(oldServer.cert, mounted.certFile);
    TestPki.replace(oldServer.key, mounted.keyFile);
    TestPki.replace(oldCa.cert, mounted.agentCaFile);
    logged = capturingLog();
    collector = await startCollector({ ingestListen: '127.0.0.1:0', tls: mounted, log: logged.log });

    // Before: the old CA's certificates work.
    expect(await tryStatus(collector.address, staticClientTransport(oldCa.cert, null))).to.equal(null);
    expect(await tryIngest(collector.ingestAddress, await mTls(oldCa.cert, oldAgent))).to.equal(null);
    const observer = new ObserverClient(collector.address, {}, staticClientTransport(oldCa.cert, null));
    const established = new CollectingSubscriber(observer, { follow: true });
    const exporter = startExporter(collector.ingestAddress, { transport: await mTls(oldCa.cert, oldAgent) });
    try {
      exporter.publish(echoEvent(1));
      await established.until((s) => s.events.length === 1);

      TestPki.replace(newServer.cert, mounted.certFile);
      TestPki.replace(newServer.key, mounted.keyFile);
      TestPki.replace(newCa.cert, mounted.agentCaFile);
      await eventually(async () => (await tryStatus(collector.address, staticClientTransport(newCa.cert, null))) === null, 10_000);

      // New connections: the new server certificate, and only agents of the new CA.
      expect((await tryStatus(collector.address, staticClientTransport(oldCa.cert, null)))?.code).to.equal(status.UNAVAILABLE);
      expect(await tryIngest(collector.ingestAddress, await mTls(newCa.cert, newAgent))).to.equal(null);
      expect((await tryIngest(collector.ingestAddress, await mTls(newCa.cert, oldAgent)))?.code).to.equal(status.UNAUTHENTICATED);
      expect(logged.lines.some((l) => l.msg === 'TLS files changed: new connections use them')).to.equal(true);

      // Established connections keep the certificates they were opened with: both streams go on.
      exporter.publish(echoEvent(2));
      await established.until((s) => s.events.length === 2);
      expect(sequences(established.events)).to.deep.equal([1, 2]);
    } finally {
      established.stream.cancel();
      observer.close();
      await exporter.close();
    }
  });
});
