// The Ingest service: one bidi stream per agent process. Batches are processed in order per stream;
// each is acknowledged with the highest contiguous sequence of that agent instance that is stored,
// only after the store made it durable. Sequences at or below what was already accepted are resent
// duplicates and are skipped; announced buffer drops and new ring-buffer losses become lost-events
// records. On stop, what each stream already delivered is stored and acknowledged before it ends.
// Events are stored and forwarded in the bytes they came in (ingest-request.ts), never decoded into
// objects or encoded again.
import { setImmediate } from 'node:timers/promises';
import { status, type ServerDuplexStream } from '@grpc/grpc-js';
import type { Logger } from '../common/log.js';
import { icmpwatch } from '../common/proto.js';
import type { ReceivedBatch, ReceivedIngestRequest } from '../common/grpc/ingest-request.js';
import { undecodableReason } from '../common/grpc/services.js';
import { timestampMs } from '../common/grpc/subscribe-request.js';
import { withStringField } from '../common/protobuf-wire.js';
import type { AgentAcks, InstanceState } from './agent-acks.js';
import type { RecordWithBytes } from './journal-record.js';
import type { CollectorMetrics } from './metrics.js';
import type { NodeRegistry } from './nodes.js';
import type { RateWindow } from './rate.js';
import { statusError } from './status-error.js';
import type { Store } from './store.js';
import { timestampFromMs } from './timestamps.js';

const { LostEventsSource, NodeState } = icmpwatch.v1;

/** Event.node's field number (event.proto). */
const EVENT_NODE = 2;

type IngestCall = ServerDuplexStream<ReceivedIngestRequest, icmpwatch.v1.IIngestResponse>;

interface Session {
  node: string;
  instance: string;
  state: InstanceState;
}

interface OpenStream {
  call: IngestCall;
  /** Settles once every request received so far is processed (stored and acknowledged). */
  processed: Promise<void>;
}

/** Requests queued per stream before the stream is paused (flow control back to the agent). */
const MAX_QUEUED_REQUESTS = 8;

export class IngestService {
  private readonly streams = new Set<OpenStream>();
  private stopping = false;

  constructor(
    private readonly store: Store,
    private readonly acks: AgentAcks,
    private readonly nodes: NodeRegistry,
    private readonly metrics: CollectorMetrics,
    private readonly rate: RateWindow,
    private readonly log: Logger,
  ) {}

  handle(call: IngestCall): void {
    if (this.stopping) {
      call.emit('error', statusError(status.UNAVAILABLE, 'collector is shutting down'));
      return;
    }
    const stream: OpenStream = { call, processed: Promise.resolve() };
    this.streams.add(stream);
    let session: Session | null = null;
    let failed = false;
    let queued = 0;

    const fail = (err: Error) => {
      if (failed) return;
      failed = true;
      const code = 'code' in err && typeof err.code === 'number' ? err.code : status.INTERNAL;
      this.log.warn({ node: session?.node, err: err.message }, 'ingest stream failed');
      call.emit('error', statusError(code, err.message));
    };

    call.on('data', (request: ReceivedIngestRequest) => {
      // Stopping: the agent resends what is not acknowledged to the next collector.
      if (this.stopping) return;
      if (++queued >= MAX_QUEUED_REQUESTS) call.pause();
      stream.processed = stream.processed
        .then(async () => {
          if (failed) return;
          const undecodable = undecodableReason(request);
          if (undecodable !== null) {
            throw statusError(status.INVALID_ARGUMENT, `request: not a valid protobuf IngestRequest (${undecodable})`);
          }
          if (request.hello) {
            if (session) throw statusError(status.INVALID_ARGUMENT, 'hello: sent twice on one stream');
            session = this.hello(request.hello);
            call.write({ ackedSequence: session.state.durable, ringLost: session.state.lostAnnounced });
          } else if (request.batch) {
            if (!session) throw statusError(status.INVALID_ARGUMENT, 'batch: the first request must be a hello');
            const acked = await this.batch(session, request.batch);
            if (!call.destroyed && !call.writableEnded) call.write({ ackedSequence: acked, ringLost: session.state.lostAnnounced });
            // Let subscriber streams flush between batches: a burst is then one batch, not a backlog.
            await setImmediate();
          }
        })
        .catch(fail)
        .finally(() => {
          if (--queued < MAX_QUEUED_REQUESTS / 2) call.resume();
        });
    });
    // The agent half-closed: acknowledge what is queued, then end our side.
    call.on('end', () => void stream.processed.then(() => !failed && !call.writableEnded && call.end()));

    let closed = false;
    const onClose = () => {
      if (closed) return;
      closed = true;
      this.streams.delete(stream);
      if (session && this.nodes.disconnected(session.node)) {
        this.log.info({ node: session.node }, 'node unavailable');
        this.announceNode(session.node);
      }
      this.updateNodeGauge();
    };
    call.on('close', onClose);
    call.on('cancelled', onClose);
    call.on('error', onClose);
  }

  private hello(hello: icmpwatch.v1.IAgentHello): Session {
    if (!hello.node) throw statusError(status.INVALID_ARGUMENT, 'hello.node: must not be empty');
    if (!hello.agentInstance) throw statusError(status.INVALID_ARGUMENT, 'hello.agent_instance: must not be empty');
    const state = this.acks.hello(hello.node, hello.agentInstance, {
      sequence: Number(hello.ackedSequence ?? 0),
      ringLost: Number(hello.ackedRingLost ?? 0),
    });
    if (this.nodes.connected(hello)) {
      this.log.info({ node: hello.node, agentInstance: hello.agentInstance, hook: hello.hook, symbol: hello.symbol }, 'node connected');
      this.announceNode(hello.node);
    }
    this.updateNodeGauge();
    return { node: hello.node, instance: hello.agentInstance, state };
  }

  private async batch(session: Session, batch: ReceivedBatch): Promise<number> {
    const { node, instance, state } = session;
    const now = Date.now();
    const records: RecordWithBytes[] = [];
    const lost = (source: icmpwatch.v1.LostEventsSource, count: number, first: icmpwatch.v1.ILostEvents['first'], last: icmpwatch.v1.ILostEvents['last'], lastSequence: number) => {
      records.push({ record: { agentInstance: instance, lastSequence, lostEvents: { source, count, first, last, nodeName: node } }, event: null });
      this.metrics.lostEvents.inc({ source: LostEventsSource[source] }, count);
    };

    const drop = batch.dropped;
    const dropFirst = Number(drop?.firstSequence ?? 0);
    const dropLast = Number(drop?.lastSequence ?? 0);
    if (drop && !(dropFirst >= 1 && dropFirst <= dropLast)) {
      throw statusError(status.INVALID_ARGUMENT, 'batch.dropped: first_sequence must be from 1 to last_sequence');
    }
    if (drop && dropLast > state.accepted) {
      const first = Math.max(dropFirst, state.accepted + 1);
      lost(LostEventsSource.LOST_EVENTS_SOURCE_AGENT_EXPORT_BUFFER, dropLast - first + 1, drop.first, drop.last, dropLast);
      state.accepted = dropLast;
    }

    let stored = 0;
    let newestEventMs: number | null = null;
    const events = batch.events;
    this.metrics.eventsReceived.inc(events.length);
    for (const [i, ev] of events.entries()) {
      const seq = ev.sequence;
      if (seq <= 0) throw statusError(status.INVALID_ARGUMENT, `batch.events[${i}].sequence: must be set (agents count from 1)`);
      if (seq <= state.accepted) {
        this.metrics.duplicates.inc();
        continue;
      }
      if (seq > state.accepted + 1) {
        // Not announced by the agent (it should have sent `dropped`): still never silent.
        this.log.warn({ node, instance, expected: state.accepted + 1, got: seq }, 'sequence gap from agent');
        lost(LostEventsSource.LOST_EVENTS_SOURCE_AGENT_EXPORT_BUFFER, seq - state.accepted - 1, ev.time, ev.time, seq - 1);
      }
      const event = ev.node ? ev : { ...ev, node, bytes: withStringField(ev.bytes, EVENT_NODE, node) };
      records.push({ record: { agentInstance: instance, lastSequence: seq }, event });
      state.accepted = seq;
      stored++;
      if (ev.time) newestEventMs = Math.max(newestEventMs ?? 0, timestampMs(ev.time));
    }

    const lostBefore = state.lostAnnounced;
    const ringLost = Number(batch.counters?.lost ?? 0);
    if (ringLost > state.lostAnnounced) {
      lost(LostEventsSource.LOST_EVENTS_SOURCE_RING_BUFFER, ringLost - state.lostAnnounced, timestampFromMs(state.lastBatchMs), timestampFromMs(now), state.accepted);
      state.lostAnnounced = ringLost;
    }
    // Every record carries the announced count: a recovered instance then announces only new losses.
    for (const { record } of records) record.ringLost = state.lostAnnounced;
    state.lastBatchMs = now;

    const acked = state.accepted;
    try {
      await this.store.add(records);
    } catch (err) {
      this.metrics.journalErrors.inc();
      state.accepted = state.durable;
      state.lostAnnounced = lostBefore;
      throw statusError(status.UNAVAILABLE, `storing the batch failed: ${(err as Error).message}`);
    }
    state.durable = Math.max(state.durable, acked);
    this.metrics.eventsStored.inc(stored);
    this.rate.add(stored);
    this.nodes.batchReceived(node, { events: stored, newestEventMs, lastSequence: state.durable, counters: batch.counters ?? null });
    return acked;
  }

  private announceNode(node: string): void {
    this.store.announce({ nodeName: node, time: timestampFromMs(Date.now()), nodeStatus: this.nodes.status(node) });
  }

  private updateNodeGauge(): void {
    const { connected, unavailable } = this.nodes.countByState();
    this.metrics.nodes.set({ state: NodeState[NodeState.NODE_STATE_CONNECTED] }, connected);
    this.metrics.nodes.set({ state: NodeState[NodeState.NODE_STATE_UNAVAILABLE] }, unavailable);
  }

  /**
   * Refuses new streams and stops reading the open ones; ends each once what it already received is
   * stored and acknowledged.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(
      [...this.streams].map(async ({ call, processed }) => {
        await processed;
        if (call.destroyed || call.writableEnded) return;
        await new Promise<void>((resolve) => {
          call.once('finish', resolve);
          call.once('close', resolve);
          call.end();
        });
      }),
    );
  }
}
