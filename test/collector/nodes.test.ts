// The node registry's bounds: any client can say hello with any node name, so unavailable nodes are
// forgotten after a while and beyond a count; connected ones never are.
import { expect } from 'chai';
import { AgentAcks } from '../../src/collector/agent-acks.js';
import { NodeRegistry, type ForgetReason } from '../../src/collector/nodes.js';
import { icmpwatch } from '../../src/common/proto.js';

const { NodeState } = icmpwatch.v1;

describe('collector: node registry bounds', () => {
  const hello = (node: string) => ({ node, agentInstance: `${node}-1`, hook: 1, symbol: 's' });

  it('forgets the longest-unavailable node beyond the count, never a connected one, and says why', async () => {
    const tick = () => new Promise((resolve) => setTimeout(resolve, 5));
    const forgotten: [string, ForgetReason][] = [];
    const nodes = new NodeRegistry((name, reason) => forgotten.push([name, reason]), { maxNodes: 3, forgetAfterMs: 3_600_000 });
    for (const n of ['a', 'b', 'c']) nodes.connected(hello(n));
    // Four connected: over the count, but nothing is unavailable, so nothing goes.
    nodes.connected(hello('d'));
    expect(nodes.list().map((n) => n.name)).to.deep.equal(['a', 'b', 'c', 'd']);
    nodes.disconnected('b');
    await tick();
    nodes.disconnected('a');
    // Over the count with each new name: the node unavailable longest goes first.
    nodes.connected(hello('e'));
    expect(forgotten).to.deep.equal([['b', 'limit']]);
    expect(nodes.list().map((n) => n.name)).to.deep.equal(['a', 'c', 'd', 'e']);
    nodes.disconnected('c');
    nodes.connected(hello('f'));
    expect(forgotten.map(([n]) => n)).to.deep.equal(['b', 'a']);
    // A forgotten node that comes back is just new.
    expect(nodes.status('b').state).to.equal(NodeState.NODE_STATE_UNAVAILABLE);
    expect(nodes.connected(hello('b'))).to.equal(true);
  });

  it('forgets nodes unavailable for longer than the bound, with their acknowledgement state', () => {
    const acks = new AgentAcks();
    const forgotten: [string, ForgetReason][] = [];
    const nodes = new NodeRegistry(
      (name, reason) => {
        acks.forget(name);
        forgotten.push([name, reason]);
      },
      { maxNodes: 100, forgetAfterMs: 1000 },
    );
    for (const n of ['gone', 'here']) {
      nodes.connected(hello(n));
      acks.hello(n, `${n}-1`, { sequence: 50, ringLost: 0 });
    }
    nodes.disconnected('gone');
    nodes.expire(Date.now() + 500);
    expect(forgotten).to.deep.equal([]);
    nodes.expire(Date.now() + 1500);
    expect(forgotten).to.deep.equal([['gone', 'idle']]);
    expect(nodes.list().map((n) => n.name)).to.deep.equal(['here']);
    // Connected for longer than the bound: still listed.
    nodes.expire(Date.now() + 10_000);
    expect(nodes.list().map((n) => n.name)).to.deep.equal(['here']);
    // The forgotten node's agent starts from what it says was acknowledged; the other one's state stays.
    expect(acks.hello('gone', 'gone-1', { sequence: 7, ringLost: 0 }).durable).to.equal(7);
    expect(acks.hello('here', 'here-1', { sequence: 7, ringLost: 0 }).durable).to.equal(50);
  });
});
