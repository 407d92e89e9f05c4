// The CLI side of subscriber access control, with the real kube-apiserver (test/k8s): the collector
// process with --authorization=kubernetes --kubeconfig over TLS, and observe/status with --token-file
// or $ICMPWATCH_TOKEN, exiting 3 with a clear message when refused; a token is never sent with
// --insecure-plaintext.
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { CoreV1Api, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import { expect } from 'chai';
import { ACCESS_GROUP, ACCESS_RESOURCE, ACCESS_VERB } from '../../src/collector/access-review.js';
import { WatchedTlsFiles } from '../../src/common/grpc/tls.js';
import { echoEvent, eventually, freePort, silentLog, startExporter } from '../collector/harness.js';
import { TestPki } from '../collector/test-pki.js';
import { uniqueName, useCluster } from '../k8s/cluster.js';
import { runCli, spawnCollector } from './cli-runner.js';

/** Runs `body` with $ICMPWATCH_TOKEN set to `token` (the CLI child inherits it). */
async function withTokenEnv<T>(token: string, body: () => Promise<T>): Promise<T> {
  const before = process.env.ICMPWATCH_TOKEN;
  process.env.ICMPWATCH_TOKEN = token;
  try {
    return await body();
  } finally {
    if (before === undefined) delete process.env.ICMPWATCH_TOKEN;
    else process.env.ICMPWATCH_TOKEN = before;
  }
}

describe('cli: a bearer token is never sent with --insecure-plaintext', function () {
  this.timeout(60_000);
  let dir: string;
  let listener: net.Server;
  let connections = 0;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'icmpwatch-plaintext-token-'));
    // Counts connections and drops them: a client that did connect fails fast instead of waiting.
    listener = net.createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  });

  after(async () => {
    await new Promise((resolve) => listener?.close(resolve));
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('--token-file or $ICMPWATCH_TOKEN with --insecure-plaintext: exit 2 naming both, before connecting', async () => {
    const file = path.join(dir, 'token');
    await fs.writeFile(file, 'a-token\n');
    const listening = `127.0.0.1:${(listener.address() as net.AddressInfo).port}`;
    const unreachable = `127.0.0.1:${await freePort()}`;
    for (const server of [listening, unreachable]) {
      for (const command of [['observe', '--follow'], ['status']]) {
        const fromFile = await runCli([...command, '--server', server, '--insecure-plaintext', '--token-file', file]);
        expect(fromFile.code, fromFile.stderr).to.equal(2);
        expect(fromFile.stderr).to.equal(`icmpwatch ${command[0]}: --token-file: a bearer token is not sent with --insecure-plaintext (anyone on the path could read it): connect over TLS, or send no token\n`);
        const fromEnv = await withTokenEnv('a-token', () => runCli([...command, '--server', server, '--insecure-plaintext']));
        expect(fromEnv.code, fromEnv.stderr).to.equal(2);
        expect(fromEnv.stderr).to.include('$ICMPWATCH_TOKEN: ').and.include('--insecure-plaintext');
      }
    }
    expect(connections, 'connections to the collector address').to.equal(0);
    // Without a token, plaintext connects (and fails on this listener): the refusal is the token's.
    const noToken = await runCli(['status', '--server', listening, '--insecure-plaintext']);
    expect(noToken.code, noToken.stderr).to.equal(1);
    expect(connections).to.be.greaterThan(0);
  });
});

describe('cli: access control (real kube-apiserver)', function () {
  this.timeout(60_000);
  const cleanups: (() => unknown)[] = [];
  let server: string;
  let dir: string;
  let viewerToken: string;
  let nobodyToken: string;
  let tls: string[];

  before(async function () {
    const cluster = await useCluster(this);
    const core = cluster.admin.makeApiClient(CoreV1Api);
    const rbac = cluster.admin.makeApiClient(RbacAuthorizationV1Api);
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'icmpwatch-access-'));
    cleanups.push(() => fs.rm(dir, { recursive: true, force: true }));

    const ns = await cluster.namespace('cli-access');
    const token = async (name: string) => {
      await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name } } });
      return (await core.createNamespacedServiceAccountToken({ name, namespace: ns, body: { spec: { audiences: [], expirationSeconds: 3600 } } })).status!.token!;
    };
    viewerToken = await token('viewer');
    nobodyToken = await token('nobody');
    const role = uniqueName('icmpwatch-viewer');
    await rbac.createClusterRole({ body: { metadata: { name: role }, rules: [{ apiGroups: [ACCESS_GROUP], resources: [ACCESS_RESOURCE], verbs: [ACCESS_VERB] }] } });
    await rbac.createClusterRoleBinding({
      body: {
        metadata: { name: role },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role },
        subjects: [{ kind: 'ServiceAccount', name: 'viewer', namespace: ns }],
      },
    });
    cleanups.push(() => rbac.deleteClusterRoleBinding({ name: role }), () => rbac.deleteClusterRole({ name: role }));

    const pki = new TestPki();
    cleanups.push(() => pki.cleanup());
    const ca = pki.ca('access-ca');
    const serving = pki.issue(ca, 'collector', 'icmpwatch-collector', 'server');
    const agent = pki.issue(ca, 'agent', 'icmpwatch-agent', 'client');
    tls = ['--tls-ca', ca.cert];
    const collector = await spawnCollector([
      '--listen',
      '127.0.0.1:0',
      '--tls-cert',
      serving.cert,
      '--tls-key',
      serving.key,
      '--tls-agent-ca',
      ca.cert,
      '--authorization=kubernetes',
      '--kubeconfig',
      cluster.kubeconfigPath,
      '--authorization-cache',
      '2s',
    ]);
    cleanups.push(() => collector.child.kill('SIGKILL'));
    server = collector.address;
    const agentFiles = await WatchedTlsFiles.open({ caFile: ca.cert, certFile: agent.cert, keyFile: agent.key }, silentLog);
    cleanups.push(() => agentFiles.close());
    const exporter = startExporter(server, { transport: { credentials: agentFiles.channelCredentials(), serverName: null } });
    cleanups.push(() => exporter.close(100));
    exporter.publish(echoEvent(1));
    await eventually(() => exporter.state().connected && exporter.state().bufferedEvents === 0);
  });

  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  const write = async (name: string, text: string) => {
    const file = path.join(dir, name);
    await fs.writeFile(file, text);
    return file;
  };

  it('observe and status with --token-file of a cluster viewer: exit 0; the file is read again on each run', async () => {
    const file = await write('token', 'not-a-token\n');
    const rejected = await runCli(['observe', '--server', server, ...tls, '--token-file', file, '--last', '5']);
    expect(rejected.code, rejected.stderr).to.equal(3);
    expect(rejected.stderr).to.include('UNAUTHENTICATED').and.include('--token-file');

    await fs.writeFile(file, `${viewerToken}\n`);
    const observed = await runCli(['observe', '--server', server, ...tls, '--token-file', file, '--last', '5']);
    expect(observed.code, observed.stderr).to.equal(0);
    expect(observed.stdout).to.include('echo-request');
    const status = await runCli(['status', '--server', server, ...tls, '--token-file', file]);
    expect(status.code, status.stderr).to.equal(0);
    expect(status.stdout).to.match(/events seen:\s+1 /);
  });

  it('$ICMPWATCH_TOKEN without rights: status exits 3 with PERMISSION_DENIED naming what is missing', async () => {
    const r = await withTokenEnv(nobodyToken, () => runCli(['status', '--server', server, ...tls]));
    expect(r.code, r.stderr).to.equal(3);
    expect(r.stderr).to.include('PERMISSION_DENIED').and.include('get icmpevents.icmpwatch.io cluster-wide').and.include('ClusterRoles');
  });

  it('no token: exit 3 UNAUTHENTICATED; an unreadable --token-file: exit 2 naming the flag', async () => {
    const none = await runCli(['observe', '--server', server, ...tls, '--last', '1']);
    expect(none.code, none.stderr).to.equal(3);
    expect(none.stderr).to.include('UNAUTHENTICATED: no bearer token');
    const missing = await runCli(['observe', '--server', server, ...tls, '--token-file', path.join(dir, 'absent')]);
    expect(missing.code).to.equal(2);
    expect(missing.stderr).to.include('--token-file: cannot read').and.include('ENOENT');
  });

  it('collector: --authorization=kubernetes without a kubeconfig outside a pod is a usage error', async () => {
    const r = await runCli(['collector', '--insecure-plaintext', '--listen', '127.0.0.1:0']);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.include('--authorization: kubernetes needs the API server');
  });
});
