"""`make chaos`: the faults a real cluster sees, on the local cluster, and what the operator did.

Each fault runs against one DeterministicInferenceService of the reference engine (examples/
reference.yaml in a namespace of its own, overhead off so that only validation Jobs run) on the
cluster `make demo` starts: the real kube-apiserver, etcd, kube-controller-manager,
kube-scheduler and kwok (hack/cluster-up.sh, whose supervisor restarts a component that exits),
the chart's operator, engines and validators run by the pod runner (detinfer.local.pod_runner).
Nothing is simulated: a frozen process is a SIGSTOP of the real one, a killed one a SIGKILL.

| fault | what is done |
|---|---|
| apiserver-frozen | spec.replicas 2 -> 3, then kube-apiserver stopped (SIGSTOP) for 40 s |
| etcd-frozen | spec.replicas 2 -> 3, then etcd stopped for 20 s |
| operator-killed | spec.replicas 2 -> 3; once the validation Job's pod runs, the operator SIGKILLed |
| engine-pod-deleted | one validated engine pod deleted |
| engine-hung | one engine pod deleted; once the validation Job's pod runs, the new engine process stopped for 60 s |
| refused-spec | spec.resources.sharedMemorySize 1e999 (the API server admits it, the operator refuses it), then the good spec back |

After each fault, the row records whether the resource converged: Ready=True for the spec's
generation, every replica of the current revision validated (its readiness gate True), the
fingerprint the one recorded before the fault, no false verdict (a NotDeterministic,
FingerprintMismatch or ServerMismatch Event: every engine here is deterministic) and no duplicate
Job (a validation Job created while another one's pod still ran; `overlapping`). "could not test" (CouldNotValidate) is no verdict: its count is shown. A fault that scaled
up is undone afterwards (replicas back to 2, converged again) before the next row; a row whose
undo does not converge has not converged.

    python -m detinfer.local.chaos --kubeconfig ~/.cache/detinfer/kubeconfig \\
        --pods-dir ~/.cache/detinfer/demo/pods --cluster-dir ~/.cache/detinfer/kwok/clusters/detinfer
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from detinfer.api import constants as c
from detinfer.api.status import Verdict

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "reference.yaml"
OPERATOR_NAMESPACE = "detinfer-system"
OPERATOR_SELECTOR = f"{c.LABEL_COMPONENT}=operator,app.kubernetes.io/name=detinfer"
FALSE_VERDICTS = frozenset(v.condition_reason for v in Verdict if v.failed)
COULD_NOT = Verdict.COULD_NOT_TEST.condition_reason
DEFAULT_TIMEOUT = 600.0
# Requests of this tool give up after this long (a frozen API server answers none).
REQUEST_TIMEOUT = 15


def selector(name: str, component: str) -> str:
    """The label selector of one resource's pods or Jobs of `component` (it finds them; what
    counts is read from them)."""
    return f"{c.LABEL_INSTANCE}={name},{c.LABEL_COMPONENT}={component}"


@dataclass
class Row:
    """What one fault did."""

    fault: str
    converged: bool = False
    seconds: float = 0.0
    validated: str = ""
    fingerprint: str = ""
    false_verdicts: int = 0
    could_not_test: int = 0
    validation_jobs: int = 0
    duplicate_jobs: int = 0
    restarted: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.converged
            and self.fingerprint == "unchanged"
            and self.false_verdicts == 0
            and self.duplicate_jobs == 0
        )


class JobWatch(threading.Thread):
    """The validation Jobs of one resource created while a row runs (since `since`, epoch
    seconds), deleted ones included. It watches through API server stalls: a watch that breaks
    resumes from the last resourceVersion it saw."""

    def __init__(self, api: client.BatchV1Api, namespace: str, name: str, since: float):
        super().__init__(daemon=True, name="chaos-jobs")
        self.api, self.namespace, self.since = api, namespace, since
        self.selector = selector(name, c.COMPONENT_VALIDATOR)
        self.stopping = threading.Event()
        self.seen: set[str] = set()

    def run(self) -> None:
        version = None
        while not self.stopping.is_set():
            try:
                if version is None:
                    listed = self.api.list_namespaced_job(
                        self.namespace, label_selector=self.selector, _request_timeout=30
                    )
                    for job in listed.items:
                        self.record(job)
                    version = listed.metadata.resource_version
                stream = watch.Watch().stream(
                    self.api.list_namespaced_job,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=version,
                    timeout_seconds=20,
                    _request_timeout=30,
                )
                for event in stream:
                    version = event["object"].metadata.resource_version
                    self.record(event["object"])
                    if self.stopping.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:  # too old: list again
                    version = None
                time.sleep(1)
            except Exception:  # a frozen or restarting API server: try again
                time.sleep(1)

    def record(self, job: Any) -> None:
        if job.metadata.creation_timestamp.timestamp() >= self.since:
            self.seen.add(job.metadata.name)


def overlapping(runs: list[tuple[str, float, float]], since: float) -> list[str]:
    """Jobs created since `since` while another validation Job's pod had not ended: each run is
    (Job, created, its pod's end), times in epoch seconds. The operator reads a verdict from
    the pod, so that is when a Job is done for it; the Job's own Complete condition comes later
    from the kube-controller-manager, and later still when that was restarting."""
    return sorted(
        job
        for job, created, _ in runs
        if created >= since
        and any(other != job and start <= created < end for other, start, end in runs)
    )


class Chaos:
    """The cluster, the resource under test and the processes behind it."""

    def __init__(self, kubeconfig: Path, pods_dir: Path, cluster_dir: Path, namespace: str):
        api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.pods_dir, self.cluster_dir, self.namespace = pods_dir, cluster_dir, namespace
        self.body = yaml.safe_load(EXAMPLE.read_text())
        self.body["spec"]["overhead"] = {"enabled": False}
        self.name = self.body["metadata"]["name"]
        self.replicas = int(self.body["spec"]["replicas"])

    # -- the resource -------------------------------------------------------------------------

    def dis(self) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(
            c.GROUP,
            c.VERSION,
            self.namespace,
            c.PLURAL,
            self.name,
            _request_timeout=REQUEST_TIMEOUT,
        )

    def patch_spec(self, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            c.GROUP, c.VERSION, self.namespace, c.PLURAL, self.name, {"spec": spec},
            _request_timeout=REQUEST_TIMEOUT,
        )  # fmt: skip

    def create(self) -> None:
        """The namespace and the resource (again, if an earlier run left them)."""
        try:
            self.core.create_namespace({"metadata": {"name": self.namespace}})
        except ApiException as exc:
            if exc.status != 409:
                raise
        try:
            self.custom.create_namespaced_custom_object(
                c.GROUP, c.VERSION, self.namespace, c.PLURAL, self.body
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.patch_spec(copy.deepcopy(self.body["spec"]))

    def engine_pods(self) -> list[Any]:
        pods = self.core.list_namespaced_pod(
            self.namespace,
            label_selector=selector(self.name, c.COMPONENT_ENGINE),
            _request_timeout=REQUEST_TIMEOUT,
        ).items
        return [p for p in pods if p.metadata.deletion_timestamp is None]

    def converged(self, fingerprint: str | None) -> str | None:
        """None when converged; else what is still missing."""
        try:
            dis, pods = self.dis(), self.engine_pods()
        except Exception as exc:  # the API server is not back yet
            return f"API: {type(exc).__name__}"
        status = dis.get("status") or {}
        ready = _condition(status, "Ready")
        if status.get("observedGeneration") != dis["metadata"]["generation"]:
            return "status of an older generation"
        if ready.get("status") != "True":
            return f"Ready={ready.get('status')} {ready.get('reason')}: {ready.get('message')}"
        desired = dis["spec"]["replicas"]
        gated = [p for p in pods if _gate(p) == "True"]
        if len(pods) != desired or len(gated) != desired:
            return f"{len(gated)} of {len(pods)} pod(s) validated, {desired} desired"
        if fingerprint is not None and status.get("fingerprint") != fingerprint:
            return f"fingerprint {status.get('fingerprint')}, was {fingerprint}"
        return None

    def wait_converged(self, fingerprint: str | None, timeout: float) -> tuple[bool, str]:
        deadline = time.monotonic() + timeout
        missing: str | None = "not checked"
        while time.monotonic() < deadline:
            missing = self.converged(fingerprint)
            if missing is None:
                return True, ""
            time.sleep(1)
        return False, missing or ""

    def verdict_events(self, since: float) -> dict[str, int]:
        """The validation verdicts posted on the resource since `since` (epoch seconds), by
        reason: one Event per validation Job read (controller/reconcile.py)."""
        counts: dict[str, int] = {}
        for event in self.core.list_namespaced_event(self.namespace).items:
            obj = event.involved_object
            when = event.last_timestamp or event.event_time or event.first_timestamp
            if obj.name != self.name or when is None or when.timestamp() < since:
                continue
            if event.message and event.message.startswith("Job "):
                counts[event.reason] = counts.get(event.reason, 0) + (event.count or 1)
        return counts

    def validation_runs(self) -> list[tuple[str, float, float]]:
        """(Job, created, its pod's end) of every validation Job of the resource that still
        exists; a pod still running ends now."""
        validators = selector(self.name, c.COMPONENT_VALIDATOR)
        jobs = self.batch.list_namespaced_job(self.namespace, label_selector=validators).items
        created = {j.metadata.name: j.metadata.creation_timestamp.timestamp() for j in jobs}
        ended: dict[str, float] = {}
        for pod in self.core.list_namespaced_pod(self.namespace, label_selector=validators).items:
            owner = next(
                (r.name for r in pod.metadata.owner_references or [] if r.kind == "Job"), ""
            )
            states = [s.state.terminated for s in pod.status.container_statuses or []]
            end = states[0].finished_at.timestamp() if states and states[0] else time.time()
            ended[owner] = max(ended.get(owner, 0.0), end)
        return [(job, start, ended.get(job, time.time())) for job, start in created.items()]

    # -- the processes ------------------------------------------------------------------------

    def component_pid(self, component: str) -> int:
        return int((self.cluster_dir / "pids" / f"{component}.pid").read_text())

    def pod_pid(self, namespace: str, pod: str) -> int:
        return int((self.pods_dir / f"{namespace}_{pod}.pid").read_text())

    def operator_pid(self) -> int:
        pods = self.core.list_namespaced_pod(OPERATOR_NAMESPACE, label_selector=OPERATOR_SELECTOR)
        live = [p for p in pods.items if p.metadata.deletion_timestamp is None]
        if len(live) != 1:
            raise RuntimeError(f"{len(live)} operator pods in {OPERATOR_NAMESPACE}")
        return self.pod_pid(OPERATOR_NAMESPACE, live[0].metadata.name)

    def supervisor_lines(self) -> list[str]:
        path = self.cluster_dir / "logs" / "supervisor.log"
        return path.read_text().splitlines() if path.exists() else []

    def running_validation(self, timeout: float = 180.0) -> str:
        """The validator pod of a running validation Job, once its process runs: its name."""
        validators = selector(self.name, c.COMPONENT_VALIDATOR)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pod in self.core.list_namespaced_pod(
                self.namespace, label_selector=validators
            ).items:
                running = pod.status.phase in ("Pending", "Running")
                pid_file = self.pods_dir / f"{self.namespace}_{pod.metadata.name}.pid"
                if running and pod.metadata.deletion_timestamp is None and pid_file.exists():
                    return str(pod.metadata.name)
            time.sleep(0.5)
        raise TimeoutError(f"no validation Job ran within {timeout:.0f} s")

    def restart_counts(self) -> dict[str, int]:
        counts = {}
        pods = [*self.engine_pods()]
        operator = self.core.list_namespaced_pod(
            OPERATOR_NAMESPACE, label_selector=OPERATOR_SELECTOR
        )
        for pod in [*pods, *operator.items]:
            for s in pod.status.container_statuses or []:
                counts[pod.metadata.name] = s.restart_count
        return counts


@contextmanager
def stopped(pid: int, group: bool = False) -> Iterator[None]:
    """The process (or its process group) stopped (SIGSTOP) for the block, then continued."""
    send = os.killpg if group else os.kill
    send(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        # It may have been killed meanwhile (the kubelet's liveness probe, here the pod runner).
        with suppress(ProcessLookupError):
            send(pid, signal.SIGCONT)


# ---- the faults ----------------------------------------------------------------------------


def scale_up(chaos: Chaos) -> None:
    chaos.patch_spec({"replicas": chaos.replicas + 1})
    time.sleep(2)  # the ReplicaSet is making the pod


def apiserver_frozen(chaos: Chaos, seconds: float = 40) -> str:
    scale_up(chaos)
    with stopped(chaos.component_pid("kube-apiserver")):
        time.sleep(seconds)
    return f"kube-apiserver stopped {seconds:.0f} s during a scale-up"


def etcd_frozen(chaos: Chaos, seconds: float = 20) -> str:
    scale_up(chaos)
    with stopped(chaos.component_pid("etcd")):
        time.sleep(seconds)
    return f"etcd stopped {seconds:.0f} s during a scale-up"


def operator_killed(chaos: Chaos) -> str:
    scale_up(chaos)
    validator = chaos.running_validation()
    pid = chaos.operator_pid()
    os.killpg(pid, signal.SIGKILL)
    return f"operator (pid {pid}) SIGKILLed while {validator} ran"


def _delete_an_engine_pod(chaos: Chaos) -> str:
    victim = sorted(p.metadata.name for p in chaos.engine_pods())[0]
    chaos.core.delete_namespaced_pod(victim, chaos.namespace)
    return victim


def engine_pod_deleted(chaos: Chaos) -> str:
    return f"engine pod {_delete_an_engine_pod(chaos)} deleted"


def engine_hung(chaos: Chaos, seconds: float = 60) -> str:
    victim = _delete_an_engine_pod(chaos)
    validator = chaos.running_validation()
    new = [p.metadata.name for p in chaos.engine_pods() if p.metadata.name != victim]
    fresh = [name for name in new if _gate_of(chaos, name) != "True"]
    target = fresh[0] if fresh else new[0]
    pid = chaos.pod_pid(chaos.namespace, target)
    with stopped(pid, group=True):
        time.sleep(seconds)
    return f"{victim} deleted; engine of {target} stopped {seconds:.0f} s while {validator} ran"


def refused_spec(chaos: Chaos) -> str:
    before = {p.metadata.name for p in chaos.engine_pods()}
    chaos.patch_spec({"resources": {"sharedMemorySize": "1e999"}})
    deadline = time.monotonic() + 60
    ready: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ready = _condition(chaos.dis().get("status") or {}, "Ready")
        if ready.get("reason") == c.Reason.INVALID_SPEC:
            break
        time.sleep(0.5)
    else:
        raise RuntimeError(f"the operator did not refuse the spec: Ready {ready}")
    kept = {p.metadata.name for p in chaos.engine_pods() if _gate(p) == "True"}
    if kept != before:
        raise RuntimeError(f"the refused spec changed the pods: {sorted(before)} -> {sorted(kept)}")
    chaos.patch_spec({"resources": copy.deepcopy(chaos.body["spec"]["resources"])})
    return f"refused ({ready.get('message', '')[:60]}); pods kept; good spec back"


FAULTS: dict[str, tuple[Callable[[Chaos], str], bool]] = {
    # name -> (the fault, whether it scaled up and must be undone)
    "apiserver-frozen": (apiserver_frozen, True),
    "etcd-frozen": (etcd_frozen, True),
    "operator-killed": (operator_killed, True),
    "engine-pod-deleted": (engine_pod_deleted, False),
    "engine-hung": (engine_hung, False),
    "refused-spec": (refused_spec, False),
}
FAST = ("operator-killed", "engine-pod-deleted", "refused-spec")
"""The subset `make test` runs (tests/e2e/test_chaos.py): no control-plane stall, about three
minutes."""


def run_fault(chaos: Chaos, name: str, fingerprint: str, timeout: float) -> Row:
    fault, scaled = FAULTS[name]
    row = Row(name)
    started, since = time.monotonic(), time.time() - 1
    jobs = JobWatch(chaos.batch, chaos.namespace, chaos.name, since)
    jobs.start()
    restarts, supervised = chaos.restart_counts(), len(chaos.supervisor_lines())
    try:
        row.note = fault(chaos)
        row.converged, missing = chaos.wait_converged(fingerprint, timeout)
        row.note += "" if row.converged else f"; not converged: {missing}"
    except Exception as exc:
        row.note = f"{type(exc).__name__}: {exc}"
    row.seconds = round(time.monotonic() - started, 1)
    jobs.stopping.set()
    _fill(row, chaos, fingerprint, since, jobs)
    row.restarted = [
        line.split(" ", 2)[2].split(" (")[0] for line in chaos.supervisor_lines()[supervised:]
    ]
    row.restarted += [
        f"container of {pod} x{n - restarts.get(pod, 0)}"
        for pod, n in chaos.restart_counts().items()
        if n > restarts.get(pod, 0)
    ]
    if scaled:  # the cluster must still work after the fault: the scale-up undone
        chaos.patch_spec({"replicas": chaos.replicas})
        undone, missing = chaos.wait_converged(fingerprint, timeout)
        if not undone:
            row.converged = False
            row.note += f"; replicas back to {chaos.replicas} did not converge: {missing}"
    return row


def _fill(row: Row, chaos: Chaos, fingerprint: str, since: float, jobs: JobWatch) -> None:
    dis = chaos.dis()
    status = dis.get("status") or {}
    replicas = status.get("replicas") or {}
    row.validated = f"{replicas.get('validated', 0)}/{dis['spec']['replicas']}"
    now = status.get("fingerprint")
    row.fingerprint = "unchanged" if now == fingerprint else f"{now} (was {fingerprint})"
    verdicts = chaos.verdict_events(since)
    row.false_verdicts = sum(n for reason, n in verdicts.items() if reason in FALSE_VERDICTS)
    row.could_not_test = verdicts.get(COULD_NOT, 0)
    row.validation_jobs = len(jobs.seen)
    row.duplicate_jobs = len(overlapping(chaos.validation_runs(), since))


def run(chaos: Chaos, names: list[str], timeout: float = DEFAULT_TIMEOUT) -> list[Row]:
    chaos.create()
    converged, missing = chaos.wait_converged(None, timeout)
    if not converged:
        raise RuntimeError(f"{chaos.namespace}/{chaos.name} never became Ready: {missing}")
    fingerprint = chaos.dis()["status"]["fingerprint"]
    return [run_fault(chaos, name, fingerprint, timeout) for name in names]


def table(rows: list[Row]) -> str:
    head = (
        "| fault | converged | seconds | validated | fingerprint | false verdicts | "
        "could not test | validation Jobs | duplicate Jobs | restarted | what was done |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r.fault} | {'yes' if r.converged else 'NO'} | {r.seconds:.0f} | {r.validated} | "
            f"{r.fingerprint} | {r.false_verdicts} | {r.could_not_test} | {r.validation_jobs} | "
            f"{r.duplicate_jobs} | {', '.join(r.restarted) or '-'} | {r.note} |"
        )
    return "\n".join(lines)


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((x for x in status.get("conditions") or [] if x.get("type") == type_), {})


def _gate(pod: Any) -> str | None:
    conditions = pod.status.conditions or []
    return next((x.status for x in conditions if x.type == c.READINESS_GATE), None)


def _gate_of(chaos: Chaos, pod: str) -> str | None:
    return _gate(chaos.core.read_namespaced_pod(pod, chaos.namespace))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detinfer.local.chaos", description=__doc__)
    cache = Path.home() / ".cache" / "detinfer"
    parser.add_argument("--kubeconfig", type=Path, default=cache / "kubeconfig")
    parser.add_argument("--pods-dir", type=Path, default=cache / "demo" / "pods",
                        help="the pod runner's --log-dir (its pid files)")  # fmt: skip
    parser.add_argument("--cluster-dir", type=Path, default=cache / "kwok/clusters/detinfer",
                        help="kwokctl's folder of the cluster (pids/, logs/)")  # fmt: skip
    parser.add_argument("--namespace", default="detinfer-chaos")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"comma-separated, in order; of {', '.join(FAULTS)}")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds each fault may take to converge")  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the rows here (JSON lines)")
    args = parser.parse_args(argv)
    names = [n for n in args.faults.split(",") if n]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        parser.error(f"--faults: unknown {', '.join(unknown)}; known: {', '.join(FAULTS)}")
    chaos = Chaos(args.kubeconfig, args.pods_dir, args.cluster_dir, args.namespace)
    try:
        rows = run(chaos, names, args.timeout)
    except RuntimeError as exc:  # the resource never became Ready before the first fault
        print(f"chaos: {exc}", file=sys.stderr)
        return 1
    print(table(rows))
    if args.out:
        args.out.write_text("".join(json.dumps(asdict(r)) + "\n" for r in rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
