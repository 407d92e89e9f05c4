// Acknowledgement state per agent process (node + agent_instance): what was accepted and what is
// durable, and how many of its ring-buffer losses were announced. Rebuilt from the journal at
// start-up, so resends after a collector restart are still recognised as duplicates; an instance
// the journal does not hold starts where the agent says it was acknowledged.
import type { RecordWithBytes } from './journal-record.js';

export interface InstanceState {
  /** Highest contiguous sequence handed to the store (stored or being stored). */
  accepted: number;
  /** Highest contiguous sequence the store confirmed. */
  durable: number;
  /** The agent's cumulative ring-buffer loss counter as far as it was announced. */
  lostAnnounced: number;
  lastBatchMs: number;
}

/** Old agent processes of a node whose state is kept (a rollout briefly overlaps two). */
const INSTANCES_PER_NODE = 4;

const key = (node: string, instance: string) => `${node}\u0000${instance}`;

export class AgentAcks {
  private readonly instances = new Map<string, InstanceState>();

  /** Takes what a record recovered from the journal covers (`timeMs`: the time it is about). */
  recover({ record, event }: RecordWithBytes, timeMs: number): void {
    if (!record.agentInstance) return;
    const node = event ? event.node : (record.lostEvents?.nodeName ?? '');
    const state = this.get(node, record.agentInstance);
    state.accepted = state.durable = Math.max(state.accepted, Number(record.lastSequence ?? 0));
    state.lostAnnounced = Math.max(state.lostAnnounced, Number(record.ringLost ?? 0));
    state.lastBatchMs = timeMs;
  }

  /**
   * The state of the agent process saying hello. What a collector acknowledged to it is stored or
   * was announced lost, so neither this collector's state nor a fresh one goes back before it.
   */
  hello(node: string, instance: string, acked: { sequence: number; ringLost: number }): InstanceState {
    const state = this.get(node, instance);
    state.accepted = Math.max(state.accepted, acked.sequence);
    state.durable = Math.max(state.durable, acked.sequence);
    state.lostAnnounced = Math.max(state.lostAnnounced, acked.ringLost);
    return state;
  }

  /** Drops a forgotten node's state: a returning agent starts from what it says was acknowledged. */
  forget(node: string): void {
    const prefix = key(node, '');
    for (const k of this.instances.keys()) if (k.startsWith(prefix)) this.instances.delete(k);
  }

  private get(node: string, instance: string): InstanceState {
    let state = this.instances.get(key(node, instance));
    if (!state) {
      state = { accepted: 0, durable: 0, lostAnnounced: 0, lastBatchMs: Date.now() };
      this.instances.set(key(node, instance), state);
      this.forgetOldInstances(node);
    }
    return state;
  }

  private forgetOldInstances(node: string): void {
    const prefix = key(node, '');
    const ofNode = [...this.instances.entries()].filter(([k]) => k.startsWith(prefix));
    if (ofNode.length <= INSTANCES_PER_NODE) return;
    ofNode.sort((a, b) => a[1].lastBatchMs - b[1].lastBatchMs);
    for (const [k] of ofNode.slice(0, ofNode.length - INSTANCES_PER_NODE)) this.instances.delete(k);
  }
}
