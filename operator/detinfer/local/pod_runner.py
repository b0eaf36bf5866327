"""The local pod runner: a kubelet for detinfer's own containers on the local cluster's fake nodes.

kwok simulates every pod's lifecycle without running anything. For pods whose container runs
detinfer's own command (`detinfer engine`, the reference engine; `detinfer validate`, the
validator; `detinfer run`, the operator the Helm chart installs) or llama.cpp's llama-server
(kind LlamaCpp: the cached real binary for the image's /app/llama-server, `--llama-server`, and
a local folder for the model cache volume, `--model-dir`, behind the same sha256 check of the
GGUF file as in the container), this runs the command as a local process instead, with the container's environment,
bound to the pod's IP (kwok gives pods 127.1.<node>.<n>, all loopback; hack/cluster-up.sh), and reports its life back
into the pod's status as a kubelet would:

- engine pods: ContainersReady (and the container's `ready`) follows the readiness probe
  (GET /health_generate on the pod IP); Ready is ContainersReady and every readiness gate, as the
  kubelet computes it; a process that exits is restarted (restartPolicy Always) with
  restartCount + 1 and the run that ended as lastState.terminated (exit code, start, end); the
  exec liveness probe (the builders' model_info probe, run here with this Python against the
  pod's IP, in the container's environment) restarts it after failureThreshold failures;
- every container's environment is the kubelet's: literal values and Secret keys
  (valueFrom.secretKeyRef, read with the runner's own credentials), and $(VAR) in its command and
  args expanded from them; an engine behind the builders' admin-key wrapper runs behind it here;
- validator and benchmark pods (`detinfer bench`, the overhead measurement's Job): when the
  process exits, the pod ends Succeeded or Failed with the exit code and
  the termination message the validator wrote to its summary file (`/dev/termination-log` in the
  container, a local file here), as the kubelet reads it;
- operator pods: the process gets what the kubelet gives a pod of its ServiceAccount and nothing
  else: a token requested for that ServiceAccount through the TokenRequest API, bound to the pod
  (so it dies with the pod) and renewed at 80% of its lifetime, the cluster's CA (the
  kube-root-ca.crt ConfigMap of the pod's namespace) and the namespace, as the files token,
  ca.crt and namespace in a folder named by DETINFER_SERVICE_ACCOUNT_DIR (a local process cannot
  have /var/run/secrets/...; detinfer.connection reads that variable), and
  KUBERNETES_SERVICE_HOST/PORT pointing at the API server; every process gets HOSTNAME the pod's
  name, as the kubelet sets it. KUBECONFIG is removed from its
  environment, so it cannot fall back to an administrator's kubeconfig. Its metrics and liveness
  ports (from the container's args) are bound on the pod's IP. The liveness probe is the
  container's (path, port, initialDelaySeconds, periodSeconds, failureThreshold): that many
  failures in a row and the process is killed and restarted, as the kubelet does; the container
  counts as ready while /healthz answers (the chart has no readiness probe), probed each second
  until it first answers, then each periodSeconds. An exit of any code
  is a container restart (restartPolicy Always): restartCount + 1.
- a deleted pod's process is stopped (SIGTERM, then SIGKILL after 10 s);
- `--planted-fault NAME=FAULT` (a test tool): the engine pods of the resource NAME run with
  `detinfer engine --planted-fault FAULT` (detinfer.engine.faults) added, as a node that changes
  the engine behind its pod spec would; the e2e drift test plants `drift` so.

Each process's pid is in <log-dir>/<namespace>_<pod>.pid, its output in <namespace>_<pod>.log.

Pods it does not run (SGLang's, anything else) keep kwok's simulated lifecycle. `make demo` and
the e2e tests run it; the operator does not:

    python -m detinfer.local.pod_runner --kubeconfig ~/.cache/detinfer/kubeconfig --log-dir /tmp/pods

`--roles operator` runs only the operator's pods (the integration tests play the kubelet for
engine and validator pods themselves).

It reads a container's process line and readiness probe as the builders wrote them
(detinfer.builders.process_line), so a pod laid out otherwise is refused with an error naming
the pod, not run wrongly.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from detinfer import connection
from detinfer.api import constants as c
from detinfer.builders.deployment import MODEL_CACHE_PATH
from detinfer.builders.process_line import (
    ADMIN_KEY_WRAPPER,
    BENCH_COMMAND,
    ENGINE_COMMAND,
    GGUF_CHECK,
    HOST_FLAG,
    LLAMA_SERVER_COMMAND,
    SUMMARY_FILE_FLAG,
    VALIDATOR_COMMAND,
    LayoutError,
    flag_value,
    gguf_checked,
    probe_url_on,
    process_line,
    unwrapped,
    with_flag_value,
)
from detinfer.engine.faults import FLAG as FAULT_FLAG
from detinfer.engine.faults import parse_fault
from detinfer.engines import llamacpp

log = logging.getLogger("pod-runner")
OPERATOR_COMMAND = ("detinfer", "run")
ROLES: dict[tuple[str, ...], str] = {
    ENGINE_COMMAND: "engine",
    VALIDATOR_COMMAND: "validator",
    BENCH_COMMAND: "bench",
    OPERATOR_COMMAND: "operator",
}
# Roles that run once and end the pod with their exit code and termination message.
ONE_SHOT = frozenset({"validator", "bench"})
TOKEN_SECONDS = 3607  # what the kubelet asks for a projected ServiceAccount token


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class LocalPod:
    namespace: str
    name: str
    uid: str
    ip: str
    container: dict[str, Any]
    role: str  # "engine" | "validator" | "bench" | "operator"
    log_path: Path
    termination_path: Path
    gates: list[str]
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # the container's own (container_env)
    probe_url: str | None = None  # engines: readiness; the operator: liveness
    liveness: dict[str, Any] = field(default_factory=dict)  # the liveness probe's settings
    # Engines: the liveness probe's exec command, on this machine (process_line.probe_url_on).
    liveness_command: list[str] | None = None
    liveness_failures: int = 0
    last_liveness: float = 0.0
    started_mono: float = 0.0
    service_account_dir: Path | None = None  # the operator's token, ca.crt, namespace
    service_account: str = "default"
    token_renew_at: float = 0.0
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    restarts: int = 0
    started_at: str = field(default_factory=_now)
    # The container's previous run, as the kubelet reports it in lastState after a restart.
    last_terminated: dict[str, Any] | None = None
    finished: bool = False


def role_of(container: dict[str, Any]) -> str | None:
    """'engine', 'validator', 'bench' or 'operator' for detinfer's own commands, 'engine' for
    llama-server behind its GGUF check (kind LlamaCpp); None for anything else."""
    line = process_line(container)
    if gguf_checked(line):
        return "engine"
    return ROLES.get(tuple(unwrapped(line)[0][:2]))


@dataclass(frozen=True)
class LlamaServer:
    """Where the real llama-server runs from here: the cached binary for the image's
    /app/llama-server, and a folder for the model cache volume (/var/cache/detinfer/models)."""

    binary: Path
    model_dir: Path

    def model_file(self, path: str) -> str:
        prefix = MODEL_CACHE_PATH + "/"
        if not path.startswith(prefix) or ".." in path.split("/"):
            raise LayoutError(
                f"model {path!r} is not in the model cache volume ({MODEL_CACHE_PATH}/...): "
                "this runner has no image to read it from"
            )
        return str(self.model_dir / path[len(prefix) :])

    def command(self, line: list[str], ip: str, env: dict[str, str]) -> list[str]:
        """The container's line with the binary, the model file and the listen address of this
        machine; the GGUF check runs as the container runs it (/bin/sh, sha256sum)."""
        checked = gguf_checked(line)
        if checked is None:
            raise LayoutError("not llama-server behind its GGUF check")
        sha256, path, server = checked
        local_path = self.model_file(path)
        if flag_value(server, "--model") != path:
            raise LayoutError(f"--model is not the checked file {path!r}")
        server = with_flag_value(server, "--model", local_path)
        server = with_flag_value(server, HOST_FLAG, ip)
        server = [str(self.binary), *(expand(w, env) for w in server[len(LLAMA_SERVER_COMMAND) :])]
        return [*GGUF_CHECK, sha256, local_path, *server]


def local_command(
    container: dict[str, Any],
    role: str,
    ip: str,
    termination_path: Path,
    env: dict[str, str] | None = None,
    llama: LlamaServer | None = None,
) -> list[str]:
    """The container's process line for this machine: this Python's detinfer, with $(VAR)
    expanded from the container's `env` as the kubelet does; an engine listens on the pod's IP,
    a validator or benchmark writes its summary where the runner reads it. An engine behind the
    admin-key wrapper runs behind the same wrapper, which makes its key here. llama-server runs
    from `llama` (LlamaServer.command)."""
    if gguf_checked(process_line(container)):
        if llama is None:
            raise LayoutError("a llama-server pod, and this runner has no --llama-server")
        return llama.command(process_line(container), ip, env or {})
    line, wrapped = unwrapped(process_line(container))
    subcommand, args = line[1], line[2:]
    if role == "engine":
        args = with_flag_value(args, HOST_FLAG, ip)
    elif role == "operator":
        # Both of its ports on the pod's IP, not 0.0.0.0 (the last of a repeated flag wins).
        args = [*args, "--metrics-address", ip]
    else:
        summary = flag_value(args, SUMMARY_FILE_FLAG)
        if summary != c.TERMINATION_MESSAGE_PATH:
            raise LayoutError(
                f"{SUMMARY_FILE_FLAG} is {summary!r}, not {c.TERMINATION_MESSAGE_PATH!r}"
            )
        args = with_flag_value(args, SUMMARY_FILE_FLAG, str(termination_path))
    # Expanded last: a layout error above quotes the line, and must not quote a key.
    args = [expand(word, env or {}) for word in args]
    local = [sys.executable, "-m", "detinfer.cli", subcommand, *args]
    return [sys.executable, *ADMIN_KEY_WRAPPER[1:], *local] if wrapped else local


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' expansion of a container's command and args: $(NAME) becomes the value of
    the container's variable NAME where it has one and stays as written where not, $$ is a $
    (k8s.io/kubernetes third_party/forked/golang/expansion)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(" and (end := text.find(")", i + 2)) != -1:
                name = text[i + 2 : end]
                out.append(env[name] if name in env else text[i : end + 1])
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def container_env(container: dict[str, Any], secrets: Mapping[str, Mapping[str, str]]) -> dict:
    """The container's own variables (the kubelet's view: literal values and Secret keys, no
    host environment), the Secrets' data given decoded by name. A missing Secret or key raises
    LayoutError, as the kubelet refuses to start such a container."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        if "valueFrom" not in item:  # an empty value: the API server omits it
            env[item["name"]] = ""
            continue
        ref = item["valueFrom"].get("secretKeyRef")
        if ref is None:
            raise LayoutError(f"env {item.get('name')!r} has a valueFrom this runner cannot fill")
        data = secrets.get(ref["name"])
        if data is None or ref["key"] not in data:
            raise LayoutError(
                f"env {item['name']!r}: no key {ref['key']!r} in Secret {ref['name']!r}"
            )
        env[item["name"]] = data[ref["key"]]
    return env


def readiness_url(container: dict[str, Any], ip: str) -> str:
    """The URL of the container's HTTP readiness probe on the pod's IP (a named port resolved
    through the container's ports, as the kubelet does)."""
    if not (container.get("readinessProbe") or {}).get("httpGet"):
        raise LayoutError(f"container {container.get('name')!r} has no httpGet readiness probe")
    return probe_url(container.get("readinessProbe"), container, ip)


# An httpGet liveness probe, as a command: 200-399 passes, as the kubelet counts it.
HTTP_GET_PROBE = (
    "-c",
    "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=8)",
)


def local_liveness(container: dict[str, Any], ip: str) -> list[str] | None:
    """An engine's liveness probe as it runs here, on the pod's IP: the exec probe with this
    Python, or a GET of the httpGet probe's URL (llama-server's /health)."""
    probe = container.get("livenessProbe") or {}
    if probe.get("httpGet"):
        return [sys.executable, *HTTP_GET_PROBE, probe_url(probe, container, ip)]
    command = (probe.get("exec") or {}).get("command")
    if not command:
        return None
    return [sys.executable, *probe_url_on(command, ip)[1:]]


def probe_url(probe: dict[str, Any] | None, container: dict[str, Any], ip: str) -> str:
    """The URL of an HTTP probe on the pod's IP (a named port resolved through the container's
    ports, as the kubelet does)."""
    get = (probe or {}).get("httpGet")
    if not get:
        raise LayoutError(f"container {container.get('name')!r} has no httpGet probe")
    port = get.get("port")
    if isinstance(port, str):
        named = [p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port]
        if not named:
            raise LayoutError(f"probe port {port!r} is not a port of the container")
        port = named[0]
    return f"http://{ip}:{port}{get.get('path') or '/'}"


def operator_env(
    container: dict[str, Any],
    api_host: str,
    service_account_dir: Path,
    pod_name: str,
    own: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """An operator pod's environment: the container's values, the in-cluster variables, the
    ServiceAccount folder; no KUBECONFIG (the in-cluster configuration must be the only one)."""
    url = urllib.parse.urlsplit(api_host)
    env = local_env(container, pod_name, own)
    env.pop("KUBECONFIG", None)
    env.update(
        {
            "KUBERNETES_SERVICE_HOST": url.hostname or "",
            "KUBERNETES_SERVICE_PORT": str(url.port or 443),
            connection.SERVICE_ACCOUNT_DIR_ENV: str(service_account_dir),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def local_env(
    container: dict[str, Any], pod_name: str | None = None, own: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This machine's environment with the container's variables over it (`own`: those
    container_env resolved; the literal values when not given), and HOSTNAME the pod's name, as
    the kubelet sets it in every container."""
    env = dict(os.environ)
    if pod_name:
        env["HOSTNAME"] = pod_name
    if own is None:
        own = {
            i["name"]: str(i.get("value", ""))
            for i in container.get("env") or []
            if "valueFrom" not in i
        }
    env.update(own)
    env.setdefault("OMP_NUM_THREADS", "1")  # many small processes on few cores
    # llama-server reads a flag the command line lacks from LLAMA_ARG_* (--threads: every core)
    env.setdefault("LLAMA_ARG_THREADS", "2")
    return env


def terminated_state(
    returncode: int, started_at: str, finished_at: str, message: str | None = None
) -> dict[str, Any]:
    """A container's `terminated` state from its process's return code (a process killed by
    signal N has returncode -N and, as the kubelet reports it, exit code 128 + N)."""
    exit_code = returncode if returncode >= 0 else 128 - returncode
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "startedAt": started_at,
        "finishedAt": finished_at,
        "reason": "Completed" if exit_code == 0 else "Error",
    }
    if message:
        terminated["message"] = message
    return terminated


def ended_status(
    container: str,
    image: str,
    returncode: int,
    message: str | None,
    started_at: str,
    finished_at: str,
    restarts: int = 0,
) -> dict[str, Any]:
    """The status patch the kubelet writes when a pod's only container has exited for good."""
    terminated = terminated_state(returncode, started_at, finished_at, message)
    exit_code = terminated["exitCode"]
    return {
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodCompleted"},
                {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"},
            ],
            "containerStatuses": [
                {
                    "name": container,
                    "image": image,
                    "imageID": "",
                    "ready": False,
                    "restartCount": restarts,
                    "started": False,
                    "state": {"terminated": terminated},
                }
            ],
        }
    }


class PodRunner:
    def __init__(
        self,
        api: client.CoreV1Api,
        log_dir: Path,
        namespace: str | None = None,
        roles: frozenset[str] = frozenset(ROLES.values()),
        planted: Mapping[str, str] | None = None,
        llama: LlamaServer | None = None,
    ) -> None:
        self.api = api
        self.llama = llama
        self.log_dir = log_dir
        self.namespace = namespace
        self.roles = roles
        self.planted = dict(planted or {})
        """DIS name -> a planted fault its engine pods run with (--planted-fault, a test tool:
        the node, not the pod spec, changes the engine)."""
        self.pods: dict[str, LocalPod] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.http = httpx.Client(timeout=5)

    # -- watching pods -------------------------------------------------------------------------

    def watch(self) -> None:
        while not self.stopping.is_set():
            w = watch.Watch()
            try:
                if self.namespace:
                    stream = w.stream(
                        self.api.list_namespaced_pod, self.namespace, timeout_seconds=60
                    )
                else:
                    stream = w.stream(self.api.list_pod_for_all_namespaces, timeout_seconds=60)
                for event in stream:
                    if self.stopping.is_set():
                        break
                    self.on_event(
                        event["type"],
                        self.api.api_client.sanitize_for_serialization(event["object"]),
                    )
            except Exception as exc:  # a dropped watch is started again
                if not self.stopping.is_set():
                    log.warning("pod watch ended (%s); watching again", exc)
                    time.sleep(1)

    def on_event(self, kind: str, pod: dict[str, Any]) -> None:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        uid = meta["uid"]
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            self.stop_pod(uid)
            return
        with self.lock:
            local = self.pods.get(uid)
        if local is not None:
            if local.role not in ONE_SHOT and not local.finished:
                self.sync_ready(local, status)
            return
        containers = spec.get("containers") or []
        if len(containers) != 1 or status.get("phase") != "Running" or not status.get("podIP"):
            return
        role = role_of(containers[0])
        if role is None or role not in self.roles:
            return
        if any(
            (s.get("state") or {}).get("terminated") for s in status.get("containerStatuses") or []
        ):
            return  # it ran and ended before (a runner restarted): a kubelet does not rerun it
        stem = f"{meta['namespace']}_{meta['name']}"
        ip = status["podIP"]
        termination_path = self.log_dir / f"{stem}.termination-log"
        try:
            env = container_env(containers[0], self.secrets(meta["namespace"], containers[0]))
            command = local_command(containers[0], role, ip, termination_path, env, self.llama)
            instance = (meta.get("labels") or {}).get(c.LABEL_INSTANCE)
            if role == "engine" and instance in self.planted and command[0] == sys.executable:
                command = [*command, FAULT_FLAG, self.planted[instance]]
                log.info(
                    "planting %s in %s/%s", self.planted[instance], meta["namespace"], meta["name"]
                )
            liveness_command = None
            if role == "engine":
                url: str | None = readiness_url(containers[0], ip)
                liveness_command = local_liveness(containers[0], ip)
            elif role == "operator":
                url = probe_url(containers[0].get("livenessProbe"), containers[0], ip)
            else:
                url = None
        except LayoutError as exc:
            log.error("not running %s/%s: %s", meta["namespace"], meta["name"], exc)
            return
        local = LocalPod(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=uid,
            ip=ip,
            container=containers[0],
            role=role,
            log_path=self.log_dir / f"{stem}.log",
            termination_path=termination_path,
            gates=[g["conditionType"] for g in spec.get("readinessGates") or []],
            command=command,
            env=env,
            probe_url=url,
            liveness=containers[0].get("livenessProbe") or {},
            liveness_command=liveness_command,
            service_account=spec.get("serviceAccountName") or "default",
        )
        if role == "operator":
            local.service_account_dir = self.log_dir / f"{stem}.serviceaccount"
            try:
                self.write_service_account(local)
            except ApiException as exc:
                log.error(
                    "not running %s/%s: no token for ServiceAccount %s: %s",
                    local.namespace,
                    local.name,
                    local.service_account,
                    exc.reason,
                )
                return
        with self.lock:
            self.pods[uid] = local
        self.start_process(local)
        if role not in ONE_SHOT:
            self.write_container(local, ready=False)

    def secrets(self, namespace: str, container: dict[str, Any]) -> dict[str, dict[str, str]]:
        """The Secrets the container's env names, decoded (as the kubelet reads them for it)."""
        out: dict[str, dict[str, str]] = {}
        for item in container.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None or ref["name"] in out:
                continue
            try:
                secret = self.api.read_namespaced_secret(ref["name"], namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                continue  # container_env names what is missing
            out[ref["name"]] = {
                k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()
            }
        return out

    # -- the operator's ServiceAccount, as the kubelet projects it ----------------------------

    def write_service_account(self, local: LocalPod) -> None:
        """token (TokenRequest, bound to the pod), ca.crt, namespace; each replaced atomically."""
        folder = local.service_account_dir
        assert folder is not None
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[],  # the API server's own
                expiration_seconds=TOKEN_SECONDS,
                bound_object_ref=client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=local.name, uid=local.uid
                ),
            )
        )
        answer = self.api.create_namespaced_service_account_token(
            local.service_account, local.namespace, request
        )
        expires = answer.status.expiration_timestamp
        lifetime = (expires - datetime.datetime.now(datetime.UTC)).total_seconds()
        local.token_renew_at = time.monotonic() + 0.8 * max(lifetime, 10)
        files = {"token": answer.status.token, "ca.crt": self._ca(local.namespace)}
        files["namespace"] = local.namespace
        for name, text in files.items():
            scratch = folder / f".{name}.new"
            scratch.write_text(text)
            scratch.chmod(0o600)
            scratch.replace(folder / name)

    def _ca(self, namespace: str) -> str:
        """The cluster's CA as pods get it: the kube-root-ca.crt ConfigMap of their namespace,
        else the CA this runner trusts."""
        try:
            cm = self.api.read_namespaced_config_map("kube-root-ca.crt", namespace)
            if cm.data and cm.data.get("ca.crt"):
                return str(cm.data["ca.crt"])
        except ApiException as exc:
            if exc.status != 404:
                raise
        ca_file = self.api.api_client.configuration.ssl_ca_cert
        if not ca_file:
            raise LayoutError("no kube-root-ca.crt ConfigMap and no CA file in the kubeconfig")
        return Path(ca_file).read_text()

    # -- processes -----------------------------------------------------------------------------

    def start_process(self, local: LocalPod) -> None:
        local.termination_path.unlink(missing_ok=True)
        out = open(local.log_path, "ab")  # noqa: SIM115  (the child keeps it)
        if local.role == "operator":
            assert local.service_account_dir is not None
            env = operator_env(
                local.container,
                self.api.api_client.configuration.host,
                local.service_account_dir,
                local.name,
                local.env,
            )
        else:
            env = local_env(local.container, local.name, local.env)
        local.process = subprocess.Popen(
            local.command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        out.close()
        local.started_at = _now()
        local.liveness_failures = 0
        local.last_liveness = local.started_mono = time.monotonic()
        (self.log_dir / f"{local.namespace}_{local.name}.pid").write_text(f"{local.process.pid}\n")
        log.info("started %s/%s (%s) on %s", local.namespace, local.name, local.role, local.ip)

    def stop_pod(self, uid: str) -> None:
        with self.lock:
            local = self.pods.pop(uid, None)
        if local is None or local.process is None:
            return
        local.finished = True
        _terminate(local.process)
        if local.service_account_dir is not None:
            for name in ("token", "ca.crt", "namespace"):
                (local.service_account_dir / name).unlink(missing_ok=True)
        log.info("stopped %s/%s: the pod is gone", local.namespace, local.name)

    def check(self) -> None:
        """One pass: probe engines, restart crashed ones, end validators that exited."""
        with self.lock:
            pods = list(self.pods.values())
        for local in pods:
            if local.finished or local.process is None:
                continue
            code = local.process.poll()
            if local.role in ONE_SHOT:
                if code is not None:
                    local.finished = True
                    self.end_validator(local, code)
                continue
            if code is not None:
                log.warning("%s/%s exited with %d; restarting", local.namespace, local.name, code)
                local.last_terminated = terminated_state(code, local.started_at, _now())
                local.restarts += 1
                if local.ready:
                    local.ready = False
                    self.write_container(local, ready=False)
                self.start_process(local)
                continue
            if local.role == "operator":
                ready = self.check_operator(local)
            else:
                # Both probes, each on its own, as the kubelet runs them.
                alive = self.check_engine_liveness(local)
                ready = alive and self.probe(local)
            if ready != local.ready:
                local.ready = ready
                self.write_container(local, ready=ready)

    def check_operator(self, local: LocalPod) -> bool:
        """Renew the token when due; the liveness probe: kill and restart the process after
        failureThreshold failures in a row, one counted per periodSeconds after
        initialDelaySeconds. Whether /healthz answers now."""
        if time.monotonic() >= local.token_renew_at:
            try:
                self.write_service_account(local)
            except ApiException as exc:
                log.warning("renewing the token of %s/%s: %s", local.namespace, local.name, exc)
        period = float(local.liveness.get("periodSeconds", 10))
        recent = time.monotonic() - local.last_liveness < period
        if local.ready and not local.liveness_failures and recent:
            return True  # probed every periodSeconds once it answers; every second before
        ok = self.probe(local)
        return self.count_liveness(local, ok) and ok

    def check_engine_liveness(self, local: LocalPod) -> bool:
        """An engine's exec liveness probe, once per periodSeconds: False once it restarted the
        process (after failureThreshold failures in a row), True otherwise."""
        if local.liveness_command is None:
            return True
        if time.monotonic() - local.last_liveness < float(local.liveness.get("periodSeconds", 10)):
            return True
        try:
            result = subprocess.run(
                local.liveness_command,
                capture_output=True,
                text=True,
                env=local_env(local.container, local.name, local.env),
                timeout=float(local.liveness.get("timeoutSeconds", 1)),
            )
            ok, output = result.returncode == 0, (result.stdout + result.stderr).strip()
        except subprocess.TimeoutExpired:
            ok, output = False, "timed out"
        if not ok:
            log.warning("%s/%s: liveness probe failed: %s", local.namespace, local.name, output)
        return self.count_liveness(local, ok, force=True)

    def count_liveness(self, local: LocalPod, ok: bool, force: bool = False) -> bool:
        """Count one liveness result (a failure counts once per periodSeconds, after
        initialDelaySeconds, or at once with `force`: the caller probed once per period); at
        failureThreshold failures in a row, kill and restart the process as the kubelet does,
        and return False."""
        now = time.monotonic()
        delay = float(local.liveness.get("initialDelaySeconds", 0))
        period = float(local.liveness.get("periodSeconds", 10))
        if ok:
            local.liveness_failures = 0
            local.last_liveness = now
        elif now - local.started_mono >= delay and (force or now - local.last_liveness >= period):
            local.liveness_failures += 1
            local.last_liveness = now
        if local.liveness_failures < int(local.liveness.get("failureThreshold", 3)):
            return True
        log.warning(
            "%s/%s failed its liveness probe %d times; restarting it",
            local.namespace,
            local.name,
            local.liveness_failures,
        )
        assert local.process is not None
        _terminate(local.process)
        code = local.process.poll()
        local.last_terminated = terminated_state(
            code if code is not None else -signal.SIGKILL, local.started_at, _now()
        )
        local.restarts += 1
        self.start_process(local)
        return False

    def probe(self, local: LocalPod) -> bool:
        if local.probe_url is None:
            return False
        try:
            r = self.http.get(local.probe_url)
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    # -- pod status, as the kubelet writes it --------------------------------------------------

    def write_container(self, local: LocalPod, ready: bool) -> None:
        pod = self._read(local)
        if pod is None:
            return
        gates_true = all(
            any(c.type == g and c.status == "True" for c in (pod.status.conditions or []))
            for g in local.gates
        )
        now = _now()
        body = {
            "status": {
                "conditions": [
                    {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": now},
                    {
                        "type": "Ready",
                        "status": str(ready and gates_true),
                        "lastTransitionTime": now,
                        **({} if ready else {"reason": "ContainersNotReady"}),
                    },
                ],
                "containerStatuses": [self._container_status(local, ready)],
            }
        }
        self._patch(local, body)

    def sync_ready(self, local: LocalPod, status: dict[str, Any]) -> None:
        """Ready = ContainersReady and every readiness gate (the operator sets the gates)."""
        conditions = {c["type"]: c.get("status") for c in status.get("conditions") or []}
        want = local.ready and all(conditions.get(g) == "True" for g in local.gates)
        if (conditions.get("Ready") == "True") != want:
            self._patch(
                local,
                {
                    "status": {
                        "conditions": [
                            {"type": "Ready", "status": str(want), "lastTransitionTime": _now()}
                        ]
                    }
                },
            )

    def end_validator(self, local: LocalPod, code: int) -> None:
        message = None
        if local.termination_path.exists():
            message = local.termination_path.read_bytes()[: c.TERMINATION_MESSAGE_LIMIT].decode(
                "utf-8", "replace"
            )
        body = ended_status(
            local.container["name"],
            local.container.get("image", ""),
            code,
            message,
            local.started_at,
            _now(),
            local.restarts,
        )
        self._patch(local, body)
        with self.lock:
            self.pods.pop(local.uid, None)
        log.info("%s/%s ended with exit code %d", local.namespace, local.name, code)

    def _container_status(self, local: LocalPod, ready: bool) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": local.container["name"],
            "image": local.container.get("image", ""),
            "imageID": "",
            "ready": ready,
            "started": True,
            "restartCount": local.restarts,
            "state": {"running": {"startedAt": local.started_at}},
        }
        if local.last_terminated is not None:
            status["lastState"] = {"terminated": local.last_terminated}
        return status

    def _read(self, local: LocalPod) -> client.V1Pod | None:
        try:
            return self.api.read_namespaced_pod(local.name, local.namespace)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("reading %s/%s: %s", local.namespace, local.name, exc.reason)
            return None

    def _patch(self, local: LocalPod, body: dict[str, Any]) -> None:
        try:
            self.api.patch_namespaced_pod_status(local.name, local.namespace, body)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("patching %s/%s: %s", local.namespace, local.name, exc.reason)

    # -- running -------------------------------------------------------------------------------

    def run(self, interval: float = 1.0) -> None:
        threading.Thread(target=self.watch, name="watch", daemon=True).start()
        while not self.stopping.wait(interval):
            try:
                self.check()
            except Exception:
                log.exception("check failed")
        self.shutdown()

    def shutdown(self) -> None:
        self.stopping.set()
        with self.lock:
            pods = list(self.pods.values())
            self.pods.clear()
        for local in pods:
            if local.process is not None:
                _terminate(local.process)


def _terminate(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--log-dir", type=Path, required=True, help="process logs and summaries")
    p.add_argument("-n", "--namespace", help="only this namespace (default: all)")
    p.add_argument(
        "--roles",
        default=",".join(ROLES.values()),
        help="which of detinfer's pods to run, comma-separated (default: %(default)s)",
    )
    p.add_argument(
        FAULT_FLAG,
        action="append",
        default=[],
        metavar="NAME=FAULT",
        help="A TEST TOOL: the engine pods of the DeterministicInferenceService NAME (label "
        f"{c.LABEL_INSTANCE}) run with `detinfer engine {FAULT_FLAG} FAULT` added, as a node "
        "that changes the engine behind its pod spec (the e2e drift test); repeatable",
    )
    p.add_argument(
        "--llama-server",
        type=Path,
        default=llamacpp.server_binary(),
        help="the llama-server that LlamaCpp pods run (default: hack/build-llama-server.sh's, "
        "%(default)s)",
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=Path.home() / ".cache" / "detinfer" / "models",
        help=f"the folder that stands for the model cache volume ({MODEL_CACHE_PATH}) of "
        "LlamaCpp pods (default: %(default)s)",
    )
    a = p.parse_args(argv)
    planted = {}
    for item in a.planted_fault:
        name, sep, fault = item.partition("=")
        if not (sep and name and fault):
            p.error(f"{FAULT_FLAG} {item!r}: give NAME=FAULT, e.g. drifting=drift=2000")
        try:
            parse_fault(fault)
        except ValueError as exc:
            p.error(str(exc))
        planted[name] = fault
    roles = frozenset(r for r in a.roles.split(",") if r)
    if not roles or roles - set(ROLES.values()):
        p.error(f"--roles: {a.roles!r}: each must be one of {', '.join(ROLES.values())}")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per probe otherwise
    a.log_dir.mkdir(parents=True, exist_ok=True)
    config.load_kube_config(a.kubeconfig)
    llama = LlamaServer(a.llama_server, a.model_dir)
    runner = PodRunner(client.CoreV1Api(), a.log_dir, a.namespace, roles, planted, llama)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.stopping.set())
    runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
