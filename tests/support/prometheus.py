"""A real Prometheus server for the e2e tests, configured from the chart's own monitoring objects.

No Prometheus Operator runs on the local cluster, so this does what it would do with the chart's
ServiceMonitor and PodMonitor: it turns them into Prometheus scrape configurations.

- The PodMonitor becomes a file_sd job whose targets PodMonitorDiscovery keeps up to date from
  the local API server, with the selection and labels the Prometheus Operator's relabelling
  gives a PodMonitor's targets (`namespace`, `pod`, `container`, `endpoint`, `job` =
  `<namespace>/<name>`, each podTargetLabel sanitized: `app.kubernetes.io/instance` ->
  `app_kubernetes_io_instance`). The engine pods are scraped on their loopback pod IPs.
- The ServiceMonitor's endpoint selects the operator's metrics Service; the operator runs as a host
  process here (not behind that Service), so its one target is static, with the labels the
  ServiceMonitor would give it (`job` = the Service's name, `namespace`, `service`, `endpoint`) and
  its `honorLabels`.

The rules are the PrometheusRule's spec.groups as `helm template` renders them. The server
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

PROMETHEUS = Path(
    os.environ.get(
        "PROMETHEUS", Path.home() / ".cache" / "detinfer" / "bin" / "current" / "prometheus"
    )
)


def sanitize(label: str) -> str:
    """A Kubernetes label name as Prometheus' service discovery names it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


class PodMonitorDiscovery:
    """What a PodMonitor selects, as Prometheus' file_sd targets, refreshed from the API server.

    Debian's Prometheus is built without Kubernetes service discovery (`kubernetes_sd_configs` is
    not a field there), so this thread does its part: it lists the pods and applies the
    PodMonitor's selection and labels as the Prometheus Operator's relabelling would (pods its
    matchLabels select, in the namespaces it selects, not Failed or Succeeded, with an IP; the
    container port it names; `namespace`, `pod`, `container`, `endpoint`, `job` =
    `<namespace>/<name>` and each podTargetLabel, sanitized). Prometheus reloads the file when it
    changes (file_sd watches it).
    """

    def __init__(self, monitor: dict[str, Any], core: Any, path: Path):
        self.meta, self.spec = monitor["metadata"], monitor["spec"]
        (self.endpoint,) = self.spec["podMetricsEndpoints"]
        self.core = core
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="pod-sd")
        self.write()

    def targets(self) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in self.spec["selector"]["matchLabels"].items())
        names = self.spec.get("namespaceSelector", {}).get("matchNames")
        if not names:
            assert self.spec.get("namespaceSelector", {}).get("any") is True, self.spec
        pods = self.core.list_pod_for_all_namespaces(label_selector=selector).items
        groups = []
        for pod in pods:
            if names and pod.metadata.namespace not in names:
                continue
            if pod.status.phase in ("Failed", "Succeeded") or not pod.status.pod_ip:
                continue
            for container in pod.spec.containers:
                for port in container.ports or []:
                    if port.name != self.endpoint["port"]:
                        continue
                    labels = {
                        "namespace": pod.metadata.namespace,
                        "pod": pod.metadata.name,
                        "container": container.name,
                        "endpoint": self.endpoint["port"],
                        "job": f"{self.meta['namespace']}/{self.meta['name']}",
                    }
                    for label in self.spec.get("podTargetLabels", []):
                        value = (pod.metadata.labels or {}).get(label)
                        if value:
                            labels[sanitize(label)] = value
                    groups.append(
                        {
                            "targets": [f"{pod.status.pod_ip}:{port.container_port}"],
                            "labels": labels,
                        }
                    )
        return sorted(groups, key=lambda g: g["targets"][0])

    def write(self) -> None:
        text = json.dumps(self.targets(), indent=1)
        if self.path.exists() and self.path.read_text() == text:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.path)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.write()
            except Exception:  # the API server busy for a moment: the next round retries
                continue

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def job(self, interval: str) -> dict[str, Any]:
        return {
            "job_name": f"podMonitor/{self.meta['namespace']}/{self.meta['name']}/0",
            "honor_labels": bool(self.endpoint.get("honorLabels", False)),
            "scrape_interval": interval,
            "metrics_path": self.endpoint.get("path", "/metrics"),
            "file_sd_configs": [{"files": [str(self.path)], "refresh_interval": "5s"}],
        }


def service_monitor_job(
    monitor: dict[str, Any], service: dict[str, Any], address: str, interval: str
) -> dict[str, Any]:
    meta, spec = monitor["metadata"], monitor["spec"]
    (endpoint,) = spec["endpoints"]
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items(), "selects no Service"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert service["metadata"]["namespace"] in spec["namespaceSelector"]["matchNames"]
    labels = {
        "job": service["metadata"]["name"],
        "namespace": service["metadata"]["namespace"],
        "service": service["metadata"]["name"],
        "endpoint": endpoint["port"],
        "pod": "operator-on-the-host",
    }
    return {
        "job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/0",
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "scrape_interval": interval,
        "metrics_path": endpoint.get("path", "/metrics"),
        "static_configs": [{"targets": [address], "labels": labels}],
    }


class Prometheus:
    """`prometheus` on 127.0.0.1:<port>, its data in `folder`."""

    def __init__(self, folder: Path, port: int, config: dict[str, Any], rules: dict[str, Any]):
        self.folder = folder
        self.url = f"http://127.0.0.1:{port}"
        (folder / "rules.yaml").write_text(yaml.safe_dump(rules))
        config = {**config, "rule_files": [str(folder / "rules.yaml")]}
        (folder / "prometheus.yaml").write_text(yaml.safe_dump(config))
        self.log_path = folder / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = port

    def start(self) -> None:
        assert PROMETHEUS.is_file(), f"{PROMETHEUS} is missing: run hack/get-promtool.sh"
        self.process = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={self.folder / 'prometheus.yaml'}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=info",
            ],
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"prometheus exited {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr, time=str(time.time()))
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
