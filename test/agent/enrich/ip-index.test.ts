import { expect } from 'chai';
import { IpIndex, type Claimant, type Source } from '../../../src/agent/enrich/ip-index.js';

const claim = (uid: string, ips: string[], created = 0, source: Source = 'pod'): Claimant<string> => ({ uid, source, created, ips, value: uid });

describe('ip index', () => {
  it('prefers pod over node over hostNetwork over service, then live over deleted, then newest', () => {
    const idx = new IpIndex<string>(1000);
    idx.upsert(claim('svc', ['10.0.0.1'], 5, 'service'));
    idx.upsert(claim('host', ['10.0.0.1'], 4, 'hostNetwork'));
    expect(idx.lookup('10.0.0.1')?.uid).to.equal('host');
    idx.upsert(claim('node', ['10.0.0.1'], 3, 'node'));
    expect(idx.lookup('10.0.0.1')?.uid).to.equal('node');
    idx.upsert(claim('old', ['10.0.0.1'], 1));
    idx.upsert(claim('new', ['10.0.0.1'], 2));
    expect(idx.lookup('10.0.0.1')?.uid).to.equal('new');
    expect(idx.sizes()).to.deep.equal({ pod: 1, node: 0, hostNetwork: 0, service: 0 });
    idx.remove('new', 0);
    expect(idx.lookup('10.0.0.1')?.uid).to.equal('old');
    idx.upsert(claim('old', ['10.0.0.9'], 1));
    idx.remove('node', 0);
    expect(idx.lookup('10.0.0.1')?.uid).to.equal('new');
    expect(idx.lookup('10.0.0.9')?.uid).to.equal('old');
  });

  it('removes only the deleted object\'s claims, after its grace period', () => {
    const idx = new IpIndex<string>(1000);
    idx.upsert(claim('a', ['10.0.0.2'], 1));
    idx.remove('a', 100);
    expect(idx.lookup('10.0.0.2')?.uid).to.equal('a');
    idx.upsert(claim('b', ['10.0.0.2'], 2));
    idx.sweep(1100);
    expect(idx.lookup('10.0.0.2')?.uid).to.equal('b');
    // A late delete of an address's previous owner (never seen again) changes nothing.
    idx.remove('a', 1200);
    idx.sweep(5000);
    expect(idx.lookup('10.0.0.2')?.uid).to.equal('b');
    idx.remove('b', 5000);
    idx.sweep(5999);
    expect(idx.lookup('10.0.0.2')?.uid).to.equal('b');
    idx.sweep(6000);
    expect(idx.lookup('10.0.0.2')).to.equal(undefined);
    expect(idx.objects).to.equal(0);
  });

  it('moves claims when an object\'s addresses change, in canonical IPv6 form', () => {
    const idx = new IpIndex<string>(0);
    idx.upsert(claim('p', ['10.0.0.3', 'FD00:0:0::3']));
    expect(idx.lookup('fd00::3')?.uid).to.equal('p');
    idx.upsert(claim('p', ['10.0.0.4']));
    expect(idx.lookup('10.0.0.3')).to.equal(undefined);
    expect(idx.lookup('fd00::3')).to.equal(undefined);
    expect(idx.lookup('10.0.0.4')?.uid).to.equal('p');
    expect(idx.sizes()).to.deep.equal({ pod: 1, node: 0, hostNetwork: 0, service: 0 });
  });

  it('after a relist drops the live objects of that source that were not listed', () => {
    const idx = new IpIndex<string>(0);
    idx.upsert(claim('kept', ['10.0.0.5']));
    idx.upsert(claim('gone', ['10.0.0.6']));
    idx.upsert(claim('n', ['10.0.0.7'], 0, 'node'));
    idx.retainOnly('pod', new Set(['kept']), 10);
    idx.sweep(10);
    expect(idx.lookup('10.0.0.5')?.uid).to.equal('kept');
    expect(idx.lookup('10.0.0.6')).to.equal(undefined);
    expect(idx.lookup('10.0.0.7')?.uid).to.equal('n');
  });
});
