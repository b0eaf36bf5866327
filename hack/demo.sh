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

stop() {  # stop a process the demo started: stop NAME
  local pidfile="${DEMO_DIR}/$1.pid"
  [[ -f "${pidfile}" ]] || return 0
  local pid; pid="$(cat "${pidfile}")"
  kill "${pid}" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.5; done
  kill -9 "${pid}" 2>/dev/null || true
  rm -f "${pidfile}"
  echo "demo: $1 stopped"
}

if [[ "${1:-up}" == "down" ]]; then
  stop pod-runner  # it stops the engines and validators it runs
  stop operator
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

if [[ -f "${DEMO_DIR}/pod-runner.pid" ]] && kill -0 "$(cat "${DEMO_DIR}/pod-runner.pid")" 2>/dev/null; then
  echo "demo: the pod runner is already running (pid $(cat "${DEMO_DIR}/pod-runner.pid"))"
else
  mkdir -p "${DEMO_DIR}/pods"
  nohup "${BIN}/python" -m detinfer.local.pod_runner --kubeconfig "${KUBECONFIG_OUT}" \
    --log-dir "${DEMO_DIR}/pods" > "${DEMO_DIR}/pod-runner.log" 2>&1 &
  echo $! > "${DEMO_DIR}/pod-runner.pid"
  echo "demo: pod runner started (pid $(cat "${DEMO_DIR}/pod-runner.pid"), log ${DEMO_DIR}/pod-runner.log)"
fi

started=${SECONDS}
kc apply -f "${REPO}/examples/reference.yaml"
echo "demo: waiting for the reference engines to be validated (up to 5 minutes)"
if ! kc wait dis/reference --for=condition=Ready --timeout=300s >/dev/null; then
  echo "demo: not Ready after 5 minutes; what the resource says:" >&2
  kc describe dis reference >&2
  exit 1
fi
echo "demo: Ready after $((SECONDS - started)) s"
echo
kc get dis -o wide
echo
kc get pods -l app.kubernetes.io/instance=reference -o wide
echo
# The runner keeps a termination log for validator pods only: the newest is the last validation.
last="$(ls -t "${DEMO_DIR}"/pods/*.termination-log 2>/dev/null | head -1 || true)"
if [[ -n "${last}" ]]; then
  echo "The validation run (the validator's output, ${last%.termination-log}.log):"
  cat "${last%.termination-log}.log"
fi
cat <<TXT

What you see: the operator made a Deployment of two reference-engine pods (the CPU engine,
--enable-deterministic-inference) on fake nodes; the pod runner runs each pod's engine as a local
process on the pod's IP; the operator's validation Job ran the real validator against both, and
only then did the pods pass their readiness gate and the resource become Ready.

  export KUBECONFIG=${KUBECONFIG_OUT}
  kubectl get dis -w                       # READY, VALIDATED, SERVING, UNIQUE, FINGERPRINT
  kubectl describe dis reference           # conditions and Events
  curl -s 127.0.0.1:${METRICS_PORT}/metrics | grep ^detinfer_      # the operator's metrics
  ls ${DEMO_DIR}/pods                      # engine and validator logs, summaries
  make demo-down                           # stop everything, delete the cluster
TXT
