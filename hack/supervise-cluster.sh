#!/usr/bin/env bash
# Restart the local cluster's components when they exit, as a node's kubelet restarts its static
# pods. kwokctl's binary runtime starts etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and the kwok controller as detached processes (a pid file each, in
# <cluster>/pids/) and watches none of them: kube-controller-manager and kube-scheduler exit for
# good when they lose their leader lease (an API server or etcd that stalls longer than their
# renew deadline, 10 s by default), and the cluster then never creates a pod or schedules one
# again. hack/cluster-up.sh starts this once per cluster; hack/cluster-down.sh stops it before
# deleting the cluster, and it ends by itself when the cluster's folder is gone.
#
# Every SUPERVISE_INTERVAL seconds (default 2) it reads each pid file: a process that is gone,
# or a zombie nobody reaped, has exited; its pid file is removed and `kwokctl start cluster`
# starts what is not running (kwokctl skips the components whose process runs). A stopped
# process (SIGSTOP: state T) is not dead and is left alone. Each restart is one line on stdout:
#   <RFC 3339 time> restarted <component> (pid <old>, exited)
#
# A start that fails is tried again on the next round.
#
# Usage (KWOK_WORKDIR as for cluster-up.sh):
#   supervise-cluster.sh start KWOKCTL CLUSTER_NAME KUBECTL   in the background, once per cluster
#   supervise-cluster.sh stop CLUSTER_NAME                    stop it (before deleting the cluster)
set -uo pipefail

running() { # running CLUSTER_DIR: the pid of its supervisor, if one runs
  local pid
  pid="$(cat "$1/supervisor.pid" 2>/dev/null)" || return 1
  [[ "${pid}" =~ ^[0-9]+$ ]] && grep -qs supervise-cluster "/proc/${pid}/cmdline" && echo "${pid}"
}

case "${1:-}" in
  start)
    CLUSTER_DIR="${KWOK_WORKDIR:?KWOK_WORKDIR must be set}/clusters/$3"
    running "${CLUSTER_DIR}" >/dev/null && exit 0
    rm -f "${CLUSTER_DIR}/supervisor.pid"
    # It writes its own pid: setsid forks (and $! is not the supervisor) where the shell made
    # the background job a process group leader, as under job control.
    setsid "$0" run "$2" "$3" "$4" < /dev/null >> "${CLUSTER_DIR}/logs/supervisor.log" 2>&1 &
    for _ in $(seq 1 50); do
      if pid="$(running "${CLUSTER_DIR}")"; then
        echo "components restarted when they exit (pid ${pid}, log ${CLUSTER_DIR}/logs/supervisor.log)"
        exit 0
      fi
      sleep 0.1
    done
    echo "the supervisor did not start (${CLUSTER_DIR}/logs/supervisor.log)" >&2
    exit 1 ;;
  stop)
    CLUSTER_DIR="${KWOK_WORKDIR:?KWOK_WORKDIR must be set}/clusters/$2"
    pid="$(running "${CLUSTER_DIR}")" || exit 0
    kill "${pid}" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
    rm -f "${CLUSTER_DIR}/supervisor.pid"
    exit 0 ;;
  run) shift ;;
  *) echo "usage: $0 start KWOKCTL CLUSTER_NAME KUBECTL | stop CLUSTER_NAME" >&2; exit 2 ;;
esac

KWOKCTL="$1"
CLUSTER_NAME="$2"
CLUSTER_DIR="${KWOK_WORKDIR:?KWOK_WORKDIR must be set}/clusters/${CLUSTER_NAME}"
INTERVAL="${SUPERVISE_INTERVAL:-2}"
echo $$ > "${CLUSTER_DIR}/supervisor.pid"
# kwokctl start waits for the API server with kubectl, which it looks for on PATH.
mkdir -p "${CLUSTER_DIR}/supervisor-bin"
ln -sf "$3" "${CLUSTER_DIR}/supervisor-bin/kubectl"
export PATH="${CLUSTER_DIR}/supervisor-bin:${PATH}" KWOK_KUBECTL_BINARY="$3"

alive() { # alive PID: the process exists and is not a zombie
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  # The state follows the command name, which is in parentheses and may hold spaces.
  [[ "${stat##*) }" != Z* ]]
}

exited=()
while [[ -d "${CLUSTER_DIR}/pids" ]]; do
  for pidfile in "${CLUSTER_DIR}"/pids/*.pid; do
    [[ -f "${pidfile}" ]] || continue
    pid="$(cat "${pidfile}" 2>/dev/null)"
    [[ "${pid}" =~ ^[0-9]+$ ]] || continue
    if ! alive "${pid}"; then
      exited+=("$(basename "${pidfile}" .pid) (pid ${pid}, exited)")
      rm -f "${pidfile}"
    fi
  done
  if (( ${#exited[@]} > 0 )) && [[ -d "${CLUSTER_DIR}/pids" ]]; then
    if "${KWOKCTL}" --name "${CLUSTER_NAME}" start cluster --timeout 120s \
        >> "${CLUSTER_DIR}/logs/supervisor-kwokctl.log" 2>&1; then
      for what in "${exited[@]}"; do echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) restarted ${what}"; done
      exited=()
    else
      echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) kwokctl start cluster failed (logs/supervisor-kwokctl.log); again in ${INTERVAL} s"
    fi
  fi
  sleep "${INTERVAL}"
done
