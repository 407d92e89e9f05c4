// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * icmpgen: paced ICMP echo request generator for `make bench`.
 *
 * A raw IPPROTO_ICMP socket (the kernel writes the IP header) sending echo requests with
 * sendmmsg, in batches paced against absolute deadlines, so the offered rate is fixed.
 * Echo ids run from --id upwards (one id per 65536 sequence numbers), seq from 0, so every
 * request is identifiable. The socket filters out every ICMP type on receive (ICMP_FILTER):
 * replies are still received and processed by the kernel (and seen by any probe), but are not
 * queued to this socket. On a veth, the whole receive path (request in the peer namespace,
 * the kernel's echo reply, its receipt here) runs on this thread's CPU inside sendmmsg, so the
 * achieved rate drops when something on the receive path costs more.
 *
 * Usage: icmpgen -d DST -n COUNT [-r REQUESTS_PER_S (0 = as fast as possible)] [-i ID] [-s PAYLOAD]
 * Prints one JSON line: {"sent":..,"errors":..,"elapsed_s":..,"rate":..,"first_id":..,"last_id":..}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/icmp.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 64

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint16_t csum(const void *data, size_t len)
{
	const uint16_t *p = data;
	uint32_t sum = 0;

	for (; len > 1; len -= 2)
		sum += *p++;
	if (len)
		sum += *(const uint8_t *)p;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

static void usage(void)
{
	fprintf(stderr, "usage: icmpgen -d DST -n COUNT [-r REQ_PER_S] [-i ID] [-s PAYLOAD]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *dst = NULL;
	uint64_t count = 0, rate = 0, id0 = 40000, payload = 56;
	int opt;

	while ((opt = getopt(argc, argv, "d:n:r:i:s:")) != -1) {
		switch (opt) {
		case 'd': dst = optarg; break;
		case 'n': count = strtoull(optarg, NULL, 10); break;
		case 'r': rate = strtoull(optarg, NULL, 10); break;
		case 'i': id0 = strtoull(optarg, NULL, 10); break;
		case 's': payload = strtoull(optarg, NULL, 10); break;
		default: usage();
		}
	}
	if (!dst || !count || payload > 1400 || id0 > 65535)
		usage();

	int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	if (fd < 0) {
		perror("icmpgen: socket");
		return 1;
	}
	uint32_t filter = ~0u; /* drop every type from this socket's receive queue */
	if (setsockopt(fd, SOL_RAW, ICMP_FILTER, &filter, sizeof(filter)) < 0)
		perror("icmpgen: ICMP_FILTER (continuing)");
	int sndbuf = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));

	struct sockaddr_in to = { .sin_family = AF_INET };
	if (inet_pton(AF_INET, dst, &to.sin_addr) != 1)
		usage();

	/* Batch size: about 0.5 ms of traffic per sendmmsg at the paced rate, at most 64. */
	uint64_t batch = rate ? rate / 2000 : MAX_BATCH;
	if (batch < 1)
		batch = 1;
	if (batch > MAX_BATCH)
		batch = MAX_BATCH;

	size_t len = sizeof(struct icmphdr) + payload;
	static uint8_t bufs[MAX_BATCH][sizeof(struct icmphdr) + 1400];
	struct iovec iov[MAX_BATCH];
	struct mmsghdr msgs[MAX_BATCH];
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < MAX_BATCH; i++) {
		for (size_t j = sizeof(struct icmphdr); j < len; j++)
			bufs[i][j] = (uint8_t)j;
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = len;
		msgs[i].msg_hdr.msg_name = &to;
		msgs[i].msg_hdr.msg_namelen = sizeof(to);
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}

	uint64_t sent = 0, errors = 0, next = 0;
	uint64_t t0 = now_ns();
	while (sent < count) {
		uint64_t n = count - sent < batch ? count - sent : batch;
		if (rate) {
			/* Absolute deadline of this batch: no drift, and a late sender catches up. */
			uint64_t due = t0 + (uint64_t)((double)sent * 1e9 / (double)rate);
			uint64_t t = now_ns();
			if (due > t + 20000) {
				struct timespec ts = { .tv_sec = due / 1000000000ull, .tv_nsec = due % 1000000000ull };
				clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
			}
		}
		for (uint64_t i = 0; i < n; i++) {
			uint64_t k = next + i;
			struct icmphdr *h = (struct icmphdr *)bufs[i];
			h->type = ICMP_ECHO;
			h->code = 0;
			h->checksum = 0;
			h->un.echo.id = htons((uint16_t)(id0 + (k >> 16)));
			h->un.echo.sequence = htons((uint16_t)(k & 0xffff));
			h->checksum = csum(h, len);
		}
		int r = sendmmsg(fd, msgs, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ENOBUFS || errno == EAGAIN) {
				errors++;
				continue; /* retry the same requests */
			}
			perror("icmpgen: sendmmsg");
			return 1;
		}
		sent += r;
		next += r;
	}
	double elapsed = (now_ns() - t0) / 1e9;
	printf("{\"sent\":%llu,\"errors\":%llu,\"elapsed_s\":%.6f,\"rate\":%.0f,\"offered_rate\":%llu,"
	       "\"first_id\":%llu,\"last_id\":%llu,\"batch\":%llu}\n",
	       (unsigned long long)sent, (unsigned long long)errors, elapsed, sent / elapsed,
	       (unsigned long long)rate, (unsigned long long)id0,
	       (unsigned long long)(id0 + ((count - 1) >> 16)), (unsigned long long)batch);
	return 0;
}
