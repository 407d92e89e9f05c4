// What the collector knows about each node's agent: connection state, hook, counters, lag.
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

export class NodeRegistry {
  private readonly nodes = new Map<string, NodeEntry>();

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
    return entry.streams === 1;
  }

  /** True when the node's last stream ended. */
  disconnected(name: string): boolean {
    const entry = this.nodes.get(name);
    if (!entry) return false;
    entry.streams--;
    return entry.streams === 0;
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
