// The one table of ICMP and ICMPv6 type and code names (IANA registries, in the spelling of
// iptables/ip6tables where they have one). Used to name events and to resolve names in filters.

export type IpFamily = 'ipv4' | 'ipv6';

interface TypeEntry {
  name: string;
  codes?: Record<number, string>;
}

const ICMPV4: Record<number, TypeEntry> = {
  0: { name: 'echo-reply' },
  3: {
    name: 'destination-unreachable',
    codes: {
      0: 'network-unreachable',
      1: 'host-unreachable',
      2: 'protocol-unreachable',
      3: 'port-unreachable',
      4: 'frag-needed',
      5: 'source-route-failed',
      6: 'network-unknown',
      7: 'host-unknown',
      8: 'source-host-isolated',
      9: 'network-prohibited',
      10: 'host-prohibited',
      11: 'tos-network-unreachable',
      12: 'tos-host-unreachable',
      13: 'admin-prohibited',
      14: 'host-precedence-violation',
      15: 'precedence-cutoff',
    },
  },
  4: { name: 'source-quench' },
  5: {
    name: 'redirect',
    codes: { 0: 'network-redirect', 1: 'host-redirect', 2: 'tos-network-redirect', 3: 'tos-host-redirect' },
  },
  8: { name: 'echo-request' },
  9: { name: 'router-advertisement' },
  10: { name: 'router-solicitation' },
  11: { name: 'time-exceeded', codes: { 0: 'ttl-exceeded', 1: 'fragment-reassembly-time-exceeded' } },
  12: { name: 'parameter-problem', codes: { 0: 'ip-header-bad', 1: 'required-option-missing', 2: 'bad-length' } },
  13: { name: 'timestamp-request' },
  14: { name: 'timestamp-reply' },
  15: { name: 'info-request' },
  16: { name: 'info-reply' },
  17: { name: 'address-mask-request' },
  18: { name: 'address-mask-reply' },
  42: { name: 'extended-echo-request' },
  43: { name: 'extended-echo-reply' },
};

const ICMPV6: Record<number, TypeEntry> = {
  1: {
    name: 'destination-unreachable',
    codes: {
      0: 'no-route',
      1: 'admin-prohibited',
      2: 'beyond-scope',
      3: 'address-unreachable',
      4: 'port-unreachable',
      5: 'failed-policy',
      6: 'reject-route',
    },
  },
  2: { name: 'packet-too-big' },
  3: { name: 'time-exceeded', codes: { 0: 'hop-limit-exceeded', 1: 'fragment-reassembly-time-exceeded' } },
  4: {
    name: 'parameter-problem',
    codes: { 0: 'bad-header', 1: 'unknown-header-type', 2: 'unknown-option' },
  },
  128: { name: 'echo-request' },
  129: { name: 'echo-reply' },
  130: { name: 'mld-query' },
  131: { name: 'mld-report' },
  132: { name: 'mld-done' },
  133: { name: 'router-solicitation' },
  134: { name: 'router-advertisement' },
  135: { name: 'neighbor-solicitation' },
  136: { name: 'neighbor-advertisement' },
  137: { name: 'redirect' },
  143: { name: 'mld2-report' },
  160: { name: 'extended-echo-request' },
  161: { name: 'extended-echo-reply' },
};

const TABLES: Record<IpFamily, Record<number, TypeEntry>> = { ipv4: ICMPV4, ipv6: ICMPV6 };

/** The most specific name: the code's if it has one, else the type's, else `type-N`. */
export function icmpName(family: IpFamily, type: number, code: number): string {
  const entry = TABLES[family][type];
  if (!entry) return `type-${type}`;
  return entry.codes?.[code] ?? entry.name;
}

/** What a filter's ICMP type value selects; an absent family or code matches any. */
export interface IcmpSelector {
  family?: IpFamily;
  type: number;
  code?: number;
}

const BY_NAME: ReadonlyMap<string, IcmpSelector[]> = (() => {
  const index = new Map<string, IcmpSelector[]>();
  const add = (name: string, selector: IcmpSelector) => index.set(name, [...(index.get(name) ?? []), selector]);
  for (const family of ['ipv4', 'ipv6'] as const) {
    for (const [type, entry] of Object.entries(TABLES[family])) {
      add(entry.name, { family, type: Number(type) });
      for (const [code, name] of Object.entries(entry.codes ?? {})) add(name, { family, type: Number(type), code: Number(code) });
    }
  }
  return index;
})();

/**
 * Resolves "echo-request" (one selector per family that has the name), "8" or "3/4" (type/code,
 * any family). Null when the value is neither a known name nor a number pair in range.
 */
export function parseIcmpSelector(value: string): IcmpSelector[] | null {
  const numeric = /^(\d{1,3})(?:\/(\d{1,3}))?$/.exec(value);
  if (numeric) {
    const type = Number(numeric[1]);
    const code = numeric[2] === undefined ? undefined : Number(numeric[2]);
    if (type > 255 || (code !== undefined && code > 255)) return null;
    return [code === undefined ? { type } : { type, code }];
  }
  return BY_NAME.get(value.toLowerCase()) ?? null;
}
