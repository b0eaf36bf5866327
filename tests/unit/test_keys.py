"""The engine pods' keys and NetworkPolicies as the builders write them (issue #27): keys only
through the environment from Secrets, an admin key on every engine that takes one, and who the
policies admit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from detinfer.api import constants as c
from detinfer.api import parse_dis
from detinfer.api.keys import AdminAccess, admin_access
from detinfer.builders import (
    Endpoint,
    build_bench_job,
    build_deployment,
    build_network_policies,
    build_validation_job,
    render_objects,
)
from detinfer.builders.deployment import engine_command
from detinfer.builders.process_line import ADMIN_KEY_FLAG, ADMIN_KEY_WRAPPER
from detinfer.config import OperatorConfig
from tests.support import factories as f

CONFIG = OperatorConfig(validator_image="registry.example/detinfer@" + f.DIGEST)
CLIENT = {"name": "keys", "key": "client"}
ADMIN = {"name": "keys", "key": "admin"}
REFERENCE = {"resources": {"gpusPerReplica": 0, "gpuProduct": None}}


def dis(**overrides):
    return parse_dis(f.dis(**overrides))


def _container(resource) -> dict:
    return build_deployment(resource)["spec"]["template"]["spec"]["containers"][0]


def _secret_env(container: dict) -> dict[str, dict]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}


def test_keys_reach_the_engine_from_secrets_and_never_as_literals():
    resource = dis(engine={"apiKeySecret": CLIENT, "adminApiKeySecret": ADMIN})
    container = _container(resource)
    assert container["args"][-4:] == [
        "--api-key",
        f"$({c.API_KEY_ENV})",
        ADMIN_KEY_FLAG,
        f"$({c.ADMIN_API_KEY_ENV})",
    ]
    assert _secret_env(container) == {c.API_KEY_ENV: CLIENT, c.ADMIN_API_KEY_ENV: ADMIN}
    # A named admin key needs no wrapper.
    assert container["command"] == ["python3", "-m", "sglang.launch_server"]


def test_without_an_admin_secret_each_pod_makes_its_own_admin_key():
    for resource in (dis(), dis(engine={"kind": "Reference"}, **REFERENCE)):
        container = _container(resource)
        assert tuple(container["command"][: len(ADMIN_KEY_WRAPPER)]) == ADMIN_KEY_WRAPPER
        assert ADMIN_KEY_FLAG not in container["args"]
        assert c.ADMIN_API_KEY_ENV not in _secret_env(container)
        assert admin_access(resource.spec.engine) == AdminAccess.ADMIN_KEY


def test_the_wrapper_appends_a_fresh_random_admin_key_and_runs_the_engine():
    """The wrapper's own code, run: the engine gets --admin-api-key and 64 hex characters, a
    new one each start."""
    probe = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, *ADMIN_KEY_WRAPPER[1:], *probe, "--port", "30000"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for _ in range(2)
    ]
    for argv in runs:
        assert argv[:3] == ["--port", "30000", ADMIN_KEY_FLAG]
        assert len(argv[3]) == 64 and int(argv[3], 16) >= 0
    assert runs[0][3] != runs[1][3]


@pytest.mark.parametrize(
    ("version", "client", "access"),
    [("0.5.7", False, AdminAccess.OPEN), ("0.5.7", True, AdminAccess.CLIENT_KEY)],
)
def test_releases_without_an_admin_key_get_none(version, client, access):
    engine = {"version": version, **({"apiKeySecret": CLIENT} if client else {})}
    resource = dis(engine=engine)
    command, args = engine_command(resource)
    assert command == ["python3", "-m", "sglang.launch_server"]
    assert ADMIN_KEY_FLAG not in args
    assert admin_access(resource.spec.engine) == access


def test_the_baseline_is_sealed_like_the_engine():
    resource = dis(engine={"apiKeySecret": CLIENT, "adminApiKeySecret": ADMIN})
    _, baseline = engine_command(resource, deterministic=False)
    assert baseline[-4:] == [
        "--api-key",
        f"$({c.API_KEY_ENV})",
        ADMIN_KEY_FLAG,
        f"$({c.ADMIN_API_KEY_ENV})",
    ]


def test_the_jobs_get_the_client_key_from_the_same_secret_and_not_the_admin_key():
    resource = dis(engine={"apiKeySecret": CLIENT, "adminApiKeySecret": ADMIN})
    a, b = Endpoint(pod="qwen-a", ip="10.0.0.1"), Endpoint(pod="qwen-b", ip="10.0.0.2")
    jobs = [
        build_validation_job(resource, [a], None, "qwen-1", CONFIG),
        build_bench_job(resource, a, b, "qwen-2", CONFIG),
    ]
    for job in jobs:
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert _secret_env(container) == {c.API_KEY_ENV: CLIENT}
        assert not any("$(" in arg for arg in container["args"])
    # No key: no env at all (the Jobs' layout is unchanged).
    plain = build_validation_job(dis(), [a], None, "qwen-1", CONFIG)
    assert "env" not in plain["spec"]["template"]["spec"]["containers"][0]


def test_key_secrets_do_not_change_the_revision():
    from detinfer.builders import revision_of

    keyed = dis(engine={"apiKeySecret": CLIENT, "adminApiKeySecret": ADMIN})
    assert revision_of(keyed) == revision_of(dis())


def test_render_shows_every_key_as_a_reference_never_a_value():
    """In every rendered container, whatever follows a credential flag is a $(VAR) reference
    to a variable filled from a Secret."""
    resource = dis(engine={"apiKeySecret": CLIENT, "adminApiKeySecret": ADMIN})
    containers = [
        ctr
        for obj in render_objects(resource, CONFIG)
        if obj["kind"] in ("Deployment", "Job")
        for ctr in obj["spec"]["template"]["spec"]["containers"]
    ]
    seen = 0
    for container in containers:
        line = [*container["command"], *container.get("args", [])]
        from_secrets = _secret_env(container)
        for flag in ("--api-key", ADMIN_KEY_FLAG):
            if flag in line:
                value = line[line.index(flag) + 1]
                assert value.startswith("$(") and value[2:-1] in from_secrets, (flag, value)
                seen += 1
    assert seen == 2
    assert json.dumps(containers).count("secretKeyRef") == 3  # the engine's two, the Job's one


# ---- NetworkPolicies ----


def _ingress(policy: dict) -> list[dict]:
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": c.ENGINE_PORT}]
    return rule["from"]


def _own(component: str) -> dict:
    return {
        "podSelector": {
            "matchLabels": {
                c.LABEL_INSTANCE: "qwen",
                c.LABEL_COMPONENT: component,
                c.LABEL_PART_OF: c.PART_OF,
            }
        }
    }


def test_engine_pods_admit_their_namespace_their_jobs_and_monitoring():
    config = OperatorConfig(monitoring_namespace="monitoring")
    engine, baseline = build_network_policies(dis(overhead={"enabled": True}), config)
    assert engine["spec"]["podSelector"]["matchLabels"][c.LABEL_COMPONENT] == c.COMPONENT_ENGINE
    assert engine["spec"]["policyTypes"] == ["Ingress"]
    assert _ingress(engine) == [
        {"podSelector": {}},
        _own(c.COMPONENT_VALIDATOR),
        _own(c.COMPONENT_BENCH),
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    # The baseline serves the benchmark only.
    assert baseline["spec"]["podSelector"]["matchLabels"][c.LABEL_COMPONENT] == "baseline"
    assert _ingress(baseline) == [_own(c.COMPONENT_BENCH)]
    for policy in (engine, baseline):
        assert policy["metadata"]["ownerReferences"][0]["controller"] is True


def test_named_clients_replace_the_namespace_but_never_the_jobs():
    clients = [
        {"podSelector": {"matchLabels": {"app": "gateway"}}},
        {"namespaceSelector": {"matchLabels": {"team": "rl"}}, "podSelector": {}},
    ]
    (engine,) = build_network_policies(dis(networkPolicy={"clients": clients}), CONFIG)
    assert _ingress(engine) == [
        {"podSelector": {"matchLabels": {"app": "gateway"}}},
        {"namespaceSelector": {"matchLabels": {"team": "rl"}}, "podSelector": {}},
        _own(c.COMPONENT_VALIDATOR),
        _own(c.COMPONENT_BENCH),
    ]


def test_no_baseline_policy_without_a_baseline():
    """Only spec.overhead runs a baseline: without it, no policy for pods that never exist."""
    policies = build_network_policies(dis(), CONFIG)
    assert [p["metadata"]["name"] for p in policies] == ["qwen-engine"]


def test_no_policies_when_switched_off():
    assert build_network_policies(dis(networkPolicy={"enabled": False}), CONFIG) == []


# ---- the liveness probe that notices a weight swap ----


def _run_probe(command: list[str], env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, *command[1:]], capture_output=True, text=True, env=env, timeout=30
    )


@pytest.fixture
def model_info_server():
    """A scripted /model_info on 127.0.0.1 that requires a bearer key."""
    import http.server
    import threading

    state = {"info": {"model_path": "Qwen/Qwen3-8B", "weight_version": "default"}}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.headers.get("Authorization") != "Bearer k1":
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps(state["info"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], state
    server.shutdown()


def test_the_liveness_probe_fails_once_model_info_changes(model_info_server):
    """The probe's own code against a server: it passes as started, fails on a swapped model or
    weight version (saying what it saw), and fails without the key the container has."""
    from detinfer.builders.process_line import probe_url_on

    port, state = model_info_server
    container = _container(dis(engine={"apiKeySecret": CLIENT}))
    command = container["livenessProbe"]["exec"]["command"]
    command = probe_url_on(command, "127.0.0.1")
    command[-3] = command[-3].replace(":30000", f":{port}")
    env = {"PATH": "/usr/bin:/bin", c.API_KEY_ENV: "k1"}
    assert _run_probe(command, env).returncode == 0
    assert _run_probe(command, {"PATH": "/usr/bin:/bin"}).returncode != 0  # 401 without the key
    state["info"] = {"model_path": "Qwen/Qwen3-8B", "weight_version": "rl-step-7"}
    swapped = _run_probe(command, env)
    assert swapped.returncode == 1 and "weight_version 'rl-step-7'" in swapped.stderr
    state["info"] = {"model_path": "/tmp/other", "weight_version": "default"}
    assert _run_probe(command, env).returncode == 1
    # A release whose model_info has no weight_version is held to the model path alone.
    state["info"] = {"model_path": "Qwen/Qwen3-8B"}
    assert _run_probe(command, env).returncode == 0


def test_the_probe_expects_the_weight_version_extra_args_set():
    container = _container(dis(engine={"extraArgs": ["--weight-version", "v7"]}))
    assert container["livenessProbe"]["exec"]["command"][-1] == "v7"
    container = _container(dis(engine={"extraArgs": ["--weight-version=v8"]}))
    assert container["livenessProbe"]["exec"]["command"][-1] == "v8"
