#!/usr/bin/env bash
# Stop and delete the local cluster made by hack/cluster-up.sh (processes,
# etcd data, pki, logs under $KWOK_WORKDIR/clusters/<name>/) and remove
# KUBECONFIG_OUT if it is still the kubeconfig cluster-up wrote for it.
# Idempotent: no cluster -> says so, exits 0. Same environment as cluster-up.sh
# (DETINFER_CLUSTER_NAME, KUBECONFIG_OUT, DETINFER_CACHE, KWOK_WORKDIR).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
source "${HACK_DIR}/versions.env"

CACHE="${DETINFER_CACHE:-${HOME}/.cache/detinfer}"
CLUSTER_NAME="${DETINFER_CLUSTER_NAME:-detinfer}"
KUBECONFIG_OUT="${KUBECONFIG_OUT:-${CACHE}/kubeconfig}"
export KWOK_WORKDIR="${KWOK_WORKDIR:-${CACHE}/kwok}"
KWOKCTL="${CACHE}/bin/kwokctl-${KWOK_VERSION}/kwokctl"

log() { printf 'cluster-down: %s\n' "$*" >&2; }

if [[ ! -x "${KWOKCTL}" ]]; then
  log "no kwokctl at ${KWOKCTL}: nothing was started with it"
  exit 0
fi

if ! "${KWOKCTL}" get clusters 2>/dev/null | grep -qxF "${CLUSTER_NAME}"; then
  log "cluster '${CLUSTER_NAME}' does not exist (KWOK_WORKDIR=${KWOK_WORKDIR})"
  exit 0
fi

# The supervisor first: it would restart what kwokctl stops.
"${HACK_DIR}/supervise-cluster.sh" stop "${CLUSTER_NAME}"

# Remove KUBECONFIG_OUT only if it is exactly the kubeconfig of this cluster,
# so that a KUBECONFIG_OUT pointing at a shared file is never deleted.
remove_kubeconfig=false
if [[ -f "${KUBECONFIG_OUT}" ]] &&
   cmp -s "${KUBECONFIG_OUT}" <("${KWOKCTL}" --name "${CLUSTER_NAME}" get kubeconfig 2>/dev/null); then
  remove_kubeconfig=true
fi

# kwokctl delete also drops the context "kwok-<name>" from the file given by
# --kubeconfig (default ~/.kube/config; "" is refused). Point it at a
# scratch path so no other kubeconfig is touched.
scratch="$(mktemp -d)"
trap 'rm -rf "${scratch}"' EXIT
"${KWOKCTL}" --name "${CLUSTER_NAME}" delete cluster --kubeconfig "${scratch}/kubeconfig" >&2

if ${remove_kubeconfig}; then
  rm -f "${KUBECONFIG_OUT}"
  log "removed ${KUBECONFIG_OUT}"
elif [[ -f "${KUBECONFIG_OUT}" ]]; then
  log "left ${KUBECONFIG_OUT} in place (it is not the kubeconfig cluster-up wrote)"
fi
rm -f "${KWOK_WORKDIR}/${CLUSTER_NAME}.kwokctl.yaml"
log "cluster '${CLUSTER_NAME}' deleted"
