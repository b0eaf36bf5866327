"""make bench-operator: the operator against a real local control plane at 100 and 1000 resources.

For each size it creates the DeterministicInferenceServices as fast as one client can, and
measures:
- create -> Deployment: from the create call's return to the Deployment's ADDED watch event;
- summary -> Ready: from writing the validator pod's terminated status (the summary, as the
  kubelet would report it) to the Ready=True watch event of its resource;
- the operator's peak RSS (VmHWM);
- the operator's API requests per minute while nothing changes, from the API server's audit log
  (user agents detinfer/* and kopf/*), and how many of them are writes;
and, from the same run and the same API server, side by side:
- the API server's own latency (audit log: stageTimestamp - requestReceivedTimestamp) over every
  request it received during the size's run, watches excepted;
- the kube-controller-manager's reaction: from a Deployment's ADDED watch event to its
  ReplicaSet's ADDED watch event;
- from the audit log, where create -> Deployment goes: from the resource's create to the
  operator's first request about it (the queue), and from there to the
  Deployment (for a new resource: its create);
- and where summary -> Ready goes: to the operator's first request after the summary, from there
  to its Ready status patch completed (and how much of that the API server took), and from
  there to the bench's watch seeing it, with each step's mean over the slowest 1%.

Prints a table with the targets of issue #13 beside the measurements. `--profile` also samples
the operator's stacks (bench/sampler; `python -m bench.profile_report FILE` reads them).
Everything runs on this
machine: the cluster (etcd, kube-apiserver, controller-manager, scheduler, kwok), the operator,
and this client share its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import watch

from bench import audit, timings
from detinfer.percentile import percentile
from tests.support import factories as f
from tests.support.cluster import WRITE_VERBS, Cluster, Operator, wait_for

IDLE_SECONDS = 60
SAMPLER = Path(__file__).resolve().parent / "sampler"
# Issue #13: create -> Deployment p99 within this many times the API server's own p99 in the
# same run; summary -> Ready p99 and RSS bounds at 1000.
CREATE_VS_API = 3.0
READY_P99_SECONDS = 2.0
RSS_MIB = 300


def bench_node(i: int) -> dict:
    """A fake node that holds many CPU pods, with its own pod CIDR inside 127.0.0.0/8."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": f"bench-{i}",
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": f"bench-{i}"},
        },
        "spec": {"podCIDR": f"127.{20 + i}.0.0/16", "podCIDRs": [f"127.{20 + i}.0.0/16"]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "1000"},
            "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "1000"},
        },
    }


def dis_body(name: str) -> dict:
    body = f.dis(
        engine={"kind": "Reference"},
        replicas=1,
        resources={"gpusPerReplica": 0, "gpuProduct": None},
        model={"path": "tiny", "revision": None, "allowUnpinnedRevision": True},
        validation={"revalidateEverySeconds": 0, "trials": 4},
    )
    body["metadata"] = {"name": name}
    return body


def object_name(event: dict[str, Any]) -> str:
    obj = event["object"]
    return obj["metadata"]["name"] if isinstance(obj, dict) else obj.metadata.name


def owner_name(event: dict[str, Any]) -> str:
    """The name of the object's controlling owner (a ReplicaSet's Deployment)."""
    owners = event["object"].metadata.owner_references or []
    return next((o.name for o in owners if o.controller), "")


class Recorder(threading.Thread):
    """Watches one namespace and records when each object (by `key`) first matched `test`."""

    def __init__(
        self,
        list_fn: Callable[..., Any],
        test: Callable[[dict[str, Any]], bool],
        key: Callable[[dict[str, Any]], str] = object_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(daemon=True)
        self.list_fn, self.test, self.key, self.kwargs = list_fn, test, key, kwargs
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            w = watch.Watch()
            for event in w.stream(self.list_fn, timeout_seconds=30, **self.kwargs):
                name = self.key(event)
                if name not in self.seen and self.test(event):
                    self.seen[name] = time.monotonic()
                if self.stop.is_set():
                    w.stop()
                    break


def is_ready(event) -> bool:
    conditions = (event["object"].get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def run_size(cluster: Cluster, operator: Operator, size: int) -> dict:
    namespace = f"bench-{size}"
    cluster.kubectl("create", "namespace", namespace)
    wait_for(
        "default ServiceAccount",
        lambda: (
            cluster.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode == 0
        ),
    )
    deployments = Recorder(
        cluster.apps.list_namespaced_deployment, lambda e: e["type"] == "ADDED", namespace=namespace
    )
    deployments.start()
    replicasets = Recorder(
        cluster.apps.list_namespaced_replica_set,
        lambda e: e["type"] == "ADDED",
        key=owner_name,
        namespace=namespace,
    )
    replicasets.start()
    ready = Recorder(
        cluster.custom.list_namespaced_custom_object,
        is_ready,
        group="detinfer.io",
        version="v1alpha1",
        namespace=namespace,
        plural="deterministicinferenceservices",
    )
    ready.start()
    # The same resources' ADDED events on a watch of this client: how long the API server takes
    # to deliver a watch event at all, beside the operator's way to its first request.
    added = Recorder(
        cluster.custom.list_namespaced_custom_object,
        lambda e: e["type"] == "ADDED",
        group="detinfer.io",
        version="v1alpha1",
        namespace=namespace,
        plural="deterministicinferenceservices",
    )
    added.start()
    time.sleep(1)

    names = [f"s{i:04d}" for i in range(size)]
    created: dict[str, float] = {}
    run_since = time.time()
    started = time.monotonic()
    for name in names:
        cluster.custom.create_namespaced_custom_object(
            "detinfer.io", "v1alpha1", namespace, "deterministicinferenceservices", dis_body(name)
        )
        created[name] = time.monotonic()
    create_seconds = time.monotonic() - started
    wait_for(f"{size} Deployments", lambda: len(deployments.seen) >= size, timeout=60 + size)
    # deployments.seen is keyed by Deployment name, which is the resource's name.
    create_to_deployment = [deployments.seen[n] - created[n] for n in names]
    wait_for(f"{size} ReplicaSets", lambda: len(replicasets.seen) >= size, timeout=60 + size)
    deployment_to_replicaset = [replicasets.seen[n] - deployments.seen[n] for n in names]

    # Every resource's pod runs (kwok); the operator starts one validation Job each.
    def jobs_running():
        pods = cluster.core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=validator"
        ).items
        running = [p for p in pods if p.status.phase == "Running"]
        return running if len(running) >= size else None

    validator_pods = wait_for(f"{size} running validator pods", jobs_running, timeout=120 + size)
    summary = f.summary()
    written: dict[str, float] = {}
    for pod in validator_pods:
        instance = pod.metadata.labels["app.kubernetes.io/instance"]
        cluster.end_container(namespace, pod, 0, summary)
        written[instance] = time.monotonic()
    wait_for(f"{size} Ready resources", lambda: len(ready.seen) >= size, timeout=60 + size)
    summary_to_ready = [ready.seen[n] - written[n] for n in names]
    run_until = time.time()
    wall = time.time() - time.monotonic()  # the audit log's clock
    create_to_added = [added.seen[n] - created[n] for n in names if n in added.seen]
    for recorder in (deployments, replicasets, ready, added):
        recorder.stop.set()
    return {
        "size": size,
        "namespace": namespace,
        "since": run_since,
        "until": run_until,
        "create_seconds": create_seconds,
        "create_p50": percentile(create_to_deployment, 50),
        "create_p99": percentile(create_to_deployment, 99),
        "kcm_p50": percentile(deployment_to_replicaset, 50),
        "kcm_p99": percentile(deployment_to_replicaset, 99),
        "ready_p50": percentile(summary_to_ready, 50),
        "ready_p99": percentile(summary_to_ready, 99),
        "added_p50": percentile(create_to_added, 50) if create_to_added else float("nan"),
        "added_p99": percentile(create_to_added, 99) if create_to_added else float("nan"),
        **audit_figures(
            cluster,
            namespace,
            set(names),
            run_since,
            run_until,
            {n: written[n] + wall for n in names},
            {n: ready.seen[n] + wall for n in names},
        ),
    }


def audit_figures(
    cluster: Cluster,
    namespace: str,
    names: set[str],
    since: float,
    until: float,
    written: dict[str, float],
    seen_ready: dict[str, float],
) -> dict[str, Any]:
    """The API server's latency over the run, and the operator's path per resource (`written`
    and `seen_ready`: each resource's summary written and Ready seen, on the audit log's clock)."""
    entries = list(audit.read(cluster.audit_log))
    api = audit.latencies(entries, since, until)
    operator_api = audit.latencies((e for e in entries if audit.is_operator(e)), since, until)
    created = audit.creations(entries, namespace, "deterministicinferenceservices")
    paths = audit.operator_paths(entries, namespace, names)
    queue, first_to_deployment = [], []
    first_request = {name: path[0][0] for name, path in paths.items() if path}
    for name, path in paths.items():
        # The Deployment written: created, or applied (a create and its relabel patch before).
        applies = [
            done for _, done, step in path if step in ("create deployments", "patch deployments")
        ]
        if name in created and path and applies:
            queue.append(path[0][0] - created[name])
            first_to_deployment.append(applies[0] - path[0][0])
    orders = audit.write_orders(paths).most_common(3)
    return {
        "api_count": len(api),
        "api_p50": percentile(api, 50),
        "api_p99": percentile(api, 99),
        "operator_api_count": len(operator_api),
        "operator_api_p50": percentile(operator_api, 50),
        "operator_api_p99": percentile(operator_api, 99),
        "queue_p50": percentile(queue, 50) if queue else float("nan"),
        "queue_p99": percentile(queue, 99) if queue else float("nan"),
        "first_to_deployment_p50": percentile(first_to_deployment, 50) if queue else float("nan"),
        "first_to_deployment_p99": percentile(first_to_deployment, 99) if queue else float("nan"),
        "orders": [[list(order), n] for order, n in orders],
        "verdict_path": verdict_path(paths, written, seen_ready),
        # For the probe's split of the verdict's first step (probe_figures).
        "_written": written,
        "_verdict_first": {
            name: after[0][0]
            for name, path in paths.items()
            if (after := [p for p in path if written[name] <= p[0] <= seen_ready[name]])
        },
        # For the probe's figures (probe_figures), dropped from the rows before they are shown.
        "_created": created,
        "_first_request": first_request,
    }


VERDICT_STEPS = (
    "summary written -> the operator's first request after it",
    "first request -> Ready written (status patch completed)",
    "of which at the API server",
    "Ready written -> seen on the bench's watch",
)


def verdict_path(
    paths: dict[str, list[tuple[float, float, str]]],
    written: dict[str, float],
    seen_ready: dict[str, float],
) -> dict[str, Any]:
    """Where summary -> Ready goes, from the audit log: per step (VERDICT_STEPS) its p50 and p99
    over the resources, and its mean over the slowest 1% (the resources that make the p99).

    The Ready write is the last status patch the API server completed before the bench saw
    Ready; "at the API server" sums the durations of the operator's requests from the first one
    after the summary up to that patch."""
    steps: list[tuple[float, float, float, float, float]] = []  # (total, *VERDICT_STEPS)
    for name, path in paths.items():
        after = [p for p in path if written[name] <= p[0] <= seen_ready[name]]
        ready = [p for p in after if p[2] == STATUS_PATCH and p[1] <= seen_ready[name]]
        if not ready:
            continue
        first, done = after[0][0], ready[-1][1]
        at_server = sum(end - start for start, end, _ in after if end <= done)
        steps.append(
            (
                seen_ready[name] - written[name],
                first - written[name],
                done - first,
                at_server,
                seen_ready[name] - done,
            )
        )
    out = timings.split_steps(steps, VERDICT_STEPS)
    if out["n"]:
        tail = sorted(steps)[-out["tail_n"] :]
        out["tail_total_mean"] = sum(s[0] for s in tail) / len(tail)
    return out


STATUS_PATCH = "patch deterministicinferenceservices/status"


def watching(cluster: Cluster) -> bool:
    """Whether the audit log shows the operator's watch of the resources as started."""
    return any(
        e["verb"] == "watch"
        and (e.get("objectRef") or {}).get("resource") == "deterministicinferenceservices"
        and e.get("stage") == "ResponseStarted"
        for e in cluster.operator_requests()
    )


def probe_figures(probe_path: Path, row: dict[str, Any]) -> dict[str, Any]:
    """What the operator's probe recorded over the size's run (bench/timings.py)."""
    probe = timings.read(probe_path)
    since, until = row["since"], row["until"]
    return {
        "events": timings.events_per_kind(probe, since, until),
        "loop_lag": timings.lags(probe["loop_lag"], since, until),
        "gil_lag": timings.lags(probe["gil_lag"], since, until),
        "kopf": timings.kopf_waits(probe, since, until),
        "path": timings.new_resource_path(
            probe, row["namespace"], row.pop("_created"), row.pop("_first_request")
        ),
        "queue_waits": timings.queue_waits(probe, since, until),
        "verdict_queue": timings.verdict_path(
            probe, row["namespace"], row.pop("_written"), row.pop("_verdict_first")
        ),
        "cpu": timings.cpu_seconds(probe, since, until),
    }


def events_posted(operator: Operator, until: float) -> float | None:
    """Seconds from the last Ready to no pass queued and no Event waiting to be posted
    (detinfer_reconcile_queue_depth and detinfer_events_pending 0), once so."""
    values = dict(
        line.split(" ", 1)
        for line in operator.metrics().splitlines()
        if line.startswith(("detinfer_events_pending ", "detinfer_reconcile_queue_depth "))
    )
    if len(values) != 2:
        raise AssertionError(f"the operator's metrics lack the queue or the Events: {values}")
    if any(float(v) for v in values.values()):
        return None
    return max(time.time() - until, 0.001)


def idle_requests(cluster: Cluster, seconds: int) -> tuple[int, int, list[tuple[str, int]]]:
    """(requests, writes, the writes by verb and resource, most first) by the operator in the
    next `seconds`, from the audit log."""
    since = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    time.sleep(seconds)
    until = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    entries = cluster.operator_requests(since=since, until=until)
    writes = Counter(audit.request_name(e) for e in entries if e["verb"] in WRITE_VERBS)
    return (*_count(entries), writes.most_common())


def operator_calls(cluster: Cluster, namespace: str) -> tuple[int, int]:
    """(requests, writes) the operator made in `namespace` over the whole run."""
    return _count(cluster.operator_requests(namespace))


def _count(entries: list[dict]) -> tuple[int, int]:
    return len(entries), sum(e["verb"] in WRITE_VERBS for e in entries)


def memory_mib(pid: int) -> tuple[float, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--idle-seconds", type=int, default=IDLE_SECONDS)
    parser.add_argument("--keep-cluster", action="store_true")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        type=Path,
        help="sample the operator's stacks into FILE (JSON; read with bench.profile_report)",
    )
    parser.add_argument("--out", metavar="FILE", type=Path, help="also write the rows as JSON")
    parser.add_argument(
        "--settle",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="wait this long after the operator's watch opens before the first size",
    )
    parser.add_argument(
        "--switch-interval",
        metavar="SECONDS",
        type=float,
        help="the operator's sys.setswitchinterval (Python's default 0.005): how soon a thread "
        "waiting for the GIL (kopf's event loop) gets it from a busy one",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    kubeconfig = Path.home() / ".cache" / "detinfer" / "detinfer-bench.kubeconfig"
    print("bringing up a fresh local cluster (detinfer-bench) ...", file=sys.stderr)
    Cluster.down_by_name("detinfer-bench", kubeconfig)
    cluster = Cluster.up("detinfer-bench", kubeconfig)
    log_path = Path.home() / ".cache" / "detinfer" / "bench-operator.log"
    log_path.write_text("")
    probe_path = Path.home() / ".cache" / "detinfer" / "bench-operator.probe.json"
    operator = Operator(kubeconfig, log_path)
    rows = []
    try:
        cluster.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(Path(__file__).resolve().parents[1] / "crds"),
        )
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/deterministicinferenceservices.detinfer.io",
        )
        for i in range(3):
            cluster.kubectl("apply", "-f", "-", stdin=json.dumps(bench_node(i)))
        # Only the operator's process loads the probe and the sampler (bench/sampler):
        # Operator.start copies os.environ.
        saved = dict(os.environ)
        probe_path.unlink(missing_ok=True)
        os.environ["DETINFER_BENCH_PROBE"] = str(probe_path)
        if args.profile:
            os.environ["DETINFER_BENCH_SAMPLES"] = str(args.profile.resolve())
        if args.switch_interval is not None:
            os.environ["DETINFER_BENCH_SWITCH_INTERVAL"] = str(args.switch_interval)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(SAMPLER), *filter(None, [saved.get("PYTHONPATH")])]
        )
        try:
            operator.start()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        # kopf answers /healthz before its watch of the resources is open; a resource created
        # before that arrives with the watch's start, which is not the operator's reaction.
        wait_for("the operator's watch of the resources", lambda: watching(cluster), timeout=60)
        time.sleep(args.settle)
        for size in sizes:
            print(f"{size} resources ...", file=sys.stderr)
            row = run_size(cluster, operator, size)
            # The Events of the last passes follow their status writes (two posting threads):
            # idle begins once they are posted, then the last watch events settle.
            until = row["until"]
            row["events_posted_after"] = wait_for(
                "the operator's Events posted",
                lambda: events_posted(operator, until),  # noqa: B023 (called here only)
                timeout=600,
                interval=0.5,
            )
            time.sleep(10)
            row.update(probe_figures(probe_path, row))  # flushed every 5 s meanwhile
            print(f"  idle for {args.idle_seconds} s ...", file=sys.stderr)
            requests, writes, row["idle_writes"] = idle_requests(cluster, args.idle_seconds)
            row["idle_requests_per_min"] = requests * 60 / args.idle_seconds
            row["idle_writes_per_min"] = writes * 60 / args.idle_seconds
            row["rss_peak_mib"], row["rss_now_mib"] = memory_mib(operator.process.pid)
            calls, writes = operator_calls(cluster, f"bench-{size}")
            row["calls_per_resource"] = calls / size
            row["writes_per_resource"] = writes / size
            rows.append(row)
    finally:
        operator.stop()
        if not args.keep_cluster:
            cluster.down()

    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    print()
    print(table(rows))
    return 0


def table(rows: list[dict[str, Any]]) -> str:
    """The measurements side by side, then each target of issue #13 with met / not met."""
    lines = [
        "| resources | create→Deployment p50 / p99 | kube-controller-manager Deployment→ReplicaSet"
        " p50 / p99 | API server latency p50 / p99 (requests) | summary→Ready p50 / p99 "
        "| operator RSS peak | idle API requests/min (writes) | operator requests per resource "
        "(writes) | created in |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['create_p50']:.2f} s / {r['create_p99']:.2f} s "
            f"| {r['kcm_p50']:.2f} s / {r['kcm_p99']:.2f} s "
            f"| {r['api_p50'] * 1000:.0f} ms / {r['api_p99'] * 1000:.0f} ms ({r['api_count']}) "
            f"| {r['ready_p50']:.2f} s / {r['ready_p99']:.2f} s "
            f"| {r['rss_peak_mib']:.0f} MiB | {r['idle_requests_per_min']:.1f} "
            f"({r['idle_writes_per_min']:.1f}) | {r['calls_per_resource']:.1f} "
            f"({r['writes_per_resource']:.1f}) | {r['create_seconds']:.1f} s |"
        )
    lines += ["", "where create→Deployment goes (audit log):"]
    for r in rows:
        lines.append(
            f"  {r['size']}: create -> operator's first request about it p50 {r['queue_p50']:.2f} s"
            f" / p99 {r['queue_p99']:.2f} s; first request -> Deployment written p50 "
            f"{r['first_to_deployment_p50']:.2f} s / p99 {r['first_to_deployment_p99']:.2f} s; "
            f"operator's requests at the API server p50 {r['operator_api_p50'] * 1000:.0f} ms / "
            f"p99 {r['operator_api_p99'] * 1000:.0f} ms ({r['operator_api_count']})"
        )
        if "added_p50" in r:
            lines.append(
                f"    beside it, create -> the resource's ADDED event on a watch of the bench's "
                f"own client p50 {r['added_p50']:.2f} s / p99 {r['added_p99']:.2f} s"
            )
        for order, n in r["orders"]:
            lines.append(f"    {n} resources: " + ", ".join(order))
    lines += ["", "where summary→Ready goes (audit log; mean of the slowest 1% in brackets):"]
    for r in rows:
        v = r.get("verdict_path") or {"n": 0}
        if not v["n"]:
            lines.append(f"  {r['size']}: no Ready write found in the audit log")
            continue
        steps = "; ".join(
            f"{label} p50 {s['p50']:.2f} / p99 {s['p99']:.2f} s ({s['tail_mean']:.2f} s)"
            for label, s in v["steps"].items()
        )
        lines.append(
            f"  {r['size']} ({v['n']} resources; the slowest {v['tail_n']} took "
            f"{v['tail_total_mean']:.2f} s on average): {steps}"
        )
    for r in rows:
        lines.append(
            f"  {r['size']}: the last Events posted {r['events_posted_after']:.1f} s after the"
            " last Ready (idle is measured from 10 s after that)"
        )
        if r.get("idle_writes"):
            what = ", ".join(f"{n} {request}" for request, n in r["idle_writes"])
            lines.append(f"  {r['size']}: the writes while idle: {what}")
    lines += ["", "inside the operator (bench/sampler/probe.py, over each size's run):"]
    for r in rows:
        if "path" in r:
            lines += [f"  {r['size']}:", *probe_lines(r)]
    lines += ["", "| target (issue #13) | measured | |", "|---|---|---|"]
    for t, measured, ok in targets(rows):
        lines.append(f"| {t} | {measured} | {'met' if ok else 'not met'} |")
    return "\n".join(lines)


def _ms(s: dict[str, float]) -> str:
    return f"p50 {s['p50'] * 1000:.1f} / p99 {s['p99'] * 1000:.1f} / max {s['max'] * 1000:.0f} ms"


def _s(s: dict[str, float]) -> str:
    return f"p50 {s['p50']:.2f} / p99 {s['p99']:.2f} s"


def probe_lines(r: dict[str, Any]) -> list[str]:
    steps = ", ".join(f"{step} {_s(s)}" for step, s in r["path"].items())
    events = ", ".join(
        f"{kind} {e['events']} ({e['per_second']:.0f}/s, peak {e['peak_per_second']}/s)"
        for kind, e in r["events"].items()
    )
    kopf = ", ".join(
        f"{kind} waited {_ms(k['wait'])}, processed {_ms(k['processing'])}"
        for kind, k in r["kopf"].items()
        if k["wait"]["n"]
    )
    cpu = ", ".join(f"{group} {seconds:.1f} s" for group, seconds in sorted(r["cpu"].items()))
    return [
        f"    new resource, create -> first request: {steps}",
        f"    event loop lag {_ms(r['loop_lag'])}; GIL lag {_ms(r['gil_lag'])}",
        f"    work queue waits: front lane {_s(r['queue_waits']['front'])} "
        f"({r['queue_waits']['front']['n']}), rest {_s(r['queue_waits']['rest'])} "
        f"({r['queue_waits']['rest']['n']})",
        *_verdict_queue_lines(r.get("verdict_queue") or {"n": 0}),
        f"    watch events: {events}",
        f"    in kopf: {kopf or 'none'}",
        f"    CPU: {cpu}",
    ]


def _verdict_queue_lines(v: dict[str, Any]) -> list[str]:
    if not v["n"]:
        return []
    steps = "; ".join(
        f"{label} p50 {s['p50']:.2f} / p99 {s['p99']:.2f} s ({s['tail_mean']:.2f} s)"
        for label, s in v["steps"].items()
    )
    return [
        f"    summary -> first request ({v['n']} resources; mean of the slowest "
        f"{v['tail_n']} in brackets): {steps}"
    ]


def targets(rows: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each target that applies to the sizes that ran."""
    out = []
    for r in rows:
        size, bound = r["size"], CREATE_VS_API * r["api_p99"]
        out.append(
            (
                f"create→Deployment p99 ≤ {CREATE_VS_API:g}x API server p99 at {size}",
                f"{r['create_p99']:.2f} s vs {CREATE_VS_API:g} x {r['api_p99'] * 1000:.0f} ms "
                f"= {bound:.2f} s",
                r["create_p99"] <= bound,
            )
        )
    for r in rows:
        if r["size"] >= 1000:
            out.append(
                (
                    f"summary→Ready p99 < {READY_P99_SECONDS:g} s at {r['size']}",
                    f"{r['ready_p99']:.2f} s",
                    r["ready_p99"] < READY_P99_SECONDS,
                )
            )
            out.append(
                (
                    f"operator RSS < {RSS_MIB} MiB at {r['size']}",
                    f"{r['rss_peak_mib']:.0f} MiB",
                    r["rss_peak_mib"] < RSS_MIB,
                )
            )
    for r in rows:
        out.append(
            (
                f"no writes while nothing changes at {r['size']}",
                f"{r['idle_writes_per_min']:.1f} writes/min",
                r["idle_writes_per_min"] == 0,
            )
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
