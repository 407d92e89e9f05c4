import { execFile } from 'node:child_process';
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { formatIpv6 } from './probe/decoder.js';

const run = promisify(execFile);

/** Addresses a network namespace owns: exact ones, plus local prefixes (127/8 on lo). */
interface NetnsAddresses {
  exact: Set<string>;
  prefixes: { base: number; bits: number }[];
}

export type Ownership = 'local' | 'remote' | 'unknown';

/**
 * A dotted-quad IPv4 address as an unsigned 32-bit number; -1 for anything else. Read character by
 * character: the capture path asks for every sighting not made at its destination.
 */
export function ipv4ToInt(ip: string): number {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c >= 0x30 && c <= 0x39) {
      octet = octet * 10 + (c - 0x30);
      if (++digits > 3 || octet > 255) return -1;
    } else if (c === 0x2e && digits > 0 && dots < 3) {
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
      dots++;
    } else {
      return -1;
    }
  }
  return dots === 3 && digits > 0 ? value * 256 + octet : -1;
}

/** /proc/PID/net/fib_trie: each `|-- A.B.C.D` followed by `/N host LOCAL` is owned. */
export function parseFibTrieLocals(text: string, into: NetnsAddresses): void {
  let last = '';
  for (const line of text.split('\n')) {
    const leaf = /\|-- (\d+\.\d+\.\d+\.\d+)/.exec(line);
    if (leaf) {
      last = leaf[1]!;
      continue;
    }
    const local = /^\s+\/(\d+) host LOCAL/.exec(line);
    if (local && last) {
      const bits = Number(local[1]);
      if (bits === 32) into.exact.add(last);
      else into.prefixes.push({ base: ipv4ToInt(last), bits });
    }
  }
}

/** /proc/PID/net/if_inet6: 32 hex digits per address. */
export function parseIfInet6(text: string, into: NetnsAddresses): void {
  for (const line of text.split('\n')) {
    const hex = line.slice(0, 32);
    if (!/^[0-9a-f]{32}$/.test(hex)) continue;
    into.exact.add(compressIpv6(hex));
  }
}

function compressIpv6(hex: string): string {
  // The decoder's text form, so that lookups by packet address match.
  return formatIpv6(Uint8Array.from({ length: 16 }, (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16)), 0);
}

/**
 * Which network namespace owns which address, so that each sighting of a packet can say whether
 * it was made at its destination or on the way. Namespaces are found through processes
 * (/proc/PID/ns/net: every pod has its pause process) and named ones in /var/run/netns.
 * Refreshed in the background; lookups never wait.
 */
export class NetnsAddressBook {
  private byNetns = new Map<number, NetnsAddresses>();
  private refreshing: Promise<void> | null = null;
  private lastRefresh = 0;
  readonly hostNetns: Promise<number>;

  constructor(
    private readonly procRoot = '/proc',
    private readonly netnsDir = '/var/run/netns',
  ) {
    this.hostNetns = inodeOf(`${procRoot}/self/ns/net`).then((ino) => ino ?? 0);
  }

  /** Does `netns` own `ip`? Unknown namespaces trigger a refresh (at most every 500 ms). */
  owns(netns: number, ip: string): Ownership {
    const entry = this.byNetns.get(netns);
    if (!entry) {
      if (Date.now() - this.lastRefresh > 500) void this.refresh();
      return 'unknown';
    }
    if (entry.exact.has(ip)) return 'local';
    const n = entry.prefixes.length ? ipv4ToInt(ip) : -1;
    if (n >= 0) {
      for (const p of entry.prefixes) {
        const mask = p.bits === 0 ? 0 : (~0 << (32 - p.bits)) >>> 0;
        if (((n & mask) >>> 0) === ((p.base & mask) >>> 0)) return 'local';
      }
    }
    return 'remote';
  }

  refresh(): Promise<void> {
    this.refreshing ??= this.scan().finally(() => {
      this.refreshing = null;
      this.lastRefresh = Date.now();
    });
    return this.refreshing;
  }

  private async scan(): Promise<void> {
    const next = new Map<number, NetnsAddresses>();
    const pids = (await readdir(this.procRoot).catch(() => [] as string[])).filter((d) => /^\d+$/.test(d));
    for (const pid of pids) {
      const ino = await inodeOf(`${this.procRoot}/${pid}/ns/net`);
      if (ino === null || next.has(ino)) continue;
      const addrs: NetnsAddresses = { exact: new Set(), prefixes: [] };
      try {
        parseFibTrieLocals(await readFile(`${this.procRoot}/${pid}/net/fib_trie`, 'utf8'), addrs);
        parseIfInet6(await readFile(`${this.procRoot}/${pid}/net/if_inet6`, 'utf8').catch(() => ''), addrs);
      } catch {
        continue; // the process exited meanwhile
      }
      next.set(ino, addrs);
    }
    // Named namespaces without a process (ip netns add): ask iproute2 once per scan.
    for (const name of await readdir(this.netnsDir).catch(() => [] as string[])) {
      const ino = await stat(`${this.netnsDir}/${name}`).then((s) => s.ino, () => null);
      if (ino === null || next.has(ino)) continue;
      const addrs: NetnsAddresses = { exact: new Set(), prefixes: [] };
      try {
        const { stdout } = await run('ip', ['-n', name, '-j', 'addr', 'show'], { timeout: 5000 });
        for (const link of JSON.parse(stdout) as { addr_info?: { local?: string }[] }[]) {
          for (const a of link.addr_info ?? []) if (a.local) addrs.exact.add(a.local);
        }
        addrs.prefixes.push({ base: ipv4ToInt('127.0.0.0'), bits: 8 });
      } catch {
        continue;
      }
      next.set(ino, addrs);
    }
    this.byNetns = next;
  }
}

async function inodeOf(nsLink: string): Promise<number | null> {
  const target = await readlink(nsLink).catch(() => null);
  const m = target ? /\[(\d+)\]/.exec(target) : null;
  return m ? Number(m[1]) : null;
}
