// Builds raw Ethernet frames for packets the kernel's own stack would never send, and sends them.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const SENDER = fileURLToPath(new URL('./send-frames.py', import.meta.url));

/** Sends the frames on `dev` in network namespace `netns` with AF_PACKET (send-frames.py). */
export function sendFrames(netns: string, dev: string, frames: Buffer[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, 'python3', SENDER, dev], { stdio: ['pipe', 'inherit', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`sender exited ${code}`))));
    child.stdin.end(frames.map((f) => f.toString('hex')).join('\n') + '\n');
  });
}

const bytes = (...parts: (number[] | Uint8Array)[]) => Buffer.concat(parts.map((p) => Buffer.from(p)));
const u16 = (n: number) => [(n >> 8) & 0xff, n & 0xff];
const ipv4Bytes = (ip: string) => ip.split('.').map(Number);

function ipv6Bytes(ip: string): number[] {
  const [head, tail = ''] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.flatMap((g) => u16(parseInt(g, 16)));
}

function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

export const macBytes = (mac: string) => mac.split(':').map((x) => parseInt(x, 16));

export function ethernet(dst: string, src: string, etherType: number, payload: Buffer): Buffer {
  return bytes(macBytes(dst), macBytes(src), u16(etherType), payload);
}

export function vlanTag(vid: number, innerType: number, payload: Buffer): Buffer {
  return bytes(u16(vid), u16(innerType), payload);
}

export interface Ipv4Options {
  src: string;
  dst: string;
  version?: number;
  ihlWords?: number;
  totLen?: number;
  id?: number;
  fragOffsetBytes?: number;
  moreFragments?: boolean;
  protocol?: number;
  ttl?: number;
}

/** An IPv4 packet; header fields can be made wrong on purpose. */
export function ipv4(o: Ipv4Options, payload: Buffer): Buffer {
  const ihl = o.ihlWords ?? 5;
  const headerLen = Math.max(20, ihl * 4);
  const header = Buffer.alloc(headerLen);
  header[0] = ((o.version ?? 4) << 4) | (ihl & 0xf);
  header.writeUInt16BE(o.totLen ?? headerLen + payload.length, 2);
  header.writeUInt16BE(o.id ?? 0x1234, 4);
  header.writeUInt16BE(((o.fragOffsetBytes ?? 0) >> 3) | (o.moreFragments ? 0x2000 : 0), 6);
  header[8] = o.ttl ?? 64;
  header[9] = o.protocol ?? 1;
  Buffer.from(ipv4Bytes(o.src)).copy(header, 12);
  Buffer.from(ipv4Bytes(o.dst)).copy(header, 16);
  header.writeUInt16BE(checksum(header.subarray(0, 20)), 10);
  return bytes(header, payload);
}

export interface ExtensionHeader {
  type: number;
  /** The header's bytes after its next-header and length bytes. */
  body: Buffer;
}

/** A routing header (43) of `segments` addresses: 8 + 16 * segments bytes. */
export const routingHeader = (segments: number): ExtensionHeader => ({
  type: 43,
  body: bytes([4, 0, 0, 0, 0, 0], Buffer.alloc(16 * segments)), // routing type 4, segments left 0
});

/** An authentication header (51) with `icvBytes` of ICV: its length counts 4-byte words. */
export const authHeader = (icvBytes: number): ExtensionHeader => ({
  type: 51,
  body: bytes([0, 0], [0, 0, 0x10, 0x01], [0, 0, 0, 1], Buffer.alloc(icvBytes)), // reserved, SPI, sequence
});

/** IPv6 with extension headers in order, then `upperType`'s payload. */
export function ipv6(src: string, dst: string, chain: ExtensionHeader[], upperType: number, payload: Buffer): Buffer {
  const exts: Buffer[] = [];
  for (let i = 0; i < chain.length; i++) {
    const next = i + 1 < chain.length ? chain[i + 1]!.type : upperType;
    const e = chain[i]!;
    if (e.type === 44) exts.push(bytes([next, 0], e.body)); // fragment header: fixed 8 bytes
    else if (e.type === 51) exts.push(bytes([next, (e.body.length + 2) / 4 - 2], e.body)); // AH: (len + 2) * 4
    else exts.push(bytes([next, (e.body.length + 2) / 8 - 1], e.body)); // (len + 1) * 8
  }
  const ext = Buffer.concat(exts);
  const header = Buffer.alloc(40);
  header[0] = 0x60;
  header.writeUInt16BE(ext.length + payload.length, 4);
  header[6] = chain.length ? chain[0]!.type : upperType;
  header[7] = 64;
  Buffer.from(ipv6Bytes(src)).copy(header, 8);
  Buffer.from(ipv6Bytes(dst)).copy(header, 24);
  return bytes(header, ext, payload);
}

/** An ICMP (or ICMPv6) message: type, code, 4 bytes of rest-of-header, then data. */
export function icmp(type: number, code: number, rest: number[], data: Buffer = Buffer.alloc(0)): Buffer {
  const m = bytes([type, code, 0, 0], rest, data);
  m.writeUInt16BE(checksum(m), 2);
  return m;
}

export const echo = (type: number, id: number, seq: number, data = Buffer.alloc(16)) => icmp(type, 0, [...u16(id), ...u16(seq)], data);
