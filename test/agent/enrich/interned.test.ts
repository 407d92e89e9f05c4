import { expect } from 'chai';
import { Interned } from '../../../src/agent/enrich/interned.js';

describe('interned values', () => {
  it('hands back the first value kept under a key, and starts afresh when full', () => {
    const labels = new Interned<Record<string, string>>(2);
    const first = { app: 'web' };
    expect(labels.get('web', first)).to.equal(first);
    expect(labels.get('web', { app: 'web' })).to.equal(first);
    const db = { app: 'db' };
    expect(labels.get('db', db)).to.equal(db);
    // Full: a third key empties it, so 'web' is kept anew from then on.
    expect(labels.get('cache', { app: 'cache' })).to.deep.equal({ app: 'cache' });
    const again = { app: 'web' };
    expect(labels.get('web', again)).to.equal(again);
    expect(labels.get('web', { app: 'web' })).to.equal(again);
  });
});
