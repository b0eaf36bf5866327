"""make bench-operator: the operator against a real local control plane at 100 and 1000 resources.

For each size it creates the DeterministicInferenceServices as fast as one client can, and
measures:
- create -> Deployment: from the create call's return to the Deployment's ADDED watch event;
- summary -> Ready: from writing the validator pod's terminated status (the summary, as the
  kubelet would report it) to the Ready=True watch event of its resource;
- the operator's peak RSS (VmHWM);
- the operator's API requests per minute while nothing changes, from the API server's audit log
  (user agents detinfer/* and kopf/*), and how many of them are writes.

Prints a table with the targets of issue #3 beside the measurements. Everything runs on this
machine: the cluster (etcd, kube-apiserver, controller-manager, scheduler, kwok), the operator,
and this client share its cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

from kubernetes import watch

from tests.support import factories as f
from tests.support.cluster import WRITE_VERBS, Cluster, Operator, wait_for

IDLE_SECONDS = 60
TARGETS = {
    100: {"create_p99": 1.0, "ready_p99": 2.0},
    1000: {"create_p99": 3.0, "ready_p99": 2.0, "rss_mib": 300},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


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


def service(name: str) -> dict:
    body = f.dis(
        engine={"kind": "Reference"},
        replicas=1,
        resources={"gpusPerReplica": 0, "gpuProduct": None},
        model={"path": "tiny", "revision": None, "allowUnpinnedRevision": True},
        validation={"revalidateEverySeconds": 0, "trials": 4},
    )
    body["metadata"] = {"name": name}
    return body


class Recorder(threading.Thread):
    """Watches one namespace and records when each object first matched `test`."""

    def __init__(self, list_fn, test, **kwargs):
        super().__init__(daemon=True)
        self.list_fn, self.test, self.kwargs = list_fn, test, kwargs
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            w = watch.Watch()
            for event in w.stream(self.list_fn, timeout_seconds=30, **self.kwargs):
                obj = event["object"]
                meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
                name = meta["name"] if isinstance(meta, dict) else meta.name
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
    ready = Recorder(
        cluster.custom.list_namespaced_custom_object,
        is_ready,
        group="detinfer.io",
        version="v1alpha1",
        namespace=namespace,
        plural="deterministicinferenceservices",
    )
    ready.start()
    time.sleep(1)

    names = [f"s{i:04d}" for i in range(size)]
    created: dict[str, float] = {}
    started = time.monotonic()
    for name in names:
        cluster.custom.create_namespaced_custom_object(
            "detinfer.io", "v1alpha1", namespace, "deterministicinferenceservices", service(name)
        )
        created[name] = time.monotonic()
    create_seconds = time.monotonic() - started
    wait_for(f"{size} Deployments", lambda: len(deployments.seen) >= size, timeout=60 + size)
    # deployments.seen is keyed by Deployment name, which is the resource's name.
    create_to_deployment = [deployments.seen[n] - created[n] for n in names]

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
    deployments.stop.set()
    ready.stop.set()
    return {
        "size": size,
        "create_seconds": create_seconds,
        "create_p50": statistics.median(create_to_deployment),
        "create_p99": percentile(create_to_deployment, 99),
        "ready_p50": statistics.median(summary_to_ready),
        "ready_p99": percentile(summary_to_ready, 99),
    }


def idle_requests(cluster: Cluster, seconds: int) -> tuple[int, int]:
    """(requests, writes) by the operator in the next `seconds`, from the audit log."""
    since = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    time.sleep(seconds)
    until = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    return _count(cluster.operator_requests(since=since, until=until))


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
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    kubeconfig = Path.home() / ".cache" / "detinfer" / "detinfer-bench.kubeconfig"
    print("bringing up a fresh local cluster (detinfer-bench) ...", file=sys.stderr)
    Cluster.down_by_name("detinfer-bench", kubeconfig)
    cluster = Cluster.up("detinfer-bench", kubeconfig)
    log_path = Path.home() / ".cache" / "detinfer" / "bench-operator.log"
    log_path.write_text("")
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
        operator.start()
        for size in sizes:
            print(f"{size} resources ...", file=sys.stderr)
            row = run_size(cluster, operator, size)
            time.sleep(10)  # let the last events settle before measuring idleness
            print(f"  idle for {args.idle_seconds} s ...", file=sys.stderr)
            requests, writes = idle_requests(cluster, args.idle_seconds)
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

    print()
    print(
        "| resources | create→Deployment p50 / p99 | summary→Ready p50 / p99 | operator RSS peak | "
        "idle API requests/min (writes) | operator requests per resource (writes) | created in |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['create_p50']:.2f} s / {r['create_p99']:.2f} s "
            f"| {r['ready_p50']:.2f} s / {r['ready_p99']:.2f} s "
            f"| {r['rss_peak_mib']:.0f} MiB | {r['idle_requests_per_min']:.1f} "
            f"({r['idle_writes_per_min']:.1f}) | {r['calls_per_resource']:.1f} "
            f"({r['writes_per_resource']:.1f}) | {r['create_seconds']:.1f} s |"
        )
    print()
    print("targets (issue #3):")
    for r in rows:
        t = TARGETS.get(r["size"], {})
        checks = []
        if "create_p99" in t:
            checks.append(
                f"create p99 < {t['create_p99']} s: "
                f"{'met' if r['create_p99'] < t['create_p99'] else 'NOT met'}"
            )
        if "ready_p99" in t:
            checks.append(
                f"summary→Ready p99 < {t['ready_p99']} s: "
                f"{'met' if r['ready_p99'] < t['ready_p99'] else 'NOT met'}"
            )
        if "rss_mib" in t:
            checks.append(
                f"RSS < {t['rss_mib']} MiB: "
                f"{'met' if r['rss_peak_mib'] < t['rss_mib'] else 'NOT met'}"
            )
        checks.append(
            f"no writes while idle: {'met' if r['idle_writes_per_min'] == 0 else 'NOT met'}"
        )
        print(f"  {r['size']}: " + "; ".join(checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
