// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * linesink: reads a consumer's stdout (the agent's JSON event lines, bpftrace's lines) and counts
 * them, so that `make bench` can check what was reported without parsing JSON in the runner.
 *
 * Counts: every line; lines containing MARKER (the bench's address prefix, e.g. "10.231.");
 * bpftrace's "Lost N events" lines (N summed); of the matched lines, those carrying a flood summary ("summary":{"packets":N) and the sum of their N.
 * On SIGUSR1 and at end of input prints one JSON line:
 * {"lines":..,"matched":..,"summaries":..,"summary_packets":..,"bytes":..}
 *
 * Usage: linesink MARKER
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t report;
static unsigned long long lines, matched, summaries, summary_packets, bytes, lost;
static const char *marker;
static size_t marker_len;

static void on_usr1(int sig)
{
	(void)sig;
	report = 1;
}

static void print_counts(void)
{
	printf("{\"lines\":%llu,\"matched\":%llu,\"summaries\":%llu,\"summary_packets\":%llu,\"bytes\":%llu,\"lost\":%llu}\n",
	       lines, matched, summaries, summary_packets, bytes, lost);
	fflush(stdout);
}

static void line(const char *s, size_t n)
{
	static const char key[] = "\"summary\":{\"packets\":";

	lines++;
	if (n > 5 && !memcmp(s, "Lost ", 5)) { /* bpftrace: "Lost N events" on stdout */
		lost += strtoull(s + 5, NULL, 10);
		return;
	}
	if (!memmem(s, n, marker, marker_len))
		return;
	matched++;
	/* A summary closes its line (then only "sequence"): search its tail, not the whole line. */
	size_t tail = n < 256 ? n : 256;
	const char *p = memmem(s + n - tail, tail, key, sizeof(key) - 1);
	if (p) {
		summaries++;
		summary_packets += strtoull(p + sizeof(key) - 1, NULL, 10);
	}
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: linesink MARKER\n");
		return 2;
	}
	marker = argv[1];
	marker_len = strlen(marker);
	struct sigaction sa = { .sa_handler = on_usr1 }; /* no SA_RESTART: read() returns EINTR */
	sigaction(SIGUSR1, &sa, NULL);
	/* stdin may be a FIFO the runner opened non-blocking: read it blocking. */
	fcntl(0, F_SETFL, fcntl(0, F_GETFL) & ~O_NONBLOCK);
	/*
	 * A 1 MiB pipe (the default maximum) instead of 64 KiB: the writer and this reader share one
	 * CPU, and a small pipe makes them switch every 64 KiB. Not fatal if refused.
	 */
	fcntl(0, F_SETPIPE_SZ, 1 << 20);

	size_t cap = 1 << 20, have = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (report) {
			report = 0;
			print_counts();
		}
		if (have == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
		ssize_t r = read(0, buf + have, cap - have);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			perror("linesink: read");
			return 1;
		}
		if (r == 0)
			break;
		bytes += r;
		have += r;
		char *start = buf, *end = buf + have, *nl;
		while ((nl = memchr(start, '\n', end - start))) {
			line(start, nl - start);
			start = nl + 1;
		}
		have = end - start;
		memmove(buf, start, have);
	}
	if (have)
		line(buf, have);
	print_counts();
	return 0;
}
