// helm (pinned, built by test/k8s/build-helm.sh and linked at .cache/bin/helm) for the deploy tests.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAllYaml } from '@kubernetes/client-node';

export const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const chart = join(repo, 'charts', 'icmpwatch');
export const helmBin = join(repo, '.cache', 'bin', 'helm');
export const haveHelm = existsSync(helmBin);
export const HELM_PREREQ = 'helm at .cache/bin/helm (make k8s-build, test/k8s/build-helm.sh)';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; [k: string]: any }; [k: string]: any };

export function helm(args: string[]): { status: number; stdout: string; stderr: string } {
  // helm's own state (repositories, plugins) stays out of the user's home.
  const home = join(tmpdir(), 'icmpwatch-helm');
  const env = { ...process.env, HELM_CACHE_HOME: join(home, 'cache'), HELM_CONFIG_HOME: join(home, 'config'), HELM_DATA_HOME: join(home, 'data') };
  const r = spawnSync(helmBin, args, { encoding: 'utf8', env });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export const setArgs = (sets: string[]) => sets.flatMap((s) => ['--set', s]);

/** `helm template` of the chart as release `release` in `namespace`, parsed into objects. */
export function render(sets: string[] = [], namespace = 'icmpwatch', release = 'icmpwatch'): Obj[] {
  const r = helm(['template', release, chart, '--namespace', namespace, ...setArgs(sets)]);
  if (r.status !== 0) throw new Error(`helm template ${sets.join(' ')} failed:\n${r.stderr}`);
  return (loadAllYaml(r.stdout) as (Obj | null)[]).filter((o): o is Obj => o !== null);
}

