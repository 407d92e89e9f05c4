// Shared by the collector, exporter and CLI tests: a collector on an ephemeral loopback port,
// synthetic events, an exporter, and a subscriber that collects what it receives.
import net from 'node:net';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import type { ClientReadableStream, Metadata } from '@grpc/grpc-js';
import { encodeBatchRequest } from '../../src/agent/export/batch-request.js';
import { CollectorExporter, type ExporterOptions } from '../../src/agent/export/exporter.js';
import { SendBuffer } from '../../src/agent/export/send-buffer.js';
import { DEFAULT_ADMISSION_LIMITS } from '../../src/collector/admission.js';
import { Collector, type CollectorOptions } from '../../src/collector/collector.js';
import { ObserverClient } from '../../src/common/grpc/clients.js';
import { icmpwatch } from '../../src/common/proto.js';

export const silentLog = pino({ level: 'silent' });

export async function startCollector(overrides: Partial<CollectorOptions> = {}): Promise<Collector> {
  return Collector.start({
    listen: '127.0.0.1:0',
    metricsAddr: null,
    dataDir: null,
    historyEvents: 100_000,
    historyAgeMs: 3_600_000,
    historyBytes: 256 << 20,
    subscriberQueue: 10_000,
    ingestListen: null,
    tls: null,
    limits: DEFAULT_ADMISSION_LIMITS,
    access: null,
    log: silentLog,
    ...overrides,
  });
}

/** A loopback port nothing listens on (for a collector started later). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const BASE_SECONDS = Math.floor(Date.now() / 1000);

/** An echo request with sequence and ICMP seq `seq`, its time `seq` microseconds after start. */
/** An IngestRequest with these events (sequenced from 1 in this batch) as the agent frames them. */
export function batchRequest(events: icmpwatch.v1.IEvent[], rest: Parameters<typeof encodeBatchRequest>[1]): Buffer {
  const buffer = new SendBuffer(events.length, 1 << 30);
  events.forEach((ev, i) => buffer.add(ev, i + 1));
  const run = buffer.after(0, events.length, 1 << 30);
  if (run !== null && run.count !== events.length) throw new Error('batchRequest: events larger than a chunk');
  return encodeBatchRequest(run?.framed ?? new Uint8Array(0), rest);
}

export function echoEvent(seq: number, overrides: icmpwatch.v1.IEvent = {}): icmpwatch.v1.IEvent {
  return {
    time: { seconds: BASE_SECONDS, nanos: seq * 1000 },
    node: 'node-a',
    family: icmpwatch.v1.Family.FAMILY_IPV4,
    source: { ip: '10.1.0.2', namespace: 'demo', pod: 'pod-a' },
    destination: { ip: '10.2.0.2', namespace: 'demo', pod: 'pod-b' },
    icmp: { type: 8, code: 0, id: 1234, seq },
    ttl: 63,
    length: 84,
    observation: { hook: icmpwatch.v1.Hook.HOOK_TP_BTF, point: icmpwatch.v1.ObservationPoint.OBSERVATION_POINT_DESTINATION },
    sequence: seq,
    ...overrides,
  };
}

export function startExporter(address: string, overrides: Partial<ExporterOptions> = {}): CollectorExporter {
  return new CollectorExporter({
    address,
    node: 'node-a',
    hook: icmpwatch.v1.Hook.HOOK_TP_BTF,
    symbol: 'netif_receive_skb',
    log: silentLog,
    registry: new Registry(),
    maxBufferedEvents: 100_000,
    maxBufferedBytes: 64 << 20,
    batchSize: 200,
    batchDelayMs: 10,
    counters: () => ({ events: 0, lost: 0, malformed: 0, suppressed: 0 }),
    backoff: { minMs: 20, maxMs: 200 },
    ...overrides,
  });
}

/**
 * A Subscribe (or SubscribeBatches) stream whose responses accumulate in `received`, and in
 * `batches` as they came, a message each; `until` awaits a condition on them.
 */
export class CollectingSubscriber {
  readonly received: icmpwatch.v1.ISubscribeResponse[] = [];
  readonly batches: icmpwatch.v1.ISubscribeResponse[][] = [];
  readonly events: icmpwatch.v1.IEvent[] = [];
  readonly lost: icmpwatch.v1.ILostEvents[] = [];
  readonly stream: ClientReadableStream<icmpwatch.v1.ISubscribeResponse | icmpwatch.v1.SubscribeBatch>;
  readonly done: Promise<Error | null>;
  private readonly waiters: (() => void)[] = [];

  constructor(client: ObserverClient, request: icmpwatch.v1.ISubscribeRequest, metadata?: Metadata, rpc: 'subscribe' | 'subscribeBatches' = 'subscribe') {
    const stream = rpc === 'subscribe' ? client.subscribe(request, {}, metadata) : client.subscribeBatches(request, {}, metadata);
    this.stream = stream;
    stream.on('data', (message: icmpwatch.v1.ISubscribeResponse | icmpwatch.v1.SubscribeBatch) => {
      const batch = rpc === 'subscribe' ? [message as icmpwatch.v1.ISubscribeResponse] : (message as icmpwatch.v1.SubscribeBatch).responses;
      this.batches.push(batch);
      for (const r of batch) {
        this.received.push(r);
        if (r.event) this.events.push(r.event);
        if (r.lostEvents) this.lost.push(r.lostEvents);
      }
      for (const w of [...this.waiters]) w();
    });
    this.done = new Promise((resolve) => {
      this.stream.on('error', (err: Error) => resolve(err));
      this.stream.on('end', () => resolve(null));
    });
    void this.done.then(() => {
      for (const w of [...this.waiters]) w();
    });
  }

  /** Resolves when `condition` holds; rejects after `timeoutMs` with what was received so far. */
  until(condition: (s: this) => boolean, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out; received ${this.received.length} responses`)), timeoutMs);
      const check = () => {
        if (!condition(this)) return;
        clearTimeout(timer);
        this.waiters.splice(this.waiters.indexOf(check), 1);
        resolve();
      };
      this.waiters.push(check);
      check();
    });
  }
}

/** Waits for a condition that becomes true through I/O, polling; for what has no event to await. */
export async function eventually(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const sequences = (events: icmpwatch.v1.IEvent[]) => events.map((e) => Number(e.sequence));
export const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
