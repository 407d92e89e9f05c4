// Composes the collector: store (journal + history), fan-out, ingest and observer services on one
// gRPC server with health and reflection, and the ops server. Stop order on SIGTERM: not ready and
// NOT_SERVING, refuse new Subscribe and Ingest streams (UNAVAILABLE; health checks still answer),
// end subscriber streams after their queues and agent streams after their acknowledgements, shut
// the server down, close the journal.
import type http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { ingestService, observerService } from '../common/grpc/services.js';
import type { Logger } from '../common/log.js';
import { startOpsServer } from '../common/ops-server.js';
import { AgentAcks } from './agent-acks.js';
import { Hub } from './hub.js';
import { IngestService } from './ingest.js';
import { createCollectorMetrics, type CollectorMetrics } from './metrics.js';
import { NodeRegistry } from './nodes.js';
import { ObserverService } from './observer.js';
import { RateWindow } from './rate.js';
import { addReflection } from './reflection.js';
import { Store } from './store.js';

export interface CollectorOptions {
  listen: string;
  metricsAddr: string | null;
  dataDir: string | null;
  historyEvents: number;
  historyAgeMs: number;
  subscriberQueue: number;
  log: Logger;
}

const SERVICES = ['', 'icmpwatch.v1.Observer', 'icmpwatch.v1.Ingest'];

export class Collector {
  private stopping: Promise<void> | null = null;

  private constructor(
    /** host:port the gRPC server is bound to (the real port when asked for port 0). */
    readonly address: string,
    /** host:port of /metrics, /healthz and /readyz, when served. */
    readonly opsAddress: string | null,
    readonly metrics: CollectorMetrics,
    private readonly server: grpc.Server,
    private readonly health: HealthImplementation,
    private readonly ops: http.Server | null,
    private readonly ingest: IngestService,
    private readonly observer: ObserverService,
    private readonly store: Store,
    private readonly housekeeping: NodeJS.Timeout,
    private readonly log: Logger,
  ) {}

  static async start(options: CollectorOptions): Promise<Collector> {
    const { log } = options;
    const metrics = createCollectorMetrics();
    const hub = new Hub();
    const nodes = new NodeRegistry();
    const rate = new RateWindow();
    const acks = new AgentAcks();
    const { store, recovery } = await Store.open(
      { dataDir: options.dataDir, historyEvents: options.historyEvents, historyAgeMs: options.historyAgeMs, log },
      hub,
      (record, timeMs) => acks.recover(record, timeMs),
    );
    const ingest = new IngestService(store, acks, nodes, metrics, rate, log);
    if (recovery) {
      metrics.journalDamaged.inc(recovery.damagedRecords);
      log.info({ dataDir: options.dataDir, ...recovery, history: store.history.size }, 'journal recovered');
    }
    metrics.historyEvents.set(store.history.size);
    const observer = new ObserverService(
      store,
      hub,
      nodes,
      metrics,
      rate,
      { subscriberQueue: options.subscriberQueue, journalDamaged: () => recovery?.damagedRecords ?? 0 },
      log,
    );

    const server = new grpc.Server({ 'grpc.keepalive_time_ms': 30_000, 'grpc.keepalive_timeout_ms': 10_000 });
    const ingestImpl: grpc.UntypedServiceImplementation = { stream: (call: Parameters<IngestService['handle']>[0]) => ingest.handle(call) };
    server.addService(ingestService, ingestImpl);
    server.addService(observerService, {
      subscribe: (call: Parameters<ObserverService['subscribe']>[0]) => observer.subscribe(call),
      getStatus: observer.getStatus.bind(observer),
      listNodes: observer.listNodes.bind(observer),
    });
    const health = new HealthImplementation(Object.fromEntries(SERVICES.map((s) => [s, 'SERVING' as const])));
    health.addToServer(server);
    addReflection(server);

    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(options.listen, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const host = options.listen.slice(0, options.listen.lastIndexOf(':'));
    const address = `${host}:${port}`;
    log.info({ address, dataDir: options.dataDir, historyEvents: options.historyEvents }, 'collector listening');

    let collector: Collector | null = null;
    const ops = options.metricsAddr
      ? await startOpsServer(options.metricsAddr, metrics.registry, { notReadyReason: () => (collector?.stopping ? 'shutting down' : null) }, log)
      : null;
    const opsBound = ops?.address();
    const opsAddress = opsBound && typeof opsBound === 'object' ? `${opsBound.address}:${opsBound.port}` : null;
    // Age also expires history while no events arrive.
    const housekeeping = setInterval(() => {
      store.history.expire();
      metrics.historyEvents.set(store.history.size);
    }, 5000);
    housekeeping.unref();
    collector = new Collector(address, opsAddress, metrics, server, health, ops, ingest, observer, store, housekeeping, log);
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
    await Promise.race([new Promise<void>((resolve) => this.server.tryShutdown(() => resolve())), deadline]);
    this.server.forceShutdown();
    clearInterval(this.housekeeping);
    await this.store.close();
    await new Promise<void>((resolve) => (this.ops ? this.ops.close(() => resolve()) : resolve()));
    this.log.info('collector stopped');
  }
}
