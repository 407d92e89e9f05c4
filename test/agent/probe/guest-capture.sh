#!/bin/sh
# Runs inside a QEMU guest booting a Debian kernel (test/vm/): the real agent attaches with each
# --probe choice in turn while the guest's root namespace pings a "pod" namespace over a veth.
# Writes, per choice, the agent's JSON event lines and its stderr to $OUT/<choice>.{jsonl,log}.
set -eu
OUT=$1
mkdir -p "$OUT"
ip netns add pod
ip link add vhost type veth peer name eth0 netns pod
ip addr add 10.77.0.1/24 dev vhost
ip addr add fd77::1/64 dev vhost nodad
ip link set vhost up
ip -n pod link set lo up
ip -n pod addr add 10.77.0.2/24 dev eth0
ip -n pod addr add fd77::2/64 dev eth0 nodad
ip -n pod link set eth0 up
ping -c 1 -W 5 10.77.0.2 >/dev/null
ping -6 -c 1 -W 5 fd77::2 >/dev/null
cat /proc/kallsyms | grep -E ' (ip_rcv_core|ip6_rcv_core)' > "$OUT/kallsyms.txt" || true
./bin/icmpwatch probe -o json > "$OUT/probe.json" || true

for choice in kretprobe fexit auto; do
  ./bin/icmpwatch agent --probe "$choice" --log-format json --metrics-addr off --node-name guest \
    > "$OUT/$choice.jsonl" 2> "$OUT/$choice.log" &
  pid=$!
  i=0
  until grep -q '"agent running"' "$OUT/$choice.log" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 300 ] || ! kill -0 "$pid" 2>/dev/null; then echo "agent --probe $choice did not start"; cat "$OUT/$choice.log"; break; fi
    sleep 0.1
  done
  ping -c 3 -i 0.2 10.77.0.2 >/dev/null
  ping -6 -c 3 -i 0.2 fd77::2 >/dev/null
  sleep 0.5
  kill -TERM "$pid"
  wait "$pid" && echo "$choice exit 0" || echo "$choice exit $?"
done
