#!/usr/bin/env bash
# The main job on one machine: CRD, operator and the example on the local cluster (make demo).
# Expects the cluster up (make cluster-up) and the project's venv (make install).
# `hack/demo.sh down` stops the operator it started (make demo-down also deletes the cluster).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-${REPO}/.venv/bin}"
KUBECONFIG_OUT="${KUBECONFIG_OUT:-${HOME}/.cache/detinfer/kubeconfig}"
DEMO_DIR="${DEMO_DIR:-${HOME}/.cache/detinfer/demo}"
METRICS_PORT="${DETINFER_DEMO_METRICS_PORT:-18080}"
export KUBECONFIG="${KUBECONFIG_OUT}"
kc() { "${BIN}/kubectl" "$@"; }

if [[ "${1:-up}" == "down" ]]; then
  if [[ -f "${DEMO_DIR}/operator.pid" ]]; then
    pid="$(cat "${DEMO_DIR}/operator.pid")"
    kill "${pid}" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.5; done
    rm -f "${DEMO_DIR}/operator.pid"
    echo "demo: operator stopped"
  fi
  exit 0
fi

mkdir -p "${DEMO_DIR}"
kc apply --server-side --force-conflicts -f "${REPO}/crds/" >/dev/null
kc wait --for=condition=Established --timeout=60s crd/deterministicinferenceservices.detinfer.io >/dev/null

if [[ -f "${DEMO_DIR}/operator.pid" ]] && kill -0 "$(cat "${DEMO_DIR}/operator.pid")" 2>/dev/null; then
  echo "demo: the operator is already running (pid $(cat "${DEMO_DIR}/operator.pid"))"
else
  nohup "${BIN}/detinfer" run --metrics-address 127.0.0.1 --metrics-port "${METRICS_PORT}" \
    --liveness-port "$((METRICS_PORT + 1))" > "${DEMO_DIR}/operator.log" 2>&1 &
  echo $! > "${DEMO_DIR}/operator.pid"
  for _ in $(seq 1 60); do
    curl -fs "http://127.0.0.1:$((METRICS_PORT + 1))/healthz" >/dev/null 2>&1 && break
    sleep 0.5
  done
  echo "demo: operator started (pid $(cat "${DEMO_DIR}/operator.pid"), log ${DEMO_DIR}/operator.log)"
fi

kc apply -f "${REPO}/examples/service.yaml"
for _ in $(seq 1 60); do
  [[ -n "$(kc get dis qwen3-8b -o jsonpath='{.status.revision}' 2>/dev/null)" ]] && break
  sleep 0.5
done
sleep 2
echo
kc get dis -o wide
echo
kc get deploy,svc,pods,jobs -l app.kubernetes.io/instance=qwen3-8b -o wide
cat <<TXT

What you see: the operator made the Deployment and both Services; kwok runs the pods on fake
H100 nodes, and the operator started a validation Job for them. The Job's pod stays Running:
until the validator and the pod runner exist (issues #5, #6), nothing answers it, so the
resource stays Validating and Ready=False, as it should.

  export KUBECONFIG=${KUBECONFIG_OUT}
  kubectl get dis -w                       # READY, VALIDATED, SERVING, UNIQUE, FINGERPRINT
  kubectl describe dis qwen3-8b            # conditions and Events
  curl -s 127.0.0.1:${METRICS_PORT}/metrics | grep ^detinfer_
  make demo-down                           # stop the operator, delete the cluster
TXT
