#!/usr/bin/env bash
# The main job on one machine: the operator installed with its Helm chart, and the example, on
# the local cluster (make demo). Expects the cluster up (make cluster-up) and the project's venv
# (make install). The pod runner (detinfer.local.pod_runner) plays the kubelet for detinfer's own
# pods: the operator's (under the chart's ServiceAccount, with a TokenRequest token, never the
# kubeconfig), the reference engines' and the validator's.
# `hack/demo.sh down` stops the pod runner, and with it every process it runs (make demo-down
# also deletes the cluster).
# ENGINE=llama-cpp (make demo ENGINE=llama-cpp) applies examples/llama-cpp.yaml instead: the
# pod runner runs llama.cpp's real llama-server (hack/build-llama-server.sh's build) for its pod,
# on the demo's GGUF (written here, the sha256 the example pins), from a volume claim bound to a
# local folder.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-${REPO}/.venv/bin}"
HELM="${HELM:-${HOME}/.cache/detinfer/bin/current/helm}"
KUBECONFIG_OUT="${KUBECONFIG_OUT:-${HOME}/.cache/detinfer/kubeconfig}"
DEMO_DIR="${DEMO_DIR:-${HOME}/.cache/detinfer/demo}"
METRICS_PORT="${DETINFER_DEMO_METRICS_PORT:-18080}"
ENGINE="${ENGINE:-reference}"
MODELS="${DEMO_DIR}/models"  # the model cache volume of LlamaCpp pods, on this machine
case "${ENGINE}" in
  reference) NAME=reference ;;
  llama-cpp) NAME=llama-cpp ;;
  *) echo "demo: ENGINE=${ENGINE}: give reference or llama-cpp" >&2; exit 2 ;;
esac
OPERATOR_NAMESPACE=detinfer-system
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
  stop pod-runner  # it stops the operator, engines and validators it runs
  stop operator    # left by a demo of an earlier version, which ran the operator on the host
  exit 0
fi

mkdir -p "${DEMO_DIR}"
if [[ -f "${DEMO_DIR}/pod-runner.pid" ]] && kill -0 "$(cat "${DEMO_DIR}/pod-runner.pid")" 2>/dev/null; then
  echo "demo: the pod runner is already running (pid $(cat "${DEMO_DIR}/pod-runner.pid"))"
else
  mkdir -p "${DEMO_DIR}/pods" "${MODELS}"
  nohup "${BIN}/python" -m detinfer.local.pod_runner --kubeconfig "${KUBECONFIG_OUT}" \
    --log-dir "${DEMO_DIR}/pods" --model-dir "${MODELS}" > "${DEMO_DIR}/pod-runner.log" 2>&1 &
  echo $! > "${DEMO_DIR}/pod-runner.pid"
  echo "demo: pod runner started (pid $(cat "${DEMO_DIR}/pod-runner.pid"), log ${DEMO_DIR}/pod-runner.log)"
fi

# The chart installs the CRD (crds/) and the operator. Values for the local cluster: ports free
# on this machine (the operator binds them on its pod's loopback IP); the image is never pulled
# (the pod runner runs the pod's command from this checkout), so the chart's placeholder digest
# stays, and NOTES.txt warns about it.
echo "demo: helm install detinfer charts/detinfer -n ${OPERATOR_NAMESPACE}"
"${HELM}" upgrade --install detinfer "${REPO}/charts/detinfer" \
  --namespace "${OPERATOR_NAMESPACE}" --create-namespace \
  --set metricsPort="${METRICS_PORT}" --set livenessPort="$((METRICS_PORT + 1))" \
  --wait --timeout 120s > "${DEMO_DIR}/helm-install.txt"
operator_pod="$(kc get pods -n "${OPERATOR_NAMESPACE}" -l app.kubernetes.io/component=operator \
  -o jsonpath='{.items[0].metadata.name}')"
operator_ip="$(kc get pod -n "${OPERATOR_NAMESPACE}" "${operator_pod}" -o jsonpath='{.status.podIP}')"
echo "demo: the operator's pod ${operator_pod} is ready on ${operator_ip} (its log: ${DEMO_DIR}/pods/${OPERATOR_NAMESPACE}_${operator_pod}.log)"

if [[ "${ENGINE}" == "llama-cpp" ]]; then
  gguf="${MODELS}/tiny.gguf"
  if [[ ! -f "${gguf}" ]]; then
    echo "demo: writing the demo's GGUF (random weights, seed 0) to ${gguf}"
    "${BIN}/python" -m detinfer.engines.llamacpp.model --out "${gguf}" --seed 0 >/dev/null
  fi
  # The example's cacheVolumeClaim, bound to a hostPath volume of that folder: the scheduler
  # places the pod as on a cluster whose volume holds the model (the pod runner reads the folder).
  kc apply -f - <<YAML
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: PersistentVolume
  metadata: {name: detinfer-demo-models}
  spec:
    capacity: {storage: 1Gi}
    accessModes: [ReadOnlyMany]
    storageClassName: ""
    hostPath: {path: "${MODELS}"}
- apiVersion: v1
  kind: PersistentVolumeClaim
  metadata: {name: models, namespace: default}
  spec:
    accessModes: [ReadOnlyMany]
    storageClassName: ""
    volumeName: detinfer-demo-models
    resources: {requests: {storage: 1Gi}}
YAML
fi

started=${SECONDS}
kc apply -f "${REPO}/examples/${NAME}.yaml"
echo "demo: waiting for the ${ENGINE} engine pods to be validated (up to 5 minutes)"
if ! kc wait "dis/${NAME}" --for=condition=Ready --timeout=300s >/dev/null; then
  echo "demo: not Ready after 5 minutes; what the resource says:" >&2
  kc describe dis "${NAME}" >&2
  exit 1
fi
echo "demo: Ready after $((SECONDS - started)) s"
echo
kc get pods -l "app.kubernetes.io/instance=${NAME}" -o wide
echo
if [[ "${ENGINE}" == "reference" ]]; then
  # The overhead measurement (spec.overhead) starts once Ready: a baseline pod, then a benchmark Job.
  ready_at=${SECONDS}
  echo "demo: waiting for the overhead measurement (a baseline without determinism, a benchmark Job; up to 3 minutes)"
  overhead=""
  for _ in $(seq 1 180); do
    overhead="$(kc get dis reference -o jsonpath='{.status.overhead.lastRunTime}')"
    [[ -n "${overhead}" ]] && break
    sleep 1
  done
  if [[ -z "${overhead}" ]]; then
    echo "demo: no overhead measurement after 3 minutes (serving is not affected); kubectl describe dis reference says why" >&2
  else
    fields="$(kc get dis reference -o jsonpath='{.status.overhead.measured} {.status.overhead.headlinePercent} {.status.overhead.headlineConcurrency}')"
    read -r measured percent concurrency <<< "${fields}"
    if [[ "${measured}" == "true" ]]; then
      echo "demo: overhead measured $((SECONDS - ready_at)) s after Ready: ${percent}% throughput at concurrency ${concurrency} (a tiny CPU workload: noise, docs/overhead.md)"
    else
      echo "demo: the overhead could not be measured: $(kc get dis reference -o jsonpath='{.status.overhead.message}')"
    fi
  fi
fi
echo
kc get dis -o wide
echo
# The runner keeps a termination log for validator and benchmark pods: the newest with a verdict
# is the last validation.
last=""
while read -r log; do
  if grep -q '"verdict"' "${log}"; then last="${log}"; break; fi
done < <(ls -t "${DEMO_DIR}"/pods/*.termination-log 2>/dev/null || true)
if [[ -n "${last}" ]]; then
  echo "The validation run (the validator's output, ${last%.termination-log}.log):"
  cat "${last%.termination-log}.log"
fi
if [[ "${ENGINE}" == "llama-cpp" ]]; then
  cat <<TXT

What you see: helm installed the CRD and the operator; the pod runner runs the operator's pod as
a local process with a token of its ServiceAccount. The operator made a Deployment of one
llama-server pod (kind LlamaCpp: one slot, the prompt cache off, the GGUF pinned by its sha256)
on a fake node; the pod runner runs the container's own line (a sha256 check of the model, then
llama.cpp's real llama-server, built from the pinned llama-cpp-python sdist) on the pod's IP; the
validation Job ran the real validator against it over llama.cpp's native protocol, and only then
did the pod pass its readiness gate and the resource become Ready. Four slots, or the prompt
cache on, end NotDeterministic instead (docs/engines.md).

  export KUBECONFIG=${KUBECONFIG_OUT}
  kubectl get dis -w                       # READY, VALIDATED, SERVING, UNIQUE, FINGERPRINT
  kubectl describe dis llama-cpp           # conditions and Events
  kubectl patch dis llama-cpp --type merge -p '{"spec":{"engine":{"slots":4}}}'   # watch it fail
  ls ${DEMO_DIR}/pods                      # llama-server and validator logs, summaries
  make demo-down                           # stop everything, delete the cluster
TXT
  exit 0
fi
cat <<TXT

What you see: helm installed the CRD and the operator's Deployment, ServiceAccount and RBAC; the
pod runner runs the operator's pod as a local process with a token of that ServiceAccount (so the
chart's RBAC is all it may do). The operator made a Deployment of two reference-engine pods (the
CPU engine, --enable-deterministic-inference) on fake nodes; the pod runner runs each pod's engine
as a local process on the pod's IP; the operator's validation Job ran the real validator against both, and
only then did the pods pass their readiness gate and the resource become Ready. After Ready, the
operator measured what determinism costs: a temporary baseline Deployment (the same engine
without determinism, in no Service) and a benchmark Job against one validated pod and it; the
figures are in status.overhead (kubectl's OVERHEAD), then both were deleted.

  export KUBECONFIG=${KUBECONFIG_OUT}
  kubectl get dis -w                       # READY, VALIDATED, SERVING, UNIQUE, FINGERPRINT
  kubectl describe dis reference           # conditions and Events
  kubectl get dis reference -o jsonpath='{.status.overhead}'   # the overhead, per level and side
  curl -s ${operator_ip}:${METRICS_PORT}/metrics | grep ^detinfer_      # the operator's metrics
  helm status detinfer -n ${OPERATOR_NAMESPACE}     # the release; NOTES warn of the placeholder digest
  ls ${DEMO_DIR}/pods                      # engine and validator logs, summaries
  make demo-down                           # stop everything, delete the cluster
TXT
