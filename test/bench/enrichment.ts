// `make bench`, item 4: the Kubernetes enrichment index at 1k, 10k and 50k pods, fed through the
// real list+watch path from the real kube-apiserver of test/k8s. Per size: time from start to a
// synced index, the agent's heap per pod (heap of a synced resolver minus that of one over an empty
// namespace, both after a full GC, in a fresh process each), and the cost of one lookup.
//
//   tsx test/bench/enrichment.ts           1k, 10k, 50k pods; writes its block of BENCHMARKS.md
//   QUICK=1 tsx test/bench/enrichment.ts   1k pods only
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { pino } from 'pino';
import { KubernetesResolver } from '../../src/agent/enrich/kubernetes.js';
import { QUICK, ROOT, NODE, fixed, header, int, log, machine, publish } from './report.js';

const SIZES = QUICK ? [1000] : [1000, 10_000, 50_000];
const CONCURRENCY = 48;
const LOOKUPS = 2_000_000;

/** The address of bench pod `i` (10.200.0.0/14 is used by nothing else here). */
const podIp = (i: number) => `10.${200 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;

interface Measurement {
  pods: number;
  syncMs: number;
  heapBytes: number;
  lookupNs: number;
  resolved: number;
}

/** In a child started with --expose-gc: sync a resolver, weigh it, time lookups. */
async function measureHere(kubeconfig: string, pods: number): Promise<Measurement> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  gc();
  const before = process.memoryUsage().heapUsed;
  const start = performance.now();
  const resolver = new KubernetesResolver({ kubeConfig: kc, log: pino({ level: 'silent' }) });
  while (resolver.notReadyReason() !== null) await new Promise((r) => setTimeout(r, 5));
  const syncMs = performance.now() - start;
  await new Promise((r) => setTimeout(r, 500)); // watches open, list pages released
  gc();
  gc();
  const heapBytes = process.memoryUsage().heapUsed - before;
  const ips = Array.from({ length: Math.max(1, pods) }, (_, i) => podIp(i));
  let resolved = 0;
  for (const ip of ips) if (resolver.resolve(ip).pod) resolved++;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < LOOKUPS; i++) resolver.resolve(ips[i % ips.length]!);
  const lookupNs = Number(process.hrtime.bigint() - t0) / LOOKUPS;
  resolver.close();
  return { pods, syncMs, heapBytes, lookupNs, resolved };
}

async function measureInChild(kubeconfig: string, pods: number): Promise<Measurement> {
  const { stdout } = await promisify(execFile)(NODE, ['--expose-gc', '--import', 'tsx', join(ROOT, 'test/bench/enrichment.ts'), '--measure', kubeconfig, String(pods)], {
    cwd: ROOT,
    maxBuffer: 1 << 20,
    timeout: 10 * 60_000,
  });
  return JSON.parse(stdout) as Measurement;
}

/** Creates pods `from`..`to-1` as the scheduler and kubelet would leave them: bound, Running, with an IP. */
async function createPods(core: CoreV1Api, namespace: string, from: number, to: number): Promise<void> {
  let next = from;
  const worker = async () => {
    while (next < to) {
      const i = next++;
      const name = `p${i}`;
      await core.createNamespacedPod({
        namespace,
        body: {
          metadata: { name, labels: { app: `app-${i % 100}`, 'pod-template-hash': 'bench' } },
          spec: { nodeName: `node-${i % 50}`, containers: [{ name: 'c', image: 'busybox' }] },
        },
      });
      const ip = podIp(i);
      await core.patchNamespacedPodStatus(
        { name, namespace, body: { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

async function main(): Promise<void> {
  const load0 = loadavg();
  const up = spawnSync(join(ROOT, 'test/k8s/up.sh'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (up.status !== 0) throw new Error(`test/k8s/up.sh failed:\n${up.stderr}`);
  const kubeconfig = up.stdout.trim();
  // A control plane this bench started is stopped with its data; one a developer started stays up.
  const startedHere = !up.stderr.includes('already up and ready');
  const admin = new KubeConfig();
  admin.loadFromFile(kubeconfig);
  const core = admin.makeApiClient(CoreV1Api);
  const namespace = `bench-enrich-${Date.now().toString(36)}`;
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name: 'default' } } }); // no controller makes it here
  const rows: (Measurement & { createS: number; bytesPerPod: number })[] = [];
  try {
    log('resolver over an empty namespace (baseline)');
    const base = await measureInChild(kubeconfig, 0);
    let have = 0;
    for (const size of SIZES) {
      log(`creating pods ${have}..${size - 1}`);
      const t0 = performance.now();
      await createPods(core, namespace, have, size);
      const createS = (performance.now() - t0) / 1000;
      have = size;
      log(`measuring a resolver over ${size} pods`);
      const m = await measureInChild(kubeconfig, size);
      if (m.resolved !== size) throw new Error(`only ${m.resolved} of ${size} pod IPs resolved`);
      rows.push({ ...m, createS, bytesPerPod: (m.heapBytes - base.heapBytes) / size });
    }
    const md = [
      header('test/bench/enrichment.ts', machine(), load0),
      `kube-apiserver ${execFileSync(join(ROOT, '.cache/bin/kube-apiserver'), ['--version'], { encoding: 'utf8' }).trim()} with etcd on the same machine (test/k8s/up.sh); ` +
        `every pod Running with one IPv4 podIP, labels and a node; the resolver also lists nodes, services, replicasets and jobs. Baseline heap (empty namespace): ${int(base.heapBytes / 1024)} KiB.`,
      '',
      '| pods | create+status via API (s) | sync to ready (ms) | heap of the index (MiB) | bytes per pod | lookup (ns) |',
      '|---:|---:|---:|---:|---:|---:|',
      ...rows.map((r) => `| ${int(r.pods)} | ${fixed(r.createS)} | ${int(r.syncMs)} | ${fixed((r.heapBytes - base.heapBytes) / 2 ** 20, 2)} | ${int(r.bytesPerPod)} | ${fixed(r.lookupNs)} |`),
    ].join('\n');
    publish('enrichment', md, { load0, base, rows });
  } finally {
    if (startedHere) {
      log('stopping the control plane this bench started');
      execFileSync(join(ROOT, 'test/k8s/down.sh'), { stdio: 'inherit' });
    } else {
      log('deleting the bench pods (the API server goes on deleting them if this request times out)');
      await core.deleteCollectionNamespacedPod({ namespace, gracePeriodSeconds: 0 }).catch((err: Error) => log(`cleanup: ${err.message.split('\n')[0]}`));
    }
  }
}

if (process.argv[2] === '--measure') {
  measureHere(process.argv[3]!, Number(process.argv[4])).then(
    (m) => {
      process.stdout.write(JSON.stringify(m));
      process.exit(0);
    },
    (err: Error) => {
      process.stderr.write(`${err.stack ?? err.message}\n`);
      process.exit(1);
    },
  );
} else {
  main().then(
    () => process.exit(0),
    (err: Error) => {
      process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
      process.exit(1);
    },
  );
}
