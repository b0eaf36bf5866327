"""The local pod runner: a kubelet for detinfer's own containers on the local cluster's fake nodes.

kwok simulates every pod's lifecycle without running anything. For pods whose container runs
detinfer's own command (`detinfer engine`, the reference engine; `detinfer validate`, the
validator), this runs the command as a local process instead, with the container's environment,
bound to the pod's IP (kwok gives pods 127.1.<node>.<n>, all loopback), and reports its life back
into the pod's status as a kubelet would:

- engine pods: ContainersReady (and the container's `ready`) follows the readiness probe
  (GET /health_generate on the pod IP); Ready is ContainersReady and every readiness gate, as the
  kubelet computes it; a process that exits is restarted (restartPolicy Always) with
  restartCount + 1;
- validator pods: when the process exits, the pod ends Succeeded or Failed with the exit code and
  the termination message the validator wrote to its summary file (`/dev/termination-log` in the
  container, a local file here), as the kubelet reads it;
- a deleted pod's process is stopped (SIGTERM, then SIGKILL after 10 s).

Pods it does not run (SGLang's, anything else) keep kwok's simulated lifecycle. `make demo` and
the e2e tests run it; the operator does not:

    python -m detinfer.local.pod_runner --kubeconfig ~/.cache/detinfer/kubeconfig --log-dir /tmp/pods

It reads a container's process line and readiness probe as the builders wrote them
(detinfer.builders.process_line), so a pod laid out otherwise is refused with an error naming
the pod, not run wrongly.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from detinfer.api import constants as c
from detinfer.builders.process_line import (
    ENGINE_COMMAND,
    HOST_FLAG,
    SUMMARY_FILE_FLAG,
    VALIDATOR_COMMAND,
    LayoutError,
    flag_value,
    process_line,
    with_flag_value,
)

log = logging.getLogger("pod-runner")
ROLES: dict[tuple[str, ...], str] = {ENGINE_COMMAND: "engine", VALIDATOR_COMMAND: "validator"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class LocalPod:
    namespace: str
    name: str
    uid: str
    ip: str
    container: dict[str, Any]
    role: str  # "engine" | "validator"
    log_path: Path
    termination_path: Path
    gates: list[str]
    command: list[str] = field(default_factory=list)
    probe_url: str | None = None  # engines only
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    restarts: int = 0
    started_at: str = field(default_factory=_now)
    finished: bool = False


def role_of(container: dict[str, Any]) -> str | None:
    """'engine' or 'validator' for the builders' own commands; None for anything else."""
    return ROLES.get(tuple(process_line(container)[:2]))


def local_command(
    container: dict[str, Any], role: str, ip: str, termination_path: Path
) -> list[str]:
    """The container's process line for this machine: this Python's detinfer; an engine listens
    on the pod's IP, a validator writes its summary where the runner reads it."""
    line = process_line(container)
    subcommand, args = line[1], line[2:]
    if role == "engine":
        args = with_flag_value(args, HOST_FLAG, ip)
    else:
        summary = flag_value(args, SUMMARY_FILE_FLAG)
        if summary != c.TERMINATION_MESSAGE_PATH:
            raise LayoutError(
                f"{SUMMARY_FILE_FLAG} is {summary!r}, not {c.TERMINATION_MESSAGE_PATH!r}"
            )
        args = with_flag_value(args, SUMMARY_FILE_FLAG, str(termination_path))
    return [sys.executable, "-m", "detinfer.cli", subcommand, *args]


def readiness_url(container: dict[str, Any], ip: str) -> str:
    """The URL of the container's HTTP readiness probe on the pod's IP (a named port resolved
    through the container's ports, as the kubelet does)."""
    get = (container.get("readinessProbe") or {}).get("httpGet")
    if not get:
        raise LayoutError(f"container {container.get('name')!r} has no httpGet readiness probe")
    port = get.get("port")
    if isinstance(port, str):
        named = [p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port]
        if not named:
            raise LayoutError(f"readiness probe port {port!r} is not a port of the container")
        port = named[0]
    return f"http://{ip}:{port}{get.get('path') or '/'}"


def local_env(container: dict[str, Any]) -> dict[str, str]:
    """This machine's environment with the container's literal values over it."""
    env = dict(os.environ)
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
    env.setdefault("OMP_NUM_THREADS", "1")  # many small processes on few cores
    return env


def ended_status(
    container: str,
    image: str,
    exit_code: int,
    message: str | None,
    started_at: str,
    finished_at: str,
    restarts: int = 0,
) -> dict[str, Any]:
    """The status patch the kubelet writes when a pod's only container has exited for good."""
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "startedAt": started_at,
        "finishedAt": finished_at,
        "reason": "Completed" if exit_code == 0 else "Error",
    }
    if message:
        terminated["message"] = message
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
    def __init__(self, api: client.CoreV1Api, log_dir: Path, namespace: str | None = None) -> None:
        self.api = api
        self.log_dir = log_dir
        self.namespace = namespace
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
            if local.role == "engine" and not local.finished:
                self.sync_ready(local, status)
            return
        containers = spec.get("containers") or []
        if len(containers) != 1 or status.get("phase") != "Running" or not status.get("podIP"):
            return
        role = role_of(containers[0])
        if role is None:
            return
        if any(
            (s.get("state") or {}).get("terminated") for s in status.get("containerStatuses") or []
        ):
            return  # it ran and ended before (a runner restarted): a kubelet does not rerun it
        stem = f"{meta['namespace']}_{meta['name']}"
        ip = status["podIP"]
        termination_path = self.log_dir / f"{stem}.termination-log"
        try:
            command = local_command(containers[0], role, ip, termination_path)
            probe_url = readiness_url(containers[0], ip) if role == "engine" else None
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
            probe_url=probe_url,
        )
        with self.lock:
            self.pods[uid] = local
        self.start_process(local)
        if role == "engine":
            self.write_container(local, ready=False)

    # -- processes -----------------------------------------------------------------------------

    def start_process(self, local: LocalPod) -> None:
        local.termination_path.unlink(missing_ok=True)
        out = open(local.log_path, "ab")  # noqa: SIM115  (the child keeps it)
        local.process = subprocess.Popen(
            local.command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=local_env(local.container),
            start_new_session=True,
        )
        out.close()
        local.started_at = _now()
        log.info("started %s/%s (%s) on %s", local.namespace, local.name, local.role, local.ip)

    def stop_pod(self, uid: str) -> None:
        with self.lock:
            local = self.pods.pop(uid, None)
        if local is None or local.process is None:
            return
        local.finished = True
        _terminate(local.process)
        log.info("stopped %s/%s: the pod is gone", local.namespace, local.name)

    def check(self) -> None:
        """One pass: probe engines, restart crashed ones, end validators that exited."""
        with self.lock:
            pods = list(self.pods.values())
        for local in pods:
            if local.finished or local.process is None:
                continue
            code = local.process.poll()
            if local.role == "validator":
                if code is not None:
                    local.finished = True
                    self.end_validator(local, code)
                continue
            if code is not None:
                log.warning("%s/%s exited with %d; restarting", local.namespace, local.name, code)
                local.restarts += 1
                if local.ready:
                    local.ready = False
                    self.write_container(local, ready=False)
                self.start_process(local)
                continue
            ready = self.probe(local)
            if ready != local.ready:
                local.ready = ready
                self.write_container(local, ready=ready)

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
            code if code >= 0 else 128 - code,  # killed by a signal: 128 + its number
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
        return {
            "name": local.container["name"],
            "image": local.container.get("image", ""),
            "imageID": "",
            "ready": ready,
            "started": True,
            "restartCount": local.restarts,
            "state": {"running": {"startedAt": local.started_at}},
        }

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
    a = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    a.log_dir.mkdir(parents=True, exist_ok=True)
    config.load_kube_config(a.kubeconfig)
    runner = PodRunner(client.CoreV1Api(), a.log_dir, a.namespace)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.stopping.set())
    runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
