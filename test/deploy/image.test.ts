// The Dockerfile, checked without a Docker engine: what it COPYs exists (and passes .dockerignore),
// its build stage runs the Makefile's own steps, and the runtime stage's layout works: the image's
// ENTRYPOINT runs from a copy of that layout, and the collector and the agent start from it with
// the command lines the chart renders; the agent as its pod would run (in-cluster service account
// on the real kube-apiserver, the pod's capabilities only) enriches real pings end to end.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { CoreV1Api, KubeConfig, KubernetesObjectApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { expect } from 'chai';
import { DemoNetwork } from '../../src/cli/demo-network.js';
import { runCli } from '../cli/cli-runner.js';
import { uniqueName, useCluster, type TestCluster } from '../k8s/cluster.js';
import { isRoot, requirePrerequisite } from '../setup.js';
import { HELM_PREREQ, haveHelm, render, repo, type Obj } from './helm.js';

interface Instruction {
  op: string;
  args: string;
  line: number;
}
interface Stage {
  from: string;
  name: string | null;
  instructions: Instruction[];
}

/** Instructions per stage; continuation lines joined, comments and the parser directive dropped. */
function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i + 1;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (line.endsWith('\\') && i + 1 < lines.length) {
      i++;
      if (/^\s*#/.test(lines[i]!)) continue;
      line = line.slice(0, -1) + ' ' + lines[i]!.trim();
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`Dockerfile line ${start}: cannot parse '${line}'`);
    const op = m[1]!.toUpperCase();
    const rest = m[2]!.trim();
    if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest)!;
      stages.push({ from: f[1]!, name: f[2] ?? null, instructions: [] });
    } else if (op === 'ARG' && stages.length === 0) {
      const [k, v] = rest.split('=');
      args.set(k!, v ?? '');
    } else {
      stages.at(-1)!.instructions.push({ op, args: rest, line: start });
    }
  }
  return { args, stages };
}

/** COPY [--from=STAGE] SRC... DEST */
function copies(stage: Stage): { from: string | null; sources: string[]; dest: string }[] {
  return stage.instructions
    .filter((i) => i.op === 'COPY')
    .map((i) => {
      const words = i.args.split(/\s+/);
      const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length) ?? null;
      const paths = words.filter((w) => !w.startsWith('--'));
      return { from, sources: paths.slice(0, -1), dest: paths.at(-1)! };
    });
}

/** The stage's last WORKDIR, or the one of the stage it is built FROM. */
function workdir(s: Stage): string {
  const w = s.instructions.filter((i) => i.op === 'WORKDIR').at(-1);
  if (w) return w.args;
  const parent = dockerfile.stages.find((x) => x.name === s.from);
  if (!parent) throw new Error(`stage ${s.name} has no WORKDIR`);
  return workdir(parent);
}

/** .dockerignore semantics for the patterns this repository uses: last match wins; `*` = top level. */
function ignored(patterns: string[], path: string): boolean {
  let out = false;
  for (const raw of patterns) {
    const negate = raw.startsWith('!');
    const p = (negate ? raw.slice(1) : raw).replace(/\/$/, '');
    const re = new RegExp('^' + p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*\*/g, '\u0000').replace(/\*/g, '[^/]*').replace(/\u0000/g, '.*') + '(/.*)?$');
    if (re.test(path)) out = !negate;
  }
  return out;
}

const dockerfile = parseDockerfile(readFileSync(join(repo, 'Dockerfile'), 'utf8'));
const dockerignore = readFileSync(join(repo, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));
const stage = (name: string) => {
  const s = dockerfile.stages.find((x) => x.name === name);
  if (!s) throw new Error(`Dockerfile has no stage '${name}'`);
  return s;
};
const runs = (s: Stage) => s.instructions.filter((i) => i.op === 'RUN').map((i) => i.args);
const aptPackages = (s: Stage) =>
  runs(s).flatMap((r) => {
    const m = /apt-get install ((?:\S+\s*)+?)(?:&&|$)/.exec(r);
    return m ? m[1]!.split(/\s+/).filter((w) => w && !w.startsWith('-')) : [];
  });
const makefile = readFileSync(join(repo, 'Makefile'), 'utf8');
const built = existsSync(join(repo, 'dist/cli/main.js')) && existsSync(join(repo, 'build/bpf/icmpwatch.bpf.o'));
const BUILT_PREREQ = 'a built tree (make build)';

/** The runtime stage's files, laid out in a temporary directory as the image holds them. */
function stageRuntimeLayout(): { root: string; entrypoint: string[]; cmd: string[] } {
  const runtime = dockerfile.stages.at(-1)!;
  const wd = workdir(runtime);
  const root = mkdtempSync(join(tmpdir(), 'icmpwatch-image-'));
  chmodSync(root, 0o755);
  const toLocal = (imagePath: string) => join(root, posix.relative(wd, posix.resolve(wd, imagePath)));
  for (const c of copies(runtime)) {
    const src = stage(c.from!);
    for (const s of c.sources) {
      const repoPath = join(repo, posix.relative(workdir(src), s));
      const dest = toLocal(c.dest);
      mkdirSync(dirname(dest), { recursive: true });
      // node_modules is big: hard links where the filesystem allows (the image's has no
      // devDependencies, this one does). Not a symlink: the pod's non-root user must reach it
      // even when the checkout sits in a directory only root may enter.
      if (s.endsWith('/node_modules') && spawnSync('cp', ['-al', repoPath, dest]).status === 0) continue;
      cpSync(repoPath, dest, { recursive: true, dereference: true });
    }
  }
  const json = (op: string) => JSON.parse(runtime.instructions.find((i) => i.op === op)!.args) as string[];
  const entrypoint = json('ENTRYPOINT');
  return { root, entrypoint: [toLocal(entrypoint[0]!), ...entrypoint.slice(1)], cmd: json('CMD') };
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

async function waitHttp(url: string, child: ChildProcess, output: () => string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`exited ${child.exitCode} before ${url} answered:\n${output()}`);
    const ok = await fetch(url).then((r) => r.status === 200, () => false);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${url} not 200 within ${timeoutMs} ms:\n${output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function start(argv: string[], opts: { env?: Record<string, string>; uid?: number; gid?: number }): { child: ChildProcess; output: () => string } {
  const child = spawn(argv[0]!, argv.slice(1), { env: { PATH: process.env.PATH!, ...opts.env }, uid: opts.uid, gid: opts.gid, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  return { child, output: () => out };
}

async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  child.kill('SIGTERM');
  return new Promise((r) => child.once('exit', (code) => r(code)));
}

describe('Dockerfile', function () {
  it('builds on Debian bookworm with Node 24 and runs on the slim Node 24 image with libbpf1', function () {
    const engines = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')).engines.node as string;
    expect(dockerfile.args.get('NODE_MAJOR')).to.equal(/\d+/.exec(engines)![0]);
    expect(stage('build').from).to.equal('node:${NODE_MAJOR}-bookworm');
    const runtime = dockerfile.stages.at(-1)!;
    expect(runtime.from).to.equal('node:${NODE_MAJOR}-bookworm-slim');
    expect(aptPackages(runtime)).to.include('libbpf1');
    expect(aptPackages(runtime)).not.to.include.members(['clang', 'llvm', 'libbpf-dev', 'bpftool']);
  });

  it("the build stage runs the Makefile's steps: its packages, its npm ci, then `make build`", function () {
    const build = stage('build');
    const debPkgs = /^DEB_PKGS := (.*)$/m.exec(makefile)![1]!.trim().split(/\s+/);
    // All of them present, so `make deps` inside `make build` installs nothing.
    expect(aptPackages(build)).to.include.members([...debPkgs, 'make']);
    const npmCi = /^\s*(npm ci [^;\n]*);?\s*\\?$/m.exec(makefile)![1]!.trim();
    expect(runs(build)).to.include(npmCi);
    expect(runs(build).some((r) => /^make build(\s|$)/.test(r)), 'RUN make build').to.equal(true);
  });

  it('COPYs from the build context only paths that exist and that .dockerignore lets through', function () {
    const sources = dockerfile.stages.flatMap((s) => copies(s).filter((c) => c.from === null).flatMap((c) => c.sources));
    expect(sources.length).to.be.greaterThan(3);
    for (const s of sources) {
      expect(existsSync(join(repo, s)), `${s} exists`).to.equal(true);
      expect(ignored(dockerignore, s.replace(/^\.\//, '').replace(/\/$/, '')), `${s} passes .dockerignore`).to.equal(false);
    }
  });

  it('gives `make build` every input it reads (make -n, tsconfig includes)', function () {
    const sources = new Set(
      stage('build')
        .instructions.filter((i) => i.op === 'COPY')
        .flatMap((i) => i.args.split(/\s+/).slice(0, -1))
        .map((s) => s.replace(/^\.\//, '').replace(/\/$/, '')),
    );
    const dryRun = spawnSync('make', ['-n', '-B', 'build'], { cwd: repo, encoding: 'utf8' });
    expect(dryRun.status, dryRun.stderr).to.equal(0);
    const inputs = new Set<string>(['Makefile']);
    for (const word of dryRun.stdout.split(/[\s;'"]+/)) {
      const top = word.split('/')[0]!;
      if (word && !word.startsWith('-') && existsSync(join(repo, word)) && !['build', 'dist', 'node_modules'].includes(top) && !word.startsWith('src/common/proto/icmpwatch.')) inputs.add(top);
    }
    for (const tsconfig of ['tsconfig.json', 'tsconfig.test.json']) {
      inputs.add(tsconfig);
      for (const inc of (JSON.parse(readFileSync(join(repo, tsconfig), 'utf8')).include ?? []) as string[]) inputs.add(inc.split('/')[0]!);
    }
    expect(inputs).to.include.keys('bpf', 'proto', 'src', 'test', 'package-lock.json');
    for (const input of inputs) expect(sources.has(input), `COPY ${input} into the build stage`).to.equal(true);
  });

  it("the runtime stage copies what `make build` produces, and ENTRYPOINT is the CLI's launcher", function () {
    requirePrerequisite(this, built, BUILT_PREREQ);
    const runtime = dockerfile.stages.at(-1)!;
    for (const c of copies(runtime)) {
      expect(c.from, `COPY ${c.sources.join(' ')} comes from a stage`).to.be.a('string');
      for (const s of c.sources) expect(existsSync(join(repo, posix.relative(workdir(stage(c.from!)), s))), `${s} after make build`).to.equal(true);
    }
    const { root, entrypoint } = stageRuntimeLayout();
    try {
      expect(existsSync(entrypoint[0]!), `${entrypoint[0]} in the image layout`).to.equal(true);
      expect(existsSync(join(root, 'build/bpf/icmpwatch.bpf.o')), "the agent's default BPF object path").to.equal(true);
      expect(existsSync(join(root, 'proto/icmpwatch/v1/observer.proto')), "the collector's reflection sources").to.equal(true);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  describe('the image layout, run here', function () {
    this.timeout(60_000);
    let layout: ReturnType<typeof stageRuntimeLayout>;
    before(function () {
      requirePrerequisite(this, built, BUILT_PREREQ);
      layout = stageRuntimeLayout();
    });
    after(() => layout && rmSync(layout.root, { recursive: true, force: true }));

    it('ENTRYPOINT + CMD prints the usage; `agent --help` and `collector --help` work', function () {
      const run = (args: string[]) => spawnSync(layout.entrypoint[0]!, [...layout.entrypoint.slice(1), ...args], { encoding: 'utf8' });
      const usage = run(layout.cmd);
      expect(usage.status, usage.stderr).to.equal(0);
      expect(usage.stdout).to.match(/usage: icmpwatch <command>/).and.match(/\bagent\b/).and.match(/\bcollector\b/).and.match(/\bobserve\b/);
      expect(run(['agent', '--help']).stdout).to.match(/--metrics-addr/);
      expect(run(['collector', '--help']).stdout).to.match(/--listen/);
    });

    /**
     * The collector as the rendered Deployment starts it, as its user: --data-dir on a directory
     * owned like the pod's volume (fsGroup), --listen rewritten to loopback (nothing leaves this host).
     */
    async function startRenderedCollector(
      objs: Obj[],
      inCluster?: { serviceAccount: string; server: URL; stash: string },
    ): Promise<{ child: ChildProcess; output: () => string; grpcPort: number; metricsPort: number; caFile: string }> {
      const dep = objs.find((o) => o.kind === 'Deployment')!;
      const pod = dep.spec.template.spec;
      const c = pod.containers[0];
      const port = (name: string) => c.ports.find((p: { name: string }) => p.name === name).containerPort as number;
      const data = mkdtempSync(join(layout.root, 'data-'));
      chownSync(data, pod.securityContext.runAsUser, pod.securityContext.fsGroup);
      const mountPath = c.volumeMounts.find((m: { name: string }) => m.name === 'data').mountPath as string;
      const tls = mountSecret(objs, dep, layout.root, pod.securityContext.fsGroup);
      const args = (c.args as string[]).map((a) => tls.rewrite(a.replace(`=${mountPath}`, `=${data}`).replace(/^--listen=.*:(\d+)$/, '--listen=127.0.0.1:$1')));
      expect(args).to.include(`--data-dir=${data}`).and.include(`--listen=127.0.0.1:${port('grpc')}`);
      const { runAsUser, runAsGroup } = pod.securityContext;
      // In the cluster: the kubelet's KUBERNETES_SERVICE_HOST/PORT and the service account mounted
      // where it projects it (a mount namespace of its own), then the pod's user without privileges.
      const { child, output } = inCluster
        ? start(
            ['unshare', '--mount', '--propagation', 'slave', '--', 'sh', '-euc', POD_MOUNTS, 'pod-mounts', inCluster.serviceAccount, inCluster.stash,
              'setpriv', `--reuid=${runAsUser}`, `--regid=${runAsGroup}`, '--clear-groups', '--no-new-privs', '--', ...layout.entrypoint, ...args],
            { env: { ...imageEnv(), KUBERNETES_SERVICE_HOST: inCluster.server.hostname, KUBERNETES_SERVICE_PORT: inCluster.server.port } },
          )
        : start([...layout.entrypoint, ...args], { env: imageEnv(), uid: runAsUser, gid: runAsGroup });
      await waitHttp(`http://127.0.0.1:${port('metrics')}/readyz`, child, output);
      return { child, output, grpcPort: port('grpc'), metricsPort: port('metrics'), caFile: join(tls.dir, 'ca.crt') };
    }

    it("the collector starts with the rendered Deployment's args, as a non-root user, and serves gRPC and /readyz", async function () {
      requirePrerequisite(this, haveHelm, HELM_PREREQ);
      requirePrerequisite(this, isRoot, 'root (to run the collector as its chart user)');
      const [grpcPort, metricsPort] = [await freePort(), await freePort()];
      const { child, output, caFile } = await startRenderedCollector(render([`collector.grpcPort=${grpcPort}`, `collector.metricsPort=${metricsPort}`, 'collector.authorization.enabled=false']));
      try {
        // Over TLS, trusting the chart's CA; its certificate names 127.0.0.1 for port-forwards.
        const status = spawnSync(layout.entrypoint[0]!, ['status', '--server', `127.0.0.1:${grpcPort}`, '--tls-ca', caFile], { encoding: 'utf8' });
        expect(status.status, status.stdout + status.stderr).to.equal(0);
      } finally {
        expect(await stop(child), output()).to.equal(0);
      }
    });

    describe("the agent started as the rendered DaemonSet starts it, in-cluster, on the real kube-apiserver", function () {
      this.timeout(120_000);
      let cluster: TestCluster;
      let net: DemoNetwork | undefined;
      const cleanups: (() => Promise<unknown>)[] = [];

      before(async function () {
        requirePrerequisite(this, haveHelm, HELM_PREREQ);
        requirePrerequisite(this, isRoot, 'root (BPF, network and mount namespaces)');
        cluster = await useCluster(this);
      });

      after(async () => {
        for (const c of cleanups.reverse()) await c().catch(() => undefined);
        await net?.destroy();
      });

      it("enriches real pings between pods created through the API and streams them to the rendered collector, which authorizes a namespace viewer's token; `icmpwatch observe` names both pods", async function () {
        const admin = cluster.admin;
        const objects = KubernetesObjectApi.makeApiClient(admin);
        const core = admin.makeApiClient(CoreV1Api);
        const release = uniqueName('rel');
        const releaseNs = await cluster.namespace('deploy');
        const [grpcPort, collectorMetrics, agentMetrics] = [await freePort(), await freePort(), await freePort()];
        const objs = render([`collector.grpcPort=${grpcPort}`, `collector.metricsPort=${collectorMetrics}`, `agent.metricsPort=${agentMetrics}`], releaseNs, release);
        const ds = objs.find((o) => o.kind === 'DaemonSet')!;
        const podSpec = ds.spec.template.spec;
        const c = podSpec.containers[0];

        // The agent's identity, as `helm install` creates it.
        for (const o of objs.filter((x) => ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding'].includes(x.kind))) {
          await objects.create(o);
          if (!o.metadata.namespace) cleanups.push(() => objects.delete(o));
        }
        const server = new URL(admin.getCurrentCluster()!.server);
        // The service-account directory the kubelet would project for a pod: a token from the
        // TokenRequest API, the cluster's CA and the namespace, readable by the pod's user.
        const serviceAccountDir = async (name: string, namespace: string): Promise<{ dir: string; token: string }> => {
          const tr = await core.createNamespacedServiceAccountToken({ name, namespace, body: { spec: { audiences: [], expirationSeconds: 3600 } } });
          const dir = mkdtempSync(join(tmpdir(), 'icmpwatch-sa-'));
          cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
          chmodSync(dir, 0o755);
          writeFileSync(join(dir, 'token'), tr.status!.token!, { mode: 0o644 });
          writeFileSync(join(dir, 'ca.crt'), Buffer.from(admin.getCurrentCluster()!.caData!, 'base64'), { mode: 0o644 });
          writeFileSync(join(dir, 'namespace'), namespace, { mode: 0o644 });
          return { dir, token: tr.status!.token! };
        };
        const agentAccount = await serviceAccountDir(podSpec.serviceAccountName, releaseNs);
        const secrets = agentAccount.dir;
        await untilAllowed(admin, server, agentAccount.token);

        // Two "pods" in two namespaces: network namespaces here, Pod objects in the API with their IPs.
        net = await DemoNetwork.create('routed');
        const node = 'node-under-test';
        const [nsA, nsB] = [await cluster.namespace('deploy-a'), await cluster.namespace('deploy-b')];
        const pods = [
          { name: 'pinger', namespace: nsA, demo: net.pod('a') },
          { name: 'target', namespace: nsB, demo: net.pod('b') },
        ];
        for (const p of pods) {
          // Its pause process: the agent finds a pod's network namespace through /proc/PID/ns/net.
          const pause = spawn('ip', ['netns', 'exec', p.demo.netns, 'sleep', '600'], { stdio: 'ignore' });
          cleanups.push(async () => pause.kill('SIGKILL'));
          await core.createNamespacedPod({ namespace: p.namespace, body: { metadata: { name: p.name }, spec: { nodeName: node, containers: [{ name: 'c', image: 'busybox' }] } } });
          cleanups.push(() => core.deleteNamespacedPod({ name: p.name, namespace: p.namespace, gracePeriodSeconds: 0 }));
          const ips = [p.demo.ipv4, p.demo.ipv6];
          const status = { phase: 'Running', podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) };
          await core.patchNamespacedPodStatus({ name: p.name, namespace: p.namespace, body: { status } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
        }

        // The collector authorizes subscribers with its own ServiceAccount's access reviews.
        const collectorPod = objs.find((o) => o.kind === 'Deployment')!.spec.template.spec;
        expect(collectorPod.automountServiceAccountToken).to.equal(true);
        const collectorStash = mkdtempSync(join(tmpdir(), 'icmpwatch-hostrun-'));
        cleanups.push(async () => rmSync(collectorStash, { recursive: true, force: true }));
        const collectorAccount = await serviceAccountDir(collectorPod.serviceAccountName, releaseNs);
        const collector = await startRenderedCollector(objs, { serviceAccount: collectorAccount.dir, server, stash: collectorStash });
        cleanups.push(() => stop(collector.child));

        // The subscriber: a team's ServiceAccount bound to the chart's namespace viewer in its own
        // namespace only (the pinger's), presenting its token as `observe --token-file`.
        const viewerRole = objs.find((o) => o.kind === 'ClusterRole' && o.metadata.name.endsWith('-namespace-viewer'))!.metadata.name as string;
        await core.createNamespacedServiceAccount({ namespace: nsA, body: { metadata: { name: 'team-a' } } });
        await objects.create({
          apiVersion: 'rbac.authorization.k8s.io/v1',
          kind: 'RoleBinding',
          metadata: { name: 'team-a-icmpevents', namespace: nsA },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: viewerRole },
          subjects: [{ kind: 'ServiceAccount', name: 'team-a', namespace: nsA }],
        });
        const viewerToken = join((await serviceAccountDir('team-a', nsA)).dir, 'token');

        // The container's command line: no `command`, so the image's ENTRYPOINT with the rendered
        // args; the collector's Service name rewritten to the loopback collector.
        expect(c.command).to.equal(undefined);
        const collectorArg = (c.args as string[]).find((a) => a.startsWith('--collector='));
        expect(collectorArg).to.equal(`--collector=${release}-icmpwatch-collector.${releaseNs}.svc:${grpcPort}`);
        // The agents' client certificate, from the Secret the DaemonSet mounts.
        const agentTls = mountSecret(objs, ds, layout.root, 0);
        const args = (c.args as string[]).map((a) => (a === collectorArg ? `--collector=127.0.0.1:${grpcPort}` : agentTls.rewrite(a)));
        // The environment: the image's, the rendered env (downward API), and the kubelet's
        // KUBERNETES_SERVICE_HOST/PORT. No --kubeconfig: the agent must find the service account.
        const env: Record<string, string> = { ...imageEnv(), KUBERNETES_SERVICE_HOST: server.hostname, KUBERNETES_SERVICE_PORT: server.port };
        for (const e of c.env as { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[]) {
          const field = e.valueFrom?.fieldRef?.fieldPath;
          const fields: Record<string, string> = { 'spec.nodeName': node, 'metadata.namespace': releaseNs };
          if (field && !(field in fields)) throw new Error(`env ${e.name}: no value for fieldRef ${field}`);
          env[e.name] = field ? fields[field]! : (e.value ?? '');
        }
        expect(args.some((a) => a.startsWith('--kubeconfig') || a.startsWith('--node-name'))).to.equal(false);

        // The container's security context: its capabilities only (bounding, inheritable and ambient
        // sets), no_new_privs (allowPrivilegeEscalation: false), root (runAsUser: 0).
        const sc = c.securityContext;
        expect(sc).to.deep.include({ privileged: false, allowPrivilegeEscalation: false, runAsUser: 0 });
        expect(sc.capabilities.drop).to.deep.equal(['ALL']);
        const rendered = (sc.capabilities.add as string[]).map((k) => `cap_${k.toLowerCase()}`);
        // Only capabilities this test process holds can be passed on: what it lacks, the agent runs without.
        const held = capabilities(readFileSync('/proc/self/status', 'utf8'), 'CapBnd');
        const caps = rendered.filter((k) => held.includes(k));
        const lacking = rendered.filter((k) => !held.includes(k));
        if (lacking.length) process.stderr.write(`      note: this test process lacks ${lacking.join(', ')}; the agent runs without ${lacking.length > 1 ? 'them' : 'it'}\n`);
        const capList = ['-all', ...caps.map((k) => `+${k.slice('cap_'.length)}`)].join(',');
        const setpriv = ['setpriv', `--bounding-set=${capList}`, `--inh-caps=${capList}`, `--ambient-caps=${capList}`, '--no-new-privs', '--'];
        const stash = mkdtempSync(join(tmpdir(), 'icmpwatch-hostrun-'));
        cleanups.push(async () => rmSync(stash, { recursive: true, force: true }));
        const agent = start(['unshare', '--mount', '--propagation', 'slave', '--', 'sh', '-euc', POD_MOUNTS, 'pod-mounts', secrets, stash, ...setpriv, ...layout.entrypoint, ...args], { env });
        cleanups.push(() => stop(agent.child));

        // Ready means the Kubernetes index synced (its reason is on /readyz until then).
        await waitHttp(`http://127.0.0.1:${agentMetrics}/readyz`, agent.child, agent.output);
        const status = readFileSync(`/proc/${agent.child.pid}/status`, 'utf8');
        expect(capabilities(status, 'CapEff').sort(), 'the agent runs with the rendered capabilities only').to.deep.equal(caps.sort());
        expect(/^NoNewPrivs:\s+1$/m.test(status), 'NoNewPrivs').to.equal(true);
        const metrics = await (await fetch(`http://127.0.0.1:${agentMetrics}/metrics`)).text();
        expect(metrics, 'the Kubernetes resolver runs').to.match(/^icmpwatch_k8s_index_addresses\{kind="pod"\} [1-9]/m);

        for (const family of [4, 6] as const) await net.ping('a', 'b', family, ['-c', '2', '-i', '0.2']);

        const [a, b] = pods;
        const ours = (e: EventLine) => e.icmp?.name === `echo-request` && e.source.ip === a!.demo.ipv4 && e.destination.ip === b!.demo.ipv4;
        let seen: EventLine[] = [];
        const deadline = Date.now() + 20_000;
        while (seen.length === 0) {
          if (Date.now() > deadline) throw new Error(`observe never showed the pings:\nagent: ${agent.output().slice(-3000)}\ncollector: ${collector.output().slice(-2000)}`);
          const r = await runCli(['observe', '--server', `127.0.0.1:${grpcPort}`, '--tls-ca', collector.caFile, '--token-file', viewerToken, '-o', 'json', '--last', '1000']);
          expect(r.code, r.stderr).to.equal(0);
          seen = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as EventLine).filter(ours);
          if (seen.length === 0) await new Promise((r) => setTimeout(r, 250));
        }
        // Seen where it arrived: in the target pod's namespace, found through its pause process (SYS_PTRACE).
        expect(seen.map((e) => e.observation?.point)).to.include('destination');
        for (const e of seen) {
          expect(e.node).to.equal(node);
          expect(e.source).to.deep.include({ namespace: nsA, pod: 'pinger', enrichment: 'resolved' });
          expect(e.destination).to.deep.include({ namespace: nsB, pod: 'target', enrichment: 'resolved' });
        }
      });
    });
  });
});

interface EventLine {
  node: string;
  source: { ip: string; namespace?: string; pod?: string; enrichment?: string };
  destination: { ip: string; namespace?: string; pod?: string; enrichment?: string };
  icmp?: { name: string };
  observation?: { point: string };
}

/**
 * Inside a new mount namespace (slave, as HostToContainer): the pod's view of /var/run. A tmpfs
 * hides the host's /run; the host's /run/netns comes back as the chart's hostPath mount, and the
 * service-account directory is mounted read-only where the kubelet projects it. Nothing on the
 * host changes. Then runs "$@".
 */
const POD_MOUNTS = `secrets=$1 stash=$2; shift 2
mount --rbind /run "$stash"
mount -t tmpfs -o mode=0755 pod-run /run
mkdir -p /run/netns /run/secrets/kubernetes.io/serviceaccount
mount --rbind "$stash/netns" /run/netns
mount --bind -o ro "$secrets" /run/secrets/kubernetes.io/serviceaccount
umount -l "$stash"
exec "$@"`;

/**
 * The Secret a rendered workload mounts as volume `tls`, as the kubelet would lay it out (files
 * with the volume's defaultMode, group `gid` as fsGroup gives it), in a new directory under `root`;
 * `rewrite` points a rendered argument at it instead of the mount path.
 */
function mountSecret(objs: Obj[], workload: Obj, root: string, gid: number): { dir: string; rewrite: (arg: string) => string } {
  const pod = workload.spec.template.spec;
  const volume = pod.volumes.find((v: { name: string }) => v.name === 'tls');
  const mount = pod.containers[0].volumeMounts.find((m: { name: string }) => m.name === 'tls');
  expect(volume, `${workload.kind} mounts its TLS Secret`).to.not.equal(undefined);
  const secret = objs.find((o) => o.kind === 'Secret' && o.metadata.name === volume.secret.secretName)!;
  const dir = mkdtempSync(join(root, 'tls-'));
  chmodSync(dir, 0o755);
  for (const [key, value] of Object.entries(secret.data as Record<string, string>)) {
    const file = join(dir, key);
    writeFileSync(file, Buffer.from(value, 'base64'), { mode: volume.secret.defaultMode });
    chownSync(file, 0, gid);
  }
  return { dir, rewrite: (arg) => arg.replace(`=${mount.mountPath}/`, `=${dir}/`) };
}

/** Linux capabilities by bit number (linux/capability.h). */
const CAPABILITIES = 'chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap linux_immutable net_bind_service net_broadcast net_admin net_raw ipc_lock ipc_owner sys_module sys_rawio sys_chroot sys_ptrace sys_pacct sys_admin sys_boot sys_nice sys_resource sys_time sys_tty_config mknod lease audit_write audit_control setfcap mac_override mac_admin syslog wake_alarm block_suspend audit_read perfmon bpf checkpoint_restore'.split(' ');

/** Capability names (cap_bpf, ...) of one set in a /proc/PID/status text. */
function capabilities(status: string, set: 'CapBnd' | 'CapEff'): string[] {
  const mask = BigInt('0x' + new RegExp(`^${set}:\\s+(\\S+)$`, 'm').exec(status)![1]!);
  return CAPABILITIES.filter((_, bit) => (mask >> BigInt(bit)) & 1n).map((name) => `cap_${name}`);
}

/** The image's ENV (runtime stage), as the container starts with it. */
function imageEnv(): Record<string, string> {
  const env: Record<string, string> = { PATH: process.env.PATH! };
  for (const i of dockerfile.stages.at(-1)!.instructions.filter((x) => x.op === 'ENV')) {
    for (const [, k, v] of i.args.matchAll(/(\w+)=(\S+)/g)) env[k!] = v!;
  }
  return env;
}

/** Waits until `token` may list pods (RBAC's cache has the new binding). */
async function untilAllowed(admin: KubeConfig, server: URL, token: string): Promise<void> {
  const kc = new KubeConfig();
  const cluster = admin.getCurrentCluster()!;
  kc.loadFromOptions({
    clusters: [{ ...cluster, server: server.href.replace(/\/$/, '') }],
    users: [{ name: 'sa', token }],
    contexts: [{ name: 'sa', cluster: cluster.name, user: 'sa' }],
    currentContext: 'sa',
  });
  const core = kc.makeApiClient(CoreV1Api);
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await core.listPodForAllNamespaces({ limit: 1 });
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`the agent's token never got read access: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
