// The Ingest service: one bidi stream per agent process. Batches are processed in order per stream;
// each is acknowledged with the highest contiguous sequence of that agent instance that is stored,
// only after the store made it durable. Sequences at or below what was already accepted are resent
// duplicates and are skipped; announced buffer drops become lost-events records.
import { setImmediate } from 'node:timers/promises';
import { status, type ServerDuplexStream } from '@grpc/grpc-js';
import type { Logger } from '../common/log.js';
import { icmpwatch } from '../common/proto.js';
import { timestampMs } from '../common/grpc/subscribe-request.js';
import type { AgentAcks, InstanceState } from './agent-acks.js';
import type { CollectorMetrics } from './metrics.js';
import type { NodeRegistry } from './nodes.js';
import type { RateWindow } from './rate.js';
import { statusError } from './status-error.js';
import type { Store } from './store.js';
import { timestampFromMs } from './timestamps.js';

const { LostEventsSource, NodeState } = icmpwatch.v1;

type IngestCall = ServerDuplexStream<icmpwatch.v1.IIngestRequest, icmpwatch.v1.IIngestResponse>;

interface Session {
  node: string;
  instance: string;
  state: InstanceState;
}

/** Requests queued per stream before the stream is paused (flow control back to the agent). */
const MAX_QUEUED_REQUESTS = 8;

export class IngestService {
  private readonly calls = new Set<IngestCall>();
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
    this.calls.add(call);
    let session: Session | null = null;
    let failed = false;
    let queued = 0;
    let chain = Promise.resolve();

    const fail = (err: Error) => {
      if (failed) return;
      failed = true;
      const code = 'code' in err && typeof err.code === 'number' ? err.code : status.INTERNAL;
      this.log.warn({ node: session?.node, err: err.message }, 'ingest stream failed');
      call.emit('error', statusError(code, err.message));
    };

    call.on('data', (request: icmpwatch.v1.IIngestRequest) => {
      if (++queued >= MAX_QUEUED_REQUESTS) call.pause();
      chain = chain
        .then(async () => {
          if (failed) return;
          if (request.hello) {
            if (session) throw statusError(status.INVALID_ARGUMENT, 'hello: sent twice on one stream');
            session = this.hello(request.hello);
            call.write({ ackedSequence: session.state.durable });
          } else if (request.batch) {
            if (!session) throw statusError(status.INVALID_ARGUMENT, 'batch: the first request must be a hello');
            const acked = await this.batch(session, request.batch);
            if (!call.destroyed && !call.writableEnded) call.write({ ackedSequence: acked });
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
    call.on('end', () => void chain.then(() => !failed && call.end()));

    let closed = false;
    const onClose = () => {
      if (closed) return;
      closed = true;
      this.calls.delete(call);
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
    const state = this.acks.get(hello.node, hello.agentInstance);
    if (this.nodes.connected(hello)) {
      this.log.info({ node: hello.node, agentInstance: hello.agentInstance, hook: hello.hook, symbol: hello.symbol }, 'node connected');
      this.announceNode(hello.node);
    }
    this.updateNodeGauge();
    return { node: hello.node, instance: hello.agentInstance, state };
  }

  private async batch(session: Session, batch: icmpwatch.v1.IEventBatch): Promise<number> {
    const { node, instance, state } = session;
    const now = Date.now();
    const records: icmpwatch.v1.IJournalRecord[] = [];
    const lost = (source: icmpwatch.v1.LostEventsSource, count: number, first: icmpwatch.v1.ILostEvents['first'], last: icmpwatch.v1.ILostEvents['last'], lastSequence: number) => {
      records.push({ agentInstance: instance, lastSequence, lostEvents: { source, count, first, last, nodeName: node } });
      this.metrics.lostEvents.inc({ source: LostEventsSource[source] }, count);
    };

    const drop = batch.dropped;
    const dropLast = Number(drop?.lastSequence ?? 0);
    if (drop && dropLast > state.accepted) {
      const first = Math.max(Number(drop.firstSequence ?? 0), state.accepted + 1);
      lost(LostEventsSource.LOST_EVENTS_SOURCE_AGENT_EXPORT_BUFFER, dropLast - first + 1, drop.first, drop.last, dropLast);
      state.accepted = dropLast;
    }

    let stored = 0;
    let newestEventMs: number | null = null;
    const events = batch.events ?? [];
    this.metrics.eventsReceived.inc(events.length);
    for (const [i, ev] of events.entries()) {
      const seq = Number(ev.sequence ?? 0);
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
      if (!ev.node) ev.node = node;
      records.push({ agentInstance: instance, lastSequence: seq, event: ev });
      state.accepted = seq;
      stored++;
      if (ev.time) newestEventMs = Math.max(newestEventMs ?? 0, timestampMs(ev.time));
    }

    const ringLost = Number(batch.counters?.lost ?? 0);
    if (state.lostAnnounced !== null && ringLost > state.lostAnnounced) {
      lost(LostEventsSource.LOST_EVENTS_SOURCE_RING_BUFFER, ringLost - state.lostAnnounced, timestampFromMs(state.lastBatchMs), timestampFromMs(now), 0);
    }
    if (batch.counters) state.lostAnnounced = ringLost;
    state.lastBatchMs = now;

    const acked = state.accepted;
    try {
      await this.store.add(records);
    } catch (err) {
      this.metrics.journalErrors.inc();
      state.accepted = state.durable;
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

  /** Refuses new streams and ends the open ones once their queued batches are acknowledged. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(
      [...this.calls].map(
        (call) =>
          new Promise<void>((resolve) => {
            call.once('finish', resolve);
            call.end();
          }),
      ),
    );
  }
}
