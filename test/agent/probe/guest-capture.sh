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
#   <choice>.diagnostics     only when the agent did not start in time: what it and the kernel did
set -eu
OUT=$1
METRICS=127.0.0.1:9464
# Normally 12-20 s under TCG. A wall-clock deadline: `sleep 0.1` can last far longer in a slow guest.
START_DEADLINE_S=120
failed=0
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

# What a stuck agent start was doing: its threads' kernel stacks and syscalls, a Node diagnostic
# report (JS stack, once the main thread is back from the kernel), every blocked task (sysrq w),
# and what the guest was up to.
diagnose() {
  pid=$1
  log=$2
  echo "=== agent pid $pid not running after ${START_DEADLINE_S} s (wall clock); guest uptime $(cut -d' ' -f1 /proc/uptime) s"
  echo "=== loadavg: $(cat /proc/loadavg)"
  for f in cpu memory io; do echo "=== pressure $f: $(tr '\n' ' ' </proc/pressure/$f 2>/dev/null)"; done
  echo "=== crng: $(dmesg | grep -i 'crng init' || echo 'not initialised (getrandom blocks)')"
  for t in /proc/"$pid"/task/*; do
    echo "=== thread ${t##*/} $(cat "$t/comm" 2>/dev/null) $(grep '^State' "$t/status" 2>/dev/null) wchan=$(cat "$t/wchan" 2>/dev/null) syscall=$(cut -d' ' -f1 "$t/syscall" 2>/dev/null)"
    cat "$t/stack" 2>/dev/null || true
  done
  echo "=== agent stderr (last 40 lines)"
  tail -n 40 "$log" || true
  echo "=== kprobes: optimization=$(cat /proc/sys/debug/kprobes-optimization 2>/dev/null)"
  cat /sys/kernel/debug/kprobes/list 2>/dev/null || true
  echo "=== top CPU users"
  for p in /proc/[0-9]*; do
    [ -r "$p/stat" ] && awk '{ print $14 + $15, $1, $2, $3 }' "$p/stat" 2>/dev/null
  done | sort -rn | head -n 8
  echo w >/proc/sysrq-trigger 2>/dev/null || true # blocked tasks, into dmesg
  sleep 2
  echo "=== dmesg (last 120 lines)"
  dmesg | tail -n 120
  # Last: before Node installs its handler, SIGUSR2 ends the process. Node writes the report into
  # $OUT (NODE_OPTIONS below) once its main thread is back from the kernel.
  kill -USR2 "$pid" 2>/dev/null || true
  sleep 5
  ls "$OUT"/report.*.json 2>/dev/null || echo "=== no Node report (main thread still in the kernel?)"
}

scrape() {
  python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' \
    "http://$METRICS/metrics" >"$1"
}

for choice in kretprobe fexit auto; do
  NODE_OPTIONS="--report-on-signal --report-signal=SIGUSR2 --report-directory=$OUT" \
    ./bin/icmpwatch agent --probe "$choice" --log-format json --metrics-addr "$METRICS" --node-name guest \
    >"$OUT/$choice.jsonl" 2>"$OUT/$choice.log" &
  pid=$!
  deadline=$(($(date +%s) + START_DEADLINE_S))
  until grep -q '"agent running"' "$OUT/$choice.log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "agent --probe $choice exited before running"
      cat "$OUT/$choice.log"
      failed=1
      break
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "agent --probe $choice did not start within ${START_DEADLINE_S} s"
      diagnose "$pid" "$OUT/$choice.log" 2>&1 | tee "$OUT/$choice.diagnostics"
      failed=1
      break
    fi
    sleep 0.2
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
  kill -TERM "$pid" 2>/dev/null || true
  if wait "$pid"; then echo "$choice exit 0"; else echo "$choice exit $?"; fi
  step "$choice-done"
done
exit "$failed"
