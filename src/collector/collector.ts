// Composes the collector: store (journal + history), fan-out, ingest and observer services on one
// gRPC server with health and reflection (or Ingest on a listener of its own), TLS from watched
// certificate files, and the ops server. Stop order on SIGTERM: not ready and
// NOT_SERVING, refuse new Subscribe and Ingest streams (UNAVAILABLE; health checks still answer),
// end subscriber streams after their queues and agent streams after their acknowledgements, shut
// the server down, close the journal.
import type http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { ingestService, observerService } from '../common/grpc/services.js';
import { WatchedTlsFiles } from '../common/grpc/tls.js';
import type { Logger } from '../common/log.js';
import { startOpsServer } from '../common/ops-server.js';
import { AccessReviewer, type AccessReviewerOptions } from './access-review.js';
import { Admission, type AdmissionLimits } from './admission.js';
import { AgentAcks } from './agent-acks.js';
import { admitAgent, AGENT_COMMON_NAME } from './agent-identity.js';
import { Hub } from './hub.js';
import { IngestService } from './ingest.js';
import { createCollectorMetrics, type CollectorMetrics } from './metrics.js';
import { NodeRegistry } from './nodes.js';
import { ObserverService } from './observer.js';
import { RateWindow } from './rate.js';
import { addReflection } from './reflection.js';
import { Store } from './store.js';

/** The collector's certificate (every listener) and the CA of the agents' client certificates. */
export interface CollectorTls {
  certFile: string;
  keyFile: string;
  agentCaFile: string;
  /** How often the files are re-read (rotation); default TLS_REFRESH_MS. */
  refreshMs?: number;
}

export interface CollectorOptions {
  /** Subscribers' address, and agents' too without `ingestListen`. */
  listen: string;
  /**
   * Agents' address. A listener of its own asks every client for a certificate and serves only
   * Ingest, so the subscribers' port never asks for one and can be exposed on its own.
   */
  ingestListen: string | null;
  /** Null: plaintext on every listener, anyone may publish (development; logged loudly). */
  tls: CollectorTls | null;
  metricsAddr: string | null;
  dataDir: string | null;
  historyEvents: number;
  historyAgeMs: number;
  historyBytes: number;
  subscriberQueue: number;
  limits: AdmissionLimits;
  /** Subscribers' access by Kubernetes RBAC; null lets every client read everything (development). */
  access: AccessReviewerOptions | null;
  log: Logger;
}

const SERVICES = ['', 'icmpwatch.v1.Observer', 'icmpwatch.v1.Ingest'];

export class Collector {
  private stopping: Promise<void> | null = null;

  private constructor(
    /** host:port the gRPC server is bound to (the real port when asked for port 0). */
    readonly address: string,
    /** host:port agents publish to: `address` unless Ingest has a listener of its own. */
    readonly ingestAddress: string,
    /** host:port of /metrics, /healthz and /readyz, when served. */
    readonly opsAddress: string | null,
    readonly metrics: CollectorMetrics,
    private readonly servers: grpc.Server[],
    private readonly health: HealthImplementation,
    private readonly ops: http.Server | null,
    private readonly ingest: IngestService,
    private readonly observer: ObserverService,
    private readonly store: Store,
    private readonly housekeeping: NodeJS.Timeout,
    private readonly log: Logger,
    private readonly tls: WatchedTlsFiles | null,
  ) {}

  static async start(options: CollectorOptions): Promise<Collector> {
    const { log } = options;
    const metrics = createCollectorMetrics();
    const hub = new Hub();
    const rate = new RateWindow();
    const acks = new AgentAcks();
    const nodes = new NodeRegistry((node, reason) => {
      acks.forget(node);
      metrics.nodesForgotten.inc({ reason });
      // Only unavailable nodes are forgotten.
      metrics.nodes.dec({ state: 'NODE_STATE_UNAVAILABLE' });
    });
    const { store, recovery } = await Store.open(
      { dataDir: options.dataDir, historyEvents: options.historyEvents, historyAgeMs: options.historyAgeMs, historyBytes: options.historyBytes, log },
      hub,
      (record, timeMs) => acks.recover(record, timeMs),
    );
    const ingest = new IngestService(store, acks, nodes, metrics, rate, log);
    if (recovery) {
      metrics.journalDamaged.inc(recovery.damagedRecords);
      log.info({ dataDir: options.dataDir, ...recovery, history: store.history.size }, 'journal recovered');
    }
    metrics.historyEvents.set(store.history.size);
    metrics.historyBytes.set(store.history.bytes);
    const observer = new ObserverService(
      store,
      hub,
      nodes,
      metrics,
      rate,
      { subscriberQueue: options.subscriberQueue, journalDamaged: () => recovery?.damagedRecords ?? 0, admission: new Admission(options.limits), access: options.access && new AccessReviewer(options.access) },
      log,
    );

    // Checked before binding, re-read while running: rotated certificates need no restart.
    const tls = options.tls && (await WatchedTlsFiles.open({ certFile: options.tls.certFile, keyFile: options.tls.keyFile, caFile: options.tls.agentCaFile }, log, options.tls.refreshMs));
    const serverOptions: grpc.ServerOptions = { 'grpc.keepalive_time_ms': 30_000, 'grpc.keepalive_timeout_ms': 10_000 };
    const server = new grpc.Server(serverOptions);
    const ingestServer = options.ingestListen ? new grpc.Server(serverOptions) : server;
    const ingestImpl: grpc.UntypedServiceImplementation = {
      stream: (call: Parameters<IngestService['handle']>[0]) => {
        if (!tls || admitAgent(call, metrics, log)) ingest.handle(call);
      },
    };
    ingestServer.addService(ingestService, ingestImpl);
    server.addService(observerService, {
      subscribe: (call: Parameters<ObserverService['subscribe']>[0]) => observer.subscribe(call),
      subscribeBatches: (call: Parameters<ObserverService['subscribeBatches']>[0]) => observer.subscribeBatches(call),
      getStatus: observer.getStatus.bind(observer),
      listNodes: observer.listNodes.bind(observer),
    });
    const health = new HealthImplementation(Object.fromEntries(SERVICES.map((s) => [s, 'SERVING' as const])));
    health.addToServer(server);
    addReflection(server);

    /** Binds `listen`, resolving to host:port with the real port. Agents' certificates are asked for where Ingest is served. */
    const bind = (s: grpc.Server, listen: string, servesIngest: boolean) =>
      new Promise<string>((resolve, reject) =>
        s.bindAsync(listen, tls ? tls.serverCredentials(servesIngest) : grpc.ServerCredentials.createInsecure(), (err, port) =>
          err ? reject(err) : resolve(`${listen.slice(0, listen.lastIndexOf(':'))}:${port}`),
        ),
      );
    let address: string;
    let ingestAddress: string;
    try {
      address = await bind(server, options.listen, !options.ingestListen);
      ingestAddress = options.ingestListen ? await bind(ingestServer, options.ingestListen, true) : address;
    } catch (err) {
      // Nothing may keep the process alive after a failed start (the file watcher's timer).
      for (const s of new Set([server, ingestServer])) s.forceShutdown();
      tls?.close();
      throw err;
    }
    log.info({ address, ingestAddress, tls: tls !== null, dataDir: options.dataDir, historyEvents: options.historyEvents }, 'collector listening');
    if (tls) {
      log.info({ ...tls.files, agentIdentity: `CN=${AGENT_COMMON_NAME}` }, 'TLS on every listener; agents publish only with a client certificate from the agent CA');
    } else {
      log.warn('PLAINTEXT: NO TLS (--insecure-plaintext): any client that reaches the collector can publish events as any node, and every event crosses the network readable (development only)');
    }
    if (options.access) {
      log.info({ apiServer: options.access.kubeConfig.getCurrentCluster()?.server, cacheTtlMs: options.access.cacheTtlMs }, 'subscribers authorized by Kubernetes RBAC');
    } else {
      log.warn('AUTHORIZATION IS OFF: any client that reaches this port reads every event of the cluster (--authorization=off; development only)');
    }

    let collector: Collector | null = null;
    const ops = options.metricsAddr
      ? await startOpsServer(options.metricsAddr, metrics.registry, { notReadyReason: () => (collector?.stopping ? 'shutting down' : null) }, log)
      : null;
    const opsBound = ops?.address();
    const opsAddress = opsBound && typeof opsBound === 'object' ? `${opsBound.address}:${opsBound.port}` : null;
    // Age also expires history and forgets long-gone nodes while no events arrive.
    const housekeeping = setInterval(() => {
      store.history.expire();
      nodes.expire();
      metrics.historyEvents.set(store.history.size);
      metrics.historyBytes.set(store.history.bytes);
    }, 5000);
    housekeeping.unref();
    collector = new Collector(address, ingestAddress, opsAddress, metrics, [...new Set([server, ingestServer])], health, ops, ingest, observer, store, housekeeping, log, tls);
    return collector;
  }

  /** Graceful stop; calls still open after `deadlineMs` are cut. */
  stop(deadlineMs = 5000): Promise<void> {
    this.stopping ??= this.shutdown(deadlineMs);
    return this.stopping;
  }

  private async shutdown(deadlineMs: number): Promise<void> {
    this.log.info('collector stopping');
    for (const s of SERVICES) this.health.setStatus(s, 'NOT_SERVING');
    const deadline = new Promise<void>((resolve) => setTimeout(resolve, deadlineMs).unref());
    await Promise.race([Promise.all([this.observer.stop(), this.ingest.stop()]), deadline]);
    await Promise.race([Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.tryShutdown(() => resolve())))), deadline]);
    for (const s of this.servers) s.forceShutdown();
    this.tls?.close();
    clearInterval(this.housekeeping);
    await this.store.close();
    await new Promise<void>((resolve) => (this.ops ? this.ops.close(() => resolve()) : resolve()));
    this.log.info('collector stopped');
  }
}
