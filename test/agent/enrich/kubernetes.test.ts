// The Kubernetes resolver against a real kube-apiserver (test/k8s): objects are created through the
// API as controllers and kubelets would (no controllers run), the resolver is read like the
// capture path reads it, and the API server is cut off, frozen and restarted under it.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AppsV1Api,
  BatchV1Api,
  CoreV1Api,
  PatchStrategy,
  RbacAuthorizationV1Api,
  setHeaderOptions,
  type KubeConfig,
  type V1OwnerReference,
} from '@kubernetes/client-node';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { KubernetesResolver } from '../../../src/agent/enrich/kubernetes.js';
import { AGENT_CLUSTER_ROLE_RULES } from '../../../src/agent/enrich/kubernetes-rbac.js';
import { DemoNetwork } from '../../../src/cli/demo-network.js';
import { icmpwatch } from '../../../src/common/proto.js';
import { ApiProxy, stopApiServer, uniqueName, useCluster, via, writeKubeConfig, type TestCluster } from '../../k8s/cluster.js';
import { isRoot, requirePrerequisite } from '../../setup.js';
import { startAgent, type RunningAgent } from '../harness.js';

const { Enrichment, EndpointKind: Kind } = icmpwatch.v1;
const log = pino({ level: process.env.ICMPWATCH_TEST_LOG ?? 'silent' });
const fast = { watchTimeoutSeconds: 5, silenceMs: 8000, backoffInitialMs: 100, backoffMaxMs: 1000 };

describe('kubernetes resolver (real kube-apiserver)', function () {
  let cluster: TestCluster;
  let core: CoreV1Api;
  let apps: AppsV1Api;
  let batch: BatchV1Api;
  /** A token of the ClusterRole the chart ships: every resolver here runs with the agent's rights. */
  let agentKc: KubeConfig;
  let resolver: KubernetesResolver;
  let ns: string;
  const opened: { close(): void }[] = [];

  before(async function () {
    cluster = await useCluster(this);
    core = cluster.admin.makeApiClient(CoreV1Api);
    apps = cluster.admin.makeApiClient(AppsV1Api);
    batch = cluster.admin.makeApiClient(BatchV1Api);
    const role = uniqueName('icmpwatch-agent');
    await cluster.admin.makeApiClient(RbacAuthorizationV1Api).createClusterRole({ body: { metadata: { name: role }, rules: [...AGENT_CLUSTER_ROLE_RULES] } });
    agentKc = await cluster.serviceAccount(role);
    await removeLeftovers();
    resolver = open(new KubernetesResolver({ kubeConfig: agentKc, log, graceMs: 1500, timing: fast }));
    await until(() => resolver.notReadyReason() === null, 10_000);
  });

  after(() => {
    for (const r of opened) r.close();
  });

  beforeEach(async () => (ns = await cluster.namespace('enrich')));

  // Addresses are cluster-wide and namespaces cannot be deleted here (no namespace controller):
  // a test's pods go with it, or the next run would find their IPs taken.
  const used = new Set<string>();
  afterEach(async () => {
    for (const namespace of used) await core.deleteCollectionNamespacedPod({ namespace, gracePeriodSeconds: 0 });
    used.clear();
  });

  /** Pods of runs that crashed before their cleanup (a run takes about a minute). */
  async function removeLeftovers(): Promise<void> {
    const old = Date.now() - 10 * 60_000;
    for (const p of (await core.listPodForAllNamespaces()).items) {
      const { name, namespace, creationTimestamp } = p.metadata!;
      if (namespace!.startsWith('enrich-') && creationTimestamp!.getTime() < old) await deletePod(name!, namespace);
    }
  }

  function open<T extends { close(): void }>(r: T): T {
    opened.push(r);
    return r;
  }

  interface PodSpec {
    ips?: string[];
    node?: string;
    owner?: V1OwnerReference;
    hostNetwork?: boolean;
    phase?: string;
    labels?: Record<string, string>;
  }

  /** A pod as the scheduler and kubelet would leave it: bound to a node, then its status set. */
  async function pod(name: string, spec: PodSpec = {}, namespace = ns): Promise<string> {
    used.add(namespace);
    const created = await core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name, labels: spec.labels, ownerReferences: spec.owner ? [spec.owner] : undefined },
        spec: { nodeName: spec.node ?? 'node-a', hostNetwork: spec.hostNetwork, containers: [{ name: 'c', image: 'busybox' }] },
      },
    });
    if (spec.ips) await setPodStatus(name, { phase: spec.phase ?? 'Running', ips: spec.ips }, namespace);
    return created.metadata!.uid!;
  }

  async function setPodStatus(name: string, s: { phase: string; ips: string[] }, namespace = ns): Promise<void> {
    const status = { phase: s.phase, podIP: s.ips[0], podIPs: s.ips.map((ip) => ({ ip })) };
    await core.patchNamespacedPodStatus({ name, namespace, body: { status } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  }

  const deletePod = (name: string, namespace = ns) => core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 });

  const controller = (kind: string, name: string, uid: string, apiVersion = 'apps/v1'): V1OwnerReference => ({ apiVersion, kind, name, uid, controller: true });

  it('syncs with a ServiceAccount token of the shipped ClusterRole, which is refused anything else', async () => {
    const fresh = new KubernetesResolver({ kubeConfig: agentKc, log, timing: fast });
    try {
      // Nothing is known before the first sync, and an answer says so rather than "external".
      expect(fresh.notReadyReason()).to.match(/not synced yet: pods, nodes, services, replicasets, jobs/);
      expect(fresh.resolve('10.1.2.3')).to.deep.equal({ ip: '10.1.2.3', enrichment: Enrichment.ENRICHMENT_PENDING });
      await until(() => fresh.notReadyReason() === null);
      expect(fresh.resolve('10.1.2.3')).to.deep.equal({ ip: '10.1.2.3', kind: Kind.ENDPOINT_KIND_EXTERNAL, enrichment: Enrichment.ENRICHMENT_UNKNOWN });
    } finally {
      fresh.close();
    }
    const asAgent = agentKc.makeApiClient(CoreV1Api);
    await expectStatus(asAgent.listNamespacedSecret({ namespace: ns }), 403);
    await expectStatus(asAgent.listSecretForAllNamespaces(), 403);
    await expectStatus(asAgent.createNamespacedPod({ namespace: ns, body: { metadata: { name: 'x' }, spec: { containers: [{ name: 'c', image: 'busybox' }] } } }), 403);
    await expectStatus(asAgent.listConfigMapForAllNamespaces(), 403);

    // Each rule is needed: without jobs the resolver never becomes ready, and says why.
    const partialRole = uniqueName('icmpwatch-no-jobs');
    const rules = AGENT_CLUSTER_ROLE_RULES.filter((r) => !r.resources.includes('jobs'));
    await cluster.admin.makeApiClient(RbacAuthorizationV1Api).createClusterRole({ body: { metadata: { name: partialRole }, rules: [...rules] } });
    const partial = new KubernetesResolver({ kubeConfig: await cluster.serviceAccount(partialRole), log, timing: fast });
    try {
      await until(() => /^kubernetes: not synced yet: jobs \(HTTP 403: jobs.batch is forbidden/.test(partial.notReadyReason() ?? ''));
    } finally {
      partial.close();
    }
  });

  it('names a pod by every podIPs entry (IPv4 and dual stack) with uid, labels and node', async () => {
    const v4 = await pod('web-1', { ips: ['10.244.1.5'], labels: { app: 'web' }, node: 'node-a' });
    const dual = await pod('web-2', { ips: ['10.244.1.6', 'fd00:244::6'], labels: { app: 'web' }, node: 'node-b' });
    await until(() => resolver.resolve('fd00:244::6').pod === 'web-2' && resolver.resolve('10.244.1.5').pod === 'web-1');
    expect(resolver.resolve('10.244.1.5')).to.deep.equal({
      ip: '10.244.1.5',
      kind: Kind.ENDPOINT_KIND_POD,
      namespace: ns,
      pod: 'web-1',
      podUid: v4,
      labels: { app: 'web' },
      node: 'node-a',
      workload: { kind: 'Pod', name: 'web-1' },
      enrichment: Enrichment.ENRICHMENT_RESOLVED,
    });
    for (const ip of ['10.244.1.6', 'fd00:244::6']) expect(resolver.resolve(ip)).to.deep.include({ pod: 'web-2', podUid: dual, node: 'node-b', namespace: ns });
    // A pod without an address yet names nothing.
    await pod('web-3');
    expect(resolver.resolve('10.244.1.7').kind).to.equal(Kind.ENDPOINT_KIND_EXTERNAL);
  });

  it('names workloads through owner references: ReplicaSet -> Deployment, Job -> CronJob, StatefulSet, DaemonSet, bare', async () => {
    const template = { metadata: { labels: { app: 'shop' } }, spec: { containers: [{ name: 'c', image: 'busybox' }] } };
    const selector = { matchLabels: { app: 'shop' } };
    const dep = await apps.createNamespacedDeployment({ namespace: ns, body: { metadata: { name: 'shop' }, spec: { selector, template } } });
    const rs = await apps.createNamespacedReplicaSet({
      namespace: ns,
      body: { metadata: { name: 'shop-5d8f', ownerReferences: [controller('Deployment', 'shop', dep.metadata!.uid!)] }, spec: { selector, template } },
    });
    const lone = await apps.createNamespacedReplicaSet({ namespace: ns, body: { metadata: { name: 'lone' }, spec: { selector, template } } });
    const jobTemplate = { spec: { restartPolicy: 'Never', containers: [{ name: 'c', image: 'busybox' }] } };
    const cron = await batch.createNamespacedCronJob({ namespace: ns, body: { metadata: { name: 'nightly' }, spec: { schedule: '0 3 * * *', jobTemplate: { spec: { template: jobTemplate } } } } });
    const job = await batch.createNamespacedJob({
      namespace: ns,
      body: { metadata: { name: 'nightly-2901', ownerReferences: [controller('CronJob', 'nightly', cron.metadata!.uid!, 'batch/v1')] }, spec: { template: jobTemplate } },
    });
    const oneOff = await batch.createNamespacedJob({ namespace: ns, body: { metadata: { name: 'migrate' }, spec: { template: jobTemplate } } });
    const cases: [string, string, V1OwnerReference | undefined, { kind: string; name: string }][] = [
      ['10.244.2.1', 'shop-5d8f-x1', controller('ReplicaSet', 'shop-5d8f', rs.metadata!.uid!), { kind: 'Deployment', name: 'shop' }],
      ['10.244.2.2', 'lone-x2', controller('ReplicaSet', 'lone', lone.metadata!.uid!), { kind: 'ReplicaSet', name: 'lone' }],
      ['10.244.2.3', 'nightly-2901-x3', controller('Job', 'nightly-2901', job.metadata!.uid!, 'batch/v1'), { kind: 'CronJob', name: 'nightly' }],
      ['10.244.2.4', 'migrate-x4', controller('Job', 'migrate', oneOff.metadata!.uid!, 'batch/v1'), { kind: 'Job', name: 'migrate' }],
      ['10.244.2.5', 'db-0', controller('StatefulSet', 'db', '0b5e2f4c-0000-4000-8000-000000000001'), { kind: 'StatefulSet', name: 'db' }],
      ['10.244.2.6', 'agent-x6', controller('DaemonSet', 'agent', '0b5e2f4c-0000-4000-8000-000000000002'), { kind: 'DaemonSet', name: 'agent' }],
      ['10.244.2.7', 'debug', undefined, { kind: 'Pod', name: 'debug' }],
    ];
    for (const [ip, name, owner] of cases) await pod(name, { ips: [ip], owner });
    await until(() => cases.every(([ip, name, , workload]) => resolver.resolve(ip).pod === name && resolver.resolve(ip).workload?.kind === workload.kind));
    for (const [ip, , , workload] of cases) expect(resolver.resolve(ip).workload, ip).to.deep.equal(workload);
  });

  it('answers an address with the same object while nothing about it changes, and a new one when its labels or workload do', async () => {
    const template = { metadata: { labels: { app: 'memo' } }, spec: { containers: [{ name: 'c', image: 'busybox' }] } };
    const selector = { matchLabels: { app: 'memo' } };
    const first = await apps.createNamespacedDeployment({ namespace: ns, body: { metadata: { name: 'memo-a' }, spec: { selector, template } } });
    const second = await apps.createNamespacedDeployment({ namespace: ns, body: { metadata: { name: 'memo-b' }, spec: { selector, template } } });
    const rs = await apps.createNamespacedReplicaSet({
      namespace: ns,
      body: { metadata: { name: 'memo-rs', ownerReferences: [controller('Deployment', 'memo-a', first.metadata!.uid!)] }, spec: { selector, template } },
    });
    const ip = '10.244.9.1';
    await pod('memo-x1', { ips: [ip], labels: { app: 'memo', tier: 'one' }, owner: controller('ReplicaSet', 'memo-rs', rs.metadata!.uid!) });
    await until(() => resolver.resolve(ip).workload?.name === 'memo-a');
    const answer = resolver.resolve(ip);
    // The node log and the exporter reuse an endpoint's bytes by object identity.
    expect(resolver.resolve(ip)).to.equal(answer);
    // A ReplicaSet status update leaves its controller as it was: still the same answer.
    await apps.patchNamespacedReplicaSetStatus(
      { name: 'memo-rs', namespace: ns, body: { status: { replicas: 1, observedGeneration: 1 } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await new Promise((r) => setTimeout(r, 500));
    expect(resolver.resolve(ip)).to.equal(answer);

    await core.patchNamespacedPod({ name: 'memo-x1', namespace: ns, body: { metadata: { labels: { app: 'memo', tier: 'two' } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
    await until(() => resolver.resolve(ip).labels?.tier === 'two');
    expect(resolver.resolve(ip)).to.not.equal(answer);
    expect(answer.labels).to.deep.equal({ app: 'memo', tier: 'one' });

    await apps.patchNamespacedReplicaSet(
      { name: 'memo-rs', namespace: ns, body: { metadata: { ownerReferences: [controller('Deployment', 'memo-b', second.metadata!.uid!)] } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await until(() => resolver.resolve(ip).workload?.name === 'memo-b');
    expect(resolver.resolve(ip)).to.include({ pod: 'memo-x1', enrichment: Enrichment.ENRICHMENT_RESOLVED });
  });

  it('names nodes by their addresses and hostNetwork pods by their node', async () => {
    const node = uniqueName('node');
    await core.createNode({ body: { metadata: { name: node, labels: { zone: 'a' } } } });
    try {
      const addresses = [
        { type: 'InternalIP', address: '192.0.2.10' },
        { type: 'InternalIP', address: '2001:db8::10' },
        { type: 'ExternalIP', address: '198.51.100.10' },
        { type: 'Hostname', address: node },
      ];
      await core.patchNodeStatus({ name: node, body: { status: { addresses } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
      // One hostNetwork pod shares a listed node address, another an address no Node object lists.
      await pod('node-exporter', { ips: ['192.0.2.10'], hostNetwork: true, node });
      await pod('cni-agent', { ips: ['192.0.2.11'], hostNetwork: true, node });
      await until(() => resolver.resolve('198.51.100.10').node === node && resolver.resolve('192.0.2.11').node === node);
      for (const ip of ['192.0.2.10', '2001:db8::10', '198.51.100.10', '192.0.2.11']) {
        expect(resolver.resolve(ip), ip).to.deep.include({ kind: Kind.ENDPOINT_KIND_NODE, node, workload: null, enrichment: Enrichment.ENRICHMENT_RESOLVED });
        expect(resolver.resolve(ip).pod, ip).to.equal(undefined);
      }
      expect(resolver.resolve('192.0.2.10').labels).to.deep.equal({ zone: 'a' });
    } finally {
      await core.deleteNode({ name: node });
    }
    await until(() => resolver.resolve('198.51.100.10').kind === Kind.ENDPOINT_KIND_EXTERNAL);
  });

  it('names Services by every ClusterIP (dual stack); headless Services name nothing', async () => {
    const ports = [{ port: 80 }];
    const single = await core.createNamespacedService({ namespace: ns, body: { metadata: { name: 'api', labels: { tier: 'be' } }, spec: { ports } } });
    const dual = await core.createNamespacedService({
      namespace: ns,
      body: { metadata: { name: 'api-dual' }, spec: { ports, ipFamilyPolicy: 'RequireDualStack', ipFamilies: ['IPv4', 'IPv6'] } },
    });
    await core.createNamespacedService({ namespace: ns, body: { metadata: { name: 'headless' }, spec: { ports, clusterIP: 'None' } } });
    const dualIps = dual.spec!.clusterIPs!;
    expect(dualIps).to.have.length(2);
    const singleIp = single.spec!.clusterIP!;
    await until(() => [singleIp, ...dualIps].every((ip) => resolver.resolve(ip).kind === Kind.ENDPOINT_KIND_SERVICE));
    expect(resolver.resolve(singleIp)).to.deep.equal({
      ip: singleIp,
      kind: Kind.ENDPOINT_KIND_SERVICE,
      namespace: ns,
      service: 'api',
      labels: { tier: 'be' },
      workload: null,
      enrichment: Enrichment.ENRICHMENT_RESOLVED,
    });
    for (const ip of dualIps) expect(resolver.resolve(ip)).to.deep.include({ service: 'api-dual', namespace: ns });
  });

  it('keeps the newest live pod on a reused IP, also when the old pod is deleted after the new one took it', async () => {
    const ip = '10.244.3.9';
    await pod('old', { ips: [ip] });
    await until(() => resolver.resolve(ip).pod === 'old');
    // The old pod finished; its IP went to a new pod before the old one was deleted.
    await setPodStatus('old', { phase: 'Succeeded', ips: [ip] });
    await sleep(1100); // creation timestamps have one-second resolution
    const fresh = await pod('new', { ips: [ip] });
    await until(() => resolver.resolve(ip).pod === 'new');
    await deletePod('old');
    await sleep(2000); // past the grace period of the old pod
    expect(resolver.resolve(ip)).to.deep.include({ pod: 'new', podUid: fresh, enrichment: Enrichment.ENRICHMENT_RESOLVED });

    // Two live pods claiming one address (the kubelet has not reported the old one finished):
    // the newer wins, and the older one's delete leaves it in place.
    const ip2 = '10.244.3.10';
    await pod('a', { ips: [ip2] });
    await sleep(1100);
    await pod('b', { ips: [ip2] });
    await until(() => resolver.resolve(ip2).pod === 'b');
    await deletePod('a');
    await sleep(2000);
    expect(resolver.resolve(ip2).pod).to.equal('b');
  });

  it('never names an address by a Succeeded or Failed pod, also one first seen already finished', async () => {
    await pod('completed', { ips: ['10.244.8.1'], phase: 'Succeeded' });
    await pod('crashed', { ips: ['10.244.8.2', 'fd00:244:8::2'], phase: 'Failed' });
    await pod('finishing', { ips: ['10.244.8.3'] });
    await until(() => resolver.resolve('10.244.8.3').pod === 'finishing');
    await setPodStatus('finishing', { phase: 'Failed', ips: ['10.244.8.3'] });
    // Watch events arrive in order: once a later pod is named, the finished ones were seen.
    await pod('marker', { ips: ['10.244.8.9'] });
    await until(() => resolver.resolve('10.244.8.9').pod === 'marker');
    for (const ip of ['10.244.8.1', '10.244.8.2', 'fd00:244:8::2']) expect(resolver.resolve(ip), ip).to.deep.include({ kind: Kind.ENDPOINT_KIND_EXTERNAL, enrichment: Enrichment.ENRICHMENT_UNKNOWN });
    // A pod that finished while known goes as a deleted one does: after the grace period.
    await until(() => resolver.resolve('10.244.8.3').kind === Kind.ENDPOINT_KIND_EXTERNAL, 5000);

    // A resolver that starts now lists all of them already finished.
    const fresh = new KubernetesResolver({ kubeConfig: agentKc, log, timing: fast });
    try {
      await until(() => fresh.notReadyReason() === null);
      expect(fresh.resolve('10.244.8.9').pod).to.equal('marker');
      for (const ip of ['10.244.8.1', '10.244.8.2', 'fd00:244:8::2', '10.244.8.3']) {
        expect(fresh.resolve(ip), ip).to.deep.equal({ ip, kind: Kind.ENDPOINT_KIND_EXTERNAL, enrichment: Enrichment.ENRICHMENT_UNKNOWN });
      }
    } finally {
      fresh.close();
    }
  });

  it('keeps a deleted pod resolvable for the grace period, then forgets it', async () => {
    const ip = '10.244.4.2';
    await pod('leaving', { ips: [ip] });
    await until(() => resolver.resolve(ip).pod === 'leaving');
    await deletePod('leaving');
    const deletedAt = Date.now();
    await sleep(500);
    expect(resolver.resolve(ip)).to.deep.include({ pod: 'leaving', enrichment: Enrichment.ENRICHMENT_RESOLVED });
    await until(() => resolver.resolve(ip).kind === Kind.ENDPOINT_KIND_EXTERNAL, 5000);
    expect(Date.now() - deletedAt).to.be.within(1400, 4000);
    expect(resolver.resolve(ip).enrichment).to.equal(Enrichment.ENRICHMENT_UNKNOWN);
  });

  it('answers STALE while the API server is unreachable and converges on what changed meanwhile', async () => {
    const proxy = open(await ApiProxy.start(agentKc.getCurrentCluster()!.server));
    const registry = new Registry();
    const r = open(new KubernetesResolver({ kubeConfig: via(agentKc, proxy.url), log, registry, graceMs: 300, timing: fast }));
    await pod('stays', { ips: ['10.244.5.1'] });
    await pod('goes', { ips: ['10.244.5.2'] });
    await until(() => r.notReadyReason() === null && r.resolve('10.244.5.2').pod === 'goes');

    proxy.cut();
    await until(() => !r.healthy);
    expect(r.resolve('10.244.5.1')).to.deep.include({ pod: 'stays', enrichment: Enrichment.ENRICHMENT_STALE });
    expect(r.resolve('10.244.5.3')).to.deep.equal({ ip: '10.244.5.3', kind: Kind.ENDPOINT_KIND_EXTERNAL, enrichment: Enrichment.ENRICHMENT_STALE });
    await deletePod('goes');
    await pod('arrives', { ips: ['10.244.5.3'] });
    await sleep(1500); // several failed reconnects
    expect(r.resolve('10.244.5.2')).to.deep.include({ pod: 'goes', enrichment: Enrichment.ENRICHMENT_STALE });

    proxy.restore();
    await until(() => r.healthy && r.resolve('10.244.5.3').pod === 'arrives' && r.resolve('10.244.5.2').kind === Kind.ENDPOINT_KIND_EXTERNAL, 10_000);
    expect(r.resolve('10.244.5.1')).to.deep.include({ pod: 'stays', enrichment: Enrichment.ENRICHMENT_RESOLVED });
    const metrics = await registry.getMetricsAsJSON();
    const restarts = metrics.find((m) => m.name === 'icmpwatch_k8s_watch_restarts_total')!.values;
    expect(restarts.find((v) => v.labels.resource === 'pods')!.value).to.be.greaterThan(0);
    const lookups = metrics.find((m) => m.name === 'icmpwatch_k8s_lookups_total')!.values;
    expect(lookups.find((v) => v.labels.result === 'hit')!.value).to.be.greaterThan(0);
    expect(lookups.find((v) => v.labels.result === 'miss')!.value).to.be.greaterThan(0);
    const sizes = metrics.find((m) => m.name === 'icmpwatch_k8s_index_addresses')!.values;
    expect(sizes.find((v) => v.labels.kind === 'pod')!.value).to.be.greaterThan(0);
    const age = metrics.find((m) => m.name === 'icmpwatch_k8s_last_sync_age_seconds')!.values;
    expect(age.every((v) => v.value < 10)).to.equal(true);
  });

  it('notices a silent (half-open) watch with its watchdog and relists', async () => {
    const proxy = open(await ApiProxy.start(agentKc.getCurrentCluster()!.server));
    const timing = { watchTimeoutSeconds: 1, silenceMs: 2500, backoffInitialMs: 100, backoffMaxMs: 500 };
    const r = open(new KubernetesResolver({ kubeConfig: via(agentKc, proxy.url), log, graceMs: 300, timing }));
    await pod('quiet', { ips: ['10.244.6.1'] });
    await until(() => r.notReadyReason() === null && r.resolve('10.244.6.1').pod === 'quiet');
    // Quiet but healthy watches end at their timeout and resume: no false alarm.
    await sleep(3000);
    expect(r.healthy).to.equal(true);

    proxy.freeze();
    const frozenAt = Date.now();
    await until(() => !r.healthy, 6000);
    expect(Date.now() - frozenAt).to.be.lessThan(5000);
    expect(r.resolve('10.244.6.1')).to.deep.include({ pod: 'quiet', enrichment: Enrichment.ENRICHMENT_STALE });
    await deletePod('quiet');
    proxy.restore();
    await until(() => r.healthy && r.resolve('10.244.6.1').kind === Kind.ENDPOINT_KIND_EXTERNAL, 10_000);
  });

  it('keeps answering while the kube-apiserver process is down and converges after it restarts', async function () {
    this.timeout(40_000);
    const r = open(new KubernetesResolver({ kubeConfig: agentKc, log, graceMs: 300, timing: fast }));
    await pod('steady', { ips: ['10.244.7.1'] });
    await until(() => r.notReadyReason() === null && r.resolve('10.244.7.1').pod === 'steady');
    const restart = await stopApiServer(cluster.admin);
    try {
      await until(() => !r.healthy);
      expect(r.resolve('10.244.7.1')).to.deep.include({ pod: 'steady', enrichment: Enrichment.ENRICHMENT_STALE });
      await sleep(1000);
      expect(r.resolve('10.244.7.1')).to.deep.include({ pod: 'steady', enrichment: Enrichment.ENRICHMENT_STALE });
    } finally {
      await restart();
    }
    await pod('after', { ips: ['10.244.7.2'] });
    await deletePod('steady');
    await until(() => r.healthy && r.resolve('10.244.7.2').pod === 'after' && r.resolve('10.244.7.1').kind === Kind.ENDPOINT_KIND_EXTERNAL, 15_000);
  });

  describe('the agent on the real kernel', function () {
    let net: DemoNetwork;
    let dir: string;

    before(async function () {
      requirePrerequisite(this, isRoot, 'root (BPF, network namespaces)');
      // c has no Pod object: an address the cluster does not know.
      net = await DemoNetwork.create('routed', 3);
      dir = mkdtempSync(join(tmpdir(), 'icmpwatch-k8s-'));
    });

    after(async () => {
      await net?.destroy();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('names both ends of real pings between pods registered in the API (namespace, pod, workload)', async () => {
      const a = net.pod('a');
      const b = net.pod('b');
      const nsA = ns;
      const nsB = await cluster.namespace('enrich-b');
      const ds = controller('DaemonSet', 'pinger', '0b5e2f4c-0000-4000-8000-00000000000a');
      await pod('pinger-a', { ips: [a.ipv4, a.ipv6], owner: ds, node: 'test-node' }, nsA);
      await pod('target-b', { ips: [b.ipv4, b.ipv6], labels: { app: 'target' }, node: 'test-node' }, nsB);
      const run = await startAgent({ kubeconfig: writeKubeConfig(agentKc, join(dir, 'kubeconfig')) });
      try {
        await until(() => run.agent.notReadyReason() === null);
        for (const family of [4, 6] as const) {
          run.mark();
          const src = family === 4 ? a.ipv4 : a.ipv6;
          const dst = family === 4 ? b.ipv4 : b.ipv6;
          await net.ping('a', 'b', family, ['-c', '2', '-i', '0.1']);
          const [req] = await run.waitFor((ev) => ev.source?.ip === src && ev.destination?.ip === dst);
          expect(req.source).to.deep.include({ namespace: nsA, pod: 'pinger-a', kind: Kind.ENDPOINT_KIND_POD, enrichment: Enrichment.ENRICHMENT_RESOLVED });
          expect(req.source?.workload).to.deep.include({ kind: 'DaemonSet', name: 'pinger' });
          expect(req.destination).to.deep.include({ namespace: nsB, pod: 'target-b', kind: Kind.ENDPOINT_KIND_POD, enrichment: Enrichment.ENRICHMENT_RESOLVED });
          expect(req.destination?.labels).to.deep.equal({ app: 'target' });
          expect(req.destination?.workload).to.deep.include({ kind: 'Pod', name: 'target-b' });
          const [reply] = await run.waitFor((ev) => ev.source?.ip === dst && ev.destination?.ip === src);
          expect(reply.source?.pod).to.equal('target-b');
          expect(reply.destination?.pod).to.equal('pinger-a');
        }
      } finally {
        await run.stop();
      }
    });

    /** Pings a -> b (IPv4) once and returns the echo request's first event. */
    async function pingOnce(run: RunningAgent, to = 'b'): Promise<icmpwatch.v1.IEvent> {
      run.mark();
      const [src, dst] = [net.pod('a').ipv4, net.pod(to).ipv4];
      await net.ping('a', to, 4, ['-c', '1', '-W', '1']);
      const [req] = await run.waitFor((ev) => ev.icmp?.type === 8 && ev.source?.ip === src && ev.destination?.ip === dst);
      return req;
    }

    it('says PENDING before the first sync and UNKNOWN for an address the cluster does not name', async function () {
      this.timeout(60_000);
      await pod('early-a', { ips: [net.pod('a').ipv4] });
      await pod('early-b', { ips: [net.pod('b').ipv4] });
      // The API server is unreachable when the agent starts: capture must not wait for it.
      const proxy = open(await ApiProxy.start(agentKc.getCurrentCluster()!.server));
      proxy.cut();
      const run = await startAgent({ kubeconfig: writeKubeConfig(via(agentKc, proxy.url), join(dir, 'kubeconfig-proxy')) });
      try {
        expect(run.agent.notReadyReason()).to.match(/not synced yet/);
        const early = await pingOnce(run);
        for (const end of [early.source, early.destination]) {
          expect(end?.enrichment).to.equal(Enrichment.ENRICHMENT_PENDING);
          expect(end?.pod ?? '').to.equal('');
          expect(end?.kind ?? Kind.ENDPOINT_KIND_UNSPECIFIED).to.equal(Kind.ENDPOINT_KIND_UNSPECIFIED);
        }
        proxy.restore();
        await until(() => run.agent.notReadyReason() === null, 40_000);
        const named = await pingOnce(run);
        expect(named.source).to.deep.include({ pod: 'early-a', enrichment: Enrichment.ENRICHMENT_RESOLVED });
        expect(named.destination).to.deep.include({ pod: 'early-b', enrichment: Enrichment.ENRICHMENT_RESOLVED });
        // c's address is in no Pod, Node or Service: external, and known to be unknown.
        const outside = await pingOnce(run, 'c');
        expect(outside.source?.pod).to.equal('early-a');
        expect(outside.destination).to.deep.include({ kind: Kind.ENDPOINT_KIND_EXTERNAL, enrichment: Enrichment.ENRICHMENT_UNKNOWN });
      } finally {
        await run.stop();
      }
    });

    it('keeps naming both ends, marked STALE, while the kube-apiserver is down, and RESOLVED after it restarts', async function () {
      this.timeout(90_000);
      await pod('steady-a', { ips: [net.pod('a').ipv4] });
      await pod('steady-b', { ips: [net.pod('b').ipv4] });
      const run = await startAgent({ kubeconfig: writeKubeConfig(agentKc, join(dir, 'kubeconfig')) });
      try {
        await until(() => run.agent.notReadyReason() === null, 10_000);
        const before = await pingOnce(run);
        expect(before.source).to.deep.include({ pod: 'steady-a', enrichment: Enrichment.ENRICHMENT_RESOLVED });
        expect(before.destination).to.deep.include({ pod: 'steady-b', enrichment: Enrichment.ENRICHMENT_RESOLVED });

        const restart = await stopApiServer(cluster.admin);
        try {
          // The agent's watches end with the process; from then on it answers from memory, marked stale.
          const during = await untilEvent(() => pingOnce(run), (ev) => ev.source?.enrichment === Enrichment.ENRICHMENT_STALE, 15_000);
          expect(during.source).to.deep.include({ namespace: ns, pod: 'steady-a', kind: Kind.ENDPOINT_KIND_POD });
          expect(during.destination).to.deep.include({ namespace: ns, pod: 'steady-b', enrichment: Enrichment.ENRICHMENT_STALE });
          // Still flowing, still stale, a while into the outage.
          await sleep(1000);
          expect((await pingOnce(run)).destination).to.deep.include({ pod: 'steady-b', enrichment: Enrichment.ENRICHMENT_STALE });
        } finally {
          await restart();
        }
        const after = await untilEvent(() => pingOnce(run), (ev) => ev.destination?.enrichment === Enrichment.ENRICHMENT_RESOLVED, 45_000);
        expect(after.source).to.deep.include({ pod: 'steady-a', enrichment: Enrichment.ENRICHMENT_RESOLVED });
        expect(after.destination).to.deep.include({ pod: 'steady-b' });
      } finally {
        await run.stop();
      }
    });
  });
});

async function expectStatus(call: Promise<unknown>, status: number): Promise<void> {
  const err = await call.then(
    () => null,
    (e: { code?: number }) => e,
  );
  expect(err?.code, `expected HTTP ${status}`).to.equal(status);
}

/** Repeats `next` (a ping round) until the event it returns matches. */
async function untilEvent(next: () => Promise<icmpwatch.v1.IEvent>, match: (ev: icmpwatch.v1.IEvent) => boolean, timeoutMs: number): Promise<icmpwatch.v1.IEvent> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ev = await next();
    if (match(ev)) return ev;
    if (Date.now() > end) throw new Error(`no matching event within ${timeoutMs} ms; last: ${JSON.stringify(ev)}`);
    await sleep(200);
  }
}

async function until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms: ${cond.toString().slice(0, 200)}`);
    await sleep(20);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
