// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ICMP and ICMPv6 capture on the IP receive path. Every hook hands the skb and the address of
 * its network header to one parser, which validates the bytes itself: at netif_receive_skb the
 * kernel has not validated anything yet, and a read past the linear area returns stale bytes
 * without error (shared/notes/kernel.md), so such fields are flagged instead of decoded.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "icmpwatch.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ICMPV6 58
#define IPV6_EXTHDR_MAX 6
#define VLAN_MAX_DEPTH 4
#define NSEC_PER_SEC 1000000000ULL

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ICMPW_CF_MAX * ICMPW_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct icmpw_control);
} control SEC(".maps");

struct rate_window {
	__u64 second; /* bpf_ktime_get_ns() / 1e9 of the current window */
	__u64 sent;   /* packets sent in it, all CPUs */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rate_window);
} rate SEC(".maps");

/* Two maps so the agent can drain one completely while the programs fill the other. */
#define AGG_MAP(name)                                   \
	struct {                                        \
		__uint(type, BPF_MAP_TYPE_HASH);        \
		__uint(max_entries, 4096);              \
		__type(key, struct icmpw_agg_key);      \
		__type(value, struct icmpw_agg_value);  \
	} name SEC(".maps")
AGG_MAP(agg_0);
AGG_MAP(agg_1);

/* Whether a packet's first sighting was sent or suppressed: its later sightings follow it. */
struct packet_fate {
	__u64 first_ns;
	__u32 netns;   /* where the first sighting was: a sighting there again is another packet */
	__u32 ifindex;
	__u64 suppressed;
};

/*
 * The fate of packets seen in the last second, by a 64-bit hash of their identity, so that the
 * flood limit counts packets, not sightings: a packet entering the node and then a pod is sent or
 * suppressed as a whole. Only used while a limit is set; 32768 entries outlast the microseconds
 * between two sightings at any rate this node reaches. Per-CPU LRU lists: no global lock.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, __u64);
	__type(value, struct packet_fate);
} recent_packets SEC(".maps");

static __always_inline __u32 counter_family(__u8 family)
{
	return family == 4 ? ICMPW_CF_IPV4 : family == 6 ? ICMPW_CF_IPV6 : ICMPW_CF_UNSPECIFIED;
}

static __always_inline void count(__u8 family, __u32 counter)
{
	__u32 idx = counter_family(family) * ICMPW_C_MAX + counter;
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline struct icmpw_control *get_control(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&control, &zero);
}

/* True when this packet fits in the current second's budget. */
static __always_inline bool within_rate(const struct icmpw_control *ctl)
{
	__u32 zero = 0;
	struct rate_window *w;
	__u64 now, seen;

	w = bpf_map_lookup_elem(&rate, &zero);
	if (!w)
		return true;
	now = bpf_ktime_get_ns() / NSEC_PER_SEC;
	seen = w->second;
	/* One CPU wins the window change; a few events racing it land in either window. */
	if (seen != now && __sync_val_compare_and_swap(&w->second, seen, now) == seen)
		w->sent = 0;
	return __sync_fetch_and_add(&w->sent, 1) < ctl->events_per_second;
}

/* A sighting over the limit; `first` when it is the packet's first (the one that counts it). */
static __always_inline void aggregate(const struct icmpw_event *e, const struct icmpw_control *ctl, bool first)
{
	struct icmpw_agg_key key = {};
	struct icmpw_agg_value init = {}, *v;
	void *map = &agg_0;
	__u64 now = e->mono_ns;

	if (ctl->agg_slot)
		map = &agg_1;
	key.family = e->family;
	key.type = e->type;
	key.code = e->code;
	__builtin_memcpy(key.saddr, e->saddr, 16);
	__builtin_memcpy(key.daddr, e->daddr, 16);
	v = bpf_map_lookup_elem(map, &key);
	if (!v) {
		init.first_ns = now;
		init.last_ns = now;
		bpf_map_update_elem(map, &key, &init, BPF_NOEXIST);
		v = bpf_map_lookup_elem(map, &key);
		if (!v) {
			if (first)
				count(e->family, ICMPW_C_AGG_FULL);
			return;
		}
	}
	if (first) {
		__sync_fetch_and_add(&v->packets, 1);
		count(e->family, ICMPW_C_SUPPRESSED);
	}
	__sync_fetch_and_add(&v->sightings, 1);
	if (now > v->last_ns)
		v->last_ns = now;
	count(e->family, ICMPW_C_SUPPRESSED_SIGHTINGS);
}

/* Flags under which the agent never merges sightings (src/agent/sightings.ts: UNVALIDATED). */
#define ICMPW_F_UNVALIDATED (ICMPW_F_BAD_VERSION | ICMPW_F_BAD_IHL | ICMPW_F_BAD_LENGTH | ICMPW_F_EXTHDR_LIMIT)
/* Flags under which no ICMP header was read (src/agent/sightings.ts: NO_ICMP_HEADER). */
#define ICMPW_F_NO_ICMP_HEADER (ICMPW_F_FRAGMENT | ICMPW_F_NONLINEAR | ICMPW_F_TRUNCATED | ICMPW_F_VLAN_UNSUPPORTED)

static __always_inline bool is_echo(__u8 family, __u8 type);

/*
 * Whether the identity tells this packet from the next between the same pair, as the agent's
 * sighting merger decides it: packets it cannot tell apart are reported, and counted, per sighting.
 */
static __always_inline bool identifiable(const struct icmpw_event *e)
{
	if (!e->family || (e->flags & ICMPW_F_UNVALIDATED))
		return false;
	if (e->ip_id)
		return true;
	if (e->flags & ICMPW_F_NO_ICMP_HEADER)
		return false;
	return is_echo(e->family, e->type) || e->inner_family;
}

enum admission { ADMIT_SEND, ADMIT_SUPPRESS, ADMIT_SUPPRESS_AGAIN };

static __always_inline __u64 mix(__u64 h, __u64 v)
{
	h = (h ^ v) * 0x9e3779b97f4a7c15ULL;
	return h ^ (h >> 29);
}

static __always_inline __u64 mix_addr(__u64 h, const __u8 *a)
{
	__u64 w[2];

	__builtin_memcpy(w, a, 16);
	return mix(mix(h, w[0]), w[1]);
}

/*
 * A 64-bit hash of the fields the agent merges sightings by (src/agent/sightings.ts), never the
 * TTL. A packet is taken for another seen within the second with probability about rate / 2^64.
 * Seeded by the agent: a sender who knows the function cannot craft a packet whose identity
 * collides with another's, to ride on that packet's decision past the flood limit.
 */
static __always_inline __u64 packet_identity(const struct icmpw_event *e, __u64 seed)
{
	__u64 h = mix(seed, e->family | (e->type << 8) | (e->code << 16) | ((__u64)e->inner_proto << 24) |
			      ((__u64)e->ip_id << 32) | ((__u64)e->frag_off << 48));
	h = mix(h, e->tot_len | ((__u64)e->echo_id << 16) | ((__u64)e->echo_seq << 32) |
			   ((__u64)e->inner_family << 48));
	h = mix_addr(h, e->saddr);
	h = mix_addr(h, e->daddr);
	if (e->inner_family) {
		h = mix(h, e->inner_sport | ((__u64)e->inner_dport << 16));
		h = mix_addr(h, e->inner_saddr);
		h = mix_addr(h, e->inner_daddr);
	}
	return h;
}

/*
 * The flood limit counts packets: a packet's first sighting spends the budget and decides; its
 * later sightings (the pod after the node) follow that decision, so a packet is never half sent,
 * half suppressed, and a suppressed packet counts once however many namespaces see it.
 */
static __always_inline enum admission admit(const struct icmpw_event *e, const struct icmpw_control *ctl)
{
	struct packet_fate fate = {}, *known;
	__u64 key;

	if (!identifiable(e))
		return within_rate(ctl) ? ADMIT_SEND : ADMIT_SUPPRESS;
	key = packet_identity(e, ctl->identity_seed);
	/* Remembered for one second: never longer than the agent's merger (src/agent/agent.ts rememberMs). */
	known = bpf_map_lookup_elem(&recent_packets, &key);
	/*
	 * A later sighting is the packet on another device (a bridge after its port, a pod after the
	 * node). The same identity again on the first sighting's device is a repeat sent anew (a
	 * sender repeating one id/seq): it spends the budget like any packet, else a flood of copies
	 * would follow the first one past the limit.
	 */
	if (known && e->mono_ns - known->first_ns < NSEC_PER_SEC && (known->netns != e->netns || known->ifindex != e->ifindex))
		return known->suppressed ? ADMIT_SUPPRESS_AGAIN : ADMIT_SEND;
	fate.first_ns = e->mono_ns;
	fate.netns = e->netns;
	fate.ifindex = e->ifindex;
	fate.suppressed = !within_rate(ctl);
	bpf_map_update_elem(&recent_packets, &key, &fate, BPF_ANY);
	return fate.suppressed ? ADMIT_SUPPRESS : ADMIT_SEND;
}

static __always_inline void emit(struct icmpw_event *e)
{
	struct icmpw_control *ctl = get_control();
	__u64 pending, flags;

	if (!ctl)
		return;
	if (e->flags & ICMPW_F_MALFORMED)
		count(e->family, ICMPW_C_MALFORMED);
	if (e->flags & ICMPW_F_NONLINEAR)
		count(e->family, ICMPW_C_NONLINEAR);
	if (ctl->events_per_second) {
		enum admission a = admit(e, ctl);

		if (a != ADMIT_SEND) {
			aggregate(e, ctl, a == ADMIT_SUPPRESS);
			return;
		}
	}
	/*
	 * Wake the reader only for the first record after it drained, and for the one that makes the
	 * backlog cross wakeup_bytes: a wake-up per record costs the sending workload ~10x more
	 * (shared/notes/kernel.md). Waking for every record past the threshold cost 5 us per record
	 * here while the reader slept between drains (BENCHMARKS.md).
	 */
	pending = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	flags = (pending == 0 || (pending < ctl->wakeup_bytes && pending + sizeof(*e) + 8 >= ctl->wakeup_bytes)) ?
		BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_output(&events, e, sizeof(*e), flags))
		count(e->family, ICMPW_C_RING_FULL);
	else
		count(e->family, ICMPW_C_EVENTS);
}

static __always_inline bool is_echo(__u8 family, __u8 type)
{
	if (family == 4)
		return type == 0 || type == 8;
	return type == 128 || type == 129;
}

/* Error messages that quote the original packet after the 8-byte ICMP header. */
static __always_inline bool quotes_original(__u8 family, __u8 type)
{
	if (family == 4)
		return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
	return type >= 1 && type <= 4;
}

/* Ports, or the echo id/seq, of the quoted packet's transport header at `l4`. */
static __always_inline void decode_quoted_l4(struct icmpw_event *e, const __u8 *l4, __s64 room,
					     __s64 avail)
{
	__u8 l4h[8];

	if (e->inner_proto != PROTO_TCP && e->inner_proto != PROTO_UDP &&
	    e->inner_proto != PROTO_ICMP && e->inner_proto != PROTO_ICMPV6)
		return;
	if (room < 8) {
		e->flags |= ICMPW_F_INNER_TRUNCATED;
		return;
	}
	if (avail < 8) {
		e->flags |= ICMPW_F_NONLINEAR;
		return;
	}
	bpf_probe_read_kernel(l4h, sizeof(l4h), l4);
	if (e->inner_proto == PROTO_TCP || e->inner_proto == PROTO_UDP) {
		e->inner_sport = (l4h[0] << 8) | l4h[1];
		e->inner_dport = (l4h[2] << 8) | l4h[3];
	} else if (is_echo(e->inner_family, l4h[0])) {
		e->inner_sport = (l4h[4] << 8) | l4h[5];
		e->inner_dport = (l4h[6] << 8) | l4h[7];
	}
}

/*
 * The ICMP message at `icmp`: `len` bytes belong to it by the IP length, `avail` of them are in
 * the linear area and safe to read.
 */
static __always_inline void decode_icmp(struct icmpw_event *e, const __u8 *icmp, __s64 len,
					__s64 avail)
{
	__u8 h[8];

	if (len < 4) {
		e->flags |= ICMPW_F_TRUNCATED;
		return;
	}
	if (avail < 4) {
		e->flags |= ICMPW_F_NONLINEAR;
		return;
	}
	bpf_probe_read_kernel(h, 4, icmp);
	e->type = h[0];
	e->code = h[1];
	if (!is_echo(e->family, e->type) && !quotes_original(e->family, e->type))
		return;
	if (len < 8) {
		e->flags |= ICMPW_F_TRUNCATED;
		return;
	}
	if (avail < 8) {
		e->flags |= ICMPW_F_NONLINEAR;
		return;
	}
	bpf_probe_read_kernel(h, 8, icmp);
	if (is_echo(e->family, e->type)) {
		e->echo_id = (h[4] << 8) | h[5];
		e->echo_seq = (h[6] << 8) | h[7];
		return;
	}
	if (e->family == 4 && e->type == 3 && e->code == 4)
		e->mtu = (h[6] << 8) | h[7];
	else if (e->family == 6 && e->type == 2)
		e->mtu = ((__u32)h[4] << 24) | ((__u32)h[5] << 16) | (h[6] << 8) | h[7];

	/* The quoted original packet. */
	if (e->family == 4) {
		struct iphdr in;
		__u32 ihl;

		if (len < 8 + 20) {
			e->flags |= ICMPW_F_INNER_TRUNCATED;
			return;
		}
		if (avail < 8 + 20) {
			e->flags |= ICMPW_F_NONLINEAR;
			return;
		}
		bpf_probe_read_kernel(&in, sizeof(in), icmp + 8);
		ihl = in.ihl * 4;
		if (in.version != 4 || ihl < 20) {
			e->flags |= ICMPW_F_INNER_TRUNCATED;
			return;
		}
		e->inner_family = 4;
		e->inner_proto = in.protocol;
		__builtin_memcpy(e->inner_saddr, &in.saddr, 4);
		__builtin_memcpy(e->inner_daddr, &in.daddr, 4);
		if (bpf_ntohs(in.frag_off) & 0x1fff)
			return; /* a quoted non-first fragment has no transport header */
		decode_quoted_l4(e, icmp + 8 + ihl, len - 8 - ihl, avail - 8 - ihl);
	} else {
		struct ipv6hdr in;

		if (len < 8 + 40) {
			e->flags |= ICMPW_F_INNER_TRUNCATED;
			return;
		}
		if (avail < 8 + 40) {
			e->flags |= ICMPW_F_NONLINEAR;
			return;
		}
		bpf_probe_read_kernel(&in, sizeof(in), icmp + 8);
		if (in.version != 6) {
			e->flags |= ICMPW_F_INNER_TRUNCATED;
			return;
		}
		e->inner_family = 6;
		e->inner_proto = in.nexthdr;
		__builtin_memcpy(e->inner_saddr, &in.saddr, 16);
		__builtin_memcpy(e->inner_daddr, &in.daddr, 16);
		decode_quoted_l4(e, icmp + 48, len - 48, avail - 48);
	}
}

/* IPv4 at `nh`; `pkt` bytes of packet follow it, `avail` of them linear. */
static __always_inline void parse_ipv4(struct icmpw_event *e, const __u8 *nh, __s64 pkt,
				       __s64 avail)
{
	struct iphdr ip;
	__u32 ihl, tot, frag;

	/* Too short or unreadable to tell whether it is ICMP: reported flagged, never dropped unseen. */
	e->family = 4;
	if (pkt < 20) {
		e->flags |= ICMPW_F_TRUNCATED;
		goto out;
	}
	if (avail < 20) {
		e->flags |= ICMPW_F_NONLINEAR;
		goto out;
	}
	bpf_probe_read_kernel(&ip, sizeof(ip), nh);
	if (ip.protocol != PROTO_ICMP)
		return;
	if (e->flags & ICMPW_F_VLAN_UNSUPPORTED)
		goto out;
	if (ip.version != 4) {
		e->flags |= ICMPW_F_BAD_VERSION;
		goto out;
	}
	ihl = ip.ihl * 4;
	if (ihl < 20 || ihl > pkt) {
		e->flags |= ICMPW_F_BAD_IHL;
		goto out;
	}
	tot = bpf_ntohs(ip.tot_len);
	if (tot < ihl || tot > pkt) {
		e->flags |= ICMPW_F_BAD_LENGTH;
		goto out;
	}
	if (tot < pkt)
		e->flags |= ICMPW_F_PADDED;
	e->tot_len = tot;
	e->ttl = ip.ttl;
	e->ip_id = bpf_ntohs(ip.id);
	__builtin_memcpy(e->saddr, &ip.saddr, 4);
	__builtin_memcpy(e->daddr, &ip.daddr, 4);
	frag = bpf_ntohs(ip.frag_off);
	if (frag & 0x1fff) {
		e->flags |= ICMPW_F_FRAGMENT;
		e->frag_off = (frag & 0x1fff) * 8;
		goto out;
	}
	if (frag & 0x2000)
		e->flags |= ICMPW_F_MORE_FRAGMENTS;
	decode_icmp(e, nh + ihl, tot - ihl, avail - ihl);
out:
	emit(e);
}

static __always_inline bool is_ipv6_exthdr(__u8 next)
{
	return next == 0 || next == 43 || next == 60 || next == 51 || next == 44;
}

/* IPv6 at `nh`, extension headers walked up to ICMPv6. */
static __always_inline void parse_ipv6(struct icmpw_event *e, const __u8 *nh, __s64 pkt,
				       __s64 avail)
{
	struct ipv6hdr ip;
	__u32 tot, off = 40;
	__u8 next, x[8];
	int i;

	if (pkt < 40) {
		e->family = 6;
		e->flags |= ICMPW_F_TRUNCATED;
		goto out;
	}
	if (avail < 40) {
		e->family = 6;
		e->flags |= ICMPW_F_NONLINEAR;
		goto out;
	}
	bpf_probe_read_kernel(&ip, sizeof(ip), nh);
	next = ip.nexthdr;
	if (e->flags & ICMPW_F_VLAN_UNSUPPORTED) {
		if (next != PROTO_ICMPV6 && !is_ipv6_exthdr(next))
			return;
		e->family = 6; /* possibly ICMPv6: reported, not decoded */
		goto out;
	}
	for (i = 0; i < IPV6_EXTHDR_MAX; i++) {
		if (next == PROTO_ICMPV6)
			break;
		if (!is_ipv6_exthdr(next))
			return; /* not ICMPv6 */
		/* A chain past the packet or the linear area hides the protocol: possibly ICMPv6. */
		if (pkt < off + 8) {
			e->flags |= ICMPW_F_TRUNCATED;
			break;
		}
		if (avail < off + 8) {
			e->flags |= ICMPW_F_NONLINEAR;
			break;
		}
		bpf_probe_read_kernel(x, sizeof(x), nh + (off & 0xffff));
		if (next == 44) {
			__u16 fo = (x[2] << 8) | x[3];

			e->ip_id = (x[6] << 8) | x[7];
			if (fo & 0xfff8) {
				e->frag_off = fo & 0xfff8;
				e->flags |= ICMPW_F_FRAGMENT;
			} else if (fo & 1) {
				e->flags |= ICMPW_F_MORE_FRAGMENTS;
			}
			off += 8;
		} else if (next == 51) {
			off += (x[1] + 2) * 4;
		} else {
			off += (x[1] + 1) * 8;
		}
		next = x[0];
		if (e->flags & ICMPW_F_FRAGMENT)
			break;
	}
	if (next != PROTO_ICMPV6 && !(e->flags & (ICMPW_F_TRUNCATED | ICMPW_F_NONLINEAR))) {
		if (!is_ipv6_exthdr(next) || (e->flags & ICMPW_F_FRAGMENT))
			return; /* not ICMPv6, or a fragment of something else */
		e->flags |= ICMPW_F_EXTHDR_LIMIT; /* chain longer than we walk: might be ICMPv6 */
	}
	e->family = 6;
	if (ip.version != 6) {
		e->flags |= ICMPW_F_BAD_VERSION;
		goto out;
	}
	tot = bpf_ntohs(ip.payload_len) + 40;
	if (tot > pkt || off > tot) {
		e->flags |= ICMPW_F_BAD_LENGTH;
		goto out;
	}
	if (tot < pkt)
		e->flags |= ICMPW_F_PADDED;
	e->tot_len = tot;
	e->ttl = ip.hop_limit;
	__builtin_memcpy(e->saddr, &ip.saddr, 16);
	__builtin_memcpy(e->daddr, &ip.daddr, 16);
	if (e->flags & (ICMPW_F_FRAGMENT | ICMPW_F_EXTHDR_LIMIT | ICMPW_F_TRUNCATED | ICMPW_F_NONLINEAR))
		goto out;
	decode_icmp(e, nh + off, tot - off, avail - off);
out:
	emit(e);
}

/* What every event carries about where the hook saw the packet. */
static __always_inline void fill_common(struct icmpw_event *e, struct sk_buff *skb, __u8 hook, __u32 len)
{
	e->mono_ns = bpf_ktime_get_ns();
	e->hook = hook;
	e->skb_len = len;
	e->ifindex = BPF_CORE_READ(skb, dev, ifindex);
	e->netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	e->pkt_type = BPF_CORE_READ_BITFIELD_PROBED(skb, pkt_type);
}

static __always_inline bool is_vlan(__u16 proto)
{
	return proto == ETH_P_8021Q || proto == ETH_P_8021AD;
}

/*
 * One parser for every hook: `nh` is the network header inside `skb`, `proto` the ethertype
 * the hook sees (VLAN-tagged frames still carry 0x8100 / 0x88a8 at netif_receive_skb).
 */
static __always_inline int handle_skb(struct sk_buff *skb, const __u8 *nh, __u16 proto, __u8 hook)
{
	struct icmpw_event e = {};
	const __u8 *data = BPF_CORE_READ(skb, data);
	__u32 len = BPF_CORE_READ(skb, len);
	__u32 data_len = BPF_CORE_READ(skb, data_len);
	__s64 pkt = (__s64)len - (nh - data);
	__s64 avail = (__s64)(len - data_len) - (nh - data);
	int tags;

	/*
	 * One tag is decoded through. Stacked tags (QinQ) are peeled only to learn whether they carry
	 * ICMP, which is then reported flagged, not decoded.
	 */
	for (tags = 0; tags < VLAN_MAX_DEPTH && is_vlan(proto); tags++) {
		__u8 tag[4];

		if (pkt < 4)
			return 0; /* no inner ethertype: nothing says it is IP */
		if (avail < 4) {
			e.flags |= ICMPW_F_NONLINEAR; /* the tag is past the linear area: carries what? */
			goto unknown;
		}
		bpf_probe_read_kernel(tag, sizeof(tag), nh);
		proto = (tag[2] << 8) | tag[3];
		nh += 4;
		pkt -= 4;
		avail -= 4;
	}
	if (is_vlan(proto)) {
		e.flags |= ICMPW_F_VLAN_UNSUPPORTED; /* deeper than we peel: carries what? */
		goto unknown;
	}
	if (proto != ETH_P_IP && proto != ETH_P_IPV6)
		return 0;
	if (tags == 1)
		e.flags |= ICMPW_F_VLAN;
	else if (tags > 1)
		e.flags |= ICMPW_F_VLAN_UNSUPPORTED;

	fill_common(&e, skb, hook, len);
	if (proto == ETH_P_IP)
		parse_ipv4(&e, nh, pkt, avail);
	else
		parse_ipv6(&e, nh, pkt, avail);
	return 0;

unknown:
	/* Family 0: the frame could not be read as far as its IP header. */
	fill_common(&e, skb, hook, len);
	emit(&e);
	return 0;
}

/* At netif_receive_skb, skb->data is the network header. */
SEC("tp_btf/netif_receive_skb")
int BPF_PROG(receive_tp_btf, struct sk_buff *skb)
{
	return handle_skb(skb, BPF_CORE_READ(skb, data), bpf_ntohs(BPF_CORE_READ(skb, protocol)),
			  ICMPW_HOOK_TP_BTF);
}

SEC("raw_tp/netif_receive_skb")
int receive_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx->args[0];

	return handle_skb(skb, BPF_CORE_READ(skb, data), bpf_ntohs(BPF_CORE_READ(skb, protocol)),
			  ICMPW_HOOK_RAW_TP);
}

/*
 * ip_rcv_core / ip6_rcv_core return the skb they validated, or NULL when they dropped it.
 * At return, skb->data is the network header (the callers pull nothing before it).
 */
static __always_inline int handle_rcv_core(struct sk_buff *skb, __u16 proto, __u8 hook)
{
	if (!skb) {
		count(proto == ETH_P_IP ? 4 : 6, ICMPW_C_RCV_DROPPED);
		return 0;
	}
	return handle_skb(skb, BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, network_header), proto, hook);
}

SEC("fexit/ip_rcv_core")
int BPF_PROG(fexit_ip_rcv_core, struct sk_buff *skb, struct net *net, struct sk_buff *ret)
{
	return handle_rcv_core(ret, ETH_P_IP, ICMPW_HOOK_FEXIT);
}

SEC("fexit/ip6_rcv_core")
int BPF_PROG(fexit_ip6_rcv_core, struct sk_buff *skb, struct net_device *dev, struct net *net,
	     struct sk_buff *ret)
{
	return handle_rcv_core(ret, ETH_P_IPV6, ICMPW_HOOK_FEXIT);
}

/* Attached by the agent to the resolved symbol (ip_rcv_core, or ip_rcv_core.isra.N, ...). */
SEC("kretprobe")
int BPF_KRETPROBE(kretprobe_ip_rcv_core, struct sk_buff *ret)
{
	return handle_rcv_core(ret, ETH_P_IP, ICMPW_HOOK_KRETPROBE);
}

SEC("kretprobe")
int BPF_KRETPROBE(kretprobe_ip6_rcv_core, struct sk_buff *ret)
{
	return handle_rcv_core(ret, ETH_P_IPV6, ICMPW_HOOK_KRETPROBE);
}
