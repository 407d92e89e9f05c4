// The transport flags of the CLI (src/cli/client-tls.ts and each command's use of it): TLS unless
// --insecure-plaintext is given, every refusal naming its flag, and observe/status against a
// collector process serving TLS with openssl-made certificates.
import { expect } from 'chai';
import { eventually } from '../collector/harness.js';
import { TestPki, type Ca, type KeyPair } from '../collector/test-pki.js';
import { runCli, spawnCollector } from './cli-runner.js';

describe('CLI transport flags', function () {
  this.timeout(60_000);
  let pki: TestPki;
  let ca: Ca;
  let server: KeyPair;

  before(() => {
    pki = new TestPki();
    ca = pki.ca('cli-ca');
    server = pki.issue(ca, 'collector', 'icmpwatch-collector', 'server');
  });

  after(() => pki?.cleanup());

  const refusals: [string, string[], RegExp][] = [
    ['collector without TLS or --insecure-plaintext', ['collector', '--listen', '127.0.0.1:0'], /^icmpwatch collector: --tls-cert, --tls-key and --tls-agent-ca are required together \(or --insecure-plaintext/],
    ['collector with only some TLS files', ['collector', '--listen', '127.0.0.1:0', '--tls-cert', '/x.crt'], /--tls-cert, --tls-key and --tls-agent-ca are required together/],
    ['collector with TLS and plaintext', ['collector', '--listen', '127.0.0.1:0', '--insecure-plaintext', '--tls-cert', '/x.crt'], /^icmpwatch collector: --insecure-plaintext: cannot be combined with --tls-cert$/m],
    ['agent --collector without TLS or --insecure-plaintext', ['agent', '--collector', '127.0.0.1:1'], /^icmpwatch agent: --collector: needs --tls-ca, --tls-cert and --tls-key \(or --insecure-plaintext/],
    ['agent TLS flags without --collector', ['agent', '--tls-ca', '/ca.crt'], /^icmpwatch agent: --tls-ca: only with --collector$/m],
    ['observe with TLS and plaintext', ['observe', '--server', '127.0.0.1:1', '--insecure-plaintext', '--tls-ca', '/ca.crt'], /^icmpwatch observe: --insecure-plaintext: cannot be combined with --tls-ca$/m],
    ['status with an unreadable CA', ['status', '--server', '127.0.0.1:1', '--tls-ca', '/nonexistent/ca.crt'], /^icmpwatch status: --tls-ca: .*ENOENT/],
  ];
  for (const [what, args, message] of refusals) {
    it(`exits 2 naming the flag: ${what}`, async () => {
      const r = await runCli(args);
      expect(r.code, r.stderr).to.equal(2);
      expect(r.stderr).to.match(message);
    });
  }

  it('collector: a key that is not the certificate\'s is named before listening', async () => {
    const other = pki.issue(ca, 'other', 'other', 'server');
    const r = await runCli(['collector', '--authorization=off', '--listen', '127.0.0.1:0', '--tls-cert', server.cert, '--tls-key', other.key, '--tls-agent-ca', ca.cert]);
    expect(r.code, r.stderr).to.equal(2);
    expect(r.stderr).to.match(/^icmpwatch collector: --tls-key: .*other\.key does not go with .*collector\.crt/m);
  });

  it('collector --insecure-plaintext says so loudly at start', async () => {
    const collector = await spawnCollector(['--insecure-plaintext', '--listen', '127.0.0.1:0']);
    try {
      await eventually(() => collector.log().includes('PLAINTEXT'), 5000);
      expect(collector.log()).to.match(/"level":"warn".*"msg":"PLAINTEXT: NO TLS \(--insecure-plaintext\)/);
    } finally {
      collector.child.kill('SIGTERM');
      await collector.exited;
    }
  });

  it('observe and status over TLS: --tls-ca trusts the collector; without it, or in plaintext, they fail', async () => {
    const collector = await spawnCollector(['--listen', '127.0.0.1:0', '--tls-cert', server.cert, '--tls-key', server.key, '--tls-agent-ca', ca.cert]);
    try {
      const ok = await runCli(['status', '--server', collector.address, '--tls-ca', ca.cert]);
      expect(ok.code, ok.stderr).to.equal(0);
      expect(ok.stdout).to.match(/^events seen:/);
      const viaName = await runCli(['observe', '--server', collector.address, '--tls-ca', ca.cert, '--tls-server-name', 'localhost', '--last', '1']);
      expect(viaName.code, viaName.stderr).to.equal(0);
      const untrusted = await runCli(['status', '--server', collector.address]);
      expect(untrusted.code).to.equal(1);
      expect(untrusted.stderr).to.match(/^icmpwatch status: UNAVAILABLE: .*self-signed certificate/m);
      const plaintext = await runCli(['observe', '--server', collector.address, '--insecure-plaintext', '--last', '1']);
      expect(plaintext.code).to.equal(1);
      expect(plaintext.stderr).to.match(/^icmpwatch observe: UNAVAILABLE: /m);
    } finally {
      collector.child.kill('SIGTERM');
      await collector.exited;
    }
  });
});
