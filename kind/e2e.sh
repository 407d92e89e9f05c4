#!/usr/bin/env bash
# End-to-end on kind: create the cluster (kind/cluster.yaml), build the image and load it into the
# nodes, install the chart, start two pods on different workers that ping each other, and check
# that the collector's stream (`icmpwatch observe` through `kubectl port-forward`) shows their echo
# requests with both pod names.
#
# For a workstation with Docker, kind, kubectl and helm (on PATH, or the repo's .cache/bin/helm
# from `make k8s-build`); it cannot run on the project's CI machines (no Docker engine there).
# It pulls busybox for the two ping pods (a registry must be reachable).
#
#   kind/e2e.sh              # leaves the cluster running; KEEP=0 deletes it at the end
#   CLUSTER=x kind/e2e.sh    # another cluster name
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${CLUSTER:-icmpwatch}"
IMAGE="${IMAGE:-icmpwatch:e2e}"
NS="${NS:-icmpwatch}"
PING_NS="${PING_NS:-icmpwatch-e2e-$(date +%s)}"
PING_IMAGE="${PING_IMAGE:-busybox:1.36}"
KEEP="${KEEP:-1}"
LOCAL_PORT="${LOCAL_PORT:-14245}"
TIMEOUT="${TIMEOUT:-120}"   # seconds to wait for the events

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'e2e.sh: FAIL: %s\n' "$*" >&2; exit 1; }

HELM="$(command -v helm || true)"
[[ -n "$HELM" ]] || HELM="$REPO/.cache/bin/helm"
for tool in docker kind kubectl "$HELM"; do
  command -v "$tool" >/dev/null 2>&1 || die "needs $tool on PATH"
done

PF_PID=""
cleanup() {
  if [[ -n "$PF_PID" ]]; then kill "$PF_PID" 2>/dev/null || true; fi
  rm -f "${CA_FILE:-}"
  if [[ "$KEEP" == 0 ]]; then kind delete cluster --name "$CLUSTER" || true; fi
}
trap cleanup EXIT

# ---- cluster ------------------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "kind cluster $CLUSTER exists; reusing it"
else
  log "creating kind cluster $CLUSTER (1 control plane, 2 workers)"
  kind create cluster --name "$CLUSTER" --config "$REPO/kind/cluster.yaml" --wait 120s
fi
CTX="kind-$CLUSTER"
k() { kubectl --context "$CTX" "$@"; }

# ---- image --------------------------------------------------------------------------------------
log "building $IMAGE (Dockerfile: make build, then the slim runtime) and loading it into the nodes"
docker build -t "$IMAGE" "$REPO"
kind load docker-image "$IMAGE" --name "$CLUSTER"

# ---- chart --------------------------------------------------------------------------------------
log "installing the chart into namespace $NS"
"$HELM" --kube-context "$CTX" upgrade --install icmpwatch "$REPO/charts/icmpwatch" \
  --namespace "$NS" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --set agent.privileged=true \
  --wait --timeout 5m
k -n "$NS" rollout status daemonset/icmpwatch-agent --timeout 180s
k -n "$NS" rollout status deployment/icmpwatch-collector --timeout 180s
k -n "$NS" get pods -o wide

# ---- two pods on different workers ------------------------------------------------------------
mapfile -t WORKERS < <(k get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
((${#WORKERS[@]} >= 2)) || die "expected two worker nodes, got: ${WORKERS[*]:-none}"
log "starting ping-a on ${WORKERS[0]} and ping-b on ${WORKERS[1]} in namespace $PING_NS"
k create namespace "$PING_NS"
for i in 0 1; do
  name=$([[ $i == 0 ]] && echo ping-a || echo ping-b)
  k -n "$PING_NS" apply -f - <<POD
apiVersion: v1
kind: Pod
metadata:
  name: $name
  labels: {app: icmpwatch-e2e}
spec:
  nodeName: ${WORKERS[$i]}
  terminationGracePeriodSeconds: 0
  containers:
    - name: c
      image: $PING_IMAGE
      command: [sleep, "3600"]
POD
done
k -n "$PING_NS" wait --for=condition=Ready pod/ping-a pod/ping-b --timeout 120s
IP_A="$(k -n "$PING_NS" get pod ping-a -o jsonpath='{.status.podIP}')"
IP_B="$(k -n "$PING_NS" get pod ping-b -o jsonpath='{.status.podIP}')"
log "ping-a $IP_A <-> ping-b $IP_B"

# A subscriber with the chart's namespace viewer role in $PING_NS only, as a namespace owner would be.
k -n "$PING_NS" create serviceaccount e2e-viewer
k -n "$PING_NS" create rolebinding e2e-viewer --clusterrole=icmpwatch-namespace-viewer --serviceaccount="$PING_NS:e2e-viewer"
ICMPWATCH_TOKEN="$(k -n "$PING_NS" create token e2e-viewer)"
export ICMPWATCH_TOKEN

# ---- the collector's stream through a port-forward --------------------------------------------
k -n "$NS" port-forward service/icmpwatch-collector "$LOCAL_PORT:4245" >/dev/null 2>&1 &
PF_PID=$!
sleep 2
# The collector speaks TLS with the chart's generated certificates (they name 127.0.0.1 for
# port-forwards): trust its CA.
CA_FILE="$(mktemp)" && chmod 644 "$CA_FILE"  # a CA is public; the image user reads it
k -n "$NS" get secret icmpwatch-collector-tls -o jsonpath='{.data.ca\.crt}' | base64 -d > "$CA_FILE"
# The CLI: this checkout's (after `make build`), else the image just built.
observe() {
  if [[ -f "$REPO/dist/cli/main.js" && -d "$REPO/node_modules" ]]; then
    "$REPO/bin/icmpwatch" observe --server "127.0.0.1:$LOCAL_PORT" --tls-ca "$CA_FILE" "$@"
  else
    docker run --rm --network host -e ICMPWATCH_TOKEN -v "$CA_FILE:/tmp/ca.crt:ro" "$IMAGE" observe --server "127.0.0.1:$LOCAL_PORT" --tls-ca /tmp/ca.crt "$@"
  fi
}

# has_echo SRC DST: an echo request from pod SRC to pod DST, both named, is in the stream.
has_echo() {
  observe --last 1000 --namespace "$PING_NS" --type echo-request -o json 2>/dev/null \
    | grep "\"source\":{[^}]*\"pod\":\"$1\"" | grep -q "\"destination\":{[^}]*\"pod\":\"$2\""
}

deadline=$((SECONDS + TIMEOUT))
ok_ab=0 ok_ba=0
while ((SECONDS < deadline)); do
  k -n "$PING_NS" exec ping-a -- ping -c 3 -i 0.5 -W 1 "$IP_B" >/dev/null 2>&1 || true
  k -n "$PING_NS" exec ping-b -- ping -c 3 -i 0.5 -W 1 "$IP_A" >/dev/null 2>&1 || true
  has_echo ping-a ping-b && ok_ab=1
  has_echo ping-b ping-a && ok_ba=1
  if ((ok_ab && ok_ba)); then break; fi
  sleep 3
done

log "what the collector streamed (text):"
observe --last 10 --namespace "$PING_NS" || true
((ok_ab)) || die "no echo-request ping-a -> ping-b with both pod names in the collector's stream within ${TIMEOUT}s"
((ok_ba)) || die "no echo-request ping-b -> ping-a with both pod names in the collector's stream within ${TIMEOUT}s"
log "PASS: the collector streams ping-a <-> ping-b with pod names (agent logs: kubectl --context $CTX -n $NS logs daemonset/icmpwatch-agent)"
k delete namespace "$PING_NS" --wait=false >/dev/null
