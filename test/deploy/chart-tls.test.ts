// The chart's certificate modes (tls.mode): what each renders and mounts, that the certificates
// it generates work with the collector over real TLS (the agent's is let in, the collector's own is
// not an agent), that `helm upgrade` against the real API server keeps them, and that the objects
// are accepted by the API server (cert-manager's Certificate through a stand-in CRD).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { IngestClient, ObserverClient } from '../../src/common/grpc/clients.js';
import { staticClientTransport, WatchedTlsFiles, type ClientTransport } from '../../src/common/grpc/tls.js';
import { silentLog, startCollector } from '../collector/harness.js';
import { useCluster, uniqueName, type TestCluster } from '../k8s/cluster.js';
import { requirePrerequisite } from '../setup.js';
import { chart, HELM_PREREQ, haveHelm, helm, render, setArgs, type Obj } from './helm.js';

/* eslint-disable @typescript-eslint/no-explicit-any */

const MODES: Record<string, string[]> = {
  helm: [],
  certManager: ['tls.mode=certManager', 'tls.certManager.issuerRef.name=icmpwatch-ca', 'tls.certManager.issuerRef.kind=ClusterIssuer'],
  existingSecrets: ['tls.mode=existingSecrets', 'tls.existingSecrets.collector=my-collector-tls', 'tls.existingSecrets.agent=my-agent-tls'],
  plaintext: ['tls.mode=plaintext'],
};

const workload = (objs: Obj[], kind: string) => objs.find((o) => o.kind === kind)!;
const args = (w: Obj): string[] => w.spec.template.spec.containers[0].args;
const tlsVolume = (w: Obj) => w.spec.template.spec.volumes.find((v: any) => v.name === 'tls');
const tlsMount = (w: Obj) => w.spec.template.spec.containers[0].volumeMounts.find((m: any) => m.name === 'tls');

describe('helm chart: certificate modes (tls.mode)', function () {
  this.timeout(60_000);
  before(function () {
    requirePrerequisite(this, haveHelm, HELM_PREREQ);
  });

  for (const [mode, sets] of Object.entries(MODES)) {
    it(`${mode}: lints, and mounts its certificates into the collector and the agents`, function () {
      const lint = helm(['lint', '--strict', chart, ...setArgs(sets)]);
      expect(lint.status, lint.stdout + lint.stderr).to.equal(0);
      const objs = render(sets);
      const collector = workload(objs, 'Deployment');
      const agent = workload(objs, 'DaemonSet');
      if (mode === 'plaintext') {
        expect(args(collector)).to.include('--insecure-plaintext');
        expect(args(agent)).to.include('--insecure-plaintext');
        expect(args(collector).concat(args(agent)).filter((a) => a.startsWith('--tls-'))).to.deep.equal([]);
        expect(tlsVolume(collector)).to.equal(undefined);
        expect(tlsVolume(agent)).to.equal(undefined);
        expect(objs.filter((o) => o.kind === 'Secret' || o.kind === 'Certificate')).to.deep.equal([]);
        return;
      }
      expect(args(collector)).to.include.members(['--tls-cert=/etc/icmpwatch/tls/tls.crt', '--tls-key=/etc/icmpwatch/tls/tls.key', '--tls-agent-ca=/etc/icmpwatch/tls/ca.crt']);
      expect(args(agent)).to.include.members(['--tls-ca=/etc/icmpwatch/tls/ca.crt', '--tls-cert=/etc/icmpwatch/tls/tls.crt', '--tls-key=/etc/icmpwatch/tls/tls.key']);
      expect(args(collector).concat(args(agent))).not.to.include('--insecure-plaintext');
      // Whole Secret volumes (no subPath): the kubelet swaps renewed files in.
      for (const w of [collector, agent]) expect(tlsMount(w)).to.deep.equal({ name: 'tls', mountPath: '/etc/icmpwatch/tls', readOnly: true });
      const secretOf = { collector: tlsVolume(collector).secret.secretName, agent: tlsVolume(agent).secret.secretName };
      if (mode === 'existingSecrets') {
        expect(secretOf).to.deep.equal({ collector: 'my-collector-tls', agent: 'my-agent-tls' });
        expect(objs.filter((o) => o.kind === 'Secret' || o.kind === 'Certificate')).to.deep.equal([]);
      } else if (mode === 'certManager') {
        const certs = objs.filter((o) => o.kind === 'Certificate');
        expect(certs.map((c) => c.spec.secretName)).to.deep.equal([secretOf.collector, secretOf.agent]);
        const [server, client] = certs as [Obj, Obj];
        expect(server.spec.dnsNames).to.include(`${objs.find((o) => o.kind === 'Service')!.metadata.name}.icmpwatch.svc`);
        expect(server.spec.usages).to.include('server auth');
        expect(client.spec).to.include({ commonName: 'icmpwatch-agent' });
        expect(client.spec.usages).to.include('client auth');
        for (const c of certs) expect(c.spec.issuerRef).to.deep.equal({ name: 'icmpwatch-ca', kind: 'ClusterIssuer', group: 'cert-manager.io' });
      } else {
        const secrets = objs.filter((o) => o.kind === 'Secret');
        expect(secrets.map((s) => s.metadata.name)).to.deep.equal([secretOf.collector, secretOf.agent]);
        for (const s of secrets) expect(Object.keys(s.data)).to.deep.equal(['ca.crt', 'tls.crt', 'tls.key']);
      }
    });
  }

  it('agents without a collector mount no certificate and no Secret is made', function () {
    const objs = render(['collector.enabled=false']);
    expect(tlsVolume(workload(objs, 'DaemonSet'))).to.equal(undefined);
    expect(objs.filter((o) => o.kind === 'Secret')).to.deep.equal([]);
  });

  const REFUSED: [string[], RegExp][] = [
    [['tls.mode=none'], /at '\/tls\/mode': value must be one of 'helm', 'certManager', 'existingSecrets', 'plaintext'/],
    [['tls.mode=existingSecrets', 'tls.existingSecrets.agent=a'], /tls\.existingSecrets\.collector: the collector's Secret \(tls\.crt, tls\.key, ca\.crt\) is required/],
    [['tls.mode=certManager'], /tls\.certManager\.issuerRef\.name: the cert-manager Issuer or ClusterIssuer is required/],
    [['tls.helm.validityDays=0'], /at '\/tls\/helm\/validityDays': minimum: got 0, want 1/],
  ];
  for (const [sets, message] of REFUSED) {
    it(`refuses ${sets.join(' ')} naming the value`, function () {
      const r = helm(['template', 'x', chart, ...setArgs(sets)]);
      expect(r.status).to.not.equal(0);
      expect(r.stderr).to.match(message);
    });
  }

  describe('the certificates helm generates, used by the collector over real TLS', function () {
    let dir: string;
    const files: Record<string, Record<string, string>> = {};
    const watched: WatchedTlsFiles[] = [];

    before(function () {
      requirePrerequisite(this, haveHelm, HELM_PREREQ);
      dir = mkdtempSync(join(tmpdir(), 'icmpwatch-chart-tls-'));
      for (const s of render().filter((o) => o.kind === 'Secret')) {
        const component = s.metadata.labels['app.kubernetes.io/component'] as string;
        files[component] = {};
        for (const [key, value] of Object.entries(s.data as Record<string, string>)) {
          const path = join(dir, `${component}-${key}`);
          writeFileSync(path, Buffer.from(value, 'base64'));
          files[component]![key] = path;
        }
      }
    });

    after(() => {
      for (const w of watched) w.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const mTls = async (component: string, pair: string): Promise<ClientTransport> => {
      const w = await WatchedTlsFiles.open({ caFile: files[component]!['ca.crt']!, certFile: files[pair]!['tls.crt']!, keyFile: files[pair]!['tls.key']! }, silentLog);
      watched.push(w);
      return { credentials: w.channelCredentials(), serverName: null };
    };
    const hello = (address: string, transport: ClientTransport) => {
      const client = new IngestClient(address, { minMs: 50, maxMs: 200 }, transport);
      const stream = client.stream();
      return new Promise<number>((resolve) => {
        stream.on('data', () => resolve(status.OK));
        stream.on('error', (err: { code: number }) => resolve(err.code));
        stream.write({ hello: { node: 'n', agentInstance: 'i' } });
      }).finally(() => {
        stream.cancel();
        client.close();
      });
    };

    it("the agents' certificate may publish, the collector's own may not; subscribers reach 127.0.0.1 (port-forward) and the Service name", async () => {
      const collector = await startCollector({
        ingestListen: '127.0.0.1:0',
        tls: { certFile: files.collector!['tls.crt']!, keyFile: files.collector!['tls.key']!, agentCaFile: files.collector!['ca.crt']! },
      });
      try {
        expect(await hello(collector.ingestAddress, await mTls('agent', 'agent'))).to.equal(status.OK);
        expect(await hello(collector.ingestAddress, await mTls('agent', 'collector'))).to.equal(status.PERMISSION_DENIED);
        for (const serverName of [null, 'icmpwatch-collector.icmpwatch.svc']) {
          const observer = new ObserverClient(collector.address, {}, staticClientTransport(files.collector!['ca.crt']!, serverName));
          expect(Number((await observer.getStatus({ deadline: Date.now() + 5000 })).eventsSeen ?? 0)).to.equal(0);
          observer.close();
        }
      } finally {
        await collector.stop();
      }
    });
  });
});

describe('helm chart certificates on the real kube-apiserver', function () {
  this.timeout(180_000);
  let cluster: TestCluster;

  before(async function () {
    requirePrerequisite(this, haveHelm, HELM_PREREQ);
    cluster = await useCluster(this);
  });

  const kubectlHelm = (cmd: string[]) => helm([...cmd, '--kubeconfig', cluster.kubeconfigPath]);

  it('helm mode: `helm upgrade` keeps the generated CA and certificates (lookup); a new release gets new ones', async () => {
    const ns = await cluster.namespace('tls');
    const release = uniqueName('rel');
    const secrets = (): Record<string, string> => {
      const r = kubectlHelm(['get', 'manifest', release, '-n', ns]);
      expect(r.status, r.stderr).to.equal(0);
      return Object.fromEntries(
        [...r.stdout.matchAll(/name: (\S+-tls)\n[\s\S]*?tls\.crt: (\S+)/g)].map((m) => [m[1]!, m[2]!]),
      );
    };
    try {
      const install = kubectlHelm(['install', release, chart, '-n', ns, '--set', 'agent.enabled=false']);
      expect(install.status, install.stderr).to.equal(0);
      const first = secrets();
      expect(Object.keys(first)).to.have.length(2);
      const upgrade = kubectlHelm(['upgrade', release, chart, '-n', ns, '--reuse-values', '--set', 'collector.historyEvents=5000']);
      expect(upgrade.status, upgrade.stderr).to.equal(0);
      expect(secrets()).to.deep.equal(first);
      const other = render([], ns, uniqueName('rel')).filter((o) => o.kind === 'Secret').map((o) => o.data['tls.crt']);
      expect(other).to.not.include.members(Object.values(first));
    } finally {
      kubectlHelm(['uninstall', release, '-n', ns]);
    }
  });

  it('certManager mode: the Certificates are valid cert-manager objects (stand-in CRD with its schema for the fields used)', async () => {
    const kc = cluster.admin;
    const { ApiextensionsV1Api, CustomObjectsApi } = await import('@kubernetes/client-node');
    const ext = kc.makeApiClient(ApiextensionsV1Api);
    const str = { type: 'string' };
    await ext
      .createCustomResourceDefinition({
        body: {
          metadata: { name: 'certificates.cert-manager.io' },
          spec: {
            group: 'cert-manager.io',
            scope: 'Namespaced',
            names: { kind: 'Certificate', plural: 'certificates', singular: 'certificate', listKind: 'CertificateList' },
            versions: [
              {
                name: 'v1',
                served: true,
                storage: true,
                schema: {
                  openAPIV3Schema: {
                    type: 'object',
                    properties: {
                      spec: {
                        type: 'object',
                        required: ['secretName', 'issuerRef'],
                        properties: {
                          secretName: str,
                          commonName: str,
                          dnsNames: { type: 'array', items: str },
                          ipAddresses: { type: 'array', items: str },
                          usages: { type: 'array', items: { type: 'string', _enum: ['server auth', 'client auth', 'digital signature', 'key encipherment'] } },
                          duration: str,
                          renewBefore: str,
                          privateKey: { type: 'object', properties: { rotationPolicy: { type: 'string', _enum: ['Never', 'Always'] } } },
                          issuerRef: { type: 'object', required: ['name'], properties: { name: str, kind: str, group: str } },
                        },
                      },
                    },
                  },
                },
              },
            ],
          },
        },
      })
      .catch((err: { code?: number }) => {
        if (err.code !== 409) throw err;
      });
    after(() => ext.deleteCustomResourceDefinition({ name: 'certificates.cert-manager.io' }).catch(() => undefined));
    const custom = kc.makeApiClient(CustomObjectsApi);
    const ns = await cluster.namespace('certmanager');
    const certs = render(MODES.certManager!, ns, uniqueName('rel')).filter((o) => o.kind === 'Certificate');
    expect(certs).to.have.length(2);
    const deadline = Date.now() + 20_000;
    for (const body of certs) {
      for (;;) {
        try {
          // Strict field validation: a field the CRD does not know fails.
          await custom.createNamespacedCustomObject({ group: 'cert-manager.io', version: 'v1', namespace: ns, plural: 'certificates', body, fieldValidation: 'Strict' });
          break;
        } catch (err) {
          // The new CRD's endpoint appears shortly after it is created.
          if ((err as { code?: number }).code !== 404 || Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    }
  });
});
