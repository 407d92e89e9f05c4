/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one record shared by the BPF programs and the agent. The TypeScript decoder
 * (src/agent/probe/event-layout.ts) mirrors it; test/agent/probe/layout.test.ts compiles
 * this header and proves every offset and size agree.
 */
#ifndef ICMPWATCH_H
#define ICMPWATCH_H

/* Which hook produced an event. */
enum icmpw_hook {
	ICMPW_HOOK_TP_BTF = 1,    /* tp_btf/netif_receive_skb */
	ICMPW_HOOK_RAW_TP = 2,    /* raw_tp/netif_receive_skb */
	ICMPW_HOOK_FEXIT = 3,     /* fexit/ip_rcv_core, ip6_rcv_core */
	ICMPW_HOOK_KRETPROBE = 4, /* kretprobe/ip_rcv_core, ip6_rcv_core */
};

/*
 * What the parser found. Malformed and undecodable packets keep zeroed fields; family 0 means
 * the frame could not be read as far as its IP header (a VLAN tag past the linear area).
 */
enum icmpw_flag {
	ICMPW_F_VLAN = 1 << 0,           /* decoded through one 802.1Q/802.1ad tag */
	ICMPW_F_FRAGMENT = 1 << 1,       /* non-first fragment: carries no ICMP header */
	ICMPW_F_MORE_FRAGMENTS = 1 << 2, /* first fragment of a fragmented message */
	ICMPW_F_NONLINEAR = 1 << 3,      /* needed bytes lie past the linear area: not read */
	ICMPW_F_TRUNCATED = 1 << 4,      /* fewer bytes than the IP header or ICMP type requires */
	ICMPW_F_BAD_VERSION = 1 << 5,    /* IP version does not match the ethertype */
	ICMPW_F_BAD_IHL = 1 << 6,        /* IPv4 header length < 20 or past the packet */
	ICMPW_F_BAD_LENGTH = 1 << 7,     /* IP total/payload length outside the packet */
	ICMPW_F_PADDED = 1 << 8,         /* frame longer than the IP length (L2 padding ignored) */
	ICMPW_F_EXTHDR_LIMIT = 1 << 9,   /* more IPv6 extension headers than the parser walks */
	ICMPW_F_INNER_TRUNCATED = 1 << 10, /* error message quotes too little of the original */
	ICMPW_F_VLAN_UNSUPPORTED = 1 << 11, /* stacked VLAN tags (QinQ): reported, not decoded */
};

/* Counted as malformed: undecodable for what the bytes say (stacked VLAN: for what we parse). */
#define ICMPW_F_MALFORMED (ICMPW_F_TRUNCATED | ICMPW_F_BAD_VERSION | ICMPW_F_BAD_IHL | \
			   ICMPW_F_BAD_LENGTH | ICMPW_F_EXTHDR_LIMIT | ICMPW_F_INNER_TRUNCATED | \
			   ICMPW_F_VLAN_UNSUPPORTED)

/* One packet as seen by a hook: 120 bytes, 128 with the ring record header. */
struct icmpw_event {
	__u64 mono_ns;     /* bpf_ktime_get_ns() */
	__u32 ifindex;     /* receiving device */
	__u32 netns;       /* inode of the receiving device's network namespace */
	__u32 skb_len;     /* skb->len at the hook */
	__u32 flags;       /* enum icmpw_flag */
	__u32 mtu;         /* next-hop MTU of frag-needed / packet-too-big */
	__u32 reserved;
	__u16 tot_len;     /* IPv4 total length; IPv6 payload length + 40 */
	__u16 ip_id;       /* IPv4 identification; low 16 bits of the IPv6 fragment id */
	__u16 frag_off;    /* fragment offset in bytes */
	__u16 echo_id;     /* echo request/reply only */
	__u16 echo_seq;
	__u8 family;       /* 4 or 6 */
	__u8 hook;         /* enum icmpw_hook */
	__u8 type;
	__u8 code;
	__u8 ttl;          /* TTL or hop limit */
	__u8 pkt_type;     /* skb->pkt_type (PACKET_HOST, ...) */
	__u8 saddr[16];    /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	/* The original packet an ICMP error quotes (inner_family 0: none). */
	__u8 inner_saddr[16];
	__u8 inner_daddr[16];
	__u16 inner_sport; /* TCP/UDP ports, or echo id/seq of a quoted echo */
	__u16 inner_dport;
	__u8 inner_proto;
	__u8 inner_family;
	__u8 pad[2];
};

/*
 * Per-CPU counters (PERCPU_ARRAY "counters"), read and summed by the agent: one row of ICMPW_C_MAX
 * per enum icmpw_counter_family, at index family * ICMPW_C_MAX + counter.
 */
enum icmpw_counter {
	ICMPW_C_EVENTS = 0,        /* records submitted to the ring (sightings) */
	ICMPW_C_RING_FULL,         /* lost: ring reservation failed (sightings) */
	ICMPW_C_SUPPRESSED,        /* packets over the rate limit: counted in the aggregation map */
	ICMPW_C_AGG_FULL,          /* lost: packets over the limit while the aggregation map was full */
	ICMPW_C_MALFORMED,         /* events carrying an ICMPW_F_MALFORMED flag */
	ICMPW_C_NONLINEAR,         /* events carrying ICMPW_F_NONLINEAR */
	ICMPW_C_RCV_DROPPED,       /* ip_rcv_core returned NULL (validation drop) */
	ICMPW_C_SUPPRESSED_SIGHTINGS, /* sightings of suppressed packets (>= ICMPW_C_SUPPRESSED) */
	ICMPW_C_MAX,
};

/* Rows of the counters map. Unspecified: the frame could not be read as far as its IP header. */
enum icmpw_counter_family {
	ICMPW_CF_UNSPECIFIED = 0,
	ICMPW_CF_IPV4 = 1,
	ICMPW_CF_IPV6 = 2,
	ICMPW_CF_MAX,
};

/*
 * Flood aggregation: packets over the per-node limit, per (family, src, dst, type, code). A packet
 * seen in several namespaces (node, then pod) counts once in `packets`, once per sighting in
 * `sightings`.
 */
struct icmpw_agg_key {
	__u8 family;
	__u8 type;
	__u8 code;
	__u8 pad;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct icmpw_agg_value {
	__u64 packets;
	__u64 first_ns;
	__u64 last_ns;
	__u64 sightings;
};

/* Written by the agent (ARRAY "control", key 0); read by the programs on every packet. */
struct icmpw_control {
	__u64 events_per_second; /* per-node packets per second before flood aggregation; 0 = none */
	__u64 wakeup_bytes;      /* pending ring bytes that force a reader wake-up */
	__u32 agg_slot;          /* which of agg_0/agg_1 the programs fill; the agent drains the other */
	__u32 pad;
	__u64 identity_seed;     /* random per agent: packet identities cannot be made to collide offline */
};

#endif
