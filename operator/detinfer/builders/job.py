"""The validation Job: runs `detinfer validate` against given engine pods, with no API access."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from detinfer.api import constants as c
from detinfer.api.resource import DeterministicInferenceService
from detinfer.builders import common
from detinfer.builders.deployment import client_key_environment
from detinfer.builders.job_args import ValidatorArgs
from detinfer.builders.process_line import VALIDATOR_COMMAND
from detinfer.config import OperatorConfig
from detinfer.engines import kinds

# The validator stops itself this long before the Job's deadline, so that it still writes a
# "could not test" summary instead of being killed without one.
VALIDATOR_DEADLINE_MARGIN_SECONDS = 30


@dataclass(frozen=True)
class Endpoint:
    """An engine pod to validate."""

    pod: str
    ip: str

    @property
    def url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{c.ENGINE_PORT}"


def validation_job_name(
    dis: DeterministicInferenceService,
    revision: str,
    pods: Sequence[str],
    after: str | None,
    attempt: int = 0,
) -> str:
    """One name per (revision, pods, previous run): asking twice for the same run is harmless.

    Such names are predictable, so someone else's Job may hold one: `attempt` gives the
    alternatives to use then.
    """
    key: dict[str, object] = {"revision": revision, "pods": sorted(pods), "after": after}
    if attempt:
        key["attempt"] = attempt
    return f"{dis.name}-{common.stable_hash(key, 10)}"


def validator_args(
    dis: DeterministicInferenceService,
    endpoints: Sequence[Endpoint],
    expected_fingerprint: str | None,
) -> list[str]:
    validation = dis.spec.validation
    protocol = kinds.of(dis.spec).validator_protocol(dis.spec)
    return ValidatorArgs(
        endpoints=tuple(sorted((e.pod, e.url) for e in endpoints)),
        suites=tuple(s.value for s in validation.suites),
        trials=validation.trials,
        max_new_tokens=validation.max_new_tokens,
        sampling_seed=dis.spec.engine.sampling_seed,
        timeout_seconds=validation.timeout_seconds - VALIDATOR_DEADLINE_MARGIN_SECONDS,
        max_batch_size=validation.max_batch_size,
        expected_fingerprint=expected_fingerprint,
        expectations=expectations(dis),
        protocol=protocol.protocol,
        cache_prompt=protocol.cache_prompt,
        vllm_token_ids=protocol.vllm_token_ids,
    ).to_args()


def expectation_args(dis: DeterministicInferenceService) -> list[str]:
    """`expectations` as the validator's flags."""
    return [arg for pair in expectations(dis) for arg in pair]


def expectations(dis: DeterministicInferenceService) -> tuple[tuple[str, str], ...]:
    """What each engine's GET /server_info and /model_info must say: the spec's settings, as the
    server resolved them (the engine kind's package says which, detinfer.engines.kinds). An
    engine that says otherwise is a wrong deployment (ServerMismatch)."""
    return kinds.of(dis.spec).expectations(dis.spec)


def build_validation_job(
    target: DeterministicInferenceService | common.RevisionContext,
    endpoints: Sequence[Endpoint],
    expected_fingerprint: str | None,
    name: str,
    config: OperatorConfig,
) -> dict[str, Any]:
    context = common.context_of(target)
    dis = context.dis
    pod_labels = context.labels(c.COMPONENT_VALIDATOR, "detinfer-validator")
    meta = common.metadata(dis, name, dict(pod_labels))
    meta["annotations"] = {c.ANNOTATION_PODS: ",".join(sorted(e.pod for e in endpoints))}
    if expected_fingerprint:
        meta["annotations"][c.ANNOTATION_EXPECTED_FINGERPRINT] = expected_fingerprint
    return common.one_shot_job(
        meta,
        pod_labels,
        c.VALIDATOR_CONTAINER,
        config.validator_image,
        list(VALIDATOR_COMMAND),
        validator_args(dis, endpoints, expected_fingerprint),
        dis.spec.validation.timeout_seconds,
        config.job_ttl_seconds,
        client_key_environment(dis),
    )
