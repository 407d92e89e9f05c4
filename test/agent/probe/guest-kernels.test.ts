// The seed's hook on real kernels: Debian's 6.1 and 6.12 booted under QEMU (test/vm/), where
// kprobes and fexit work. One boot per kernel (guest-capture.sh): it records what the harness
// provides (kernel, BTF, kallsyms, Node, netns, kprobes), then the agent itself attaches with
// --probe kretprobe, fexit and auto, reports pings between the guest's root namespace and a pod
// namespace with exact id/seq, and counts the frames ip_rcv_core/ip6_rcv_core drop.
import { expect } from 'chai';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { guestPrerequisites, runInGuest, type GuestKernel } from '../../vm/vm.js';
import { requirePrerequisite } from '../../setup.js';
import { echo, ethernet, ipv4, ipv6 } from '../frames.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));

const RELEASE: Record<GuestKernel, RegExp> = {
  '6.1': /^6\.1\.\d+-\d+-amd64$/,
  '6.12': /^6\.12\.\d+\+deb\d+-amd64$/,
};

// guest-capture.sh gives the veth these addresses: frames go from the pod's eth0 to vhost.
const POD_MAC = '02:00:00:77:00:02';
const HOST_MAC = '02:00:00:77:00:01';
const DROPPED = 3;
const DROP_ECHO_ID = 4242;

/** Frames the kernel validates and drops (ip_rcv_core / ip6_rcv_core return NULL), per family. */
const dropFrames: Record<'v4' | 'v6', (seq: number) => Buffer> = {
  v4: (seq) => {
    const packet = ipv4({ src: '10.77.0.2', dst: '10.77.0.1', id: 900 + seq }, echo(8, DROP_ECHO_ID, seq));
    packet.writeUInt16BE(packet.readUInt16BE(10) ^ 0xffff, 10); // a wrong header checksum
    return ethernet(HOST_MAC, POD_MAC, 0x0800, packet);
  },
  // A multicast source address is invalid.
  v6: (seq) => ethernet(HOST_MAC, POD_MAC, 0x86dd, ipv6('ff02::1', 'fd77::1', [], 58, echo(128, DROP_ECHO_ID, seq))),
};

interface EventLine {
  family: string;
  source: { ip: string };
  destination: { ip: string };
  icmp: { type: number; name: string; id?: number; seq?: number };
  observation: { hook: string; point: string; symbol?: string };
}

function metric(text: string, name: string, hook: string, family: 'ipv4' | 'ipv6'): number {
  const m = new RegExp(`^${name}\\{hook="${hook}",family="${family}"\\} (\\d+)$`, 'm').exec(text);
  if (!m) throw new Error(`${name}{hook="${hook}",family="${family}"} missing from /metrics:\n${text}`);
  return Number(m[1]);
}

for (const kernel of ['6.1', '6.12'] as const) {
  describe(`guest kernel ${kernel} (QEMU): kretprobe and fexit on ip_rcv_core`, function () {
    // A first run may install QEMU and download the kernel; the capture job itself takes minutes under TCG.
    this.timeout(15 * 60 * 1000);
    const out = join(REPO, '.cache', 'vm', `capture-${kernel}-${process.pid}`);
    let exitCode = -1;
    let output = '';
    let kernelRelease = '';
    const file = (name: string) => readFileSync(join(out, name), 'utf8');
    const events = (choice: string): EventLine[] =>
      file(`${choice}.jsonl`).split('\n').filter(Boolean).map((l) => JSON.parse(l) as EventLine);
    /** A fact the guest recorded; fails with the command's output when the command failed. */
    const fact = (name: string): string => {
      const text = file(`fact-${name}.txt`);
      expect(file(`fact-${name}.rc`).trim(), `${name} failed in the guest:\n${text}`).to.equal('0');
      return text;
    };

    before(async function () {
      const pre = guestPrerequisites();
      requirePrerequisite(this, pre.ok, `QEMU guest harness: ${pre.missing}`);
      rmSync(out, { recursive: true, force: true });
      mkdirSync(out, { recursive: true });
      for (const [family, frame] of Object.entries(dropFrames)) {
        const frames = Array.from({ length: DROPPED }, (_, i) => frame(i + 1).toString('hex'));
        writeFileSync(join(out, `drop-${family}.hex`), frames.join('\n') + '\n');
      }
      // The guest runs on TCG: a busy host slows it many times over, so its load is part of the record.
      const loadBefore = loadavg()[0]!.toFixed(1);
      const r = await runInGuest(kernel, `exec ./test/agent/probe/guest-capture.sh ${out}\n`, { timeoutMs: 12 * 60 * 1000 });
      exitCode = r.exitCode;
      output = r.output;
      kernelRelease = r.kernelRelease;
      const steps = existsSync(join(out, 'timings.txt')) ? file('timings.txt').trim().split('\n').join(', ') : 'none';
      console.log(
        `      guest ${kernel}: boot ${(r.bootMs / 1000).toFixed(1)} s, whole run ${(r.durationMs / 1000).toFixed(1)} s, host load ${loadBefore} -> ${loadavg()[0]!.toFixed(1)}; steps: ${steps}`,
      );
    });

    after(function () {
      if (this.currentTest?.state !== 'failed') rmSync(out, { recursive: true, force: true });
    });

    describe('the harness', () => {
      it(`boots Debian's ${kernel} kernel`, () => {
        const release = fact('uname').trim();
        expect(release).to.match(RELEASE[kernel]);
        expect(kernelRelease).to.equal(release);
        expect(fact('version')).to.match(/Debian/);
      });

      it('has BTF at /sys/kernel/btf/vmlinux', () => {
        fact('btf');
      });

      it('has ip_rcv_core and ip6_rcv_core in /proc/kallsyms, without clones', () => {
        const names = fact('kallsyms').trim().split('\n').map((l) => l.split(' ')[2]);
        expect(names.sort()).to.deep.equal(['ip6_rcv_core', 'ip_rcv_core']);
      });

      it("runs the repo's Node 24", () => {
        expect(fact('node').trim()).to.match(/^v24\./);
      });

      it('pings across a veth into a network namespace, v4 and v6', () => {
        expect(fact('netns')).to.match(/1 packets transmitted, 1 received/);
        expect(fact('netns6')).to.match(/1 packets transmitted, 1 received/);
      });

      it('supports kprobe programs', () => {
        expect(fact('kprobe')).to.match(/program_type kprobe is available/);
      });
    });

    it('runs the capture job to the end', () => {
      expect(exitCode, output).to.equal(0);
      for (const choice of ['kretprobe', 'fexit', 'auto']) expect(output).to.contain(`${choice} exit 0`);
    });

    it('reports that auto selects fexit, with the resolved symbols', () => {
      const report = JSON.parse(file('probe.json')) as { selected: string; hooks: { hook: string; program: string; attached: boolean; symbols?: string[] }[] };
      expect(report.selected).to.equal('fexit');
      expect(report.hooks.map((h) => [h.hook, h.program, h.attached])).to.deep.equal([
        ['fexit', 'fexit', true],
        ['kretprobe', 'kretprobe', true],
        ['tracepoint', 'tp_btf', true],
        ['tracepoint', 'raw_tp', true],
      ]);
      expect(report.hooks[1]!.symbols).to.deep.equal(['ip_rcv_core', 'ip6_rcv_core']);
    });

    for (const [choice, hook] of [['kretprobe', 'kretprobe'], ['fexit', 'fexit'], ['auto', 'fexit']] as const) {
      describe(`--probe ${choice}`, () => {
        it(`attaches ${hook} and reports v4 and v6 echoes once each with exact id/seq and observation points`, () => {
          const log = file(`${choice}.log`);
          expect(log).to.match(new RegExp(`"hook":"${hook}".*"msg":"agent running"|"msg":"agent running".*"hook":"${hook}"`));
          const evs = events(choice);
          for (const [family, pod, host, request, reply] of [['ipv4', '10.77.0.2', '10.77.0.1', 8, 0], ['ipv6', 'fd77::2', 'fd77::1', 128, 129]] as const) {
            const requests = evs.filter((e) => e.family === family && e.destination.ip === pod && e.icmp.type === request);
            const replies = evs.filter((e) => e.family === family && e.destination.ip === host && e.icmp.type === reply);
            expect(requests.map((e) => e.icmp.seq), `${family} requests`).to.deep.equal([1, 2, 3]);
            expect(replies.map((e) => e.icmp.seq), `${family} replies`).to.deep.equal([1, 2, 3]);
            expect(new Set([...requests, ...replies].map((e) => e.icmp.id)).size).to.equal(1);
            for (const e of requests) expect(e.observation).to.include({ hook, point: 'destination' });
            for (const e of replies) expect(e.observation).to.include({ hook, point: 'host' });
          }
        });

        it('names the hooked function in every event: ip_rcv_core for IPv4, ip6_rcv_core for IPv6', () => {
          const evs = events(choice);
          expect(evs.filter((e) => e.family === 'ipv4')).to.not.be.empty;
          expect(evs.filter((e) => e.family === 'ipv6')).to.not.be.empty;
          for (const e of evs) {
            expect(e.observation, JSON.stringify(e)).to.include({ hook, symbol: e.family === 'ipv4' ? 'ip_rcv_core' : 'ip6_rcv_core' });
          }
        });

        it('counts the frames the kernel drops in ip_rcv_core and ip6_rcv_core (NULL return)', () => {
          const dropped = (step: string, family: 'ipv4' | 'ipv6') => metric(file(`${choice}.metrics-${step}`), 'icmpwatch_kernel_rcv_dropped_total', hook, family);
          // Nothing else in the guest sends invalid packets; background drops could only add.
          expect(dropped('v4', 'ipv4') - dropped('before', 'ipv4'), 'IPv4: bad header checksum').to.be.at.least(DROPPED);
          expect(dropped('v6', 'ipv6') - dropped('v4', 'ipv6'), 'IPv6: multicast source').to.be.at.least(DROPPED);
          // Each family's drops are counted under its own label.
          expect(dropped('v4', 'ipv6') - dropped('before', 'ipv6'), 'IPv4 frames never count as IPv6 drops').to.equal(0);
          // The dropped echo requests never become events.
          expect(events(choice).filter((e) => e.icmp.id === DROP_ECHO_ID)).to.be.empty;
        });
      });
    }
  });
}
