"""Builders: golden files for the examples, and the properties that matter, one by one."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest
import yaml

from detinfer.api import constants as c
from detinfer.api import parse_dis
from detinfer.builders import (
    Endpoint,
    build_client_service,
    build_deployment,
    build_headless_service,
    build_validation_job,
    render_objects,
    revision_of,
    validation_job_name,
)
from detinfer.builders.deployment import build_baseline_deployment, engine_command
from detinfer.builders.job import validator_args
from detinfer.builders.process_line import ADMIN_KEY_WRAPPER, GGUF_CHECK, LLAMA_SERVER_COMMAND
from detinfer.config import OperatorConfig
from tests.support import factories as f
from tests.unit.test_api import llama_cpp

GOLDEN = f.ROOT / "tests" / "golden"
CONFIG = OperatorConfig(validator_image="registry.example/detinfer@" + f.DIGEST)


def _with_uid(body):
    body["metadata"].update(namespace="ml", uid="11111111-2222-3333-4444-555555555555")
    return parse_dis(body)


@pytest.mark.parametrize(
    "example", ["service.yaml", "reference.yaml", "llama-cpp.yaml", "vllm.yaml"]
)
def test_golden(example):
    """Everything the operator creates for the examples. Regenerate: UPDATE_GOLDEN=1 make test."""
    objects = render_objects(_with_uid(f.example(example)), CONFIG)
    text = yaml.safe_dump_all(objects, sort_keys=False, width=100)
    path = GOLDEN / example
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; rerun with UPDATE_GOLDEN=1 if intended"


def dis(**overrides):
    return parse_dis(f.dis(**overrides))


def test_sglang_command_line_follows_the_spec_in_order():
    command, args = engine_command(
        dis(
            engine={
                "attentionBackend": "Triton",
                "tensorParallelSize": 2,
                "samplingSeed": 7,
                "cudaGraph": "Disabled",
                "radixCache": "Disabled",
                "extraArgs": ["--mem-fraction-static", "0.8"],
            },
            resources={"gpusPerReplica": 2},
        )
    )
    # No Secret names an admin key: the wrapper makes one in the pod (tests/unit/test_keys.py).
    assert command == [*ADMIN_KEY_WRAPPER, "python3", "-m", "sglang.launch_server"]
    assert args == [
        "--model-path",
        "Qwen/Qwen3-8B",
        "--revision",
        f.REVISION,
        "--host",
        "0.0.0.0",
        "--port",
        "30000",
        "--enable-deterministic-inference",
        "--attention-backend",
        "triton",
        "--tp-size",
        "2",
        "--random-seed",
        "7",
        "--enable-metrics",
        "--cuda-graph-backend-decode",
        "disabled",
        "--cuda-graph-backend-prefill",
        "disabled",
        "--disable-radix-cache",
        "--mem-fraction-static",
        "0.8",
    ]


@pytest.mark.parametrize(
    ("version", "flags"),
    [
        ("0.5.3", ["--disable-cuda-graph"]),
        ("0.5.13.post1", ["--disable-cuda-graph"]),
        (
            "0.5.14",
            ["--cuda-graph-backend-decode", "disabled", "--cuda-graph-backend-prefill", "disabled"],
        ),
        (
            "0.5.23",
            ["--cuda-graph-backend-decode", "disabled", "--cuda-graph-backend-prefill", "disabled"],
        ),
    ],
)
def test_cuda_graphs_off_in_the_spelling_of_the_release(version, flags):
    """--disable-cuda-graph up to 0.5.13.post1; from 0.5.14 it is deprecated for the per-phase
    backends, which the flag table shows there."""
    _, args = engine_command(dis(engine={"version": version, "cudaGraph": "Disabled"}))
    assert args[args.index("--enable-metrics") + 1 :] == flags
    _, on = engine_command(dis(engine={"version": version}))
    assert not any("cuda-graph" in a for a in on)


def _env(d) -> dict[str, str]:
    container = build_deployment(d)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


NUMERICS_DEFAULTS = {
    "SGLANG_FLASHINFER_PREFILL_SPLIT_TILE_SIZE": "4096",
    "SGLANG_FLASHINFER_DECODE_SPLIT_TILE_SIZE": "2048",
    "SGLANG_TRITON_DECODE_SPLIT_TILE_SIZE": "256",
    "SGLANG_BATCH_INVARIANT_OPS_ENABLE_MM_DEEPGEMM": "1",
    "SGLANG_BATCH_INVARIANT_OPS_ENABLE_MM_FALLBACK_VARIANT": "0",
}


@pytest.mark.parametrize(
    ("version", "tp", "expected"),
    [
        (
            "0.5.3",
            1,
            {
                "SGLANG_FLASHINFER_PREFILL_SPLIT_TILE_SIZE": "4096",
                "SGLANG_FLASHINFER_DECODE_SPLIT_TILE_SIZE": "2048",
                "SGLANG_TRITON_PREFILL_TRUNCATION_ALIGN_SIZE": "4096",
                "SGLANG_TRITON_DECODE_SPLIT_TILE_SIZE": "256",
            },
        ),
        (
            "0.5.4.post1",
            1,
            {
                "SGLANG_FLASHINFER_PREFILL_SPLIT_TILE_SIZE": "4096",
                "SGLANG_FLASHINFER_DECODE_SPLIT_TILE_SIZE": "2048",
                "SGLANG_TRITON_PREFILL_TRUNCATION_ALIGN_SIZE": "4096",
                "SGLANG_TRITON_DECODE_SPLIT_TILE_SIZE": "256",
                "SGLANG_BATCH_INVARIANT_OPS_ENABLE_MM_DEEPGEMM": "1",
            },
        ),
        ("0.5.21", 1, {**NUMERICS_DEFAULTS, "SGLANG_TRITON_PREFILL_TRUNCATION_ALIGN_SIZE": "4096"}),
        (
            "0.5.21",
            2,
            {
                **NUMERICS_DEFAULTS,
                "SGLANG_TRITON_PREFILL_TRUNCATION_ALIGN_SIZE": "4096",
                "SGLANG_DETERMINISTIC_NCCL_NCHANNELS": "8",
            },
        ),
        ("0.5.22", 1, NUMERICS_DEFAULTS),
        ("0.5.23", 2, {**NUMERICS_DEFAULTS, "SGLANG_DETERMINISTIC_NCCL_NCHANNELS": "8"}),
        ("0.5.17", 2, {**NUMERICS_DEFAULTS, "SGLANG_TRITON_PREFILL_TRUNCATION_ALIGN_SIZE": "4096"}),
    ],
)
def test_numerics_environment_is_pinned_where_the_release_reads_it(version, tp, expected):
    env = _env(
        dis(engine={"version": version, "tensorParallelSize": tp}, resources={"gpusPerReplica": tp})
    )
    numerics = {k: v for k, v in env.items() if k.startswith("SGLANG_") and "HEALTH" not in k}
    assert numerics == expected


def test_numerics_come_from_the_spec():
    env = _env(
        dis(
            engine={
                "tensorParallelSize": 2,
                "numerics": {
                    "flashinferPrefillSplitTileSize": 8192,
                    "matmulDeepGemm": "Disabled",
                    "matmulFallbackVariant": "Enabled",
                    "ncclChannels": 4,
                },
            },
            resources={"gpusPerReplica": 2},
        )
    )
    assert env["SGLANG_FLASHINFER_PREFILL_SPLIT_TILE_SIZE"] == "8192"
    assert env["SGLANG_BATCH_INVARIANT_OPS_ENABLE_MM_DEEPGEMM"] == "0"
    assert env["SGLANG_BATCH_INVARIANT_OPS_ENABLE_MM_FALLBACK_VARIANT"] == "1"
    assert env["SGLANG_DETERMINISTIC_NCCL_NCHANNELS"] == "4"


def test_reference_engine_gets_no_sglang_environment():
    env = _env(
        dis(engine={"kind": "Reference"}, resources={"gpusPerReplica": 0, "gpuProduct": None})
    )
    assert not any(name.startswith("SGLANG_") for name in env)


def test_fa4_is_rendered_as_sglang_spells_it():
    _, args = engine_command(dis(engine={"attentionBackend": "FA4", "version": "0.5.16"}))
    assert args[args.index("--attention-backend") + 1] == "fa4"


def test_reference_engine_runs_detinfer_engine_on_cpu_or_gpu():
    cpu = dis(
        engine={"kind": "Reference", "deterministicInference": "Disabled"},
        resources={"gpusPerReplica": 0, "gpuProduct": None},
    )
    command, args = engine_command(cpu)
    assert command == [*ADMIN_KEY_WRAPPER, "detinfer", "engine"]
    assert "--enable-deterministic-inference" not in args
    assert args[args.index("--device") + 1] == "cpu"
    assert "--attention-backend" not in args and "--tp-size" not in args
    gpu = dis(engine={"kind": "Reference"}, resources={"gpusPerReplica": 1})
    assert engine_command(gpu)[1][engine_command(gpu)[1].index("--device") + 1] == "cuda"
    pod = build_deployment(cpu)["spec"]["template"]["spec"]
    assert "tolerations" not in pod and "resources" not in pod["containers"][0]
    sc = pod["containers"][0]["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]


def test_deployment_gpus_affinity_gate_probes_and_shm():
    deployment = build_deployment(
        dis(resources={"gpusPerReplica": 2, "memory": "64Gi"}, engine={"tensorParallelSize": 2})
    )
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"] == {
        "requests": {"nvidia.com/gpu": "2", "memory": "64Gi"},
        "limits": {"nvidia.com/gpu": "2", "memory": "64Gi"},
    }
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}
    ]
    assert pod["readinessGates"] == [{"conditionType": "detinfer.io/validated"}]
    assert container["startupProbe"]["httpGet"]["path"] == "/health_generate"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health_generate"
    assert container["livenessProbe"]["exec"]["command"][-3] == "http://127.0.0.1:30000/model_info"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {}}
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {
        "maxSurge": "100%",
        "maxUnavailable": 0,
    }


@pytest.mark.parametrize(
    ("version", "path", "generation"),
    [
        ("0.5.3", "/get_model_info", None),
        ("0.5.5.post3", "/get_model_info", None),  # its switch does not work
        ("0.5.6", "/model_info", "false"),
        ("0.5.23", "/model_info", "false"),
    ],
)
def test_sglang_probes(version, path, generation):
    """Liveness never generates (it reads model_info, which answers from the HTTP process);
    startup and readiness generate one token and wait past SGLang's own 20 s; startup allows an
    hour for a 70B download."""
    container = build_deployment(dis(engine={"version": version}))["spec"]["template"]["spec"][
        "containers"
    ][0]
    command = container["livenessProbe"]["exec"]["command"]
    assert command[-3:] == [f"http://127.0.0.1:30000{path}", "Qwen/Qwen3-8B", "default"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env.get("SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION") == generation
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health_generate"
        assert container[probe]["timeoutSeconds"] > 20
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 3600
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 120


def test_reference_probes_stay_fast_on_endpoints_it_serves():
    container = build_deployment(
        dis(engine={"kind": "Reference"}, resources={"gpusPerReplica": 0, "gpuProduct": None})
    )["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["exec"]["command"][-3] == "http://127.0.0.1:30000/model_info"
    assert container["startupProbe"]["periodSeconds"] == 2


def test_model_cache_claim_and_no_product_affinity():
    pod = build_deployment(
        dis(model={"cacheVolumeClaim": "hf-cache"}, resources={"gpuProduct": None})
    )["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "hf-cache"}
    assert "affinity" not in pod


def test_weights_already_on_the_volume_are_read_from_their_path():
    """A directory on the claim: the engine gets its path, no revision, and HF_HOME on the
    same volume, so nothing is downloaded."""
    d = dis(
        model={
            "path": "/var/cache/detinfer/models/qwen3-8b",
            "revision": None,
            "allowUnpinnedRevision": True,
            "cacheVolumeClaim": "weights",
        }
    )
    _, args = engine_command(d)
    assert args[:2] == ["--model-path", "/var/cache/detinfer/models/qwen3-8b"]
    assert "--revision" not in args
    container = build_deployment(d)["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "model-cache", "mountPath": "/var/cache/detinfer/models"} in container[
        "volumeMounts"
    ]
    assert {"name": "HF_HOME", "value": "/var/cache/detinfer/models"} in container["env"]


def test_children_are_owned_and_labelled():
    d = dis()
    for obj in (build_deployment(d), build_client_service(d, "r"), build_headless_service(d)):
        meta = obj["metadata"]
        assert meta["ownerReferences"][0]["kind"] == c.KIND
        assert meta["ownerReferences"][0]["controller"] is True
        assert meta["labels"][c.LABEL_MANAGED_BY] == "detinfer"
        assert meta["labels"][c.LABEL_INSTANCE] == "qwen"
        assert meta["labels"][c.LABEL_REVISION] == revision_of(d)
        assert c.ANNOTATION_APPLIED_HASH in meta["annotations"]


@pytest.mark.parametrize(
    "change",
    [
        {"engine": {"image": "lmsysorg/sglang@sha256:" + "cd" * 32}},
        {"engine": {"attentionBackend": "FlashInfer"}},
        {"engine": {"samplingSeed": 43}},
        {"engine": {"cudaGraph": "Disabled"}},
        {"engine": {"extraArgs": ["--dtype", "float16"]}},
        {"engine": {"version": "0.5.22"}},
        {"engine": {"numerics": {"flashinferPrefillSplitTileSize": 8192}}},
        {"engine": {"numerics": {"tritonDecodeSplitTileSize": 512}}},
        {"engine": {"numerics": {"matmulDeepGemm": "Disabled"}}},
        {"engine": {"numerics": {"matmulFallbackVariant": "Enabled"}}},
        {"engine": {"numerics": {"ncclChannels": 4}}},
        {"model": {"revision": "f" * 40}},
        {"model": {"path": "Qwen/Qwen3-4B"}},
        {"resources": {"gpuProduct": "NVIDIA-H200"}},
    ],
)
def test_revision_changes_with_what_changes_outputs(change):
    assert revision_of(dis(**change)) != revision_of(dis())


@pytest.mark.parametrize(
    "change",
    [
        {"replicas": 5},
        {"validation": {"trials": 32}},
        {"resources": {"memory": "80Gi"}},
        {"engine": {"allowMutableImage": True}},
    ],
)
def test_revision_ignores_what_does_not(change):
    assert revision_of(dis(**change)) == revision_of(dis())


def test_reference_revision_ignores_the_numerics_it_does_not_read():
    reference = {"resources": {"gpusPerReplica": 0, "gpuProduct": None}}
    plain = dis(engine={"kind": "Reference"}, **reference)
    tuned = dis(engine={"kind": "Reference", "numerics": {"ncclChannels": 2}}, **reference)
    assert revision_of(plain) == revision_of(tuned)


def test_services_select_validated_revision_and_every_pod():
    d = dis()
    client = build_client_service(d, "abc")
    headless = build_headless_service(d)
    assert client["spec"]["selector"][c.LABEL_REVISION] == "abc"
    assert headless["metadata"]["name"] == "qwen-pods"
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert c.LABEL_REVISION not in headless["spec"]["selector"]


def test_validation_job():
    d = dis(validation={"timeoutSeconds": 600, "suites": ["Single", "CrossReplica"]})
    endpoints = [Endpoint("qwen-b", "10.0.0.2"), Endpoint("qwen-a", "fd00::1")]
    name = validation_job_name(d, revision_of(d), ["qwen-b", "qwen-a"], None)
    job = build_validation_job(d, endpoints, f.FINGERPRINT, name, CONFIG)
    assert name == validation_job_name(d, revision_of(d), ["qwen-a", "qwen-b"], None)
    assert name != validation_job_name(d, revision_of(d), ["qwen-a"], None)
    assert name != validation_job_name(
        d, revision_of(d), ["qwen-a", "qwen-b"], "2026-11-22T10:00:00Z"
    )
    assert len(name) <= 63 and name.startswith("qwen-")
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 600
    assert spec["ttlSecondsAfterFinished"] == CONFIG.job_ttl_seconds
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["restartPolicy"] == "Never"
    args = pod["containers"][0]["args"]
    assert args[:6] == [
        "--protocol",
        "sglang",
        "--endpoint",
        "qwen-a=http://[fd00::1]:30000",
        "--endpoint",
        "qwen-b=http://10.0.0.2:30000",
    ]
    assert args[args.index("--suites") + 1] == "Single,CrossReplica"
    assert args[args.index("--timeout-seconds") + 1] == "570"
    assert args[args.index("--expected-fingerprint") + 1] == f.FINGERPRINT
    assert args[args.index("--summary-file") + 1] == "/dev/termination-log"
    assert job["metadata"]["annotations"][c.ANNOTATION_PODS] == "qwen-a,qwen-b"
    assert pod["containers"][0]["image"] == CONFIG.validator_image
    # Unset, the validator reads the engine's own largest batch from /server_info.
    assert "--max-batch-size" not in args


def test_validation_job_passes_the_largest_batch_where_the_spec_gives_it():
    d = dis(validation={"maxBatchSize": 256})
    endpoints = [Endpoint("qwen-a", "10.0.0.1")]
    name = validation_job_name(d, revision_of(d), ["qwen-a"], None)
    args = build_validation_job(d, endpoints, None, name, CONFIG)["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert args[args.index("--max-batch-size") + 1] == "256"


def test_longest_name_gives_a_valid_job_name():
    body = f.dis()
    body["metadata"]["name"] = "a" * 52
    d = parse_dis(body)
    assert len(validation_job_name(d, revision_of(d), ["p"], None)) == 63


def test_builders_are_pure():
    assert render_objects(dis(), CONFIG) == render_objects(dis(), CONFIG)


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        (
            {"attentionBackend": "Triton", "tensorParallelSize": 2, "radixCache": "Disabled"},
            "on 2 triton off 0.5.23",
        ),
        # SGLang may turn the radix cache off itself (FlashInfer): no expectation then.
        ({"attentionBackend": "FlashInfer"}, "on 1 flashinfer - 0.5.23"),
        (
            {"kind": "Reference", "deterministicInference": "Disabled"},
            "off 1 tiled on -",
        ),
    ],
)
def test_the_validator_holds_each_server_to_the_spec(engine, expected):
    from detinfer.builders.job import expectation_args

    gpus = engine.get("tensorParallelSize", 1)
    args = expectation_args(dis(engine=engine, resources={"gpusPerReplica": gpus}))
    options = dict(zip(args[::2], args[1::2], strict=True))
    got = " ".join(
        options.get(f"--expect-{name}", "-")
        for name in (
            "deterministic-inference",
            "tensor-parallel-size",
            "attention-backend",
            "radix-cache",
            "version",
        )
    )
    assert got == expected


def test_the_validator_holds_model_info_to_the_spec():
    """/model_info's model path and weight version, as the liveness probe holds them too."""
    from detinfer.builders.job import expectation_args

    args = expectation_args(dis(engine={"extraArgs": ["--weight-version", "v3"]}))
    options = dict(zip(args[::2], args[1::2], strict=True))
    assert options["--expect-model-path"] == "Qwen/Qwen3-8B"
    assert options["--expect-weight-version"] == "v3"
    plain = expectation_args(dis())
    assert plain[plain.index("--expect-weight-version") + 1] == "default"


def _llama_cpp(**engine):
    return parse_dis(f.dis(**llama_cpp(engine=engine)))


def test_llama_cpp_runs_llama_server_behind_the_gguf_check_with_the_specs_settings():
    d = _llama_cpp(slots=2, radixCache="Disabled", samplingSeed=7)
    command, args = engine_command(d)
    assert command == list(GGUF_CHECK)
    assert args[:3] == ["a" * 64, "/var/cache/detinfer/models/tiny.gguf", *LLAMA_SERVER_COMMAND]
    server = args[3:]
    for flag, value in [("--seed", "7"), ("--temp", "0"), ("--top-k", "1"), ("--parallel", "2")]:
        assert server[server.index(flag) + 1] == value
    assert "--no-cache-prompt" in server and "--cache-prompt" not in server
    assert "--n-gpu-layers" not in server  # gpusPerReplica 0
    # The baseline: the server's own slots and prompt cache.
    _, baseline = engine_command(d, deterministic=False)
    assert "--parallel" not in baseline and "--no-cache-prompt" not in baseline
    assert _llama_cpp().spec.engine.slots is None
    assert "--cache-prompt" in engine_command(_llama_cpp())[1]


def test_llama_cpp_probes_health_and_validates_over_the_native_protocol():
    d = _llama_cpp()
    container = build_deployment(d)["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    assert container["securityContext"]["runAsNonRoot"] is True
    args = validator_args(d, [Endpoint("p-0", "http://10.0.0.1:30000")], None)
    assert args[args.index("--protocol") + 1] == "llamacpp"
    assert not [a for a in args if a.startswith("--expect-")]


@pytest.mark.parametrize(("pinned", "code"), [(True, 0), (False, 1)])
def test_the_gguf_check_starts_the_server_only_on_the_pinned_file(tmp_path, pinned, code):
    """The container's real shell line (/bin/sh, sha256sum): the server's command runs only when
    the file's sha256 is the pinned one."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF model bytes")
    sha = hashlib.sha256(model.read_bytes()).hexdigest() if pinned else "b" * 64
    done = subprocess.run(
        [*GGUF_CHECK, sha, str(model), "echo", "server started"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == code
    assert ("server started" in done.stdout) == pinned
    if not pinned:
        assert f"not the pinned {'b' * 64} (model.sha256)" in done.stderr


def test_vllm_serves_with_batch_invariance_and_the_specs_backend():
    d = parse_dis(f.example("vllm.yaml"))
    container = build_deployment(d)["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["vllm", "serve"]
    args = container["args"]
    assert args[0] == "Qwen/Qwen3-8B"
    assert args[args.index("--attention-backend") + 1] == "FLASH_ATTN"
    assert args[args.index("--seed") + 1] == "42" and "--enable-prefix-caching" in args
    assert {"name": "VLLM_BATCH_INVARIANT", "value": "1"} in container["env"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    # The baseline: vLLM's default mode, its own backend.
    baseline = build_baseline_deployment(d)["spec"]["template"]["spec"]["containers"][0]
    assert "--attention-backend" not in baseline["args"]
    assert all(e["name"] != "VLLM_BATCH_INVARIANT" for e in baseline["env"])
    # Validated over the OpenAI protocol, token ids compared.
    job_args = validator_args(d, [Endpoint("p-0", "http://10.0.0.1:30000")], None)
    assert job_args[job_args.index("--protocol") + 1] == "openai"
    assert "--vllm-token-ids" in job_args
