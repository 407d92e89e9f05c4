import { EVENT_FIELDS as F, FLAG_BITS, type FlagName, type HookName, HOOK_IDS } from './event-layout.js';

/** The original packet an ICMP error quotes. */
export interface QuotedHeader {
  family: 4 | 6;
  protocol: number;
  src: string;
  dst: string;
  /** TCP/UDP ports, or echo id/seq when the quoted packet is an echo. */
  sport: number;
  dport: number;
}

/**
 * One record of the ring, decoded; fields the kernel side could not validate are 0. Family 0:
 * the frame could not be read as far as its IP header (addresses are then empty).
 */
export interface CapturedPacket {
  monoNs: number;
  ifindex: number;
  netns: number;
  skbLen: number;
  flags: number;
  mtu: number;
  totLen: number;
  ipId: number;
  fragOff: number;
  echoId: number;
  echoSeq: number;
  family: 0 | 4 | 6;
  hook: HookName;
  type: number;
  code: number;
  ttl: number;
  pktType: number;
  src: string;
  dst: string;
  quoted: QuotedHeader | null;
}

/** Hook names by kernel id; an unknown id reads as tp_btf. */
const HOOK_BY_ID: HookName[] = [];
for (const [name, id] of Object.entries(HOOK_IDS) as [HookName, number][]) HOOK_BY_ID[id] = name;

/**
 * Recently formatted IPv4 addresses, direct-mapped by their last two bytes: traffic repeats its
 * addresses, and building their text cost more than decoding the rest of a record.
 */
const v4Words = new Int32Array(256);
const v4Texts = new Array<string | undefined>(256).fill(undefined);

export function formatIpv4(b: Uint8Array, at: number): string {
  const word = (b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!;
  const slot = (b[at + 2]! ^ b[at + 3]!) & 0xff;
  let text = v4Texts[slot];
  if (text === undefined || v4Words[slot] !== word) {
    text = `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
    v4Texts[slot] = text;
    v4Words[slot] = word;
  }
  return text;
}

/** RFC 5952 text: lower case, longest run of two or more zero groups as `::`. */
export function formatIpv6(b: Uint8Array, at: number): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((b[at + 2 * i]! << 8) | b[at + 2 * i + 1]!);
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${formatIpv4(b, at + 12)}`;
  }
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

const formatAddr = (family: 4 | 6, b: Uint8Array, at: number) => (family === 4 ? formatIpv4(b, at) : formatIpv6(b, at));

/** An echo request or reply of its family (the only messages whose id/seq mean anything). */
export function isEcho(p: Pick<CapturedPacket, 'family' | 'type'>): boolean {
  return p.family === 4 ? p.type === 0 || p.type === 8 : p.family === 6 && (p.type === 128 || p.type === 129);
}

export function flagNames(flags: number): FlagName[] {
  const out: FlagName[] = [];
  for (const [name, bit] of Object.entries(FLAG_BITS) as [FlagName, number][]) if (flags & bit) out.push(name);
  return out;
}

/** A packet with every field zero, to decode into. */
export function blankPacket(): CapturedPacket {
  return {
    monoNs: 0, ifindex: 0, netns: 0, skbLen: 0, flags: 0, mtu: 0, totLen: 0, ipId: 0, fragOff: 0, echoId: 0, echoSeq: 0,
    family: 0, hook: 'tp_btf', type: 0, code: 0, ttl: 0, pktType: 0, src: '', dst: '', quoted: null,
  };
}

/**
 * Decodes the record at `off` of `bytes` (little-endian, as the kernel wrote it) into `into`. The
 * capture path passes one object for every record (nothing allocated per record, nothing for the
 * garbage collector): whoever keeps a packet past the call keeps a copy.
 */
export function decodeEvent(view: DataView, bytes: Uint8Array, off: number, into: CapturedPacket = blankPacket()): CapturedPacket {
  const familyByte = view.getUint8(off + F.family.offset);
  const family = familyByte === 4 || familyByte === 6 ? familyByte : 0;
  const innerFamily = view.getUint8(off + F.inner_family.offset);
  into.monoNs = view.getUint32(off + F.mono_ns.offset + 4, true) * 4294967296 + view.getUint32(off + F.mono_ns.offset, true);
  into.ifindex = view.getUint32(off + F.ifindex.offset, true);
  into.netns = view.getUint32(off + F.netns.offset, true);
  into.skbLen = view.getUint32(off + F.skb_len.offset, true);
  into.flags = view.getUint32(off + F.flags.offset, true);
  into.mtu = view.getUint32(off + F.mtu.offset, true);
  into.totLen = view.getUint16(off + F.tot_len.offset, true);
  into.ipId = view.getUint16(off + F.ip_id.offset, true);
  into.fragOff = view.getUint16(off + F.frag_off.offset, true);
  into.echoId = view.getUint16(off + F.echo_id.offset, true);
  into.echoSeq = view.getUint16(off + F.echo_seq.offset, true);
  into.family = family;
  into.hook = HOOK_BY_ID[view.getUint8(off + F.hook.offset)] ?? 'tp_btf';
  into.type = view.getUint8(off + F.type.offset);
  into.code = view.getUint8(off + F.code.offset);
  into.ttl = view.getUint8(off + F.ttl.offset);
  into.pktType = view.getUint8(off + F.pkt_type.offset);
  into.src = family ? formatAddr(family, bytes, off + F.saddr.offset) : '';
  into.dst = family ? formatAddr(family, bytes, off + F.daddr.offset) : '';
  into.quoted =
    innerFamily === 4 || innerFamily === 6
      ? {
          family: innerFamily,
          protocol: view.getUint8(off + F.inner_proto.offset),
          src: formatAddr(innerFamily, bytes, off + F.inner_saddr.offset),
          dst: formatAddr(innerFamily, bytes, off + F.inner_daddr.offset),
          sport: view.getUint16(off + F.inner_sport.offset, true),
          dport: view.getUint16(off + F.inner_dport.offset, true),
        }
      : null;
  return into;
}
