#!/usr/bin/env bash
# Start a throwaway Kubernetes control plane (etcd + kube-apiserver, no
# controller-manager, no scheduler, no kubelet) on 127.0.0.1 for tests.
# Writes <repo>/.cache/k8s/kubeconfig.  Idempotent.  Stop with down.sh.
# See test/k8s/README.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

STATE="$REPO_ROOT/.cache/k8s"
PKI="$STATE/pki"
BIN="$REPO_ROOT/.cache/bin"
KUBECONFIG_OUT="$STATE/kubeconfig"

ETCD_CLIENT_PORT="${ICMPWATCH_ETCD_CLIENT_PORT:-23790}"
ETCD_PEER_PORT="${ICMPWATCH_ETCD_PEER_PORT:-23800}"
APISERVER_PORT="${ICMPWATCH_APISERVER_PORT:-16443}"
SERVICE_CIDRS="10.96.0.0/16,fd00:96::/108"
SA_ISSUER="https://kubernetes.default.svc.cluster.local"
READY_TIMEOUT="${ICMPWATCH_K8S_READY_TIMEOUT:-60}"

ETCD_URL="http://127.0.0.1:$ETCD_CLIENT_PORT"
API_URL="https://127.0.0.1:$APISERVER_PORT"

log() { printf 'up.sh: %s\n' "$*" >&2; }
die() { printf 'up.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# ---- tools -----------------------------------------------------------------
missing=()
for tool in openssl curl base64 setsid; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl curl coreutils util-linux >&2
  else
    die "missing tools: ${missing[*]} (apt-get install openssl curl coreutils util-linux)"
  fi
fi

mkdir -p "$REPO_ROOT/.cache"
# Serialise concurrent up/down runs in this checkout.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$REPO_ROOT/.cache/k8s.lock"
  flock -w 120 9 || die "another up.sh/down.sh holds $REPO_ROOT/.cache/k8s.lock"
fi

admin_curl() {
  curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@"
}

# pid_alive NAME: the pid in $STATE/NAME.pid is alive and runs our binary.
pid_alive() {
  local f="$STATE/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(<"$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] && [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n 1p | grep -qx -- "$BIN/$1" || return 1
}

is_ready() {
  pid_alive etcd && pid_alive kube-apiserver && [[ -f "$KUBECONFIG_OUT" ]] \
    && [[ "$(admin_curl "$API_URL/readyz" 2>/dev/null)" == ok ]]
}

# port_busy PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---- already up? -------------------------------------------------------------
if is_ready; then
  log "already up and ready at $API_URL (etcd pid $(<"$STATE/etcd.pid"), kube-apiserver pid $(<"$STATE/kube-apiserver.pid"))"
  log "kubeconfig: $KUBECONFIG_OUT"
  echo "$KUBECONFIG_OUT"
  exit 0
fi

if [[ -d "$STATE" ]]; then
  log "found a stale or half-started control plane in $STATE; cleaning it up"
  ICMPWATCH_K8S_NOLOCK=1 "$SCRIPT_DIR/down.sh"
fi

# ---- binaries ---------------------------------------------------------------
"$SCRIPT_DIR/build.sh"

for p in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT"; do
  if port_busy "$p"; then
    die "127.0.0.1:$p is already in use by another process (not ours: no pid file in $STATE). Stop it, or set ICMPWATCH_ETCD_CLIENT_PORT / ICMPWATCH_ETCD_PEER_PORT / ICMPWATCH_APISERVER_PORT."
  fi
done

START=$SECONDS
mkdir -p "$STATE/etcd" "$PKI"
chmod 700 "$STATE/etcd" "$PKI"

# ---- PKI (fresh for every start) --------------------------------------------
log "generating CA, serving, admin client and service-account keys in $PKI"
(
  cd "$PKI"
  ossl() { openssl "$@" 2>/dev/null; }
  ec_key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

  ec_key ca.key
  ossl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=icmpwatch-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out ca.crt

  # sign NAME SUBJECT EXTFILE-CONTENT
  sign() {
    ec_key "$1.key"
    ossl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    printf '%s\n' "$3" >"$1.ext"
    ossl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 \
      -extfile "$1.ext" -out "$1.crt"
    rm -f "$1.csr" "$1.ext"
  }
  sign apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1,IP:fd00:96::1"
  sign admin "/O=system:masters/CN=icmpwatch-admin" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"

  # Service-account token signing key pair.
  ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
  ossl pkey -in sa.key -pubout -out sa.pub
  chmod 600 ./*.key
) || die "openssl failed to create the PKI in $PKI"

# ---- start a detached process ------------------------------------------------
# start NAME BINARY ARGS...: runs in its own session, survives this script; the
# pid file holds the pid of the binary itself (bash execs into it).
start() {
  local name="$1"; shift
  log "starting $name (log: $STATE/$name.log)"
  # shellcheck disable=SC2016  # $$/$0/$@ expand in the inner bash
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$STATE/$name.pid" "$@" \
    >"$STATE/$name.log" 2>&1 </dev/null 9>&- &
  local _
  for _ in $(seq 50); do [[ -s "$STATE/$name.pid" ]] && break; sleep 0.1; done
}

fail() { # fail MESSAGE LOGNAME
  log "ERROR: $1"
  if [[ -f "$STATE/$2.log" ]]; then
    log "last lines of $STATE/$2.log:"
    tail -n 40 "$STATE/$2.log" >&2
  fi
  log "stopping what was started; logs stay in $STATE until the next up.sh/down.sh"
  local n pid
  for n in kube-apiserver etcd; do
    if pid_alive "$n"; then pid="$(<"$STATE/$n.pid")"; kill -TERM "$pid" 2>/dev/null || true; fi
  done
  sleep 2
  for n in kube-apiserver etcd; do
    if pid_alive "$n"; then pid="$(<"$STATE/$n.pid")"; kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$STATE/$n.pid"
  done
  exit 1
}

deadline=$((SECONDS + READY_TIMEOUT))

start etcd "$BIN/etcd" \
  --name=icmpwatch \
  --data-dir="$STATE/etcd" \
  --listen-client-urls="$ETCD_URL" \
  --advertise-client-urls="$ETCD_URL" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="icmpwatch=http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster-state=new \
  --initial-cluster-token=icmpwatch \
  --unsafe-no-fsync=true \
  --log-level=warn

until [[ "$(curl -sS --max-time 2 "$ETCD_URL/health" 2>/dev/null)" == *'"health":"true"'* ]]; do
  pid_alive etcd || fail "etcd exited during start-up" etcd
  ((SECONDS < deadline)) || fail "etcd not healthy at $ETCD_URL/health after ${READY_TIMEOUT}s" etcd
  sleep 0.2
done
log "etcd healthy at $ETCD_URL after $((SECONDS - START)) s"

start kube-apiserver "$BIN/kube-apiserver" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$APISERVER_PORT" \
  --cert-dir="$PKI" \
  --tls-cert-file="$PKI/apiserver.crt" \
  --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --etcd-servers="$ETCD_URL" \
  --authorization-mode=Node,RBAC \
  --service-account-issuer="$SA_ISSUER" \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDRS" \
  --endpoint-reconciler-type=none \
  --allow-privileged=true \
  --profiling=false

until [[ "$(admin_curl "$API_URL/readyz" 2>/dev/null)" == ok ]]; do
  pid_alive kube-apiserver || fail "kube-apiserver exited during start-up" kube-apiserver
  ((SECONDS < deadline)) || fail "kube-apiserver not ready at $API_URL/readyz after ${READY_TIMEOUT}s ($(admin_curl "$API_URL/readyz?verbose" 2>&1 | grep -v '^\[+\]' | tr '\n' ' '))" kube-apiserver
  sleep 0.3
done
log "kube-apiserver ready at $API_URL after $((SECONDS - START)) s"

# ---- kubeconfig (certificates embedded) ---------------------------------------
b64() { base64 -w0 <"$1"; }
umask 077
cat >"$KUBECONFIG_OUT.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: icmpwatch
  cluster:
    server: $API_URL
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: icmpwatch-admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
contexts:
- name: icmpwatch
  context:
    cluster: icmpwatch
    user: icmpwatch-admin
    namespace: default
current-context: icmpwatch
EOF
mv -f "$KUBECONFIG_OUT.tmp" "$KUBECONFIG_OUT"

# ---- the "default" ServiceAccount ---------------------------------------------
# No controller-manager runs, so nothing creates "default" ServiceAccounts; the
# ServiceAccount admission plugin rejects pods without one.  Create it in the
# namespaces that exist now; tests must create it in namespaces they make.
for ns in default kube-system; do
  until code="$(admin_curl -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
      -d '{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"}}' \
      "$API_URL/api/v1/namespaces/$ns/serviceaccounts")" && [[ "$code" == 201 || "$code" == 409 ]]; do
    ((SECONDS < deadline + 30)) || fail "could not create ServiceAccount $ns/default (HTTP ${code:-none})" kube-apiserver
    sleep 0.3
  done
done

log "up in $((SECONDS - START)) s: etcd pid $(<"$STATE/etcd.pid"), kube-apiserver pid $(<"$STATE/kube-apiserver.pid")"
log "kubeconfig: $KUBECONFIG_OUT"
echo "--- $KUBECONFIG_OUT ---" >&2
cat "$KUBECONFIG_OUT" >&2
echo "$KUBECONFIG_OUT"
