"""The API models: defaults, bounds, and the intent of every CEL rule (evaluated with cel-python)."""

from __future__ import annotations

import re

import pytest

from detinfer.api import SpecError, ValidationSummary, Verdict, extra_args, parse_dis
from detinfer.api.base import KubeModel
from detinfer.api.quantity import QUANTITY_PATTERN
from detinfer.api.resource import parse_status
from detinfer.api.spec import (
    MANAGED_FLAGS,
    NONDETERMINISTIC_FLAGS,
    UNSAFE_FLAGS,
    AttentionBackend,
    Suite,
)
from tests.support import factories as f


def errors_of(body) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_dis(body)
    return [str(e) for e in info.value.errors]


def test_defaults_are_explicit_and_safe():
    dis = parse_dis(f.dis())
    assert dis.spec.engine.attention_backend == AttentionBackend.FA3
    assert dis.spec.engine.deterministic_inference.value == "Enabled"
    assert dis.spec.engine.sampling_seed == 42
    assert dis.spec.engine.version == "0.5.23"  # the factory's; the spec has no default
    assert dis.spec.engine.numerics.flashinfer_prefill_split_tile_size == 4096
    assert dis.spec.engine.numerics.nccl_channels == 8
    assert dis.spec.validation.suites == list(Suite)
    assert dis.spec.validation.trials == 16
    assert dis.spec.validation.fingerprint_policy.value == "Record"
    assert dis.spec.validation.revalidate_every_seconds == 3600
    assert dis.namespace == "ml"


def test_the_examples_are_valid():
    for name in ("service.yaml", "reference.yaml", "llama-cpp.yaml", "vllm.yaml"):
        parse_dis(f.example(name))


GGUF = "/var/cache/detinfer/models/tiny.gguf"


def llama_cpp(engine=None, model=None, **spec):
    """A LlamaCpp spec (CPU, a GGUF pinned by sha256) with `engine`, `model` and `spec` merged in."""
    return {
        "engine": {"kind": "LlamaCpp", "version": None, **(engine or {})},
        "model": {"path": GGUF, "revision": None, "sha256": "a" * 64, **(model or {})},
        "resources": {"gpusPerReplica": 0, "gpuProduct": None},
        **spec,
    }


# Each CEL rule: a spec that breaks it, the field path the error must name, words of the message.
CEL_CASES = (
    [
        (
            {"engine": {"image": "lmsysorg/sglang:latest"}},
            "spec.engine.image",
            "lmsysorg/sglang:latest is not pinned by digest",
        ),
        (
            {"engine": {"image": "lmsysorg/sglang@sha256:abc"}},
            "spec.engine.image",
            "not pinned by digest",
        ),
        (
            {"model": {"revision": None}},
            "spec.model.revision",
            "model.revision is required for model Qwen/Qwen3-8B",
        ),
        (
            {
                "engine": {"kind": "Reference", "tensorParallelSize": 2},
                "resources": {"gpusPerReplica": 2},
            },
            "spec.engine.tensorParallelSize",
            "must be 1 with kind: Reference",
        ),
        (
            {"engine": {"deterministicInference": "Disabled"}},
            "spec.engine.deterministicInference",
            "only allowed with kind: Reference",
        ),
        (
            {"engine": {"extraArgs": ["--sampling-backend", "flashinfer"]}},
            "spec.engine.extraArgs",
            "--sampling-backend other than --sampling-backend=pytorch",
        ),
        (
            {"engine": {"extraArgs": ["--sampling-backend=flashinfer"]}},
            "spec.engine.extraArgs",
            "pytorch sampler",
        ),
        (
            {"validation": {"fingerprintPolicy": "Enforce"}},
            "spec.validation.expectedFingerprint",
            "required when fingerprintPolicy is Enforce",
        ),
        (
            {"validation": {"revalidateEverySeconds": 30}},
            "spec.validation.revalidateEverySeconds",
            "revalidateEverySeconds must be 0 (never) or at least 60",
        ),
        (
            {"engine": {"tensorParallelSize": 4}, "resources": {"gpusPerReplica": 2}},
            "spec.resources.gpusPerReplica",
            "gpusPerReplica must be at least engine.tensorParallelSize",
        ),
        (
            {"model": {"path": "/var/cache/detinfer/models/qwen3-8b"}},
            "spec.model.revision",
            "model.revision does not apply to the local directory /var/cache/detinfer/models/qwen3",
        ),
        (
            {"engine": {"version": None}},
            "spec.engine.version",
            "engine.version is required with kind: SGLang",
        ),
        (
            {
                "engine": {"kind": "Reference", "version": "0.5.23"},
                "resources": {"gpusPerReplica": 0, "gpuProduct": None},
            },
            "spec.engine.version",
            "engine.version must not be set with kind: Reference",
        ),
        (
            {"engine": {"attentionBackend": "FA4", "version": "0.5.15.post1"}},
            "spec.engine.attentionBackend",
            "FA4 needs SGLang 0.5.16 or later: SGLang 0.5.15.post1 refuses fa4",
        ),
        (
            {"engine": {"attentionBackend": "Tree"}},
            "spec.engine.attentionBackend",
            "engine.attentionBackend Tree is a backend of the reference engine",
        ),
        (
            {"engine": {"attentionBackend": "Auto"}},
            "spec.overhead.enabled",
            "engine.attentionBackend Auto needs overhead.enabled",
        ),
        (
            {"overhead": {"enabled": True, "remeasureEverySeconds": 600}},
            "spec.overhead.remeasureEverySeconds",
            "must be 0 (once per revision) or at least 3600",
        ),
    ]
    + [
        (
            {"engine": {"extraArgs": ["--mem-fraction-static", "0.8", form]}},
            "spec.engine.extraArgs",
            f"must not contain {flag}: {why}",
        )
        for flag, why in {
            **MANAGED_FLAGS,
            **NONDETERMINISTIC_FLAGS,
            **UNSAFE_FLAGS,
            **extra_args.CREDENTIAL_FLAGS,
        }.items()
        for form in (flag, f"{flag}=x")
    ]
    + [
        (
            {
                "engine": {"kind": "Reference", "extraArgs": ["--device", "cuda"]},
                "resources": {"gpusPerReplica": 0, "gpuProduct": None},
            },
            "spec.engine.extraArgs",
            "must not contain --device with kind: Reference",
        ),
        (
            {
                "engine": {"kind": "Reference", "extraArgs": ["--planted-fault", "drift=5"]},
                "resources": {"gpusPerReplica": 0, "gpuProduct": None},
            },
            "spec.engine.extraArgs",
            "must not contain --planted-fault with kind: Reference: a test tool",
        ),
        (
            {"engine": {"extraArgs": ["--attention-backend triton"]}},
            "spec.engine.extraArgs[0]",
            "'--attention-backend triton' holds whitespace",
        ),
        (
            {"engine": {"extraArgs": ["--api-key sk-live-123"]}},
            "spec.engine.extraArgs[0]",
            "The item (not shown: it may hold a credential) holds whitespace",
        ),
        (
            {"engine": {"version": "0.5.7", "adminApiKeySecret": {"name": "k", "key": "admin"}}},
            "spec.engine.adminApiKeySecret",
            "engine.adminApiKeySecret needs SGLang 0.5.8 or later",
        ),
        (
            {"networkPolicy": {"clients": [{}]}},
            "spec.networkPolicy.clients[0]",
            "each peer needs namespaceSelector or podSelector",
        ),
        (
            {"networkPolicy": {"clients": [{"podSelector": {"matchLabels": {"a b": "x"}}}]}},
            "spec.networkPolicy.clients[0]",
            "every matchLabels key must be a label key",
        ),
        (
            llama_cpp(engine={"version": "0.5.23"}),
            "spec.engine.version",
            "engine.version must not be set with kind: LlamaCpp",
        ),
        ({"engine": {"slots": 2}}, "spec.engine.slots", "applies to kind: LlamaCpp only"),
        (
            llama_cpp(engine={"attentionBackend": "Triton"}),
            "spec.engine.attentionBackend",
            "does not apply to kind: LlamaCpp",
        ),
        (
            llama_cpp(engine={"tensorParallelSize": 2}),
            "spec.engine.tensorParallelSize",
            "must be 1 with kind: LlamaCpp",
        ),
        (
            llama_cpp(engine={"extraArgs": ["--threads", "2"]}),
            "spec.engine.extraArgs",
            "must be empty with kind: LlamaCpp",
        ),
        (
            llama_cpp(model={"sha256": None}),
            "spec.model.sha256",
            "model.sha256 is required with kind: LlamaCpp",
        ),
        (
            {"model": {"sha256": "a" * 64}},
            "spec.model.sha256",
            "model.sha256 applies to kind: LlamaCpp only",
        ),
        (
            llama_cpp(model={"path": "/var/cache/detinfer/models/tiny"}),
            "spec.model.path",
            "model.path /var/cache/detinfer/models/tiny is not the absolute path of a .gguf file",
        ),
        (
            {"engine": {"kind": "VLLM", "version": None, "attentionBackend": "FlashInfer"}},
            "spec.engine.attentionBackend",
            "engine.attentionBackend FlashInfer is not one that the batch invariance of vLLM "
            "supports: with kind: VLLM use FlashAttn, TritonAttn",
        ),
        (
            {"engine": {"attentionBackend": "TritonAttn"}},
            "spec.engine.attentionBackend",
            "engine.attentionBackend TritonAttn is a backend of vLLM: SGLang takes FA3",
        ),
        (
            {"engine": {"kind": "VLLM", "attentionBackend": "FlashAttn"}},
            "spec.engine.version",
            "engine.version must not be set with kind: VLLM yet",
        ),
        (
            llama_cpp(overhead={"enabled": True}),
            "spec.overhead.enabled",
            "overhead.enabled is not supported with kind: LlamaCpp or VLLM yet",
        ),
    ]
    + [
        # Rules on each item: an abbreviation of every refused flag (a prefix one character short).
        (
            {"engine": {"extraArgs": ["--mem-fraction-static", "0.8", f"{flag[:-1]}=x"]}},
            "spec.engine.extraArgs[2]",
            # A credential flag's item is not repeated (the rest may be the credential).
            extra_args._quoted(
                f"{flag[:-1]}=x",
                f"is an abbreviation of {flag}, which extraArgs must not contain: {why}",
            ),
        )
        for flag, why in extra_args.refused_flags().items()
        if flag.startswith("--")
    ]
)


@pytest.mark.parametrize(("overrides", "path", "words"), CEL_CASES)
def test_cel_rule_refuses_with_field_path_and_value(overrides, path, words):
    errors = errors_of(f.dis(**overrides))
    assert any(e.startswith(f"{path}: ") and words in e for e in errors), errors


def test_every_cel_rule_has_a_case():
    """A new rule without a failing case in CEL_CASES fails this test."""
    messages = set()
    for overrides, _, _ in CEL_CASES:
        messages.update(errors_of(f.dis(**overrides)))
    rules = [rule for model in _all_models(KubeModel) for rule in model.cel_rules]
    assert len(rules) >= 20
    rules += [
        rule
        for model in _all_models(KubeModel)
        for item_rules in getattr(model, "item_cel_rules", {}).values()
        for rule in item_rules
    ]
    uncovered = [
        rule.rule for rule in rules if not any(_rendered_by(rule, message) for message in messages)
    ]
    assert uncovered == []


def _rendered_by(rule, message: str) -> bool:
    if rule.message in message:
        return True
    # A messageExpression's text ends with a fixed literal; every rendering contains it.
    return bool(rule.message_expression) and rule.message_expression.rsplit("'", 2)[-2] in message


def _all_models(base):
    for sub in base.__subclasses__():
        yield sub
        yield from _all_models(sub)


@pytest.mark.parametrize(
    "args",
    [
        ["--mem-fraction-static", "0.85"],
        ["--sampling-backend=pytorch"],
        ["--chunked-prefill-size", "4096", "--dtype", "bfloat16"],
        ["--model-loader-extra-config", "{}"],
    ],
)
def test_harmless_extra_args_are_allowed(args):
    dis = parse_dis(f.dis(engine={"extraArgs": args}))
    assert dis.spec.engine.extra_args == args


def test_unpinned_revision_and_mutable_image_are_allowed_when_asked_for():
    parse_dis(
        f.dis(
            model={"revision": None, "allowUnpinnedRevision": True},
            engine={"image": "lmsysorg/sglang:latest", "allowMutableImage": True},
        )
    )


def test_reference_engine_may_disable_determinism_and_use_no_gpu():
    dis = parse_dis(
        f.dis(
            engine={"kind": "Reference", "deterministicInference": "Disabled"},
            resources={"gpusPerReplica": 0, "gpuProduct": None},
        )
    )
    assert dis.spec.resources.gpus_per_replica == 0


# Schema bounds, enums, patterns and types: a spec that breaks one, the path the error names.
BOUND_CASES = [
    ({"replicas": -1}, "spec.replicas"),
    ({"replicas": 65}, "spec.replicas"),
    ({"engine": {"tensorParallelSize": 0}}, "spec.engine.tensorParallelSize"),
    ({"engine": {"attentionBackend": "FA2"}}, "spec.engine.attentionBackend"),
    ({"engine": {"attentionBackend": "fa3"}}, "spec.engine.attentionBackend"),
    ({"validation": {"trials": 0}}, "spec.validation.trials"),
    ({"validation": {"trials": 129}}, "spec.validation.trials"),
    ({"validation": {"maxNewTokens": 0}}, "spec.validation.maxNewTokens"),
    ({"validation": {"maxNewTokens": 2049}}, "spec.validation.maxNewTokens"),
    ({"validation": {"timeoutSeconds": 10}}, "spec.validation.timeoutSeconds"),
    ({"validation": {"suites": ["Single", "Everything"]}}, "spec.validation.suites[1]"),
    ({"validation": {"expectedFingerprint": "md5:abc"}}, "spec.validation.expectedFingerprint"),
    ({"model": {"revision": "main"}}, "spec.model.revision"),
    ({"resources": {"memory": "lots"}}, "spec.resources.memory"),
    ({"resources": {"gpuProduct": "NVIDIA H100"}}, "spec.resources.gpuProduct"),
    ({"replicas": "two"}, "spec.replicas"),
    # Strict types: the API server coerces nothing, so neither do the models.
    ({"replicas": "2"}, "spec.replicas"),
    ({"replicas": True}, "spec.replicas"),
    ({"validation": {"trials": 2.5}}, "spec.validation.trials"),
    ({"model": {"allowUnpinnedRevision": "yes"}}, "spec.model.allowUnpinnedRevision"),
    ({"engine": {"allowMutableImage": 1}}, "spec.engine.allowMutableImage"),
    ({"engine": {"extraArgs": [8]}}, "spec.engine.extraArgs[0]"),
    # Quantities: Kubernetes' grammar, never negative.
    ({"resources": {"memory": "-1Gi"}}, "spec.resources.memory"),
    ({"resources": {"cpu": "..."}}, "spec.resources.cpu"),
    ({"resources": {"cpu": "-500m"}}, "spec.resources.cpu"),
    ({"resources": {"sharedMemorySize": "-0"}}, "spec.resources.sharedMemorySize"),
    ({"resources": {"memory": "1K"}}, "spec.resources.memory"),
    ({"resources": {"memory": "1e"}}, "spec.resources.memory"),
    ({"resources": {"memory": "1.5e3.2"}}, "spec.resources.memory"),
    ({"surprise": True}, "spec.surprise"),
    ({"engine": {"image": None}}, "spec.engine.image"),
    ({"engine": {"version": "0.5.2"}}, "spec.engine.version"),
    ({"engine": {"version": "v0.5.23"}}, "spec.engine.version"),
    (
        {"engine": {"numerics": {"flashinferPrefillSplitTileSize": 0}}},
        "spec.engine.numerics.flashinferPrefillSplitTileSize",
    ),
    ({"engine": {"numerics": {"ncclChannels": 65}}}, "spec.engine.numerics.ncclChannels"),
    ({"engine": {"numerics": {"matmulDeepGemm": "On"}}}, "spec.engine.numerics.matmulDeepGemm"),
]


def test_an_unsupported_release_is_refused_naming_the_supported_ones():
    errors = errors_of(f.dis(engine={"version": "0.6.0"}))
    assert any(
        e.startswith("spec.engine.version: ")
        and "'0.6.0' is not a supported SGLang release (one of 0.5.3 to 0.5.23" in e
        for e in errors
    ), errors


@pytest.mark.parametrize(("overrides", "path"), BOUND_CASES)
def test_schema_bounds_name_the_field_and_value(overrides, path):
    errors = errors_of(f.dis(**overrides))
    assert any(e.startswith(f"{path}: ") for e in errors), errors
    bad = overrides
    while isinstance(bad, dict) and len(bad) == 1:
        bad = next(iter(bad.values()))
    if bad is not None and not isinstance(bad, list) and path != "spec.surprise":
        assert any(repr(bad) in e for e in errors), errors


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("a" * 53, "String should have at most 52 characters"),
        ("Qwen", "String should match pattern"),
        ("8b-model", "String should match pattern"),
    ],
)
def test_root_rules_refuse_bad_names(name, words):
    body = f.dis()
    body["metadata"]["name"] = name
    errors = errors_of(body)
    assert any(e.startswith("metadata.name: ") and words in e for e in errors), errors


def test_wrong_kind_and_missing_spec_are_refused():
    body = f.dis()
    body["kind"] = "Deployment"
    assert errors_of(body) == [
        "apiVersion/kind: detinfer.io/v1alpha1/Deployment is not "
        "detinfer.io/v1alpha1/DeterministicInferenceService"
    ]
    body = f.dis()
    del body["spec"]
    assert errors_of(body) == ["spec: is required and must be an object"]


def test_every_error_is_reported_at_once():
    errors = errors_of(
        f.dis(replicas=-1, validation={"trials": 0}, engine={"attentionBackend": "x"})
    )
    assert len(errors) == 3


def test_integral_floats_are_integers_as_the_api_server_stores_them():
    # kube-apiserver takes replicas: 2.0 and stores 2; the models agree.
    dis = parse_dis(f.dis(replicas=2.0, engine={"samplingSeed": 7.0}))
    assert (dis.spec.replicas, dis.spec.engine.sampling_seed) == (2, 7)
    assert type(dis.spec.replicas) is int


VALID_QUANTITIES = ["0", "8", "500m", "0.5", ".5", "1.", "+1", "64Gi", "1Ei", "1e9", "1E+3", "2e-3"]
VALID_QUANTITIES += ["1n", "1u", "1k", "1M", "1G", "1T", "1P", "1E", "7Ei", "9223372036854775807"]
VALID_QUANTITIES += ["." + "0" * 27 + "1e41"]  # 1e13, in the 32 characters the field allows
INVALID_QUANTITIES = ["", ".", "...", "-1", "-0", "1K", "1ki", "1Gb", "1e", "1e+", "1e1.5", "1 Gi"]
INVALID_QUANTITIES += ["Gi", "1..2", "0x10", "1_000", "∞", "1e9.0"]


@pytest.mark.parametrize("text", VALID_QUANTITIES)
def test_quantities_kubernetes_takes_are_taken_by_the_crd_and_the_models(text):
    assert re.fullmatch(QUANTITY_PATTERN, text)
    dis = parse_dis(f.dis(resources={"memory": text, "sharedMemorySize": text}))
    assert dis.spec.resources.memory == text


@pytest.mark.parametrize("text", INVALID_QUANTITIES)
def test_quantities_kubernetes_refuses_are_refused_by_the_crd_and_the_models(text):
    assert not re.fullmatch(QUANTITY_PATTERN, text)
    errors = errors_of(f.dis(resources={"memory": text}))
    assert len(errors) == 1 and errors[0].startswith("spec.resources.memory: Input should "), errors
    assert f"(got {text!r})" in errors[0]


@pytest.mark.parametrize(
    ("field", "largest", "too_large"),
    [
        ("memory", "9223372036854775807", "9223372036854775808"),
        ("memory", "7Ei", "8Ei"),
        ("sharedMemorySize", "9.223372036854775807e18", "1e999"),
        ("cpu", "9223372036854775807m", "9223372036854775808m"),
        ("cpu", "9223372036854775.807", "9223372036854776"),
        ("cpu", "9e15", "1e4294967297"),  # Kubernetes would read the last as 1e1 (int32 wrap)
    ],
)
def test_quantities_beyond_what_kubernetes_counts_are_refused(field, largest, too_large):
    parse_dis(f.dis(resources={field: largest}))
    errors = errors_of(f.dis(resources={field: too_large}))
    counted = "cpu in millicores" if field == "cpu" else "bytes"
    assert errors == [
        f"spec.resources.{field}: Input should be at most 9223372036854775807"
        f"{'m' if field == 'cpu' else ''}: Kubernetes counts {counted} in 64 bits "
        f"(got {too_large!r})"
    ]


def test_negative_quantities_say_so():
    assert errors_of(f.dis(resources={"cpu": "-1"})) == [
        "spec.resources.cpu: Input should not be negative: Kubernetes refuses negative pod "
        "resources (got '-1')"
    ]


def test_status_and_summary_stay_readable_after_strict_specs():
    """Strictness is for what users write; the status (written by the operator) and the summary
    (the validator's JSON, with ints where floats are declared) are read as before."""
    status = {
        "observedGeneration": 2,
        "validation": {
            "revision": "r",
            "jobName": "j",
            "verdict": "Deterministic",
            "lastRunTime": "2026-01-01T00:00:00Z",
            "suites": [{"name": "Single", "samples": 4, "uniqueOutputs": 1, "passed": True}],
        },
    }
    assert parse_status(status).validation.verdict == Verdict.DETERMINISTIC
    body = f.dis()
    body["status"] = status
    assert parse_dis(body).status.observed_generation == 2
    summary = ValidationSummary.parse(
        '{"schemaVersion": 1, "verdict": "Deterministic", "durationSeconds": 3, '
        '"tokensUsed": 10, "latencyP50Milliseconds": 12, "tokensPerSecond": 40.5}'
    )
    assert (summary.duration_seconds, summary.tokens_per_second) == (3.0, 40.5)


def test_metadata_as_the_api_server_sends_it_is_read_strictly_but_fully():
    body = f.dis()
    body["metadata"].update(
        labels={"a": "b"},
        annotations={"c": "d"},
        creationTimestamp="2026-01-01T00:00:00Z",
        finalizers=["x"],
        managedFields=[{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        deletionTimestamp=None,
    )
    dis = parse_dis(body)
    assert (dis.name, dis.namespace, dis.metadata.generation) == ("qwen", "ml", 1)


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        (None, "metadata.name: is required"),
        (["a"], "metadata: must be an object (got ['a'])"),
        (
            {"name": "qwen", "namespace": 123},
            "metadata.namespace: Input should be a valid string (got 123)",
        ),
        (
            {"name": "qwen", "generation": "1"},
            "metadata.generation: Input should be a valid integer (got '1')",
        ),
        ({"name": 123}, "metadata.name: must be a string (got 123)"),
    ],
)
def test_bad_metadata_names_the_field(metadata, error):
    body = f.dis()
    body["metadata"] = metadata
    assert errors_of(body) == [error]


def test_a_spec_that_is_not_json_is_refused_not_raised():
    import datetime

    body = f.dis(model={"since": datetime.date(2024, 1, 1)})
    assert errors_of(body) == ["spec: is not JSON: Object of type date is not JSON serializable"]


@pytest.mark.parametrize(
    "args",
    [
        ["--api-key", "sk-live-123"],
        ["--api-key=sk-live-123"],
        ["--api-k=sk-live-123"],
        ["--admin-api-key", "sk-live-123"],
        ["--admin-api=sk-live-123"],
        ["--api-key sk-live-123"],
        ["--ssl-keyfile-password=sk-live-123"],
    ],
)
def test_a_credential_in_extra_args_is_refused_without_repeating_it(args):
    """Every spelling is refused, and no message repeats the value (the API server's neither:
    the CRD's rules are the same expressions)."""
    errors = errors_of(f.dis(engine={"extraArgs": ["--mem-fraction-static", "0.8", *args]}))
    assert errors and not any("sk-live-123" in e for e in errors), errors
    assert any(
        "Secret in spec.engine" in e or "password" in e or "holds whitespace" in e for e in errors
    ), errors
