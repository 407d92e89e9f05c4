// The CLI side of subscriber access control, with the real kube-apiserver (test/k8s): the collector
// process with --authorization=kubernetes --kubeconfig, and observe/status with --token-file or
// $ICMPWATCH_TOKEN, exiting 3 with a clear message when refused.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CoreV1Api, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import { expect } from 'chai';
import { ACCESS_GROUP, ACCESS_RESOURCE, ACCESS_VERB } from '../../src/collector/access-review.js';
import { echoEvent, eventually, startExporter } from '../collector/harness.js';
import { uniqueName, useCluster } from '../k8s/cluster.js';
import { runCli, spawnCollector } from './cli-runner.js';

describe('cli: access control (real kube-apiserver)', function () {
  this.timeout(60_000);
  const cleanups: (() => unknown)[] = [];
  let server: string;
  let dir: string;
  let viewerToken: string;
  let nobodyToken: string;

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

    const collector = await spawnCollector([
      '--insecure-plaintext',
      '--listen',
      '127.0.0.1:0',
      '--authorization=kubernetes',
      '--kubeconfig',
      cluster.kubeconfigPath,
      '--authorization-cache',
      '2s',
    ]);
    cleanups.push(() => collector.child.kill('SIGKILL'));
    server = collector.address;
    const exporter = startExporter(server);
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
    const rejected = await runCli(['observe', '--server', server, '--insecure-plaintext', '--token-file', file, '--last', '5']);
    expect(rejected.code, rejected.stderr).to.equal(3);
    expect(rejected.stderr).to.include('UNAUTHENTICATED').and.include('--token-file');

    await fs.writeFile(file, `${viewerToken}\n`);
    const observed = await runCli(['observe', '--server', server, '--insecure-plaintext', '--token-file', file, '--last', '5']);
    expect(observed.code, observed.stderr).to.equal(0);
    expect(observed.stdout).to.include('echo-request');
    const status = await runCli(['status', '--server', server, '--insecure-plaintext', '--token-file', file]);
    expect(status.code, status.stderr).to.equal(0);
    expect(status.stdout).to.match(/events seen:\s+1 /);
  });

  it('$ICMPWATCH_TOKEN without rights: status exits 3 with PERMISSION_DENIED naming what is missing', async () => {
    const before = process.env.ICMPWATCH_TOKEN;
    process.env.ICMPWATCH_TOKEN = nobodyToken;
    try {
      const r = await runCli(['status', '--server', server, '--insecure-plaintext']);
      expect(r.code, r.stderr).to.equal(3);
      expect(r.stderr).to.include('PERMISSION_DENIED').and.include('get icmpevents.icmpwatch.io cluster-wide').and.include('ClusterRoles');
    } finally {
      if (before === undefined) delete process.env.ICMPWATCH_TOKEN;
      else process.env.ICMPWATCH_TOKEN = before;
    }
  });

  it('no token: exit 3 UNAUTHENTICATED; an unreadable --token-file: exit 2 naming the flag', async () => {
    const none = await runCli(['observe', '--server', server, '--insecure-plaintext', '--last', '1']);
    expect(none.code, none.stderr).to.equal(3);
    expect(none.stderr).to.include('UNAUTHENTICATED: no bearer token');
    const missing = await runCli(['observe', '--server', server, '--insecure-plaintext', '--token-file', path.join(dir, 'absent')]);
    expect(missing.code).to.equal(2);
    expect(missing.stderr).to.include('--token-file: cannot read').and.include('ENOENT');
  });

  it('collector: --authorization=kubernetes without a kubeconfig outside a pod is a usage error', async () => {
    const r = await runCli(['collector', '--insecure-plaintext', '--listen', '127.0.0.1:0']);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.include('--authorization: kubernetes needs the API server');
  });
});
