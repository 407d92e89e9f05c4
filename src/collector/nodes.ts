// What the collector knows about each node's agent: connection state, hook, counters, lag. Nodes
// without a stream are forgotten after a while, and the oldest of them once too many are known (any
// client can say hello with any node name): connected nodes are never forgotten.
import { icmpwatch } from '../common/proto.js';
import { timestampFromMs } from './timestamps.js';

const { NodeState } = icmpwatch.v1;

interface NodeEntry {
  name: string;
  streams: number;
  hook: icmpwatch.v1.Hook;
  symbol: string;
  agentInstance: string;
  lastSeenMs: number;
  lagSeconds: number;
  eventsReceived: number;
  lastSequence: number;
  counters: icmpwatch.v1.INodeCounters;
}

export type ForgetReason = 'idle' | 'limit';

export interface NodeBounds {
  /** Known nodes (connected ones always stay); beyond it the longest-unavailable is forgotten. */
  maxNodes: number;
  /** A node unavailable this long is forgotten. */
  forgetAfterMs: number;
}

/** Above the largest clusters Kubernetes supports (5000 nodes); a day is long enough to notice one gone. */
export const DEFAULT_NODE_BOUNDS: NodeBounds = { maxNodes: 10_000, forgetAfterMs: 24 * 3600_000 };

export class NodeRegistry {
  private readonly nodes = new Map<string, NodeEntry>();

  constructor(
    private readonly onForget: (name: string, reason: ForgetReason) => void,
    private readonly bounds: NodeBounds = DEFAULT_NODE_BOUNDS,
  ) {}

  /** Records a new stream; true when the node went from unavailable (or unknown) to connected. */
  connected(hello: icmpwatch.v1.IAgentHello): boolean {
    const name = hello.node ?? '';
    const entry = this.nodes.get(name) ?? {
      name,
      streams: 0,
      hook: 0,
      symbol: '',
      agentInstance: '',
      lastSeenMs: 0,
      lagSeconds: 0,
      eventsReceived: 0,
      lastSequence: 0,
      counters: {},
    };
    Object.assign(entry, { hook: hello.hook ?? 0, symbol: hello.symbol ?? '', agentInstance: hello.agentInstance ?? '', lastSeenMs: Date.now() });
    entry.streams++;
    this.nodes.set(name, entry);
    if (this.nodes.size > this.bounds.maxNodes) this.forgetOldestUnavailable();
    return entry.streams === 1;
  }

  /** True when the node's last stream ended. */
  disconnected(name: string): boolean {
    const entry = this.nodes.get(name);
    if (!entry) return false;
    entry.streams--;
    // Last seen: when its last stream ended, which is what being gone is counted from.
    if (entry.streams === 0) entry.lastSeenMs = Date.now();
    return entry.streams === 0;
  }

  /** Forgets the nodes unavailable for longer than the bound. */
  expire(now = Date.now()): void {
    for (const [name, entry] of this.nodes) {
      if (entry.streams === 0 && entry.lastSeenMs < now - this.bounds.forgetAfterMs) this.forget(name, 'idle');
    }
  }

  private forgetOldestUnavailable(): void {
    let oldest: NodeEntry | null = null;
    for (const entry of this.nodes.values()) {
      if (entry.streams === 0 && (oldest === null || entry.lastSeenMs < oldest.lastSeenMs)) oldest = entry;
    }
    if (oldest) this.forget(oldest.name, 'limit');
  }

  private forget(name: string, reason: ForgetReason): void {
    this.nodes.delete(name);
    this.onForget(name, reason);
  }

  batchReceived(name: string, update: { events: number; newestEventMs: number | null; lastSequence: number; counters: icmpwatch.v1.INodeCounters | null }): void {
    const entry = this.nodes.get(name);
    if (!entry) return;
    const now = Date.now();
    entry.lastSeenMs = now;
    entry.eventsReceived += update.events;
    entry.lastSequence = update.lastSequence;
    if (update.newestEventMs !== null) entry.lagSeconds = Math.max(0, (now - update.newestEventMs) / 1000);
    if (update.counters) entry.counters = update.counters;
  }

  status(name: string): icmpwatch.v1.INodeStatus {
    const entry = this.nodes.get(name);
    return {
      nodeName: name,
      state: entry && entry.streams > 0 ? NodeState.NODE_STATE_CONNECTED : NodeState.NODE_STATE_UNAVAILABLE,
      hook: entry?.hook ?? 0,
      symbol: entry?.symbol ?? '',
    };
  }

  list(): icmpwatch.v1.INodeInfo[] {
    return [...this.nodes.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((n) => ({
        name: n.name,
        state: n.streams > 0 ? NodeState.NODE_STATE_CONNECTED : NodeState.NODE_STATE_UNAVAILABLE,
        hook: n.hook,
        symbol: n.symbol,
        agentInstance: n.agentInstance,
        lastSeen: timestampFromMs(n.lastSeenMs),
        lagSeconds: n.lagSeconds,
        eventsReceived: n.eventsReceived,
        lastSequence: n.lastSequence,
        counters: n.counters,
      }));
  }

  countByState(): { connected: number; unavailable: number } {
    let connected = 0;
    for (const n of this.nodes.values()) if (n.streams > 0) connected++;
    return { connected, unavailable: this.nodes.size - connected };
  }
}
