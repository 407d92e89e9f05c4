// kind/ cannot run here (no Docker engine); what can be checked without it is checked: the cluster
// config's shape and mounts, the script's syntax, and that the script's helm flags and the object
// names it waits for match what the chart renders.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadAllYaml } from '@kubernetes/client-node';
import { expect } from 'chai';
import { requirePrerequisite } from '../setup.js';
import { HELM_PREREQ, haveHelm, render, repo } from './helm.js';

const script = readFileSync(join(repo, 'kind/e2e.sh'), 'utf8');

describe('kind', function () {
  it('cluster.yaml: one control plane, two workers, each with BTF, tracefs and bpffs from the host', function () {
    const [config] = loadAllYaml(readFileSync(join(repo, 'kind/cluster.yaml'), 'utf8'));
    expect(config.kind).to.equal('Cluster');
    expect(config.apiVersion).to.equal('kind.x-k8s.io/v1alpha4');
    expect(config.nodes.map((n: { role: string }) => n.role)).to.deep.equal(['control-plane', 'worker', 'worker']);
    for (const node of config.nodes) {
      expect(node.extraMounts.map((m: { containerPath: string }) => m.containerPath)).to.include.members(['/sys/kernel/btf', '/sys/kernel/tracing', '/sys/fs/bpf']);
    }
  });

  it('e2e.sh parses (bash -n)', function () {
    const r = spawnSync('bash', ['-n', join(repo, 'kind/e2e.sh')], { encoding: 'utf8' });
    expect(r.status, r.stderr).to.equal(0);
  });

  it("e2e.sh's helm flags render, and the objects it waits for are the chart's", function () {
    requirePrerequisite(this, haveHelm, HELM_PREREQ);
    const release = /upgrade --install (\S+) /.exec(script)![1]!;
    // Values from the script with its variables at their defaults (IMAGE=icmpwatch:e2e).
    const sets = [...script.matchAll(/--set (\S+)/g)].map((m) =>
      m[1]!.replace('"${IMAGE%:*}"', 'icmpwatch').replace('"${IMAGE##*:}"', 'e2e'),
    );
    expect(sets).to.include('agent.privileged=true');
    const objs = render(sets, 'icmpwatch', release);
    const names = (kind: string) => objs.filter((o) => o.kind === kind).map((o) => o.metadata.name);
    expect(names('DaemonSet')).to.deep.equal([/daemonset\/(\S+)/.exec(script)![1]]);
    expect(names('Deployment')).to.deep.equal([/deployment\/(\S+)/.exec(script)![1]]);
    const svcName = /port-forward service\/(\S+) /.exec(script)![1]!;
    const svc = objs.find((o) => o.kind === 'Service' && o.metadata.name === svcName)!;
    const remotePort = Number(/"\$LOCAL_PORT:(\d+)"/.exec(script)![1]);
    expect(svc.spec.ports.find((p: { name: string }) => p.name === 'grpc').port).to.equal(remotePort);
    const ds = objs.find((o) => o.kind === 'DaemonSet')!;
    expect(ds.spec.template.spec.containers[0].image).to.equal('icmpwatch:e2e');
    expect(ds.spec.template.spec.containers[0].imagePullPolicy).to.equal('Never');
  });
});
