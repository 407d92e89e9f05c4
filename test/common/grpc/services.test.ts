import { expect } from 'chai';
import { observerService } from '../../../src/common/grpc/services.js';
import { icmpwatch } from '../../../src/common/proto.js';

describe('SubscribeBatches framing', () => {
  const encoded = (node: string) => icmpwatch.v1.SubscribeResponse.encode({ nodeName: node }).finish();
  const nodesIn = (bytes: Buffer) => icmpwatch.v1.SubscribeBatch.decode(bytes).responses.map((r) => r.nodeName);
  const frame = observerService.subscribeBatches.responseSerialize;

  it('frames each batch from its responses, a batch of the very responses framed last as framed then', () => {
    const a = encoded('a');
    const b = encoded('b');
    const first = frame([a, b]);
    expect(nodesIn(first)).to.deep.equal(['a', 'b']);
    // The same responses (a later subscriber's turn): the same bytes, not framed again.
    expect(frame([a, b])).to.equal(first);
    // Equal bytes but other responses, a prefix, another order: framed anew.
    const again = frame([a, encoded('b')]);
    expect(again).to.not.equal(first);
    expect(nodesIn(again)).to.deep.equal(['a', 'b']);
    expect(nodesIn(frame([a]))).to.deep.equal(['a']);
    expect(nodesIn(frame([b, a]))).to.deep.equal(['b', 'a']);
    expect(nodesIn(frame([]))).to.deep.equal([]);
    expect(nodesIn(frame([a, b]))).to.deep.equal(['a', 'b']);
    // A caller that refills its array: compared by what it held when framed.
    const reused = [a, encoded('d')];
    expect(nodesIn(frame(reused))).to.deep.equal(['a', 'd']);
    reused[1] = encoded('c');
    expect(nodesIn(frame(reused))).to.deep.equal(['a', 'c']);
  });
});
