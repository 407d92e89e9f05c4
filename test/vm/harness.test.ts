// Proves the QEMU guest harness (test/vm/vm.ts) on both Debian kernels, one boot each: the guest
// runs the Debian kernel with BTF, kprobe support and ip_rcv_core, the repo's Node 24, and network
// namespaces with ping.
import { expect } from 'chai';
import { requirePrerequisite } from '../setup.js';
import { guestPrerequisites, runInGuest, type GuestKernel, type GuestResult } from './vm.js';

// Each check runs in its own section so one failure doesn't hide the others.
const SCRIPT = `
section() { name=$1; shift; echo "@@@ begin $name"; ( "$@" ) 2>&1; echo "@@@ end $name $?"; }
section uname uname -r
section version cat /proc/version
section btf test -s /sys/kernel/btf/vmlinux
section kallsyms grep -w ip_rcv_core /proc/kallsyms
section node node --version
section netns sh -c 'ip netns add x && ip -n x link set lo up && ip netns exec x ping -c1 -W5 127.0.0.1'
section kprobe sh -c 'bpftool feature probe kernel | grep -i kprobe'
`;

interface Section {
  rc: number;
  out: string;
}

function parseSections(output: string): Map<string, Section> {
  const sections = new Map<string, Section>();
  const re = /^@@@ begin (\S+)\n([\s\S]*?)^@@@ end \1 (\d+)$/gm;
  for (const m of output.matchAll(re)) sections.set(m[1], { out: m[2], rc: Number(m[3]) });
  return sections;
}

const RELEASE: Record<GuestKernel, RegExp> = {
  '6.1': /^6\.1\.\d+-\d+-amd64$/,
  '6.12': /^6\.12\.\d+\+deb\d+-amd64$/,
};

for (const kernel of ['6.1', '6.12'] as const) {
  describe(`QEMU guest harness: Debian ${kernel} kernel`, function () {
    // A first run may install QEMU and download the kernel (~70-110 MB); a cached run takes ~10 s.
    this.timeout(10 * 60_000);
    let result: GuestResult;
    let sections: Map<string, Section>;

    before(async function () {
      const pre = guestPrerequisites();
      requirePrerequisite(this, pre.ok, `QEMU guest harness: ${pre.missing}`);
      result = await runInGuest(kernel, SCRIPT, { timeoutMs: 180_000 });
      sections = parseSections(result.output);
    });

    const section = (name: string): Section => {
      const s = sections.get(name);
      if (!s) throw new Error(`section ${name} missing from guest output:\n${result.output}`);
      return s;
    };
    const ok = (name: string): string => {
      const s = section(name);
      expect(s.rc, `${name} failed in the guest:\n${s.out}`).to.equal(0);
      return s.out;
    };

    it('runs the script to completion with exit code 0', () => {
      expect(result.exitCode, result.output).to.equal(0);
      expect([...sections.keys()]).to.have.members(['uname', 'version', 'btf', 'kallsyms', 'node', 'netns', 'kprobe']);
    });

    it(`boots Debian's ${kernel} kernel`, () => {
      const release = ok('uname').trim();
      expect(release).to.match(RELEASE[kernel]);
      expect(result.kernelRelease).to.equal(release);
      expect(ok('version')).to.match(/Debian/);
    });

    it('has BTF at /sys/kernel/btf/vmlinux', () => {
      ok('btf');
    });

    it('has ip_rcv_core in /proc/kallsyms', () => {
      expect(ok('kallsyms')).to.match(/^[0-9a-f]+ [tT] ip_rcv_core$/m);
    });

    it("runs the repo's Node 24", () => {
      expect(ok('node').trim()).to.match(/^v24\./);
    });

    it('creates a network namespace and pings inside it', () => {
      expect(ok('netns')).to.match(/1 packets transmitted, 1 received/);
    });

    it('supports kprobe programs', () => {
      expect(ok('kprobe')).to.match(/program_type kprobe is available/);
    });
  });
}
