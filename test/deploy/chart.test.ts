// The Helm chart (charts/icmpwatch): helm lint/template with the pinned helm from test/k8s/build-helm.sh,
// the values schema, what the rendered objects say, and every rendered object accepted by the real
// kube-apiserver (server-side dry-run create with strict field validation), RBAC checked with
// SubjectAccessReviews, Pod Security admission for both pods.
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { loadYaml, type KubeConfig } from '@kubernetes/client-node';
import { expect } from 'chai';
import { AGENT_CLUSTER_ROLE_RULES } from '../../src/agent/enrich/kubernetes-rbac.js';
import { ACCESS_REVIEW_RULES } from '../../src/collector/access-review.js';
import { summary as observeUsage } from '../../src/cli/observe.js';
import { summary as statusUsage } from '../../src/cli/status.js';
import { useCluster, uniqueName, type TestCluster } from '../k8s/cluster.js';
import { requirePrerequisite } from '../setup.js';
import { chart, HELM_PREREQ, haveHelm, helm, render, repo, setArgs, type Obj } from './helm.js';

/* eslint-disable @typescript-eslint/no-explicit-any */

const one = (objs: Obj[], kind: string, component?: string): Obj => {
  const found = objs.filter((o) => o.kind === kind && (!component || o.metadata.labels?.['app.kubernetes.io/component'] === component));
  expect(found, `${kind}${component ? ` (${component})` : ''}`).to.have.length(1);
  return found[0]!;
};
const container = (workload: Obj) => workload.spec.template.spec.containers[0];

/** The switches the chart's users flip; each variant is linted, rendered and dry-run created. */
const VARIANTS: Record<string, string[]> = {
  defaults: [],
  privileged: ['agent.privileged=true'],
  monitors: ['monitoring.serviceMonitor.enabled=true', 'monitoring.podMonitor.enabled=true'],
  persistence: ['collector.persistence.enabled=true', 'collector.persistence.storageClass=standard'],
  'priority classes and options': [
    'agent.priorityClassName=system-node-critical',
    'collector.priorityClassName=system-cluster-critical',
    'agent.seccompProfile=Unconfined',
    'agent.appArmorProfile=Unconfined',
    'agent.hostMounts.debugfs=true',
    'agent.btf=/etc/icmpwatch/vmlinux.btf',
    'agent.logFormat=json',
    'agent.updateStrategy.maxUnavailable=25%',
    'image.digest=sha256:' + 'a'.repeat(64),
  ],
  'agent only': ['collector.enabled=false'],
  'authorization off': ['collector.authorization.enabled=false'],
};

describe('helm chart: lint, template, values schema', function () {
  this.timeout(60_000);
  before(function () {
    requirePrerequisite(this, haveHelm, HELM_PREREQ);
  });

  for (const [name, sets] of Object.entries(VARIANTS)) {
    it(`lint --strict and template: ${name}`, function () {
      const lint = helm(['lint', '--strict', chart, ...setArgs(sets)]);
      expect(lint.status, lint.stdout + lint.stderr).to.equal(0);
      expect(render(sets).length).to.be.greaterThan(2);
    });
  }

  it('agent DaemonSet: every node, host namespaces, NODE_NAME, capabilities, probes, the collector', function () {
    const objs = render();
    const ds = one(objs, 'DaemonSet', 'agent');
    const pod = ds.spec.template.spec;
    const c = container(ds);
    expect(pod.tolerations).to.deep.equal([{ operator: 'Exists' }]);
    expect(pod.hostNetwork).to.equal(true);
    expect(pod.hostPID).to.equal(true);
    expect(pod.dnsPolicy).to.equal('ClusterFirstWithHostNet');
    expect(pod.serviceAccountName).to.equal(one(objs, 'ServiceAccount', 'agent').metadata.name);
    expect(ds.spec.updateStrategy).to.deep.equal({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
    expect(c.env).to.deep.include({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect(c.securityContext).to.deep.include({ readOnlyRootFilesystem: true, privileged: false, allowPrivilegeEscalation: false });
    expect(c.securityContext.capabilities).to.deep.equal({ drop: ['ALL'], add: ['BPF', 'PERFMON', 'SYS_RESOURCE', 'SYSLOG', 'SYS_PTRACE'] });
    expect(c.securityContext.capabilities.add).not.to.include('SYS_ADMIN');
    expect(c.resources.requests).to.include.keys('cpu', 'memory');
    expect(c.resources.limits).to.include.keys('memory');
    // Health on the metrics port the agent serves.
    const metrics = c.ports.find((p: any) => p.name === 'metrics');
    expect(c.args).to.include(`--metrics-addr=:${metrics.containerPort}`);
    expect(c.livenessProbe.httpGet).to.deep.equal({ path: '/healthz', port: 'metrics' });
    expect(c.readinessProbe.httpGet).to.deep.equal({ path: '/readyz', port: 'metrics' });
    // Host paths: read-only; named namespaces follow the host (HostToContainer).
    for (const m of c.volumeMounts) expect(m.readOnly, m.mountPath).to.equal(true);
    expect(c.volumeMounts.find((m: any) => m.mountPath === '/var/run/netns').mountPropagation).to.equal('HostToContainer');
    expect(c.volumeMounts.map((m: any) => m.mountPath)).to.include.members(['/sys/kernel/tracing', '/sys/fs/bpf', '/var/run/netns']);
    // --collector names the collector's Service and its gRPC port.
    const svc = one(objs, 'Service', 'collector');
    const grpc = svc.spec.ports.find((p: any) => p.name === 'grpc');
    expect(c.args).to.include(`--collector=${svc.metadata.name}.icmpwatch.svc:${grpc.port}`);
    expect(c.args[0]).to.equal('agent');
  });

  it('priority classes: unset by default, rendered into each pod spec when set', function () {
    const set = render(['agent.priorityClassName=system-node-critical', 'collector.priorityClassName=system-cluster-critical']);
    expect(one(set, 'DaemonSet', 'agent').spec.template.spec.priorityClassName).to.equal('system-node-critical');
    expect(one(set, 'Deployment', 'collector').spec.template.spec.priorityClassName).to.equal('system-cluster-critical');
    const unset = render();
    for (const w of [one(unset, 'DaemonSet', 'agent'), one(unset, 'Deployment', 'collector')]) expect(w.spec.template.spec).not.to.have.property('priorityClassName');
  });

  it('privileged switch: privileged, no capability list', function () {
    const c = container(one(render(['agent.privileged=true']), 'DaemonSet'));
    expect(c.securityContext.privileged).to.equal(true);
    expect(c.securityContext).not.to.have.property('capabilities');
    expect(c.securityContext.readOnlyRootFilesystem).to.equal(true);
  });

  it('collector: non-root, read-only, no capabilities, RuntimeDefault seccomp, API token for access reviews only, Service ports', function () {
    const objs = render();
    const dep = one(objs, 'Deployment', 'collector');
    const pod = dep.spec.template.spec;
    const c = container(dep);
    expect(pod.securityContext).to.deep.include({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(pod.securityContext.runAsUser).to.be.greaterThan(0);
    expect(c.securityContext).to.deep.equal({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, privileged: false, capabilities: { drop: ['ALL'] } });
    expect(pod.automountServiceAccountToken).to.equal(true);
    expect(c.args).to.include.members(['--authorization=kubernetes', '--authorization-cache=15s']);
    expect(c.args[0]).to.equal('collector');
    const svc = one(objs, 'Service', 'collector');
    expect(svc.spec.ports.map((p: any) => p.name)).to.deep.equal(['grpc', 'metrics']);
    expect(c.args).to.include(`--listen=0.0.0.0:${svc.spec.ports[0].port}`);
    expect(c.args).to.include(`--metrics-addr=:${svc.spec.ports[1].port}`);
    expect(c.volumeMounts.find((m: any) => m.name === 'data').mountPath).to.equal('/var/lib/icmpwatch');
    expect(pod.volumes.find((v: any) => v.name === 'data')).to.have.property('emptyDir');
    // One binding names the collector's ServiceAccount: to a role that may create the two reviews.
    const collectorSa = pod.serviceAccountName;
    const bindings = objs.filter((o) => o.kind.endsWith('Binding') && o.subjects.some((s: any) => s.name === collectorSa));
    expect(bindings.map((b) => b.kind)).to.deep.equal(['ClusterRoleBinding']);
    const role = objs.find((o) => o.kind === 'ClusterRole' && o.metadata.name === bindings[0]!.roleRef.name)!;
    expect(role.rules).to.deep.equal(ACCESS_REVIEW_RULES);
  });

  it('subscriber access: two viewer ClusterRoles on icmpevents.icmpwatch.io; off, no token, no rights, no roles', function () {
    const objs = render();
    const viewers = objs.filter((o) => o.kind === 'ClusterRole' && o.metadata.labels['app.kubernetes.io/component'] === 'access');
    expect(viewers.map((r) => r.metadata.name)).to.deep.equal(['icmpwatch-cluster-viewer', 'icmpwatch-namespace-viewer']);
    for (const r of viewers) expect(r.rules).to.deep.equal([{ apiGroups: ['icmpwatch.io'], resources: ['icmpevents'], verbs: ['get'] }]);
    expect(container(one(render(['collector.authorization.cacheTtl=30s']), 'Deployment')).args).to.include('--authorization-cache=30s');

    const off = render(['collector.authorization.enabled=false']);
    const dep = one(off, 'Deployment', 'collector');
    expect(dep.spec.template.spec.automountServiceAccountToken).to.equal(false);
    expect(container(dep).args).to.include('--authorization=off').and.not.include('--authorization=kubernetes');
    expect(off.filter((o) => o.kind === 'ClusterRole').map((r) => r.metadata.labels['app.kubernetes.io/component'])).to.deep.equal(['agent']);
    const schema = helm(['template', 'x', chart, ...setArgs(['collector.authorization.cacheTtl=soon'])]);
    expect(schema.status).not.to.equal(0);
    expect(schema.stderr).to.include('/collector/authorization/cacheTtl');
  });

  it('collector bounds and subscriber limits: flags from values', function () {
    const args = (sets: string[] = []) => container(one(render(sets), 'Deployment', 'collector')).args as string[];
    expect(args()).to.include.members(['--history-bytes=268435456', '--max-subscribers=256', '--max-subscribers-per-peer=64', '--max-requests-per-second=100']);
    const set = ['collector.historyBytes=2097152', 'collector.limits.maxSubscribers=10', 'collector.limits.maxSubscribersPerPeer=2', 'collector.limits.requestsPerSecond=5'];
    expect(args(set)).to.include.members(['--history-bytes=2097152', '--max-subscribers=10', '--max-subscribers-per-peer=2', '--max-requests-per-second=5']);
  });

  it('persistence: a PVC for --data-dir and the Recreate strategy', function () {
    const objs = render(['collector.persistence.enabled=true']);
    const pvc = one(objs, 'PersistentVolumeClaim');
    const dep = one(objs, 'Deployment');
    expect(dep.spec.strategy).to.deep.equal({ type: 'Recreate' });
    expect(dep.spec.template.spec.volumes.find((v: any) => v.name === 'data').persistentVolumeClaim.claimName).to.equal(pvc.metadata.name);
    expect(pvc.spec).not.to.have.property('storageClassName');
  });

  it('monitors: a ServiceMonitor for the collector and a PodMonitor for the agents', function () {
    const objs = render(['monitoring.serviceMonitor.enabled=true', 'monitoring.podMonitor.enabled=true']);
    expect(one(objs, 'ServiceMonitor').spec.endpoints[0].port).to.equal('metrics');
    expect(one(objs, 'PodMonitor').spec.podMetricsEndpoints[0].port).to.equal('metrics');
    expect(render().filter((o) => o.kind.endsWith('Monitor'))).to.have.length(0);
  });

  it("the agent's ClusterRole rules are the enrichment's (src/agent/enrich/kubernetes-rbac.ts)", function () {
    const role = one(render(), 'ClusterRole', 'agent');
    expect(role.rules).to.deep.equal(AGENT_CLUSTER_ROLE_RULES.map((r) => ({ apiGroups: [...r.apiGroups], resources: [...r.resources], verbs: [...r.verbs] })));
  });

  const BAD: [string, RegExp][] = [
    ['agent.eventsPerSecond=-1', /at '\/agent\/eventsPerSecond': minimum: got -1, want 0/],
    ['collector.replicas=abc', /at '\/collector\/replicas': got string, want integer/],
    ['agent.probe=kprobe', /at '\/agent\/probe': value must be one of 'auto', 'fexit', 'kretprobe', 'tracepoint'/],
    ['agent.ringBytes=5000', /at '\/agent\/ringBytes': value must be one of 4096, 8192/],
    ['collector.historyAge=an hour', /at '\/collector\/historyAge': 'an hour' does not match pattern/],
    ['agent.capabilities={BPF,CAP_PERFMON}', /at '\/agent\/capabilities\/1': value must be one of/],
    ['agent.metricsPort=70000', /at '\/agent\/metricsPort': maximum: got 70,?000, want 65,?535/],
    ['agent.metricPort=9999', /at '\/agent': additional properties 'metricPort' not allowed/],
    ['collector.limits.maxSubscribers=0', /at '\/collector\/limits\/maxSubscribers': minimum: got 0, want 1/],
    ['collector.historyBytes=1000', /at '\/collector\/historyBytes': minimum: got 1,?000, want /],
  ];
  for (const [set, message] of BAD) {
    it(`refuses ${set} with a schema message naming the value`, function () {
      for (const cmd of [['template', 'x', chart], ['lint', chart]]) {
        const r = helm([...cmd, '--set', set]);
        expect(r.status, `helm ${cmd[0]} --set ${set}`).to.not.equal(0);
        expect(r.stdout + r.stderr).to.match(/values don't meet the specifications of the schema/).and.match(message);
      }
    });
  }

  it('refuses two collector replicas on one ReadWriteOnce volume', function () {
    const r = helm(['template', 'x', chart, ...setArgs(['collector.persistence.enabled=true', 'collector.replicas=2'])]);
    expect(r.status).to.not.equal(0);
    expect(r.stderr).to.match(/collector.persistence: more than one replica cannot share a ReadWriteOnce volume/);
  });
});

/** Every leaf of values.yaml by its dotted path (lists and empty maps are leaves). */
function leafKeys(node: unknown, prefix = ''): string[] {
  if (node === null || typeof node !== 'object' || Array.isArray(node) || Object.keys(node).length === 0) return [prefix];
  return Object.entries(node).flatMap(([k, v]) => leafKeys(v, prefix ? `${prefix}.${k}` : k));
}

/**
 * The keys the README's values table documents. A cell lists keys in backticks: a dotted one is a
 * full path (`a.b.{c,d}` expands), a bare one a sibling of the full path before it (`a.b` / `c`
 * means a.b and a.c), or a top-level key when it comes first.
 */
function documentedKeys(readme: string): string[] {
  const section = readme.slice(readme.indexOf('\n## Values\n'));
  const table = section.slice(0, section.indexOf('\n## ', 1)).split('\n').filter((l) => l.startsWith('| `'));
  return table.flatMap((row) => {
    let parent = '';
    return row.split('|')[1]!.match(/`[^`]+`/g)!.flatMap((tick) => {
      const token = tick.slice(1, -1);
      const brace = /^(.*)\{([^}]+)\}$/.exec(token);
      const paths = brace ? brace[2]!.split(',').map((k) => brace[1] + k) : [token];
      const full = token.includes('.') ? paths : paths.map((p) => (parent ? `${parent}.${p}` : p));
      if (token.includes('.')) parent = full[0]!.split('.').slice(0, -1).join('.');
      return full;
    });
  });
}

describe('chart README: the values table', function () {
  it('documents every leaf key of values.yaml, and only keys that exist', function () {
    const values = loadYaml(readFileSync(join(chart, 'values.yaml'), 'utf8'));
    const leaves = leafKeys(values);
    const documented = new Set(documentedKeys(readFileSync(join(chart, 'README.md'), 'utf8')));
    expect(documented.size).to.be.greaterThan(20);
    // A documented map covers what is under it (agent.resources: requests and limits).
    const covered = (key: string) => key.split('.').some((_, i, parts) => documented.has(parts.slice(0, i + 1).join('.')));
    expect(leaves.filter((k) => !covered(k)), 'values.yaml keys missing from charts/icmpwatch/README.md').to.deep.equal([]);
    const exists = (key: string) => key.split('.').reduce<unknown>((node, k) => (node && typeof node === 'object' ? (node as Record<string, unknown>)[k] : undefined), values) !== undefined;
    expect([...documented].filter((k) => !exists(k)), 'keys in the README that values.yaml does not have').to.deep.equal([]);
  });
});

// ---- the real API server ---------------------------------------------------------------------

/** Plain HTTPS with the admin client certificate: the objects go to the server byte for byte. */
function api(kc: KubeConfig, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const cluster = kc.getCurrentCluster()!;
  const user = kc.getCurrentUser()!;
  const url = new URL(path, cluster.server);
  const b64 = (s: string | undefined) => (s ? Buffer.from(s, 'base64') : undefined);
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method, ca: b64(cluster.caData), cert: b64(user.certData), key: b64(user.keyData), headers: { 'content-type': 'application/json', accept: 'application/json' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : null }));
      },
    );
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/** The REST collection of each kind the chart renders (plus Pod and CRD for the checks below). */
const COLLECTIONS: Record<string, { group: string; plural: string; namespaced: boolean }> = {
  ServiceAccount: { group: 'api/v1', plural: 'serviceaccounts', namespaced: true },
  Service: { group: 'api/v1', plural: 'services', namespaced: true },
  Secret: { group: 'api/v1', plural: 'secrets', namespaced: true },
  PersistentVolumeClaim: { group: 'api/v1', plural: 'persistentvolumeclaims', namespaced: true },
  Pod: { group: 'api/v1', plural: 'pods', namespaced: true },
  Namespace: { group: 'api/v1', plural: 'namespaces', namespaced: false },
  DaemonSet: { group: 'apis/apps/v1', plural: 'daemonsets', namespaced: true },
  Deployment: { group: 'apis/apps/v1', plural: 'deployments', namespaced: true },
  ClusterRole: { group: 'apis/rbac.authorization.k8s.io/v1', plural: 'clusterroles', namespaced: false },
  ClusterRoleBinding: { group: 'apis/rbac.authorization.k8s.io/v1', plural: 'clusterrolebindings', namespaced: false },
  RoleBinding: { group: 'apis/rbac.authorization.k8s.io/v1', plural: 'rolebindings', namespaced: true },
  ServiceMonitor: { group: 'apis/monitoring.coreos.com/v1', plural: 'servicemonitors', namespaced: true },
  PodMonitor: { group: 'apis/monitoring.coreos.com/v1', plural: 'podmonitors', namespaced: true },
  CustomResourceDefinition: { group: 'apis/apiextensions.k8s.io/v1', plural: 'customresourcedefinitions', namespaced: false },
};

function collectionPath(o: Obj): string {
  const c = COLLECTIONS[o.kind];
  if (!c) throw new Error(`no REST path known for kind ${o.kind}: add it to COLLECTIONS`);
  const ns = c.namespaced ? `/namespaces/${o.metadata.namespace ?? 'default'}` : '';
  return `/${c.group}${ns}/${c.plural}`;
}

/** Create (for real, or as a server-side dry run) with strict field validation: unknown fields fail. */
async function create(kc: KubeConfig, o: Obj, dryRun: boolean): Promise<{ status: number; body: any }> {
  const query = `?fieldValidation=Strict${dryRun ? '&dryRun=All' : ''}`;
  return api(kc, 'POST', collectionPath(o) + query, o);
}

async function mustCreate(kc: KubeConfig, o: Obj, dryRun: boolean): Promise<void> {
  const r = await create(kc, o, dryRun);
  if (r.status !== 201 && !(r.status === 409 && !dryRun)) {
    throw new Error(`${dryRun ? 'dry-run ' : ''}create ${o.kind} ${o.metadata.name}: HTTP ${r.status} ${r.body?.message ?? JSON.stringify(r.body)}`);
  }
}

/**
 * Stand-ins for the Prometheus Operator's CRDs (not available offline): the group, versions,
 * kinds and scope are the operator's; the schema only preserves fields, so the monitors' spec is
 * not validated by the server (only apiVersion, kind and metadata are).
 */
function monitorCrd(kind: string, plural: string): Obj {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${plural}.monitoring.coreos.com` },
    spec: {
      group: 'monitoring.coreos.com',
      scope: 'Namespaced',
      names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List` },
      versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } } }],
    },
  };
}

async function waitEstablished(kc: KubeConfig, name: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const r = await api(kc, 'GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
    if (r.body?.status?.conditions?.some((c: any) => c.type === 'Established' && c.status === 'True')) {
      // Discovery of the new resource can lag the condition a little.
      const list = await api(kc, 'GET', `/apis/monitoring.coreos.com/v1/${name.split('.')[0]}`);
      if (list.status === 200) return;
    }
    if (Date.now() > deadline) throw new Error(`CRD ${name} not established`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A Pod as the workload's controller would create it from the template. */
function podFrom(workload: Obj, name: string): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: workload.metadata.namespace, labels: workload.spec.template.metadata.labels },
    spec: { ...workload.spec.template.spec, nodeName: 'node-a' },
  };
}

async function namespaceWith(kc: KubeConfig, prefix: string, labels: Record<string, string>): Promise<string> {
  const name = uniqueName(prefix);
  await mustCreate(kc, { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } }, false);
  return name;
}

describe('helm chart on the real kube-apiserver (server-side dry run)', function () {
  this.timeout(120_000);
  let cluster: TestCluster;
  let kc: KubeConfig;

  before(async function () {
    requirePrerequisite(this, haveHelm, HELM_PREREQ);
    cluster = await useCluster(this);
    kc = cluster.admin;
    for (const [kind, plural] of [['ServiceMonitor', 'servicemonitors'], ['PodMonitor', 'podmonitors']] as const) {
      await mustCreate(kc, monitorCrd(kind, plural), false);
      await waitEstablished(kc, `${plural}.monitoring.coreos.com`);
    }
  });

  for (const [name, sets] of Object.entries(VARIANTS)) {
    it(`accepts every rendered object: ${name}`, async function () {
      const ns = await cluster.namespace('chart');
      const objs = render(sets, ns, uniqueName('rel'));
      const rejected: string[] = [];
      for (const o of objs) {
        const r = await create(kc, o, true);
        if (r.status !== 201) rejected.push(`${o.kind}/${o.metadata.name}: HTTP ${r.status} ${r.body?.message}`);
        else expect(r.body.metadata.uid, `${o.kind} dry run`).to.be.a('string');
      }
      expect(rejected, 'objects the API server refused').to.deep.equal([]);
    });
  }

  /** NOTES.txt as `helm install` prints it (client-side dry run: nothing is created). */
  function notes(sets: string[], ns: string, release: string): string {
    const r = helm(['install', release, chart, '--namespace', ns, '--dry-run=client', '--kubeconfig', cluster.kubeconfigPath, ...setArgs(sets)]);
    expect(r.status, r.stderr).to.equal(0);
    const at = r.stdout.indexOf('\nNOTES:\n');
    expect(at, 'a NOTES section').to.be.greaterThan(0);
    return r.stdout.slice(at + '\nNOTES:\n'.length);
  }

  it("NOTES: kubectl logs of the agents, port-forward + icmpwatch observe, grpcurl, for this release's objects", function () {
    const ns = 'watch';
    const release = uniqueName('rel');
    const sets = ['collector.grpcPort=5000'];
    const text = notes(sets, ns, release);
    const objs = render(sets, ns, release);
    const ds = one(objs, 'DaemonSet', 'agent').metadata.name;
    const svc = one(objs, 'Service', 'collector');
    const grpc = svc.spec.ports.find((p: any) => p.name === 'grpc').port;
    expect(grpc).to.equal(5000);
    const lines = text.split('\n').map((l) => l.trim());
    expect(lines).to.include(`kubectl -n ${ns} logs -f daemonset/${ds}`);
    expect(lines).to.include(`kubectl -n ${ns} port-forward service/${svc.metadata.name} ${grpc}:${grpc}`);
    // Every CLI command shown uses flags the CLI has, and the forwarded port.
    const cli = lines.filter((l) => /^icmpwatch (observe|status) /.test(l));
    expect(cli.filter((l) => l.startsWith('icmpwatch observe '))).to.have.length.greaterThan(0);
    for (const line of cli) {
      const usage = line.startsWith('icmpwatch observe ') ? observeUsage : statusUsage;
      expect(line).to.include(`--server 127.0.0.1:${grpc}`);
      for (const f of line.match(/--[a-z-]+/g)!) expect(usage, `${f} in \`${line}\``).to.include(f);
    }
    // The in-cluster CLI dials the address the agents are given.
    const collectorArg = container(one(objs, 'DaemonSet')).args.find((a: string) => a.startsWith('--collector='));
    expect(text).to.include(`observe --server ${collectorArg.slice('--collector='.length)} --follow`);
    // grpcurl: methods of the Observer service, and a request body of SubscribeRequest's fields.
    const grpcurl = lines.filter((l) => l.startsWith('grpcurl '));
    // TLS by default (tls.mode=helm): the CA fetched from the collector's Secret.
    expect(grpcurl).to.include(`grpcurl -cacert ca.crt 127.0.0.1:${grpc} list`);
    const tlsSecret = one(objs, 'Secret', 'collector').metadata.name;
    expect(lines).to.include(`kubectl -n ${ns} get secret ${tlsSecret} -o jsonpath='{.data.ca\\.crt}' | base64 -d > ca.crt`);
    const proto = readFileSync(join(repo, 'proto/icmpwatch/v1/observer.proto'), 'utf8');
    const service = /service Observer \{([^}]*)\}/.exec(proto)![1]!;
    const subscribeRequest = /message SubscribeRequest \{([^}]*)\}/.exec(proto)![1]!;
    const methods = grpcurl.map((l) => / icmpwatch\.v1\.Observer\/(\w+)$/.exec(l)?.[1]).filter((m): m is string => Boolean(m));
    expect(methods).to.include.members(['Subscribe', 'GetStatus']);
    for (const m of methods) expect(service, `rpc ${m}`).to.match(new RegExp(`rpc ${m}\\(`));
    const body = JSON.parse(/-d '([^']*)'/.exec(grpcurl.find((l) => l.includes('/Subscribe'))!)![1]!) as Record<string, unknown>;
    for (const field of Object.keys(body)) expect(subscribeRequest, `SubscribeRequest.${field}`).to.match(new RegExp(`\\s${field} = \\d+;`));
    for (const line of grpcurl) expect(line).to.include(`127.0.0.1:${grpc}`);
  });

  it('NOTES: how to bind the viewer roles, with their rendered names; authorization off said loudly', function () {
    const release = uniqueName('rel');
    const text = notes([], 'watch', release);
    const roles = render([], 'watch', release).filter((o) => o.kind === 'ClusterRole' && o.metadata.name.includes('-viewer')).map((o) => o.metadata.name);
    expect(roles).to.have.length(2);
    expect(text).to.include(`kubectl create clusterrolebinding alice-icmpwatch --clusterrole=${roles[0]} --user=alice`);
    expect(text).to.include(`kubectl -n shop create rolebinding alice-icmpwatch --clusterrole=${roles[1]} --user=alice`);
    expect(text).to.include('--token-file token').and.include('-H "authorization: Bearer $(cat token)"');
    const off = notes(['collector.authorization.enabled=false'], 'watch', release);
    expect(off).to.include('AUTHORIZATION IS OFF').and.not.include('--token-file').and.not.include('rolebinding');
    // The CLI refuses to send a token over plaintext: no command that would exit 2.
    const plaintext = notes(['tls.mode=plaintext'], 'watch', release);
    expect(plaintext).to.include('never sends a token without TLS').and.include('-plaintext -H "authorization: Bearer').and.not.include('--token-file');
    expect(notes(['tls.mode=plaintext', 'collector.authorization.enabled=false'], 'watch', release)).to.include('observe --server 127.0.0.1:4245 --insecure-plaintext --last 20');
  });

  it('NOTES: only what is installed (no collector: no port-forward or grpcurl; no agents: no kubectl logs)', function () {
    const agentOnly = notes(['collector.enabled=false'], 'watch', uniqueName('rel'));
    expect(agentOnly).to.include('logs -f daemonset/').and.not.include('port-forward').and.not.include('grpcurl').and.not.include('icmpwatch observe');
    const collectorOnly = notes(['agent.enabled=false'], 'watch', uniqueName('rel'));
    expect(collectorOnly).to.include('port-forward').and.include('grpcurl').and.not.include('kubectl -n watch logs');
  });

  it('Pod Security: the collector pod meets "restricted"; the agent pod is refused by "baseline", runs under "privileged"', async function () {
    const release = uniqueName('rel');
    const restricted = await namespaceWith(kc, 'psa-restricted', { 'pod-security.kubernetes.io/enforce': 'restricted' });
    const baseline = await namespaceWith(kc, 'psa-baseline', { 'pod-security.kubernetes.io/enforce': 'baseline' });
    const privileged = await namespaceWith(kc, 'psa-privileged', { 'pod-security.kubernetes.io/enforce': 'privileged' });

    // The collector, as its Deployment would create it, in a "restricted" namespace.
    const inRestricted = render([], restricted, release);
    await mustCreate(kc, one(inRestricted, 'ServiceAccount', 'collector'), false);
    const collectorPod = await create(kc, podFrom(one(inRestricted, 'Deployment'), 'collector-0'), true);
    expect(collectorPod.status, collectorPod.body?.message).to.equal(201);
    // Its token (for the access reviews) is the projected, expiring ServiceAccount token.
    expect(collectorPod.body.spec.automountServiceAccountToken).to.equal(true);
    expect(collectorPod.body.spec.volumes.some((v: any) => v.projected), 'a service-account token volume').to.equal(true);

    // The agent needs host namespaces and host paths: "baseline" refuses it, naming why.
    const inBaseline = render([], baseline, release);
    await mustCreate(kc, one(inBaseline, 'ServiceAccount', 'agent'), false);
    const refused = await create(kc, podFrom(one(inBaseline, 'DaemonSet'), 'agent-0'), true);
    expect(refused.status).to.equal(403);
    expect(refused.body.message).to.match(/violates PodSecurity "baseline:latest"/).and.match(/host namespaces/).and.match(/hostPath volumes/);

    for (const sets of [[], ['agent.privileged=true']]) {
      const inPrivileged = render(sets, privileged, release);
      await mustCreate(kc, one(inPrivileged, 'ServiceAccount', 'agent'), false);
      const agentPod = await create(kc, podFrom(one(inPrivileged, 'DaemonSet'), 'agent-0'), true);
      expect(agentPod.status, agentPod.body?.message).to.equal(201);
      // The ServiceAccount admission mounted the token the agent's in-cluster configuration reads.
      const mounts = agentPod.body.spec.containers[0].volumeMounts.map((m: any) => m.mountPath);
      expect(mounts).to.include('/var/run/secrets/kubernetes.io/serviceaccount');
    }
  });

  it("RBAC: the agent's ServiceAccount may read what enrichment watches, not secrets, not writes; the collector's may only review access; the viewer roles", async function () {
    const ns = await cluster.namespace('rbac');
    const release = uniqueName('rel');
    const objs = render([], ns, release);
    for (const kind of ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding']) {
      for (const o of objs.filter((x) => x.kind === kind)) await mustCreate(kc, o, false);
    }
    const agentSa = one(objs, 'ServiceAccount', 'agent').metadata.name;
    const collectorSa = one(objs, 'ServiceAccount', 'collector').metadata.name;
    const can = async (sa: string, verb: string, group: string, resource: string, namespace?: string): Promise<boolean> => {
      const r = await api(kc, 'POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SubjectAccessReview',
        spec: {
          user: `system:serviceaccount:${ns}:${sa}`,
          groups: ['system:serviceaccounts', `system:serviceaccounts:${ns}`, 'system:authenticated'],
          resourceAttributes: { verb, group, resource, version: '*', namespace },
        },
      });
      expect(r.status).to.equal(201);
      return r.body.status.allowed === true;
    };
    // The RBAC authorizer reads roles and bindings from an informer cache: wait until it has them.
    const deadline = Date.now() + 15_000;
    while (!(await can(agentSa, 'list', '', 'pods'))) {
      if (Date.now() > deadline) throw new Error('the binding never took effect');
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const rule of AGENT_CLUSTER_ROLE_RULES) {
      for (const group of rule.apiGroups) {
        for (const resource of rule.resources) {
          for (const verb of rule.verbs) expect(await can(agentSa, verb, group, resource), `agent ${verb} ${group}/${resource}`).to.equal(true);
          for (const verb of ['create', 'update', 'patch', 'delete']) expect(await can(agentSa, verb, group, resource), `agent ${verb} ${group}/${resource}`).to.equal(false);
        }
      }
    }
    for (const [verb, group, resource] of [['get', '', 'secrets'], ['list', '', 'secrets'], ['list', '', 'configmaps'], ['create', '', 'pods/exec'], ['list', 'apps', 'deployments']]) {
      expect(await can(agentSa, verb!, group!, resource!), `agent ${verb} ${group}/${resource}`).to.equal(false);
    }
    for (const [verb, group, resource] of [['list', '', 'pods'], ['watch', '', 'nodes'], ['get', '', 'secrets'], ['get', 'icmpwatch.io', 'icmpevents']]) {
      expect(await can(collectorSa, verb!, group!, resource!), `collector ${verb} ${group}/${resource}`).to.equal(false);
    }
    expect(await can(collectorSa, 'create', 'authentication.k8s.io', 'tokenreviews')).to.equal(true);
    expect(await can(collectorSa, 'create', 'authorization.k8s.io', 'subjectaccessreviews')).to.equal(true);
    // The namespace viewer bound in one namespace: that namespace's events, not another's, not cluster-wide.
    const viewer = 'a-viewer';
    await mustCreate(kc, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: viewer, namespace: ns } }, false);
    const nsViewer = objs.find((o) => o.kind === 'ClusterRole' && o.metadata.name.endsWith('-namespace-viewer'))!.metadata.name;
    await mustCreate(kc, {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name: viewer, namespace: ns },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: nsViewer },
      subjects: [{ kind: 'ServiceAccount', name: viewer, namespace: ns }],
    }, false);
    while (!(await can(viewer, 'get', 'icmpwatch.io', 'icmpevents', ns))) {
      if (Date.now() > deadline + 15_000) throw new Error('the role binding never took effect');
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await can(viewer, 'get', 'icmpwatch.io', 'icmpevents', 'default')).to.equal(false);
    expect(await can(viewer, 'get', 'icmpwatch.io', 'icmpevents')).to.equal(false);
    // Cluster-scoped objects outlive the namespace: remove them.
    for (const o of objs.filter((x) => x.kind === 'ClusterRole' || x.kind === 'ClusterRoleBinding')) {
      await api(kc, 'DELETE', `${collectionPath(o)}/${o.metadata.name}`);
    }
  });
});
