"""The API models: defaults, bounds, and the intent of every CEL rule (evaluated with cel-python)."""

from __future__ import annotations

import pytest

from detinfer.api import SpecError, extra_args, parse_service
from detinfer.api.base import KubeModel
from detinfer.api.spec import (
    MANAGED_FLAGS,
    NONDETERMINISTIC_FLAGS,
    UNSAFE_FLAGS,
    AttentionBackend,
    Suite,
)
from tests import factories as f


def errors_of(body) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_service(body)
    return [str(e) for e in info.value.errors]


def test_defaults_are_explicit_and_safe():
    dis = parse_service(f.dis())
    assert dis.spec.engine.attention_backend == AttentionBackend.FA3
    assert dis.spec.engine.deterministic_inference.value == "Enabled"
    assert dis.spec.engine.sampling_seed == 42
    assert dis.spec.validation.suites == list(Suite)
    assert dis.spec.validation.trials == 16
    assert dis.spec.validation.fingerprint_policy.value == "Record"
    assert dis.spec.validation.revalidate_every_seconds == 3600
    assert dis.namespace == "ml"


def test_the_examples_are_valid():
    for name in ("service.yaml", "reference.yaml"):
        parse_service(f.example(name))


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
    ]
    + [
        (
            {"engine": {"extraArgs": ["--mem-fraction-static", "0.8", form]}},
            "spec.engine.extraArgs",
            f"must not contain {flag}: {why}",
        )
        for flag, why in {**MANAGED_FLAGS, **NONDETERMINISTIC_FLAGS, **UNSAFE_FLAGS}.items()
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
            {"engine": {"extraArgs": ["--attention-backend triton"]}},
            "spec.engine.extraArgs[0]",
            "'--attention-backend triton' holds whitespace",
        ),
    ]
    + [
        # Rules on each item: an abbreviation of every refused flag (a prefix one character short).
        (
            {"engine": {"extraArgs": ["--mem-fraction-static", "0.8", f"{flag[:-1]}=x"]}},
            "spec.engine.extraArgs[2]",
            f"'{flag[:-1]}=x' is an abbreviation of {flag}, which extraArgs must not contain: {why}",
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
    dis = parse_service(f.dis(engine={"extraArgs": args}))
    assert dis.spec.engine.extra_args == args


def test_unpinned_revision_and_mutable_image_are_allowed_when_asked_for():
    parse_service(
        f.dis(
            model={"revision": None, "allowUnpinnedRevision": True},
            engine={"image": "lmsysorg/sglang:latest", "allowMutableImage": True},
        )
    )


def test_reference_engine_may_disable_determinism_and_use_no_gpu():
    dis = parse_service(
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
    ({"surprise": True}, "spec.surprise"),
    ({"engine": {"image": None}}, "spec.engine.image"),
]


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
