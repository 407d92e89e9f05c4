// Streams the agent's events to the collector. publish() only appends to a bounded buffer of
// unacknowledged events; batches go out by count or after a delay on one long-lived stream. After a
// reconnect (exponential backoff with jitter) everything unacknowledged is resent, and the collector
// skips what it already holds by sequence, so a short collector outage loses and duplicates nothing.
// Beyond the buffer's bound the oldest events are dropped, counted and announced to the collector.
import { randomUUID } from 'node:crypto';
import { status, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import { Counter, Gauge, type Registry } from 'prom-client';
import { IngestClient } from '../../common/grpc/clients.js';
import type { ClientTransport } from '../../common/grpc/tls.js';
import type { Logger } from '../../common/log.js';
import { icmpwatch } from '../../common/proto.js';
import { Backoff } from './backoff.js';
import { encodeBatchRequest } from './batch-request.js';
import { SendBuffer } from './send-buffer.js';

export interface AgentCounters {
  events: number;
  lost: number;
  malformed: number;
  suppressed: number;
}

export interface ExporterOptions {
  /** Collector HOST:PORT. */
  address: string;
  /** Absent: plaintext. */
  transport?: ClientTransport | undefined;
  node: string;
  hook: icmpwatch.v1.Hook;
  symbol: string;
  log: Logger;
  registry: Registry;
  maxBufferedEvents: number;
  maxBufferedBytes: number;
  batchSize: number;
  batchDelayMs: number;
  counters: () => AgentCounters;
  /** Reconnect delays; default 200 ms doubling to 30 s. */
  backoff?: { minMs: number; maxMs: number };
}

export interface ExporterState {
  connected: boolean;
  bufferedEvents: number;
  bufferedBytes: number;
  droppedEvents: number;
  lastError: string | null;
}

type IngestStream = ClientDuplexStream<icmpwatch.v1.IIngestRequest | Uint8Array, icmpwatch.v1.IIngestResponse>;

const MAX_BATCH_BYTES = 1 << 20;
const NO_EVENTS = new Uint8Array(0);
/** An empty batch carries the counters when there were no events for this long. */
const HEARTBEAT_MS = 10_000;

/**
 * The buffer's gauges and the drop count are read when scraped: setting them on every publish cost
 * more than the rest of publish (and events are dropped one by one while the collector is behind).
 */
function createExporterMetrics(registry: Registry, buffer: SendBuffer, droppedTotal: () => number) {
  const registers = [registry];
  return {
    acked: new Counter({ name: 'icmpwatch_agent_export_acked_events_total', help: 'Events the collector acknowledged.', registers }),
    dropped: new Counter({
      name: 'icmpwatch_agent_export_dropped_events_total',
      help: 'Events dropped from the full export buffer (announced to the collector).',
      registers,
      collect() {
        this.reset();
        this.inc(droppedTotal());
      },
    }),
    buffered: new Gauge({
      name: 'icmpwatch_agent_export_buffered_events',
      help: 'Events awaiting acknowledgement.',
      registers,
      collect() {
        this.set(buffer.length);
      },
    }),
    bufferedBytes: new Gauge({
      name: 'icmpwatch_agent_export_buffered_bytes',
      help: 'Encoded size of the buffered events.',
      registers,
      collect() {
        this.set(buffer.bytes);
      },
    }),
    connected: new Gauge({ name: 'icmpwatch_agent_export_connected', help: '1 while a stream to the collector is up.', registers }),
    reconnects: new Counter({ name: 'icmpwatch_agent_export_reconnects_total', help: 'Streams to the collector opened after the first.', registers }),
  };
}

export class CollectorExporter {
  private readonly instance = randomUUID();
  private readonly client: IngestClient;
  private readonly buffer: SendBuffer;
  private readonly backoff: Backoff;
  private readonly metrics: ReturnType<typeof createExporterMetrics>;
  private stream: IngestStream | null = null;
  /** True once the collector answered this stream's hello. */
  private connected = false;
  private acked = 0;
  /** Ring-buffer losses the collector announced, as of its latest acknowledgement. */
  private ackedRingLost = 0;
  /** Sequences must increase (from 1): the collector's deduplication relies on it. */
  private lastPublished = 0;
  /** Highest sequence written on the current stream. */
  private sentThrough = 0;
  /** The drop range version last written on the current stream. */
  private dropSent = 0;
  private waitingForDrain = false;
  private lastSendMs = 0;
  private droppedTotal = 0;
  private lastError: string | null = null;
  private batchTimer: NodeJS.Timeout | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private readonly heartbeat: NodeJS.Timeout;
  private streamsOpened = 0;
  private closed = false;
  private readonly ackListeners = new Set<() => void>();

  constructor(private readonly options: ExporterOptions) {
    const backoff = options.backoff ?? { minMs: 200, maxMs: 30_000 };
    this.client = new IngestClient(options.address, backoff, options.transport);
    this.buffer = new SendBuffer(options.maxBufferedEvents, options.maxBufferedBytes);
    this.backoff = new Backoff(backoff.minMs, backoff.maxMs);
    this.metrics = createExporterMetrics(options.registry, this.buffer, () => this.droppedTotal);
    this.heartbeat = setInterval(() => {
      if (Date.now() - this.lastSendMs >= HEARTBEAT_MS) this.send(true);
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
    this.connect();
  }

  /** Queues an event (its `sequence` set by the agent, counting from 1). Never blocks or throws. */
  publish(event: icmpwatch.v1.IEvent): void {
    try {
      if (this.closed) {
        this.countDropped(1);
        return;
      }
      const sequence = Number(event.sequence ?? 0);
      if (!(sequence > this.lastPublished)) throw new Error(`event sequence ${sequence} does not follow ${this.lastPublished}`);
      this.lastPublished = sequence;
      this.countDropped(this.buffer.add(event, sequence));
      if (sequence - this.sentThrough >= this.options.batchSize) this.send(false);
      else this.batchTimer ??= setTimeout(() => this.send(false), this.options.batchDelayMs);
    } catch (err) {
      // A bug in the caller, not a runtime condition: counted and visible in state(), never thrown.
      if (this.lastError !== (err as Error).message) this.options.log.error({ err }, 'event not exported');
      this.lastError = (err as Error).message;
      this.countDropped(1);
    }
  }

  state(): ExporterState {
    return {
      connected: this.connected,
      bufferedEvents: this.buffer.length,
      bufferedBytes: this.buffer.bytes,
      droppedEvents: this.droppedTotal,
      lastError: this.lastError,
    };
  }

  /** Sends what is buffered and waits for its acknowledgement, at most `deadlineMs`; then disconnects. */
  async close(deadlineMs = 5000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.send(false);
    const deadline = Date.now() + deadlineMs;
    while (this.buffer.length > 0 || this.buffer.dropped) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.ackListeners.add(done);
      });
      this.ackListeners.clear();
    }
    if (this.buffer.length > 0) {
      this.options.log.warn({ events: this.buffer.length }, 'exporter closed with unacknowledged events');
    }
    clearInterval(this.heartbeat);
    if (this.batchTimer) clearTimeout(this.batchTimer);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.stream?.end();
    this.stream = null;
    this.setConnected(false);
    this.client.close();
  }

  private connect(): void {
    this.reconnectTimer = null;
    if (this.streamsOpened++ > 0) this.metrics.reconnects.inc();
    const stream = this.client.stream();
    this.stream = stream;
    this.sentThrough = this.acked;
    this.dropSent = 0;
    this.waitingForDrain = false;
    stream.on('data', (response: icmpwatch.v1.IIngestResponse) => this.onAck(stream, response));
    stream.on('error', (err: ServiceError) => this.onStreamEnd(stream, `${err.code ?? ''} ${err.details ?? err.message}`.trim(), err.code));
    stream.on('end', () => this.onStreamEnd(stream, 'stream ended by the collector'));
    // A collector that lost track of this process (restarted without its journal) starts from here.
    stream.write({
      hello: {
        node: this.options.node,
        agentInstance: this.instance,
        hook: this.options.hook,
        symbol: this.options.symbol,
        ackedSequence: this.acked,
        ackedRingLost: this.ackedRingLost,
      },
    });
  }

  private onAck(stream: IngestStream, response: icmpwatch.v1.IIngestResponse): void {
    if (stream !== this.stream) return;
    const sequence = Number(response.ackedSequence ?? 0);
    this.ackedRingLost = Math.max(this.ackedRingLost, Number(response.ringLost ?? 0));
    if (!this.connected) {
      this.setConnected(true);
      this.backoff.reset();
      this.options.log.info({ collector: this.options.address, acked: sequence, buffered: this.buffer.length }, 'connected to collector');
    }
    if (sequence > this.acked) {
      this.metrics.acked.inc(this.buffer.ack(sequence));
      this.acked = sequence;
    } else if (this.buffer.dropped && this.buffer.dropped.lastSequence <= sequence) {
      this.buffer.ack(sequence);
    }
    this.sentThrough = Math.max(this.sentThrough, this.acked);
    for (const listener of this.ackListeners) listener();
    this.send(false);
  }

  private onStreamEnd(stream: IngestStream, reason: string, code?: status): void {
    if (stream !== this.stream) return;
    this.stream = null;
    stream.cancel();
    const wasConnected = this.connected;
    this.setConnected(false);
    this.lastError = reason;
    if (this.closed) return;
    const delay = this.backoff.next();
    // A refused certificate is a configuration error the operator must see, even before the first connection.
    const refused = code === status.UNAUTHENTICATED || code === status.PERMISSION_DENIED;
    const log = wasConnected || refused ? this.options.log.warn.bind(this.options.log) : this.options.log.debug.bind(this.options.log);
    log({ collector: this.options.address, reason, retryInMs: Math.round(delay), buffered: this.buffer.length }, 'collector stream down');
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** Writes batches while the stream takes them; with `heartbeat`, an empty one if there is nothing. */
  private send(heartbeat: boolean): void {
    if (this.batchTimer) {
      clearTimeout(this.batchTimer);
      this.batchTimer = null;
    }
    let force = heartbeat;
    while (this.stream && this.connected && !this.waitingForDrain) {
      const events = this.buffer.after(this.sentThrough, this.options.batchSize, MAX_BATCH_BYTES);
      const drop = this.buffer.dropped;
      const dropNews = drop !== null && drop.version !== this.dropSent;
      if (events === null && !dropNews && !force) return;
      force = false;
      const c = this.options.counters();
      const request = encodeBatchRequest(events?.framed ?? NO_EVENTS, {
        counters: { ...c, exportDropped: this.droppedTotal },
        dropped: drop && { firstSequence: drop.firstSequence, lastSequence: drop.lastSequence, first: drop.first, last: drop.last },
      });
      if (events !== null) this.sentThrough = events.lastSequence;
      if (drop) this.dropSent = drop.version;
      this.lastSendMs = Date.now();
      const stream = this.stream;
      if (!stream.write(request)) {
        this.waitingForDrain = true;
        stream.once('drain', () => {
          if (stream !== this.stream) return;
          this.waitingForDrain = false;
          this.send(false);
        });
      }
    }
  }

  private countDropped(n: number): void {
    this.droppedTotal += n;
  }

  private setConnected(connected: boolean): void {
    this.connected = connected;
    this.metrics.connected.set(connected ? 1 : 0);
  }
}
