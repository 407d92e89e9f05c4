/**
 * Byte layout of `struct icmpw_event` (bpf/icmpwatch.h). test/agent/probe/layout.test.ts
 * compiles the header and checks every entry here against offsetof/sizeof.
 */
export const EVENT_FIELDS = {
  mono_ns: { offset: 0, size: 8 },
  ifindex: { offset: 8, size: 4 },
  netns: { offset: 12, size: 4 },
  skb_len: { offset: 16, size: 4 },
  flags: { offset: 20, size: 4 },
  mtu: { offset: 24, size: 4 },
  tot_len: { offset: 32, size: 2 },
  ip_id: { offset: 34, size: 2 },
  frag_off: { offset: 36, size: 2 },
  echo_id: { offset: 38, size: 2 },
  echo_seq: { offset: 40, size: 2 },
  family: { offset: 42, size: 1 },
  hook: { offset: 43, size: 1 },
  type: { offset: 44, size: 1 },
  code: { offset: 45, size: 1 },
  ttl: { offset: 46, size: 1 },
  pkt_type: { offset: 47, size: 1 },
  saddr: { offset: 48, size: 16 },
  daddr: { offset: 64, size: 16 },
  inner_saddr: { offset: 80, size: 16 },
  inner_daddr: { offset: 96, size: 16 },
  inner_sport: { offset: 112, size: 2 },
  inner_dport: { offset: 114, size: 2 },
  inner_proto: { offset: 116, size: 1 },
  inner_family: { offset: 117, size: 1 },
} as const;

export const EVENT_SIZE = 120;

/** enum icmpw_flag */
export const FLAG_BITS = {
  vlan: 1 << 0,
  fragment: 1 << 1,
  'more-fragments': 1 << 2,
  nonlinear: 1 << 3,
  truncated: 1 << 4,
  'bad-version': 1 << 5,
  'bad-ihl': 1 << 6,
  'bad-length': 1 << 7,
  padded: 1 << 8,
  'exthdr-limit': 1 << 9,
  'inner-truncated': 1 << 10,
  'vlan-unsupported': 1 << 11,
} as const;

export type FlagName = keyof typeof FLAG_BITS;

/** enum icmpw_counter: columns of the per-CPU "counters" map. */
export const COUNTERS = ['events', 'ringFull', 'suppressed', 'aggFull', 'malformed', 'nonlinear', 'rcvDropped', 'suppressedSightings'] as const;
export type CounterName = (typeof COUNTERS)[number];

/**
 * enum icmpw_counter_family: rows of the "counters" map (key row * COUNTERS.length + column), named
 * as the `family` label of events. `unspecified`: the frame could not be read as far as its IP
 * header (a VLAN tag past the linear area, more stacked tags than the parser peels), as events
 * with no family say.
 */
export const COUNTER_FAMILIES = ['unspecified', 'ipv4', 'ipv6'] as const;
export type CounterFamily = (typeof COUNTER_FAMILIES)[number];

/** enum icmpw_hook */
export const HOOK_IDS = { tp_btf: 1, raw_tp: 2, fexit: 3, kretprobe: 4 } as const;
export type HookName = keyof typeof HOOK_IDS;

/** struct icmpw_control */
export const CONTROL = { size: 32, eventsPerSecond: 0, wakeupBytes: 8, aggSlot: 16, identitySeed: 24 } as const;

/** struct icmpw_agg_key / struct icmpw_agg_value */
export const AGG_KEY = { size: 36, family: 0, type: 1, code: 2, saddr: 4, daddr: 20 } as const;
export const AGG_VALUE = { size: 32, packets: 0, firstNs: 8, lastNs: 16, sightings: 24 } as const;
