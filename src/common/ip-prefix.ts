import { BlockList, isIP } from 'node:net';
import type { IpFamily } from './icmp-names.js';

/** An address ("10.0.0.1", a /32 or /128) or a CIDR ("10.0.0.0/8", "fd00::/64"). */
export interface IpPrefix {
  family: IpFamily;
  address: string;
  bits: number;
}

export function parseIpPrefix(value: string): IpPrefix | null {
  const slash = value.indexOf('/');
  const address = slash < 0 ? value : value.slice(0, slash);
  const version = isIP(address);
  if (version === 0) return null;
  const family: IpFamily = version === 4 ? 'ipv4' : 'ipv6';
  const max = version === 4 ? 32 : 128;
  if (slash < 0) return { family, address, bits: max };
  const bitsText = value.slice(slash + 1);
  if (!/^\d{1,3}$/.test(bitsText) || Number(bitsText) > max) return null;
  return { family, address, bits: Number(bitsText) };
}

/** A predicate true for an address inside any of the prefixes. */
export function ipPrefixMatcher(prefixes: IpPrefix[]): (ip: string) => boolean {
  const list = new BlockList();
  for (const p of prefixes) list.addSubnet(p.address, p.bits, p.family);
  return (ip) => {
    const version = isIP(ip);
    return version !== 0 && list.check(ip, version === 4 ? 'ipv4' : 'ipv6');
  };
}
