import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface DemoPod {
  /** Short name: a, b, ... */
  name: string;
  /** Network namespace (ip netns) holding the pod's eth0. */
  netns: string;
  ipv4: string;
  ipv6: string;
}

export type Topology = 'routed' | 'bridged';

let instances = 0;
const live = new Set<DemoNetwork>();
process.once('exit', () => {
  for (const net of live) net.destroySync();
});

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * A signal nobody else handles kills the process without an 'exit' event: remove the namespaces,
 * then die of the signal as before. A process that handles the signal itself exits on its own
 * terms, and the 'exit' handler above runs then. Installed only while namespaces exist.
 */
function onSignal(signal: NodeJS.Signals): void {
  if (process.listenerCount(signal) > 1) return;
  for (const net of live) net.destroySync();
  for (const s of SIGNALS) process.off(s, onSignal);
  process.kill(process.pid, signal);
}

function track(net: DemoNetwork, alive: boolean): void {
  const before = live.size;
  if (alive) live.add(net);
  else live.delete(net);
  if (before === 0 && live.size > 0) for (const s of SIGNALS) process.on(s, onSignal);
  if (before > 0 && live.size === 0) for (const s of SIGNALS) process.off(s, onSignal);
}

/**
 * Demo "pods" in network namespaces behind a "node" namespace, as a CNI would build them:
 * `routed` gives each pod a /24 and the node routes between them (two sightings per packet:
 * node, then pod); `bridged` puts all pods in one /24 on a bridge in the node namespace.
 * Names are unique per process and run; everything is deleted by destroy(), also at exit and
 * when a signal ends the process.
 */
export class DemoNetwork {
  readonly node: string;
  readonly pods: DemoPod[] = [];

  private constructor(
    readonly topology: Topology,
    readonly prefix: string,
    private readonly subnet: number,
  ) {
    this.node = `${prefix}-node`;
  }

  static async create(topology: Topology, podCount = 2): Promise<DemoNetwork> {
    const id = `${process.pid.toString(36)}${(instances++).toString(36)}${Math.random().toString(36).slice(2, 5)}`;
    const net = new DemoNetwork(topology, `iw${id}`, 100 + ((process.pid + instances * 7) % 100));
    track(net, true);
    try {
      await net.build(podCount);
    } catch (err) {
      await net.destroy();
      throw err;
    }
    return net;
  }

  private async ip(...args: string[]): Promise<void> {
    await run('ip', args);
  }

  private async build(podCount: number): Promise<void> {
    const s = this.subnet;
    await this.ip('netns', 'add', this.node);
    await this.ip('-n', this.node, 'link', 'set', 'lo', 'up');
    await this.sysctl(this.node, 'net.ipv4.ip_forward=1');
    await this.sysctl(this.node, 'net.ipv6.conf.all.forwarding=1');
    if (this.topology === 'bridged') {
      await this.ip('-n', this.node, 'link', 'add', 'br0', 'type', 'bridge');
      await this.ip('-n', this.node, 'link', 'set', 'br0', 'up');
    }
    for (let i = 0; i < podCount; i++) {
      const name = String.fromCharCode(97 + i);
      const pod: DemoPod =
        this.topology === 'routed'
          ? { name, netns: `${this.prefix}-${name}`, ipv4: `10.${s}.${i + 1}.2`, ipv6: `fd00:${s}:${i + 1}::2` }
          : { name, netns: `${this.prefix}-${name}`, ipv4: `10.${s}.0.${i + 2}`, ipv6: `fd00:${s}::${i + 2}` };
      this.pods.push(pod);
      const hostEnd = `v${name}`;
      await this.ip('netns', 'add', pod.netns);
      await this.ip('-n', this.node, 'link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.netns);
      await this.ip('-n', pod.netns, 'link', 'set', 'lo', 'up');
      await this.ip('-n', pod.netns, 'link', 'set', 'eth0', 'up');
      await this.ip('-n', this.node, 'link', 'set', hostEnd, 'up');
      if (this.topology === 'routed') {
        await this.ip('-n', this.node, 'addr', 'add', `10.${s}.${i + 1}.1/24`, 'dev', hostEnd);
        await this.ip('-n', this.node, 'addr', 'add', `fd00:${s}:${i + 1}::1/64`, 'dev', hostEnd, 'nodad');
        await this.ip('-n', pod.netns, 'addr', 'add', `${pod.ipv4}/24`, 'dev', 'eth0');
        await this.ip('-n', pod.netns, 'addr', 'add', `${pod.ipv6}/64`, 'dev', 'eth0', 'nodad');
        await this.ip('-n', pod.netns, 'route', 'add', 'default', 'via', `10.${s}.${i + 1}.1`);
        await this.ip('-n', pod.netns, '-6', 'route', 'add', 'default', 'via', `fd00:${s}:${i + 1}::1`);
      } else {
        await this.ip('-n', this.node, 'link', 'set', hostEnd, 'master', 'br0');
        await this.ip('-n', pod.netns, 'addr', 'add', `${pod.ipv4}/24`, 'dev', 'eth0');
        await this.ip('-n', pod.netns, 'addr', 'add', `${pod.ipv6}/64`, 'dev', 'eth0', 'nodad');
      }
    }
  }

  private async sysctl(netns: string, setting: string): Promise<void> {
    await run('ip', ['netns', 'exec', netns, 'sysctl', '-q', '-w', setting]);
  }

  pod(name: string): DemoPod {
    const pod = this.pods.find((p) => p.name === name);
    if (!pod) throw new Error(`no demo pod ${name}`);
    return pod;
  }

  /** Runs a command inside a namespace. */
  exec(netns: string, cmd: string[], timeoutMs = 30000): Promise<{ stdout: string; stderr: string }> {
    return run('ip', ['netns', 'exec', netns, ...cmd], { timeout: timeoutMs, maxBuffer: 16 << 20 });
  }

  /** `ping` from pod `from` to `to`'s address of `family`; resolves with ping's output. */
  ping(from: string, to: string, family: 4 | 6, args: string[] = []): Promise<{ stdout: string; stderr: string }> {
    const dst = family === 4 ? this.pod(to).ipv4 : this.pod(to).ipv6;
    return this.exec(this.pod(from).netns, ['ping', `-${family}`, '-n', '-q', ...args, dst]);
  }

  /** Inode of a namespace, as events carry it. */
  netnsInode(netns: string): number {
    return Number(execFileSync('stat', ['-L', '-c', '%i', `/var/run/netns/${netns}`]).toString().trim());
  }

  private names(): string[] {
    return [...this.pods.map((p) => p.netns), this.node];
  }

  async destroy(): Promise<void> {
    track(this, false);
    for (const ns of this.names()) await run('ip', ['netns', 'del', ns]).catch(() => undefined);
  }

  destroySync(): void {
    for (const ns of this.names()) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  }
}
