import { expect } from 'chai';
import { FlowMemo } from '../../src/common/flow-memo.js';

describe('common: FlowMemo', () => {
  it('keeps a few entries per source, replacing the oldest, each source on its own', () => {
    const memo = new FlowMemo<number>();
    const a = { ip: '10.0.0.1' };
    const b = { ip: '10.0.0.2' };
    expect(memo.of(a)).to.deep.equal([]);
    for (let i = 1; i <= 8; i++) memo.remember(a, i);
    memo.remember(b, 100);
    expect([...memo.of(a)].sort((x, y) => x - y)).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 8]);
    memo.remember(a, 9);
    memo.remember(a, 10);
    expect([...memo.of(a)].sort((x, y) => x - y)).to.deep.equal([3, 4, 5, 6, 7, 8, 9, 10]);
    expect(memo.of(b)).to.deep.equal([100]);
    // Found by the object, not by what it holds.
    expect(memo.of({ ip: '10.0.0.1' })).to.deep.equal([]);
  });
});
