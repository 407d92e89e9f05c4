// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * floor: the minimal C consumer of `make bench` (the floor the agent is compared with).
 *
 * Loads the SAME object as the agent (build/bpf/icmpwatch.bpf.o), attaches only
 * tp_btf/netif_receive_skb, configures the control map like the agent does (no rate limit,
 * wake-up once 64 KiB are pending), and reads the ring with libbpf's ring_buffer API in the
 * agent's batching pattern: wait for a wake-up, drain, sleep 10 ms, drain again. Each record
 * is counted, and counted again when its IPv4 source or destination is in --net A.B (the
 * bench's namespaces), so background ICMP on the machine can be told apart.
 *
 * Prints "ready" once attached; on SIGUSR1 and at exit (SIGTERM/SIGINT) one JSON line:
 * {"records":..,"matched":..,"kernel_events":..,"ring_full":..,"run_time_ns":..,"run_cnt":..}
 *
 * Usage: floor OBJECT [--ring-bytes N] [--net A.B]
 */
#include <errno.h>
#include <linux/types.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "icmpwatch.h"

static volatile sig_atomic_t stop, report;
static unsigned long long records, matched;
static unsigned char net0, net1;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		report = 1;
	else
		stop = 1;
}

static int on_record(void *ctx, void *data, size_t len)
{
	const struct icmpw_event *e = data;

	(void)ctx;
	if (len < sizeof(*e))
		return 0;
	records++;
	if (e->family == 4 && ((e->saddr[0] == net0 && e->saddr[1] == net1) ||
			       (e->daddr[0] == net0 && e->daddr[1] == net1)))
		matched++;
	return 0;
}

static unsigned long long counter(int fd, __u32 idx, int ncpus)
{
	unsigned long long sum = 0, *vals = calloc(ncpus, sizeof(*vals));

	if (vals && bpf_map_lookup_elem(fd, &idx, vals) == 0)
		for (int i = 0; i < ncpus; i++)
			sum += vals[i];
	free(vals);
	return sum;
}

static void print_stats(int prog_fd, int counters_fd, int ncpus)
{
	struct bpf_prog_info info = {};
	__u32 info_len = sizeof(info);

	bpf_obj_get_info_by_fd(prog_fd, &info, &info_len);
	printf("{\"records\":%llu,\"matched\":%llu,\"kernel_events\":%llu,\"ring_full\":%llu,"
	       "\"run_time_ns\":%llu,\"run_cnt\":%llu}\n",
	       records, matched, counter(counters_fd, ICMPW_C_EVENTS, ncpus),
	       counter(counters_fd, ICMPW_C_RING_FULL, ncpus), (unsigned long long)info.run_time_ns,
	       (unsigned long long)info.run_cnt);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	unsigned long ring_bytes = 4 << 20;
	int n0 = 10, n1 = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: floor OBJECT [--ring-bytes N] [--net A.B]\n");
		return 2;
	}
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--ring-bytes"))
			ring_bytes = strtoul(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--net"))
			sscanf(argv[i + 1], "%d.%d", &n0, &n1);
	}
	net0 = n0;
	net1 = n1;

	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (libbpf_get_error(obj)) {
		fprintf(stderr, "floor: open %s failed\n", argv[1]);
		return 1;
	}
	struct bpf_program *prog, *tp = NULL;
	bpf_object__for_each_program(prog, obj) {
		int want = !strcmp(bpf_program__name(prog), "receive_tp_btf");
		bpf_program__set_autoload(prog, want);
		if (want)
			tp = prog;
	}
	struct bpf_map *events = bpf_object__find_map_by_name(obj, "events");
	if (!tp || !events || bpf_map__set_max_entries(events, ring_bytes)) {
		fprintf(stderr, "floor: object lacks receive_tp_btf or events\n");
		return 1;
	}
	if (bpf_object__load(obj)) {
		fprintf(stderr, "floor: load failed\n");
		return 1;
	}
	struct icmpw_control ctl = { .events_per_second = 0,
				     .wakeup_bytes = ring_bytes / 4 < 65536 ? ring_bytes / 4 : 65536 };
	__u32 zero = 0;
	int control_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "control"));
	int counters_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "counters"));
	if (bpf_map_update_elem(control_fd, &zero, &ctl, 0)) {
		fprintf(stderr, "floor: control map update failed\n");
		return 1;
	}
	struct bpf_link *link = bpf_program__attach(tp);
	if (libbpf_get_error(link)) {
		fprintf(stderr, "floor: attach failed\n");
		return 1;
	}
	struct ring_buffer *rb = ring_buffer__new(bpf_map__fd(events), on_record, NULL, NULL);
	if (!rb) {
		fprintf(stderr, "floor: ring_buffer__new failed\n");
		return 1;
	}
	int ncpus = libbpf_num_possible_cpus();
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	printf("ready\n");
	fflush(stdout);

	while (!stop) {
		int n = ring_buffer__poll(rb, 100);
		if (n > 0) {
			/* The agent's pattern: after a wake-up, let a batch accumulate. */
			usleep(10000);
			ring_buffer__consume(rb);
		}
		if (report) {
			report = 0;
			print_stats(bpf_program__fd(tp), counters_fd, ncpus);
		}
	}
	bpf_link__destroy(link);
	ring_buffer__consume(rb);
	print_stats(bpf_program__fd(tp), counters_fd, ncpus);
	ring_buffer__free(rb);
	bpf_object__close(obj);
	return 0;
}
