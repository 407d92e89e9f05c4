#!/usr/bin/env bash
# Build (once per pinned version) etcd and kube-apiserver from source through
# the Go module proxy, cache them outside the repo and symlink them into
# <repo>/.cache/bin.  See test/k8s/README.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

# ---- pinned versions (changing one rebuilds that binary) -------------------
K8S_VERSION="v1.37.2"     # k8s.io/kubernetes; staging modules use v0.<minor>.<patch>
ETCD_VERSION="v3.7.3"     # go.etcd.io/etcd/server/v3 (k8s v1.37 recommends etcd 3.7)
# ---------------------------------------------------------------------------

# shellcheck source=test/k8s/go-env.sh
source "$SCRIPT_DIR/go-env.sh"

log() { printf 'build.sh: %s\n' "$*" >&2; }

# new_workdir NAME: sets WD to a fresh scratch module dir under the cache
# (removed on exit; not in /tmp so a small tmpfs does not matter).
WORKDIRS=()
cleanup() { local d; for d in "${WORKDIRS[@]:-}"; do if [[ -n "$d" ]]; then rm -rf "$d"; fi; done; }
trap cleanup EXIT
new_workdir() {
  WD="$(mktemp -d "$CACHE_DIR/tmp/$1.XXXXXX")"
  WORKDIRS+=("$WD")
}

link() { # link NAME TARGET
  ln -sfn "$2" "$LINK_DIR/$1"
  log "$LINK_DIR/$1 -> $2"
}

build_etcd() {
  local out="$BIN_CACHE/etcd-$ETCD_VERSION"
  if [[ -x "$out" ]]; then
    log "etcd $ETCD_VERSION already built: $out"
  else
    log "building etcd $ETCD_VERSION (go.etcd.io/etcd/server/v3) with $("$GO" version)"
    local start=$SECONDS wd
    new_workdir etcd; wd="$WD"
    # etcd's own go.mod has ./ replace directives, so `go install pkg@version`
    # refuses it; a scratch module that requires it works.
    cat >"$wd/go.mod" <<MOD
module icmpwatch.local/build/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
    (cd "$wd" && "$GO" mod download go.etcd.io/etcd/server/v3 \
      && "$GO" build -trimpath -ldflags='-s -w' -o "$out.tmp" go.etcd.io/etcd/server/v3)
    mv -f "$out.tmp" "$out"
    log "built $out in $((SECONDS - start)) s"
  fi
  link etcd "$out"
}

build_kube_apiserver() {
  local out="$BIN_CACHE/kube-apiserver-$K8S_VERSION"
  if [[ -x "$out" ]]; then
    log "kube-apiserver $K8S_VERSION already built: $out"
  else
    local staging_version="v0.${K8S_VERSION#v1.}"
    log "building kube-apiserver $K8S_VERSION (k8s.io/kubernetes/cmd/kube-apiserver, staging modules $staging_version) with $("$GO" version)"
    local start=$SECONDS wd kmod
    new_workdir kube-apiserver; wd="$WD"
    # k8s.io/kubernetes's go.mod requires its staging modules at v0.0.0 and
    # replaces them with ./staging/...; replace directives of a dependency are
    # ignored, so re-map each one to its published version here.
    kmod="$(cd "$wd" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
      | sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')"
    [[ -f "$kmod" ]] || { log "could not download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
    local staging
    staging="$(awk '
      /^replace \(/ {inrep=1; next}
      inrep && /^\)/ {inrep=0}
      inrep && $2 == "=>" && $3 ~ /^\.\/staging\// {staged[$1]=1}
      /^require \(/ {inreq=1; next}
      inreq && /^\)/ {inreq=0}
      inreq && $1 ~ /^k8s\.io\// {req[$1]=1}
      END {for (m in staged) if (m in req) print m}' "$kmod" | sort)"
    [[ -n "$staging" ]] || { log "found no staging modules in $kmod"; exit 1; }
    {
      printf 'module icmpwatch.local/build/kube-apiserver\n\ngo 1.26.0\n\n'
      printf 'require k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
      local m
      for m in $staging; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_version"; done
      printf ')\n'
    } >"$wd/go.mod"
    log "scratch go.mod replaces $(wc -w <<<"$staging") staging modules with $staging_version"
    local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
    local vpkg ldx=""
    for vpkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldx+=" -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
      ldx+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z -X $vpkg.gitCommit=$K8S_VERSION"
    done
    (cd "$wd" && "$GO" build -trimpath -ldflags="-s -w$ldx" -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
    mv -f "$out.tmp" "$out"
    log "built $out in $((SECONDS - start)) s"
  fi
  link kube-apiserver "$out"
}

build_etcd
build_kube_apiserver
"$LINK_DIR/etcd" --version | sed -n 1p >&2  # sed reads to the end: no SIGPIPE under pipefail
"$LINK_DIR/kube-apiserver" --version >&2
