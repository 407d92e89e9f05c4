// The real control plane (etcd + kube-apiserver from test/k8s/up.sh), started once per test run
// and shared by every test file that needs it. Without controllers, tests create what they would
// (ServiceAccounts, pod status); see test/k8s/README.md.
import { execFile, spawn } from 'node:child_process';
import { openSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CoreV1Api, KubeConfig, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import type { Context } from 'mocha';
import { requirePrerequisite } from '../setup.js';

const run = promisify(execFile);
const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const state = join(repo, '.cache', 'k8s');

export interface TestCluster {
  kubeconfigPath: string;
  /** system:masters client certificate. */
  admin: KubeConfig;
  /** A new namespace with a name unique to this run, and its `default` ServiceAccount. */
  namespace(prefix: string): Promise<string>;
  /**
   * A ServiceAccount (in a namespace of its own) bound cluster-wide to `clusterRole`, and a
   * KubeConfig that authenticates with a token issued for it through the TokenRequest API.
   */
  serviceAccount(clusterRole: string): Promise<KubeConfig>;
}

let started: Promise<TestCluster> | null = null;
const runId = `${Date.now().toString(36)}${process.pid.toString(36)}`;
let names = 0;

/** A name unique to this test run (namespaces cannot be deleted without a namespace controller). */
export function uniqueName(prefix: string): string {
  return `${prefix}-${runId}-${(names++).toString(36)}`;
}

/**
 * The shared control plane; call from a `before` hook. If it cannot start, the test is skipped
 * (failed under CI=true). A cold first run builds the binaries (minutes), so the hook gets time.
 */
export async function useCluster(ctx: Context): Promise<TestCluster> {
  ctx.timeout(20 * 60_000);
  started ??= start();
  try {
    return await started;
  } catch (err) {
    if (process.env.CI === 'true') throw err;
    process.stderr.write(`kubernetes control plane unavailable: ${(err as Error).message}\n`);
    requirePrerequisite(ctx, false, 'kubernetes control plane (test/k8s/up.sh)');
    throw err;
  }
}

/** Set when this run started the control plane (not when it found one up): it stops it at the end. */
let startedByThisRun = false;

// A root-level hook: nothing this run started outlives it (a developer's `make k8s-up` stays up).
after(async function () {
  if (!startedByThisRun) return;
  this.timeout(60_000);
  await run(join(repo, 'test/k8s/down.sh'));
});

async function start(): Promise<TestCluster> {
  const { stdout, stderr } = await run(join(repo, 'test/k8s/up.sh'), { timeout: 20 * 60_000, maxBuffer: 16 << 20 }).catch((err: Error & { stderr?: string }) => {
    throw new Error(`test/k8s/up.sh failed: ${err.message}\n${err.stderr?.split('\n').slice(-20).join('\n') ?? ''}`);
  });
  startedByThisRun = !stderr.includes('already up and ready');
  const kubeconfigPath = stdout.trim();
  const admin = new KubeConfig();
  admin.loadFromFile(kubeconfigPath);
  const core = admin.makeApiClient(CoreV1Api);
  const rbac = admin.makeApiClient(RbacAuthorizationV1Api);

  const namespace = async (prefix: string) => {
    const name = uniqueName(prefix);
    await core.createNamespace({ body: { metadata: { name } } });
    await core.createNamespacedServiceAccount({ namespace: name, body: { metadata: { name: 'default' } } });
    return name;
  };

  const serviceAccount = async (clusterRole: string) => {
    const ns = await namespace('sa');
    const name = 'agent';
    await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name } } });
    await rbac.createClusterRoleBinding({
      body: {
        metadata: { name: uniqueName(clusterRole) },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: clusterRole },
        subjects: [{ kind: 'ServiceAccount', name, namespace: ns }],
      },
    });
    const tr = await core.createNamespacedServiceAccountToken({ name, namespace: ns, body: { spec: { audiences: [], expirationSeconds: 3600 } } });
    const cluster = admin.getCurrentCluster()!;
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [cluster],
      users: [{ name, token: tr.status!.token }],
      contexts: [{ name, cluster: cluster.name, user: name }],
      currentContext: name,
    });
    return kc;
  };

  return { kubeconfigPath, admin, namespace, serviceAccount };
}

/** The same cluster and user as `kc`, reached through another server URL (e.g. a test proxy). */
export function via(kc: KubeConfig, server: string): KubeConfig {
  const cluster = kc.getCurrentCluster()!;
  const user = kc.getCurrentUser()!;
  const out = new KubeConfig();
  out.loadFromOptions({
    clusters: [{ ...cluster, server }],
    users: [user],
    contexts: [{ name: 'via', cluster: cluster.name, user: user.name }],
    currentContext: 'via',
  });
  return out;
}

/** Writes `kc` to a file (for components that take a --kubeconfig path). */
export function writeKubeConfig(kc: KubeConfig, path: string): string {
  writeFileSync(path, kc.exportConfig(), { mode: 0o600 });
  return path;
}

/**
 * Kills the kube-apiserver (as a crash would: SIGKILL) and keeps etcd and its data. Returns a
 * function that starts it again with the same command line, pid file and log, and resolves when
 * it is ready. up.sh cannot do the restart: on a half-dead cluster it starts from scratch.
 */
export async function stopApiServer(admin: KubeConfig): Promise<() => Promise<void>> {
  const pidFile = join(state, 'kube-apiserver.pid');
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  process.kill(pid, 'SIGKILL');
  while (alive(pid)) await sleep(20);
  return async () => {
    const log = openSync(join(state, 'kube-apiserver.log'), 'a');
    // Like up.sh: its own session, and the pid file holds the binary's pid (bash execs into it).
    const child = spawn('setsid', ['bash', '-c', 'echo $$ >"$0"; exec "$@"', pidFile, ...argv], { detached: true, stdio: ['ignore', log, log] });
    child.unref();
    const core = admin.makeApiClient(CoreV1Api);
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        await core.listNamespace({ limit: 1 });
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`kube-apiserver did not come back: ${(err as Error).message}`);
        await sleep(100);
      }
    }
  };
}

/**
 * A TCP relay in front of the API server that a test can cut (connections reset, new ones
 * refused: an unreachable server) or freeze (connections stay open and carry nothing: half-open
 * connections, which only a watchdog notices), without disturbing anyone else using the cluster.
 */
export class ApiProxy {
  private mode: 'open' | 'cut' | 'frozen' = 'open';
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(upstream: string): Promise<ApiProxy> {
    const target = new URL(upstream);
    let proxy: ApiProxy | null = null;
    const server = createServer((client) => proxy!.accept(client, target));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    proxy = new ApiProxy(server, `https://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return proxy;
  }

  private accept(client: Socket, target: URL): void {
    if (this.mode === 'cut') return void client.resetAndDestroy();
    this.track(client);
    // A frozen proxy accepts and then says nothing, like a peer that vanished.
    if (this.mode === 'frozen') return;
    const upstream = this.track(connect(Number(target.port), target.hostname));
    client.pipe(upstream).pipe(client);
  }

  private track(s: Socket): Socket {
    this.sockets.add(s);
    s.on('error', () => s.destroy());
    s.on('close', () => this.sockets.delete(s));
    return s;
  }

  cut(): void {
    this.mode = 'cut';
    for (const s of this.sockets) s.resetAndDestroy();
  }

  freeze(): void {
    this.mode = 'frozen';
    // Stop relaying without closing anything: neither end learns that the other is gone.
    for (const s of this.sockets) {
      s.unpipe();
      s.pause();
    }
  }

  restore(): void {
    this.mode = 'open';
    // Connections from before are dead (as after a real outage); the client must reconnect.
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX]/.test(stat);
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
