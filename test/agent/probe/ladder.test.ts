// The attach ladder: which hook runs, and why the others were refused.
import { expect } from 'chai';
import { readKernelFeatures, MissingBtfError, type KernelFeatures } from '../../../src/agent/probe/kernel-features.js';
import { DEFAULT_OBJECT, planHook, Probe, ProbeError } from '../../../src/agent/probe/probe.js';
import { isRoot, requirePrerequisite } from '../../setup.js';

const kernel = (over: Partial<KernelFeatures> = {}): KernelFeatures => ({
  release: '5.4.0-test',
  kernelBtf: true,
  btfSource: '/sys/kernel/btf/vmlinux',
  kprobes: true,
  lockdown: 'none',
  symbols: { ip_rcv_core: { status: 'found', symbols: ['ip_rcv_core'] }, ip6_rcv_core: { status: 'found', symbols: ['ip6_rcv_core'] } },
  btfFunctions: { ip_rcv_core: true, ip6_rcv_core: true },
  ...over,
});

const options = { objectPath: DEFAULT_OBJECT, btfPath: null, ringBytes: 1 << 16, eventsPerSecond: 0, wakeupBytes: 4096, onLibbpfMessage: () => {} };

describe('attach ladder', () => {
  it('plans fexit on both functions when BTF and kallsyms agree', () => {
    expect(planHook('fexit', kernel())).to.deep.include({ hook: 'fexit', symbols: ['ip_rcv_core', 'ip6_rcv_core'], warnings: [] });
  });

  it("refuses fexit on the seed's renamed symbol but plans the kretprobe on it", () => {
    const k = kernel({
      symbols: { ip_rcv_core: { status: 'found', symbols: ['ip_rcv_core.isra.20'] }, ip6_rcv_core: { status: 'found', symbols: ['ip6_rcv_core'] } },
      btfFunctions: { ip_rcv_core: false, ip6_rcv_core: true },
    });
    expect(planHook('fexit', k)).to.be.a('string').that.contains('no BTF function');
    const plan = planHook('kretprobe', k);
    expect(plan).to.deep.include({ symbols: ['ip_rcv_core.isra.20', 'ip6_rcv_core'] });
  });

  it('refuses fexit when a function also has a full clone, and leaves it to the kretprobe on every copy', () => {
    const k = kernel({
      symbols: { ip_rcv_core: { status: 'found', symbols: ['ip_rcv_core'] }, ip6_rcv_core: { status: 'found', symbols: ['ip6_rcv_core', 'ip6_rcv_core.constprop.0'] } },
    });
    const refusal = planHook('fexit', k);
    expect(refusal).to.be.a('string').that.contains('ip6_rcv_core also runs as ip6_rcv_core.constprop.0').and.contains('kretprobe attaches every clone');
    expect(planHook('kretprobe', k)).to.deep.include({ symbols: ['ip_rcv_core', 'ip6_rcv_core', 'ip6_rcv_core.constprop.0'], warnings: [] });
    const v4Clone = kernel({ symbols: { ip_rcv_core: { status: 'found', symbols: ['ip_rcv_core', 'ip_rcv_core.llvm.123'] }, ip6_rcv_core: { status: 'found', symbols: ['ip6_rcv_core'] } } });
    expect(planHook('fexit', v4Clone)).to.be.a('string').that.contains('ip_rcv_core also runs as ip_rcv_core.llvm.123');
  });

  it('covers IPv4 alone, with a warning, when the IPv6 function is missing', () => {
    const k = kernel({ symbols: { ip_rcv_core: { status: 'found', symbols: ['ip_rcv_core'] }, ip6_rcv_core: { status: 'absent', reason: 'ip6_rcv_core is not in /proc/kallsyms' } } });
    const plan = planHook('kretprobe', k);
    expect(plan).to.have.property('warnings').that.deep.equals(['IPv6 not covered: ip6_rcv_core is not in /proc/kallsyms']);
  });

  it('refuses kretprobes without kprobes, fexit and tp_btf without kernel BTF, and keeps raw_tp', () => {
    expect(planHook('kretprobe', kernel({ kprobes: false }))).to.contain('kprobes are not available');
    const noBtf = kernel({ kernelBtf: false, btfSource: '/boot/vmlinux.btf' });
    expect(planHook('fexit', noBtf)).to.contain('BTF');
    expect(planHook('tp_btf', noBtf)).to.contain('BTF');
    expect(planHook('raw_tp', noBtf)).to.not.be.a('string');
  });

  it('refuses to start without any BTF and says how to provide one', () => {
    expect(() => Probe.open({ ...options, hook: 'auto' }, kernel({ kernelBtf: false, btfSource: null }))).to.throw(ProbeError, /--btf PATH/);
    expect(() => readKernelFeatures('/nonexistent/vmlinux.btf')).to.throw(MissingBtfError, /--btf \/nonexistent\/vmlinux.btf: no such file/);
  });

  describe('on this kernel (no kprobes, fexit refused by lockdown)', function () {
    before(function () {
      requirePrerequisite(this, isRoot, 'root (BPF)');
    });

    it('refuses fexit with the load error', () => {
      try {
        Probe.open({ ...options, hook: 'fexit' }).close();
        expect.fail('fexit attached on a kernel that refuses it');
      } catch (err) {
        expect(err).to.be.instanceOf(ProbeError);
        expect((err as ProbeError).attempts[0]).to.deep.include({ hook: 'fexit', attached: false });
        expect((err as ProbeError).attempts[0]!.reason).to.match(/EPERM/);
      }
    });

    it('refuses kretprobe because the kernel has no kprobes', () => {
      expect(() => Probe.open({ ...options, hook: 'kretprobe' })).to.throw(ProbeError, /kprobes are not available/);
    });

    it('auto walks fexit, kretprobe and settles on tp_btf, recording each reason', () => {
      const probe = Probe.open({ ...options, hook: 'auto' });
      try {
        expect(probe.hook).to.equal('tp_btf');
        expect(probe.symbols).to.deep.equal(['netif_receive_skb']);
        expect(probe.attempts.map((a) => [a.hook, a.attached])).to.deep.equal([['fexit', false], ['kretprobe', false], ['tp_btf', true]]);
      } finally {
        probe.close();
      }
    });

    it('attaches raw_tp when asked for the tracepoint without BTF-typed programs', () => {
      const probe = Probe.open({ ...options, hook: 'raw_tp' });
      probe.close();
      expect(probe.hook).to.equal('raw_tp');
    });
  });
});
