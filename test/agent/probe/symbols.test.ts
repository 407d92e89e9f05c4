import { expect } from 'chai';
import { resolveKernelSymbol } from '../../../src/agent/probe/symbols.js';

const kallsyms = (...lines: string[]) => lines.join('\n') + '\n';

describe('kernel symbol resolution (kallsyms fixtures)', () => {
  it('takes the plain name when it exists', () => {
    const k = kallsyms('ffffffff81a00000 t ip_rcv_finish_core', 'ffffffff81a01000 t ip_rcv_core', 'ffffffff81a02000 T ip_rcv');
    expect(resolveKernelSymbol(k, 'ip_rcv_core')).to.deep.equal({ status: 'found', symbols: ['ip_rcv_core'] });
  });

  it("resolves the seed's gcc-renamed ip_rcv_core.isra.20", () => {
    const k = kallsyms('ffffffff8187e1c0 t ip_rcv_core.isra.20', 'ffffffff8187e7a0 T ip_rcv', 'ffffffff8187e900 T ip_list_rcv');
    expect(resolveKernelSymbol(k, 'ip_rcv_core')).to.deep.equal({ status: 'found', symbols: ['ip_rcv_core.isra.20'] });
  });

  it('attaches every full clone: the function plus its .constprop copy, and chained suffixes', () => {
    const k = kallsyms('ffffffff81000100 t ip6_rcv_core', 'ffffffff81000200 t ip6_rcv_core.constprop.0', 'ffffffff81000300 t ip6_rcv_core.isra.0.constprop.1');
    expect(resolveKernelSymbol(k, 'ip6_rcv_core')).to.deep.equal({
      status: 'found',
      symbols: ['ip6_rcv_core', 'ip6_rcv_core.constprop.0', 'ip6_rcv_core.isra.0.constprop.1'],
    });
  });

  it('takes a clang ThinLTO .llvm.N copy (hex suffix) beside the function, but not its .cold part', () => {
    const k = kallsyms('ffffffff81000100 t ip_rcv_core', 'ffffffff81000200 t ip_rcv_core.llvm.8391537a2f', 'ffffffff81000300 t ip_rcv_core.llvm.8391537a2f.cold');
    expect(resolveKernelSymbol(k, 'ip_rcv_core')).to.deep.equal({ status: 'found', symbols: ['ip_rcv_core', 'ip_rcv_core.llvm.8391537a2f'] });
  });

  it('resolves a function that exists only as a .llvm.N copy', () => {
    const k = kallsyms('ffffffff81000200 t ip6_rcv_core.llvm.17054398627516416377', 'ffffffff81000900 T ipv6_rcv');
    expect(resolveKernelSymbol(k, 'ip6_rcv_core')).to.deep.equal({ status: 'found', symbols: ['ip6_rcv_core.llvm.17054398627516416377'] });
  });

  it('never takes .cold, .part or similarly named functions', () => {
    const k = kallsyms('ffffffff81000100 t ip_rcv_core.cold', 'ffffffff81000200 t ip_rcv_core_extra', 'ffffffff81000300 t ip_rcv_core.part.0');
    const r = resolveKernelSymbol(k, 'ip_rcv_core');
    expect(r.status).to.equal('refused');
    expect(r).to.have.property('reason').that.contains('partial clone').and.contains('ip_rcv_core.part.0');
  });

  it('says absent when the function was inlined away', () => {
    const k = kallsyms('ffffffff8187e7a0 T ip_rcv', 'ffffffff8187e900 T ip_list_rcv');
    const r = resolveKernelSymbol(k, 'ip_rcv_core');
    expect(r).to.deep.include({ status: 'absent' });
    expect(r).to.have.property('reason').that.contains('inlined');
  });

  it('refuses a name at several addresses instead of guessing', () => {
    const k = kallsyms('ffffffff81000100 t ip_rcv_core', 'ffffffff81009900 t ip_rcv_core');
    const r = resolveKernelSymbol(k, 'ip_rcv_core');
    expect(r.status).to.equal('refused');
    expect(r).to.have.property('reason').that.contains('2 addresses');
  });

  it('ignores module symbols and data symbols of the same name', () => {
    const k = kallsyms('ffffffffc0100000 t ip_rcv_core\t[some_module]', 'ffffffff81000100 d ip_rcv_core', 'ffffffff81000200 t ip_rcv_core.isra.3');
    expect(resolveKernelSymbol(k, 'ip_rcv_core')).to.deep.equal({ status: 'found', symbols: ['ip_rcv_core.isra.3'] });
  });

  it('refuses when kallsyms hides addresses', () => {
    const k = kallsyms('0000000000000000 t ip_rcv_core');
    expect(resolveKernelSymbol(k, 'ip_rcv_core').status).to.equal('refused');
  });

  it('finds the real symbol on this machine', function () {
    // Read from the running kernel: ip_rcv_core exists from 4.19 on (shared/notes/kernel.md).
    return import('node:fs/promises').then(async ({ readFile }) => {
      const r = resolveKernelSymbol(await readFile('/proc/kallsyms', 'utf8'), 'ip_rcv_core');
      expect(r.status).to.equal('found');
    });
  });
});
