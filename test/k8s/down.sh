#!/usr/bin/env bash
# Stop the control plane started by up.sh (TERM, then KILL after a grace
# period) and delete its state (<repo>/.cache/k8s).  Built binaries stay.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
STATE="$REPO_ROOT/.cache/k8s"
BIN="$REPO_ROOT/.cache/bin"
GRACE="${ICMPWATCH_K8S_STOP_GRACE:-10}"

log() { printf 'down.sh: %s\n' "$*" >&2; }

if [[ "${ICMPWATCH_K8S_NOLOCK:-}" != 1 ]] && command -v flock >/dev/null 2>&1 && [[ -d "$REPO_ROOT/.cache" ]]; then
  exec 9>"$REPO_ROOT/.cache/k8s.lock"
  flock -w 120 9 || { log "another up.sh/down.sh holds $REPO_ROOT/.cache/k8s.lock"; exit 1; }
fi

# our_pid NAME: print the pid from $STATE/NAME.pid if it is alive and is our binary.
our_pid() {
  local f="$STATE/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(<"$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] && [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n 1p | grep -qx -- "$BIN/$1" || return 1
  printf '%s\n' "$pid"
}

# alive PID: running and not a zombie (pid 1 may be slow to reap).
alive() {
  local st
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$st" && "$st" != Z && "$st" != X ]]
}

stopped=0
# Stop the apiserver first so it does not log etcd connection errors.
for name in kube-apiserver etcd; do
  pid="$(our_pid "$name")" || continue
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < GRACE * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "$name (pid $pid) still running after ${GRACE}s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
  fi
  stopped=$((stopped + 1))
done

if [[ -d "$STATE" ]]; then
  rm -rf "$STATE"
  log "removed $STATE"
fi
if ((stopped == 0)); then
  log "nothing was running"
fi
log "binaries kept in $BIN (cache: ${ICMPWATCH_CACHE:-${HOME:-/root}/.cache/icmpwatch}/bin)"
