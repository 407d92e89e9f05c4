// The seed's hook on real kernels: Debian's 6.1 and 6.12 booted under QEMU (test/vm/), where
// kprobes and fexit work. The agent itself attaches with --probe kretprobe, fexit and auto, and
// reports pings between the guest's root namespace and a pod namespace with exact id/seq.
import { expect } from 'chai';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { guestPrerequisites, runInGuest } from '../../vm/vm.js';
import { requirePrerequisite } from '../../setup.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));

interface EventLine {
  family: string;
  source: { ip: string };
  destination: { ip: string };
  icmp: { type: number; name: string; id?: number; seq?: number };
  observation: { hook: string; point: string; symbol?: string };
}

for (const kernel of ['6.1', '6.12'] as const) {
  describe(`guest kernel ${kernel} (QEMU): kretprobe and fexit on ip_rcv_core`, function () {
    this.timeout(15 * 60 * 1000);
    const out = join(REPO, '.cache', 'vm', `capture-${kernel}-${process.pid}`);
    let exitCode = -1;
    let output = '';
    const events = (choice: string): EventLine[] =>
      readFileSync(join(out, `${choice}.jsonl`), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as EventLine);

    before(async function () {
      const pre = guestPrerequisites();
      requirePrerequisite(this, pre.ok, `QEMU guest harness: ${pre.missing}`);
      rmSync(out, { recursive: true, force: true });
      mkdirSync(out, { recursive: true });
      const r = await runInGuest(kernel, `exec ./test/agent/probe/guest-capture.sh ${out}\n`, { timeoutMs: 10 * 60 * 1000 });
      exitCode = r.exitCode;
      output = r.output;
      expect(r.kernelRelease).to.match(kernel === '6.1' ? /^6\.1\./ : /^6\.12\./);
    });

    after(function () {
      if (this.currentTest?.state !== "failed") rmSync(out, { recursive: true, force: true });
    });

    it('runs the capture job to the end', () => {
      expect(exitCode, output).to.equal(0);
      for (const choice of ['kretprobe', 'fexit', 'auto']) expect(output).to.contain(`${choice} exit 0`);
    });

    it('reports that auto selects fexit, with the resolved symbols', () => {
      const report = JSON.parse(readFileSync(join(out, 'probe.json'), 'utf8')) as { selected: string; hooks: { hook: string; attached: boolean; symbols?: string[] }[] };
      expect(report.selected).to.equal('fexit');
      const kret = report.hooks.find((h) => h.hook === 'kretprobe')!;
      expect(kret.attached).to.equal(true);
      expect(kret.symbols).to.deep.equal(['ip_rcv_core', 'ip6_rcv_core']);
    });

    for (const [choice, hook] of [['kretprobe', 'kretprobe'], ['fexit', 'fexit'], ['auto', 'fexit']] as const) {
      it(`--probe ${choice}: attaches ${hook} and reports v4 and v6 echoes once each with exact id/seq and observation points`, () => {
        const log = readFileSync(join(out, `${choice}.log`), 'utf8');
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
    }
  });
}
