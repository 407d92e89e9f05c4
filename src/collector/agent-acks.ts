// Acknowledgement state per agent process (node + agent_instance): what was accepted and what is
// durable. Rebuilt from the journal at start-up, so resends after a collector restart are still
// recognised as duplicates.
import type { icmpwatch } from '../common/proto.js';

export interface InstanceState {
  /** Highest contiguous sequence handed to the store (stored or being stored). */
  accepted: number;
  /** Highest contiguous sequence the store confirmed. */
  durable: number;
  /** Ring-buffer losses already announced; null until this collector process saw a batch. */
  lostAnnounced: number | null;
  lastBatchMs: number;
}

/** Old agent processes of a node whose state is kept (a rollout briefly overlaps two). */
const INSTANCES_PER_NODE = 4;

const key = (node: string, instance: string) => `${node}\u0000${instance}`;

export class AgentAcks {
  private readonly instances = new Map<string, InstanceState>();

  /** Takes the sequence a record recovered from the journal covers. */
  recover(record: icmpwatch.v1.IJournalRecord): void {
    const node = record.event?.node ?? record.lostEvents?.nodeName ?? '';
    const seq = Number(record.lastSequence ?? 0);
    if (!record.agentInstance || seq === 0) return;
    const state = this.get(node, record.agentInstance, true);
    state.accepted = state.durable = Math.max(state.accepted, seq);
  }

  get(node: string, instance: string, recovered = false): InstanceState {
    let state = this.instances.get(key(node, instance));
    if (!state) {
      state = { accepted: 0, durable: 0, lostAnnounced: recovered ? null : 0, lastBatchMs: Date.now() };
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
