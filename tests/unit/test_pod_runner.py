"""The local pod runner's pure parts, on the containers the builders really make.

The e2e tests run the pod runner itself against a local cluster."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client

from detinfer.api import constants as c
from detinfer.api import parse_dis
from detinfer.builders import (
    Endpoint,
    build_baseline_deployment,
    build_bench_job,
    build_deployment,
    build_validation_job,
)
from detinfer.builders.process_line import (
    ADMIN_KEY_WRAPPER,
    GGUF_CHECK,
    LayoutError,
    flag_value,
    gguf_checked,
    process_line,
    with_flag_value,
)
from detinfer.config import OperatorConfig
from detinfer.local.pod_runner import (
    LlamaServer,
    LocalPod,
    PodRunner,
    container_env,
    ended_status,
    local_command,
    local_env,
    local_liveness,
    readiness_url,
    role_of,
)
from tests.support import factories as f

CONFIG = OperatorConfig(validator_image="registry.example/detinfer@" + f.DIGEST)
POD_IP = "127.1.0.7"
TERMINATION = Path("/tmp/pods/ml_reference-abc.termination-log")


def _reference():
    body = f.example("reference.yaml")
    body["metadata"].update(namespace="ml", uid=f.DIS_UID)
    return parse_dis(body)


def engine_container() -> dict:
    return build_deployment(_reference())["spec"]["template"]["spec"]["containers"][0]


def validator_container() -> dict:
    job = build_validation_job(
        _reference(), [Endpoint(pod="reference-a", ip="127.1.0.7")], None, "reference-1", CONFIG
    )
    return job["spec"]["template"]["spec"]["containers"][0]


def bench_container() -> dict:
    job = build_bench_job(
        _reference(),
        Endpoint(pod="reference-a", ip="127.1.0.7"),
        Endpoint(pod="reference-baseline-x", ip="127.1.0.8"),
        "reference-2",
        CONFIG,
    )
    return job["spec"]["template"]["spec"]["containers"][0]


def test_roles_are_the_builders_commands_and_nothing_else():
    assert role_of(engine_container()) == "engine"
    assert role_of(validator_container()) == "validator"
    assert role_of(bench_container()) == "bench"
    baseline = build_baseline_deployment(_reference())["spec"]["template"]["spec"]
    assert role_of(baseline["containers"][0]) == "engine"
    sglang = build_deployment(parse_dis(f.dis()))["spec"]["template"]["spec"]["containers"][0]
    assert role_of(sglang) is None
    assert role_of({"name": "x", "command": ["detinfer"], "args": ["render"]}) is None
    assert role_of({"name": "x"}) is None


def test_an_engine_runs_here_as_built_but_on_the_pod_ip():
    """Behind the admin-key wrapper as built (its script as written, this Python for python3)."""
    container = engine_container()
    command = local_command(container, "engine", POD_IP, TERMINATION)
    built = [*container["command"], *container["args"]]
    wrapper = len(ADMIN_KEY_WRAPPER)
    assert built[:wrapper] == list(ADMIN_KEY_WRAPPER)
    assert command[:wrapper] == [sys.executable, *ADMIN_KEY_WRAPPER[1:]]
    inner = command[wrapper:]
    assert inner[:4] == [sys.executable, "-m", "detinfer.cli", "engine"]
    assert inner[4:] == with_flag_value(built[wrapper + 2 :], "--host", POD_IP)
    assert flag_value(command, "--host") == POD_IP
    assert "0.0.0.0" not in command
    assert flag_value(command, "--random-seed") == "42"


def test_secret_keys_fill_the_environment_and_args_as_the_kubelet_does():
    container = {
        "name": "engine",
        "command": ["detinfer", "engine"],
        "args": [
            "--host",
            "0.0.0.0",
            "--api-key",
            "$(DETINFER_API_KEY)",
            "--x",
            "$(UNSET)",
            "$$(A)",
        ],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "EMPTY"},  # value "" as the API server hands it back
            {
                "name": "DETINFER_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": "keys", "key": "client"}},
            },
        ],
    }
    env = container_env(container, {"keys": {"client": "sk-local"}})
    assert env == {"HOME": "/tmp", "EMPTY": "", "DETINFER_API_KEY": "sk-local"}
    command = local_command(container, "engine", POD_IP, TERMINATION, env)
    assert flag_value(command, "--api-key") == "sk-local"
    assert command[-3:] == ["--x", "$(UNSET)", "$(A)"]  # unknown names stay; $$ is a $
    assert local_env(container, "pod", env)["DETINFER_API_KEY"] == "sk-local"
    with pytest.raises(LayoutError, match="no key 'client' in Secret 'keys'"):
        container_env(container, {})


def test_a_validator_writes_its_summary_where_the_runner_reads_it():
    container = validator_container()
    command = local_command(container, "validator", POD_IP, TERMINATION)
    assert command[3] == "validate"
    assert flag_value(command, "--summary-file") == str(TERMINATION)
    assert c.TERMINATION_MESSAGE_PATH not in command
    assert flag_value(command, "--endpoint") == "reference-a=http://127.1.0.7:30000"
    assert len(command) == 4 + len(container["args"])


def test_a_benchmark_writes_its_summary_where_the_runner_reads_it():
    container = bench_container()
    command = local_command(container, "bench", POD_IP, TERMINATION)
    assert command[:4] == [sys.executable, "-m", "detinfer.cli", "bench"]
    assert flag_value(command, "--summary-file") == str(TERMINATION)
    assert flag_value(command, "--deterministic") == "http://127.1.0.7:30000"
    assert flag_value(command, "--baseline") == "http://127.1.0.8:30000"
    assert len(command) == 4 + len(container["args"])


@pytest.mark.parametrize(
    ("role", "args", "names"),
    [
        ("engine", ["--host=0.0.0.0", "--port", "30000"], "--host is missing"),
        ("engine", ["--port", "30000", "--host"], "--host has no value"),
        ("validator", ["--protocol", "sglang"], "--summary-file is missing"),
        (
            "validator",
            ["--summary-file", "/tmp/s.json"],
            "'/tmp/s.json', not '/dev/termination-log'",
        ),
    ],
)
def test_a_process_line_laid_out_otherwise_is_refused_naming_the_flag(role, args, names):
    container = {"name": "x", "command": ["detinfer", "engine"], "args": args}
    with pytest.raises(LayoutError, match=names):
        local_command(container, role, POD_IP, TERMINATION)


def test_the_readiness_probe_is_the_containers_own():
    assert readiness_url(engine_container(), POD_IP) == f"http://{POD_IP}:30000/health_generate"
    by_number = {"readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}
    assert readiness_url(by_number, POD_IP) == f"http://{POD_IP}:8080/ready"
    with pytest.raises(LayoutError, match="'metrics' is not a port"):
        readiness_url({"readinessProbe": {"httpGet": {"port": "metrics"}}, "ports": []}, POD_IP)
    with pytest.raises(LayoutError, match="no httpGet readiness probe"):
        readiness_url({"name": "engine"}, POD_IP)


def test_the_container_env_goes_over_this_machines():
    env = local_env(
        {"env": [{"name": "HOME", "value": "/tmp"}, {"name": "N", "value": 3}]}, "engine-0"
    )
    assert env["HOME"] == "/tmp" and env["N"] == "3"
    assert env["HOSTNAME"] == "engine-0"
    assert "PATH" in env


def test_an_ended_container_is_reported_as_the_kubelet_does():
    ok = ended_status("validator", "img", 0, '{"verdict": "Deterministic"}', "t0", "t1")["status"]
    assert ok["phase"] == "Succeeded"
    (state,) = ok["containerStatuses"]
    assert state["name"] == "validator" and state["ready"] is False
    assert state["state"]["terminated"] == {
        "exitCode": 0,
        "startedAt": "t0",
        "finishedAt": "t1",
        "reason": "Completed",
        "message": '{"verdict": "Deterministic"}',
    }
    assert {x["type"]: x["status"] for x in ok["conditions"]} == {
        "Ready": "False",
        "ContainersReady": "False",
    }
    failed = ended_status("validator", "img", 137, None, "t0", "t1", restarts=2)["status"]
    assert failed["phase"] == "Failed"
    terminated = failed["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "Error" and "message" not in terminated
    assert failed["containerStatuses"][0]["restartCount"] == 2
    # A process killed by signal 9 (return code -9): exit code 128 + 9, as the kubelet says.
    killed = ended_status("validator", "img", -9, None, "t0", "t1")["status"]
    assert killed["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137


class _PodsApi:
    """The two calls the runner makes for a container's status: read the pod, patch it."""

    def __init__(self) -> None:
        self.patches: list[dict] = []

    def read_namespaced_pod(self, name, namespace):
        return client.V1Pod(status=client.V1PodStatus(conditions=[]))

    def patch_namespaced_pod_status(self, name, namespace, body):
        self.patches.append(body)


def test_a_restarted_container_reports_its_last_run_as_last_state(tmp_path, monkeypatch):
    api = _PodsApi()
    runner = PodRunner(api=api, log_dir=tmp_path)  # type: ignore[arg-type]
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    local = LocalPod(
        namespace="ns", name="engine-0", uid="u", ip="127.1.0.9",
        container={"name": "engine", "image": "img"}, role="engine",
        log_path=tmp_path / "log", termination_path=tmp_path / "term", gates=[],
        process=process, ready=True, started_at="2026-12-03T10:00:00Z",
    )  # fmt: skip
    runner.pods[local.uid] = local
    started: list[LocalPod] = []
    monkeypatch.setattr(runner, "start_process", started.append)
    runner.check()
    assert started == [local] and local.restarts == 1
    (patch,) = api.patches
    (status,) = patch["status"]["containerStatuses"]
    assert status["restartCount"] == 1 and status["ready"] is False
    last = status["lastState"]["terminated"]
    assert last["exitCode"] == 3 and last["reason"] == "Error"
    assert last["startedAt"] == "2026-12-03T10:00:00Z" and last["finishedAt"] >= last["startedAt"]


def test_a_pod_it_cannot_run_is_left_alone_with_an_error(tmp_path, caplog):
    runner = PodRunner(api=None, log_dir=tmp_path)  # type: ignore[arg-type]
    pod = {
        "metadata": {"namespace": "ml", "name": "odd", "uid": "u1"},
        "spec": {
            "containers": [
                {"name": "engine", "command": ["detinfer", "engine"], "args": ["--host=0.0.0.0"]}
            ]
        },
        "status": {"phase": "Running", "podIP": POD_IP},
    }
    with caplog.at_level(logging.ERROR, logger="pod-runner"):
        runner.on_event("ADDED", pod)
    assert runner.pods == {}
    assert "not running ml/odd: --host is missing" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_an_engine_failing_its_exec_liveness_probe_is_restarted(tmp_path, monkeypatch):
    """The builders' model_info probe, run here: a pod whose model_info no longer matches is
    killed and restarted after failureThreshold failures, once per period, as the kubelet does."""
    container = engine_container()
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    local = LocalPod(
        namespace="ns", name="engine-0", uid="u", ip="127.0.0.1", container=container,
        role="engine", log_path=tmp_path / "log", termination_path=tmp_path / "term", gates=[],
        process=process, ready=True,
        liveness={**container["livenessProbe"], "periodSeconds": 0},
        # Nothing listens on this port: the probe fails as a swapped pod's would.
        liveness_command=local_liveness(container, "127.0.0.1"),
    )  # fmt: skip
    assert local.liveness_command is not None
    assert local.liveness_command[0] == sys.executable
    assert local.liveness_command[-3] == "http://127.0.0.1:30000/model_info"
    runner = PodRunner(api=_PodsApi(), log_dir=tmp_path)  # type: ignore[arg-type]
    started: list[LocalPod] = []
    monkeypatch.setattr(runner, "start_process", started.append)
    threshold = container["livenessProbe"]["failureThreshold"]
    results = [runner.check_engine_liveness(local) for _ in range(threshold)]
    assert results == [True] * (threshold - 1) + [False]
    assert started == [local] and local.restarts == 1 and process.poll() is not None


def test_a_planted_fault_reaches_only_the_named_resources_engines(tmp_path, monkeypatch):
    """The runner's --planted-fault (a test tool): the node adds the engine flag for one
    resource's pods; the pod spec, and every other resource's engines, stay as built."""
    runner = PodRunner(  # type: ignore[arg-type]
        api=_PodsApi(), log_dir=tmp_path, planted={"reference": "drift=5"}
    )
    started: list[LocalPod] = []
    monkeypatch.setattr(runner, "start_process", started.append)
    monkeypatch.setattr(runner, "secrets", lambda namespace, container: {})
    for uid, instance in (("u1", "reference"), ("u2", "other")):
        pod = {
            "metadata": {
                "namespace": "ml",
                "name": f"{instance}-0",
                "uid": uid,
                "labels": {c.LABEL_INSTANCE: instance},
            },
            "spec": {"containers": [engine_container()]},
            "status": {"phase": "Running", "podIP": POD_IP},
        }
        runner.on_event("ADDED", pod)
    planted, other = started
    assert planted.command[-2:] == ["--planted-fault", "drift=5"]
    assert "--planted-fault" not in other.command
    assert planted.command[:-2] == other.command
    assert "--planted-fault" not in str(engine_container())


def test_the_runners_planted_fault_option_is_checked(capsys):
    from detinfer.local.pod_runner import main

    for bad, words in (
        ("reference", "--planted-fault 'reference': give NAME=FAULT"),
        ("reference=bogus", "--planted-fault 'bogus': not a planted fault"),
    ):
        with pytest.raises(SystemExit) as info:
            main(["--kubeconfig", "x", "--log-dir", "/tmp/x", "--planted-fault", bad])
        assert info.value.code == 2
        assert words in capsys.readouterr().err


def _llama_container() -> dict:
    body = f.example("llama-cpp.yaml")
    body["metadata"].update(namespace="ml", uid=f.DIS_UID)
    return build_deployment(parse_dis(body))["spec"]["template"]["spec"]["containers"][0]


LLAMA = LlamaServer(Path("/cache/llama.cpp/bin/llama-server"), Path("/cache/models"))


def test_a_llama_server_pod_runs_the_cached_binary_behind_the_same_gguf_check():
    container = _llama_container()
    assert role_of(container) == "engine"
    line = local_command(container, "engine", POD_IP, TERMINATION, {}, LLAMA)
    assert gguf_checked(process_line(container))  # the container's own line
    n = len(GGUF_CHECK)
    assert line[:n] == list(GGUF_CHECK)  # the check runs here as in the container
    sha256, path, server = line[n], line[n + 1], line[n + 2 :]
    assert path == "/cache/models/tiny.gguf"  # the model cache volume is the folder here
    assert sha256 == f.example("llama-cpp.yaml")["spec"]["model"]["sha256"]
    assert server[0] == "/cache/llama.cpp/bin/llama-server"
    assert flag_value(server, "--model") == path and flag_value(server, "--host") == POD_IP
    assert flag_value(server, "--parallel") == "1" and "--no-cache-prompt" in server
    with pytest.raises(LayoutError, match="no --llama-server"):
        local_command(container, "engine", POD_IP, TERMINATION, {}, None)


def test_a_model_outside_the_cache_volume_is_not_run_here():
    container = _llama_container()
    container["args"] = [
        a.replace("/var/cache/detinfer/models/", "/models/") for a in container["args"]
    ]
    with pytest.raises(LayoutError, match="not in the model cache volume"):
        local_command(container, "engine", POD_IP, TERMINATION, {}, LLAMA)


def test_an_http_liveness_probe_runs_here_as_a_get_of_its_url():
    command = local_liveness(_llama_container(), POD_IP)
    assert command[0] == sys.executable and command[-1] == f"http://{POD_IP}:30000/health"
    failed = subprocess.run([*command[:-1], "http://127.0.0.1:9/health"], capture_output=True)
    assert failed.returncode != 0  # nothing listens on port 9 (discard)
