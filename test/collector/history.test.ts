// The history's bounds: count, age and encoded bytes, whichever is reached first.
import { expect } from 'chai';
import { encodeResponse } from '../../src/collector/encoded-response.js';
import { History } from '../../src/collector/history.js';

describe('collector: history bounds', () => {
  const response = (i: number) => encodeResponse({ nodeName: `n${i}` });

  it('drops the oldest records beyond the byte bound, keeps the sum of sizes, and remembers what it dropped', () => {
    const history = new History(1000, 3_600_000, 1000);
    const now = Date.now();
    for (let i = 1; i <= 10; i++) history.append(response(i), now + i, 300, now);
    expect(history.size).to.equal(3);
    expect(history.bytes).to.equal(900);
    expect(history.oldest?.record.nodeName).to.equal('n8');
    expect(history.droppedThrough?.record.nodeName).to.equal('n7');
    // One record bigger than the bound on its own: it stays (alone) until the next one.
    history.append(response(11), now + 11, 5000, now);
    expect(history.size).to.equal(1);
    expect(history.bytes).to.equal(5000);
    history.append(response(12), now + 12, 10, now);
    expect([history.size, history.bytes]).to.deep.equal([1, 10]);
  });

  it('keeps the byte sum right when count and age drop records', () => {
    const history = new History(4, 1000, 1 << 20);
    const now = Date.now();
    for (let i = 1; i <= 6; i++) history.append(response(i), now - 2000 + i * 500, 100 + i, now - 2000 + i * 500);
    expect(history.size).to.equal(3);
    expect(history.bytes).to.equal(104 + 105 + 106);
    history.expire(now + 10_000);
    expect([history.size, history.bytes]).to.deep.equal([0, 0]);
  });
});
