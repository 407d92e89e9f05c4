# Sourced by build.sh and build-helm.sh: where built binaries are cached (outside the repo, keyed by
# version, linked into <repo>/.cache/bin) and the private Go environment they share, so modules
# common to kube-apiserver and helm are downloaded once. Expects REPO_ROOT to be set.
CACHE_DIR="${ICMPWATCH_CACHE:-${HOME:-/root}/.cache/icmpwatch}"
BIN_CACHE="$CACHE_DIR/bin"
LINK_DIR="$REPO_ROOT/.cache/bin"

GO="${GO:-}"
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else echo "$(basename "$0"): no Go toolchain found (set GO=/path/to/go)" >&2; exit 1
  fi
fi

export GOPATH="$CACHE_DIR/go"
export GOMODCACHE="$CACHE_DIR/go/pkg/mod"
export GOCACHE="$CACHE_DIR/go-build"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN=local          # never try to download another toolchain
export CGO_ENABLED=0              # static binaries, no C compiler needed
# GOPROXY and GOSUMDB stay at Go's defaults: modules and checksums both come through the module proxy.

mkdir -p "$BIN_CACHE" "$LINK_DIR" "$CACHE_DIR/tmp"
