#!/bin/sh
# Runs inside a QEMU guest booting a Debian kernel (test/vm/), the one boot per kernel that
# test/agent/probe/guest-kernels.test.ts asks for. Writes to $OUT:
#   fact-<name>.txt/.rc      what the harness must provide (kernel, BTF, kallsyms, Node, netns, kprobes)
#   probe.json               `icmpwatch probe -o json`
#   <choice>.jsonl/.log      per --probe choice: the agent's JSON event lines and its stderr, while
#                            the guest's root namespace pings a "pod" namespace over a veth
#   <choice>.metrics-{before,v4,v6}  its /metrics before and after sending $OUT/drop-v4.hex, then
#                            drop-v6.hex (frames ip_rcv_core/ip6_rcv_core drop) from the pod (AF_PACKET)
#   timings.txt              seconds per step (the guest is slow: TCG)
set -eu
OUT=$1
METRICS=127.0.0.1:9464
now() { date +%s%N; }
t0=$(now)
step() { echo "$1 $((($(now) - t0) / 1000000)) ms" >>"$OUT/timings.txt"; }

# One file per fact with the command's exit code, so one failure hides nothing else.
fact() {
  name=$1
  shift
  rc=0
  "$@" >"$OUT/fact-$name.txt" 2>&1 || rc=$?
  echo "$rc" >"$OUT/fact-$name.rc"
}
fact uname uname -r
fact version cat /proc/version
fact btf test -s /sys/kernel/btf/vmlinux
fact kallsyms grep -E ' (ip_rcv_core|ip6_rcv_core)(\.|$)' /proc/kallsyms
fact node node --version
fact kprobe sh -c 'bpftool feature probe kernel | grep -i "program_type kprobe"'
step facts

ip netns add pod
ip link add vhost address 02:00:00:77:00:01 type veth peer name eth0 address 02:00:00:77:00:02 netns pod
ip addr add 10.77.0.1/24 dev vhost
ip addr add fd77::1/64 dev vhost nodad
ip link set vhost up
ip -n pod link set lo up
ip -n pod addr add 10.77.0.2/24 dev eth0
ip -n pod addr add fd77::2/64 dev eth0 nodad
ip -n pod link set eth0 up
fact netns ping -c 1 -W 5 10.77.0.2
fact netns6 ping -6 -c 1 -W 5 fd77::2
step netns

./bin/icmpwatch probe -o json >"$OUT/probe.json" || true
step probe

scrape() {
  python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' \
    "http://$METRICS/metrics" >"$1"
}

for choice in kretprobe fexit auto; do
  ./bin/icmpwatch agent --probe "$choice" --log-format json --metrics-addr "$METRICS" --node-name guest \
    >"$OUT/$choice.jsonl" 2>"$OUT/$choice.log" &
  pid=$!
  i=0
  until grep -q '"agent running"' "$OUT/$choice.log" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 1200 ] || ! kill -0 "$pid" 2>/dev/null; then echo "agent --probe $choice did not start"; cat "$OUT/$choice.log"; break; fi
    sleep 0.1
  done
  step "$choice-running"
  ping -c 3 -i 0.2 10.77.0.2 >/dev/null
  ping -6 -c 3 -i 0.2 fd77::2 >/dev/null
  scrape "$OUT/$choice.metrics-before" || true
  for family in v4 v6; do
    ip netns exec pod python3 test/agent/send-frames.py eth0 <"$OUT/drop-$family.hex"
    sleep 0.3
    scrape "$OUT/$choice.metrics-$family" || true
  done
  kill -TERM "$pid"
  if wait "$pid"; then echo "$choice exit 0"; else echo "$choice exit $?"; fi
  step "$choice-done"
done
