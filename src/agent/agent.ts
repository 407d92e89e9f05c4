import { readdir, readFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { Writable } from 'node:stream';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { ClientTransport } from '../common/grpc/tls.js';
import type { Logger } from '../common/log.js';
import { startOpsServer } from '../common/ops-server.js';
import type { icmpwatch } from '../common/proto.js';
import { EndpointsFileResolver, NoResolver } from './enrich/endpoints-file.js';
import type { EndpointResolver } from './enrich/resolver.js';
import { EventBuilder, WallClock } from './event-builder.js';
import type { AgentCounters } from './export/exporter.js';
import { NetnsAddressBook } from './netns-addresses.js';
import { NodeLog, type LogFormat } from './node-log.js';
import { COUNTER_FAMILIES, COUNTERS, HOOK_IDS, type CounterName } from './probe/event-layout.js';
import { Probe, type HookChoice } from './probe/probe.js';
import { SightingMerger } from './sightings.js';

export interface AgentConfig {
  node: string;
  hook: HookChoice;
  objectPath: string;
  btfPath: string | null;
  ringBytes: number;
  eventsPerSecond: number;
  logFormat: LogFormat;
  metricsAddr: string | null;
  endpointsFile: string | null;
  /** Kubernetes API access from this file; without it the pod's service account is used when there is one. */
  kubeconfig: string | null;
  holdMs: number;
  /** Collector HOST:PORT to stream events to; null: node log only. */
  collector: string | null;
  /** How to reach it; absent: plaintext (the CLI asks for --insecure-plaintext to say so). */
  collectorTransport?: ClientTransport;
  /** Bound on events kept unacknowledged while the collector is away. */
  exportBufferEvents: number;
  exportBufferBytes: number;
}

/** Where events go besides the node log (the collector exporter). */
export interface EventSink {
  publish(ev: icmpwatch.v1.IEvent): void;
  close(): Promise<void>;
}

/** The family label of icmpwatch_agent_events_total by the Family enum's value (as events say it). */
const REPORTED_FAMILIES = ['unspecified', 'ipv4', 'ipv6'] as const;

const KERNEL_COUNTER_HELP: Record<CounterName, string> = {
  events: 'Records (sightings) the BPF program submitted to the ring buffer',
  ringFull: 'Records (sightings) lost because the ring buffer was full',
  suppressed: 'Packets over the flood limit, counted in-kernel and reported as summaries',
  suppressedSightings: 'Sightings of packets over the flood limit (a packet seen in the node and a pod counts twice)',
  aggFull: 'Packets over the flood limit lost because the aggregation map was full',
  malformed: 'Malformed ICMP packets (flagged, fields not decoded)',
  nonlinear: 'ICMP packets whose headers lay outside the linear skb area (flagged, not decoded)',
  rcvDropped: 'Packets the kernel dropped in ip_rcv_core validation',
};

/**
 * The node agent: kernel probe -> sighting merger -> enrichment -> node log and sinks.
 * Capture never waits on enrichment or the network: lookups are in memory, sinks buffer.
 */
export class Agent {
  private readonly timers: NodeJS.Timeout[] = [];
  private ops: Server | null = null;
  private lastKernel: Record<CounterName, number>;
  private readonly sinks: EventSink[] = [];
  private stopped = false;

  private constructor(
    readonly registry: Registry,
    private readonly cfg: AgentConfig,
    private readonly log: Logger,
    readonly probe: Probe,
    private readonly resolver: EndpointResolver,
    private readonly nodeLog: NodeLog,
    private readonly merger: SightingMerger,
    private readonly builder: EventBuilder,
    private readonly addresses: NetnsAddressBook,
    private readonly clock: WallClock,
  ) {
    this.lastKernel = probe.readCounters();
  }

  static async start(cfg: AgentConfig, log: Logger, out: Writable = process.stdout): Promise<Agent> {
    const registry = new Registry();
    const resolver = await chooseResolver(cfg, log, registry);
    const addresses = new NetnsAddressBook();
    await addresses.refresh();
    const hostNetns = await addresses.hostNetns;
    const hostInterfaces = new Map<number, string>();
    await readHostInterfaces(hostInterfaces);
    let probe: Probe;
    try {
      probe = Probe.open({
        hook: cfg.hook,
        objectPath: cfg.objectPath,
        btfPath: cfg.btfPath,
        ringBytes: cfg.ringBytes,
        eventsPerSecond: cfg.eventsPerSecond,
        wakeupBytes: Math.min(64 * 1024, cfg.ringBytes / 4),
        onLibbpfMessage: (level, message) => log[level === 'warn' ? 'warn' : 'debug']({ libbpf: true }, message),
      });
    } catch (err) {
      resolver.close();
      throw err;
    }
    for (const a of probe.attempts) {
      if (a.attached) log.info({ hook: a.hook, symbols: a.symbols, warnings: a.warnings }, 'probe attached');
      else log.warn({ hook: a.hook, symbols: a.symbols, reason: a.reason }, 'hook refused');
    }
    const nodeLog = new NodeLog(cfg.logFormat, out);
    const clock = new WallClock();
    const builder = new EventBuilder(cfg.node, resolver, clock, probe.symbols, (netns, ifindex) =>
      netns === hostNetns ? (hostInterfaces.get(ifindex) ?? '') : '',
    );
    let agent: Agent | null = null;
    const merger = new SightingMerger({
      holdMs: cfg.holdMs,
      rememberMs: 1000, // remembered 1-2 s: 131072 packets cover 65k packets/s, beyond the default flood limit
      maxPending: 131072,
      owns: (netns, ip) => addresses.owns(netns, ip),
      hostNetns: () => hostNetns,
      report: (r) => agent?.deliver(builder.fromPacket(r)),
    });
    agent = new Agent(registry, cfg, log, probe, resolver, nodeLog, merger, builder, addresses, clock);
    agent.registerMetrics();
    if (cfg.collector) {
      const running = agent;
      // Loaded only when used: gRPC costs seconds of start-up on slow machines (test/vm guests).
      const { CollectorExporter } = await import('./export/exporter.js');
      agent.addSink(
        new CollectorExporter({
          address: cfg.collector,
          transport: cfg.collectorTransport,
          node: cfg.node,
          hook: HOOK_IDS[probe.hook],
          symbol: probe.symbols.join(','),
          log,
          registry,
          maxBufferedEvents: cfg.exportBufferEvents,
          maxBufferedBytes: cfg.exportBufferBytes,
          batchSize: 500,
          // A partial batch waits at most this long: most of the end-to-end latency budget at low rates.
          batchDelayMs: 20,
          counters: () => running.exportCounters(),
        }),
      );
    }
    probe.startReading((p) => merger.add(p));
    agent.timers.push(setInterval(() => void agent.tick(), 1000));
    agent.timers.push(setInterval(() => void addresses.refresh().then(() => readHostInterfaces(hostInterfaces)), 5000));
    if (cfg.metricsAddr) agent.ops = await startOpsServer(cfg.metricsAddr, agent.registry, agent, log);
    log.info({ node: cfg.node, hook: probe.hook, symbols: probe.symbols, eventsPerSecond: cfg.eventsPerSecond }, 'agent running');
    return agent;
  }

  addSink(sink: EventSink): void {
    this.sinks.push(sink);
  }

  /**
   * Events reported per family (by its enum value), counted in plain numbers and handed to the
   * metric when it is scraped: a prom-client inc() per event cost about a tenth of the agent's CPU
   * per event.
   */
  private readonly reportedCounts = [0, 0, 0];
  private readonly reportedCollected = [0, 0, 0];

  private readonly reported = new Counter({
    name: 'icmpwatch_agent_events_total',
    help: 'ICMP events reported (after merging sightings of one packet)',
    labelNames: ['hook', 'family'],
    registers: [],
    collect: () => {
      REPORTED_FAMILIES.forEach((family, i) => {
        const count = this.reportedCounts[i]!;
        if (count > this.reportedCollected[i]!) this.reported.inc({ hook: this.probe.hook, family }, count - this.reportedCollected[i]!);
        this.reportedCollected[i] = count;
      });
    },
  });

  private deliver(ev: icmpwatch.v1.IEvent): void {
    const family = ev.family ?? 0;
    this.reportedCounts[family >= 0 && family < 3 ? family : 0]!++;
    this.nodeLog.event(ev);
    for (const sink of this.sinks) sink.publish(ev);
  }

  /**
   * What the collector is told about this node's kernel side, with every batch. Read at most once
   * a second: each read is a BPF map lookup per counter and family (two dozen system calls), and
   * batches go out hundreds of times a second under load.
   */
  private exportCounters(): AgentCounters {
    const now = Date.now();
    if (now - this.exportCountersReadAt >= 1000) {
      const k = this.probe.readCounters();
      this.exportCountersRead = { events: k.events, lost: k.ringFull + k.aggFull, malformed: k.malformed, suppressed: k.suppressed };
      this.exportCountersReadAt = now;
    }
    return this.exportCountersRead;
  }

  private exportCountersRead: AgentCounters = { events: 0, lost: 0, malformed: 0, suppressed: 0 };
  private exportCountersReadAt = 0;

  /** Once a second: flood summaries, loss notices, clock re-anchoring. */
  private async tick(): Promise<void> {
    if (this.stopped) return;
    this.clock.anchor();
    for (const agg of await this.probe.drainFloodAggregates()) this.deliver(this.builder.fromFlood(agg, this.probe.hook));
    const now = this.probe.readCounters();
    const lost = now.ringFull - this.lastKernel.ringFull + now.aggFull - this.lastKernel.aggFull;
    if (lost > 0) {
      this.nodeLog.notice('lost', { events: lost, ringFull: now.ringFull - this.lastKernel.ringFull, aggregationFull: now.aggFull - this.lastKernel.aggFull });
      this.log.warn({ lost }, 'kernel events lost');
    }
    this.lastKernel = now;
  }

  private registerMetrics(): void {
    collectDefaultMetrics({ register: this.registry });
    this.registry.registerMetric(this.reported);
    const probe = this.probe;
    // family: ipv4, ipv6, or unspecified for frames unreadable as far as their IP header (as events say).
    for (const name of COUNTERS) {
      const metric = name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      this.registry.registerMetric(
        new Gauge({
          name: `icmpwatch_kernel_${metric}_total`,
          help: `${KERNEL_COUNTER_HELP[name]} (per-CPU BPF counter, summed)`,
          labelNames: ['hook', 'family'],
          registers: [],
          collect() {
            const byFamily = probe.readCountersByFamily();
            for (const family of COUNTER_FAMILIES) this.set({ hook: probe.hook, family }, byFamily[family][name]);
          },
        }),
      );
    }
    const merger = this.merger;
    this.registry.registerMetric(
      new Gauge({
        name: 'icmpwatch_agent_merged_sightings_total',
        help: 'Sightings merged into an already reported packet (one packet seen in several namespaces)',
        registers: [],
        collect() {
          this.set(merger.merged);
        },
      }),
    );
    this.registry.registerMetric(
      new Gauge({
        name: 'icmpwatch_agent_merge_overflow_total',
        help: 'Packets reported without merging because the merger already tracked its bound of packets (131072: about 65k packets/s); their other sightings are reported too',
        registers: [],
        collect() {
          this.set(merger.overflowed);
        },
      }),
    );
    const nodeLog = this.nodeLog;
    this.registry.registerMetric(
      new Gauge({
        name: 'icmpwatch_agent_log_lines_dropped_total',
        help: 'Node log lines dropped while stdout held 16 MiB unwritten (its reader fell behind); the events still went to the collector',
        registers: [],
        collect() {
          this.set(nodeLog.dropped);
        },
      }),
    );
    this.registry.registerMetric(
      new Gauge({
        name: 'icmpwatch_agent_hook_info',
        help: 'The hook the probe runs on and the kernel symbols it is attached to (value 1)',
        labelNames: ['hook', 'symbols'],
        registers: [],
        collect() {
          this.set({ hook: probe.hook, symbols: probe.symbols.join(',') }, 1);
        },
      }),
    );
  }

  notReadyReason(): string | null {
    if (this.stopped) return 'stopping';
    return this.resolver.notReadyReason();
  }

  /** Detach, report what is left, flush sinks. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.probe.detach();
    this.merger.flush();
    for (let slot = 0; slot < 2; slot++) {
      for (const agg of await this.probe.drainFloodAggregates()) this.deliver(this.builder.fromFlood(agg, this.probe.hook));
    }
    this.probe.close();
    this.nodeLog.flush();
    await Promise.all(this.sinks.map((s) => s.close()));
    this.resolver.close();
    await new Promise<void>((r) => (this.ops ? this.ops.close(() => r()) : r()));
    this.log.info('agent stopped');
  }
}

/**
 * An explicit --kubeconfig, then an explicit --endpoints-file, then the pod's service account, else
 * none. client-node (over a thousand modules) is loaded only then: outside a pod there is no
 * KUBERNETES_SERVICE_HOST.
 */
async function chooseResolver(cfg: AgentConfig, log: Logger, registry: Registry): Promise<EndpointResolver> {
  const kubernetes = () => import('./enrich/kubernetes.js');
  if (cfg.kubeconfig) {
    const { KubernetesResolver, loadKubeConfig } = await kubernetes();
    return new KubernetesResolver({ kubeConfig: loadKubeConfig(cfg.kubeconfig), log, registry });
  }
  if (cfg.endpointsFile) return new EndpointsFileResolver(cfg.endpointsFile, log);
  if (process.env.KUBERNETES_SERVICE_HOST) {
    const { KubernetesResolver, inCluster, loadKubeConfig } = await kubernetes();
    if (inCluster()) return new KubernetesResolver({ kubeConfig: loadKubeConfig(null), log, registry });
  }
  return new NoResolver();
}

async function readHostInterfaces(out: Map<number, string>): Promise<void> {
  out.clear();
  for (const name of await readdir('/sys/class/net').catch(() => [] as string[])) {
    const idx = await readFile(`/sys/class/net/${name}/ifindex`, 'utf8').catch(() => '');
    if (idx) out.set(Number(idx), name);
  }
}
