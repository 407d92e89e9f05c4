#!/usr/bin/env bash
# Build (once per pinned version) the helm CLI from source through the Go
# module proxy, cache it outside the repo and symlink it into <repo>/.cache/bin,
# beside etcd and kube-apiserver.  Same conventions as build.sh; see
# test/k8s/README.md.  Used by the chart tests (test/deploy/).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

# ---- pinned version (changing it rebuilds helm) ----------------------------
HELM_VERSION="v3.22.0"    # helm.sh/helm/v3, package cmd/helm
# ---------------------------------------------------------------------------

# shellcheck source=test/k8s/go-env.sh
source "$SCRIPT_DIR/go-env.sh"

log() { printf 'build-helm.sh: %s\n' "$*" >&2; }

WD=""
cleanup() { if [[ -n "$WD" ]]; then rm -rf "$WD"; fi; }
trap cleanup EXIT

out="$BIN_CACHE/helm-$HELM_VERSION"
if [[ -x "$out" ]]; then
  log "helm $HELM_VERSION already built: $out"
else
  log "building helm $HELM_VERSION (helm.sh/helm/v3/cmd/helm) with $("$GO" version)"
  start=$SECONDS
  WD="$(mktemp -d "$CACHE_DIR/tmp/helm.XXXXXX")"
  # A scratch module that requires helm (as build.sh does for etcd and
  # kube-apiserver): `go install pkg@version` refuses modules whose go.mod has
  # replace directives, and a dependency's replace directives are ignored, so
  # helm's non-local ones (if any) are copied here.
  hmod="$(cd "$WD" && printf 'module icmpwatch.local/build/helm\n\ngo 1.26.0\n' >go.mod \
    && "$GO" mod download -json "helm.sh/helm/v3@$HELM_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$hmod" ]] || { log "could not download helm.sh/helm/v3@$HELM_VERSION"; exit 1; }
  replaces="$(awk '
    /^replace \(/ {inrep=1; next}
    inrep && /^\)/ {inrep=0; next}
    inrep && /=>/ {print; next}
    /^replace [^(]/ {sub(/^replace /, ""); print}' "$hmod" | grep -v '=>[[:space:]]*\.' || true)"
  {
    printf 'module icmpwatch.local/build/helm\n\ngo 1.26.0\n\nrequire helm.sh/helm/v3 %s\n' "$HELM_VERSION"
    if [[ -n "$replaces" ]]; then printf '\nreplace (\n%s\n)\n' "$replaces"; fi
  } >"$WD/go.mod"
  # What helm's own Makefile stamps in: its version, and the Kubernetes
  # version `helm template`/`lint` assume (client-go v0.X.Y -> 1.X).
  kver="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$hmod")"
  kminor="${kver#v0.}"; kminor="${kminor%%.*}"
  ldx="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldx+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  if [[ "$kminor" =~ ^[0-9]+$ ]]; then
    for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      ldx+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$kminor"
    done
  fi
  (cd "$WD" && "$GO" build -trimpath -ldflags="-s -w $ldx" -o "$out.tmp" helm.sh/helm/v3/cmd/helm)
  mv -f "$out.tmp" "$out"
  log "built $out in $((SECONDS - start)) s"
fi
ln -sfn "$out" "$LINK_DIR/helm"
log "$LINK_DIR/helm -> $out"
"$LINK_DIR/helm" version --short >&2
