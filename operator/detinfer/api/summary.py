"""The validation summary: the validator writes it as its termination message, the operator reads it.

This is the one definition of that contract. It must stay under Kubernetes' 4096-byte limit for
termination messages, so `to_termination_message` shortens free text until it fits.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal, TypeVar

from pydantic import Field, ValidationError

from detinfer.api.base import KubeModel
from detinfer.api.constants import TERMINATION_MESSAGE_LIMIT
from detinfer.api.spec import FINGERPRINT_PATTERN
from detinfer.api.status import ServerFacts, SuiteOutcome, SuiteResult, Verdict

SUMMARY_SCHEMA_VERSION: Literal[1] = 1
REASON_LIMIT = 1024
"""Characters of the verdict's reason."""


class SummaryError(ValueError):
    """A termination message that is not a valid summary."""


class ValidationSummary(KubeModel):
    schema_version: Literal[1] = SUMMARY_SCHEMA_VERSION
    verdict: Verdict
    reason: Annotated[str, Field(max_length=REASON_LIMIT)] = ""
    """One line: why this verdict (the first divergence, the mismatch, why it could not test)."""
    fingerprint: Annotated[str | None, Field(pattern=FINGERPRINT_PATTERN)] = None
    suites: list[SuiteResult] = []
    failed_endpoints: list[str] = []
    """Endpoint names (pod names) that showed nondeterminism or a fingerprint mismatch."""
    compared_on: str | None = None
    """tokenIds+logprobs, tokenIds, tokens+logprobs, tokens or text: what outputs were compared on."""
    tokens_compared: Annotated[int, Field(ge=0)] = 0
    """Output tokens compared over the whole run (fingerprint step included); a Deterministic
    verdict with none rests on nothing."""
    logprobs_compared: Annotated[int, Field(ge=0)] = 0
    characters_compared: Annotated[int | None, Field(ge=0)] = None
    """Where a server gave text only: the characters compared."""
    duration_seconds: Annotated[float, Field(ge=0)] = 0.0
    tokens_used: Annotated[int, Field(ge=0)] = 0
    latency_p50_milliseconds: Annotated[float | None, Field(ge=0)] = None
    latency_p95_milliseconds: Annotated[float | None, Field(ge=0)] = None
    tokens_per_second: Annotated[float | None, Field(ge=0)] = None
    server: ServerFacts | None = None
    """What the endpoints reported about themselves (GET /server_info): the fields they agree
    on."""

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    @property
    def max_unique_outputs(self) -> int | None:
        """The most distinct outputs of a suite whose outputs were evidence (kubectl's UNIQUE)."""
        return max(
            (s.unique_outputs for s in self.suites if s.outcome != SuiteOutcome.COULD_NOT_TEST),
            default=None,
        )

    def to_termination_message(self) -> str:
        """Compact JSON of at most TERMINATION_MESSAGE_LIMIT bytes."""
        text = _compact(self)
        if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
            return text
        short = self.model_copy(
            update={
                "reason": self.reason[:300],
                "suites": [
                    s.model_copy(
                        update={
                            "first_divergence": (s.first_divergence or "")[:120] or None,
                            "reason": (s.reason or "")[:120] or None,
                        }
                    )
                    for s in self.suites
                ],
            }
        )
        text = _compact(short)
        if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
            return text
        # Still too long: only the failed endpoints can be that many; keep a count of the rest.
        names = short.failed_endpoints
        while names and len(_compact(short).encode()) > TERMINATION_MESSAGE_LIMIT:
            names = names[: len(names) // 2]
            short = short.model_copy(
                update={
                    "failed_endpoints": names,
                    "reason": f"{short.reason[:200]} ({len(self.failed_endpoints)} endpoints failed)",
                }
            )
        return _compact(short)

    @classmethod
    def parse(cls, text: str | None) -> ValidationSummary:
        """Parse a termination message; SummaryError says what is wrong with it."""
        return parse_message(
            cls,
            text,
            SUMMARY_SCHEMA_VERSION,
            SummaryError,
            "the validator",
            "; the validator and the operator are of different versions",
        )


M = TypeVar("M", bound=KubeModel)


def parse_message(
    model: type[M],
    text: str | None,
    version: int,
    error: type[ValueError],
    author: str,
    version_hint: str = "",
) -> M:
    """A termination message as `model` (a versioned JSON contract); `error` names what is
    wrong: no message, not a JSON object, another schemaVersion, the first invalid field."""
    if not text or not text.strip():
        raise error(f"{author} left no summary")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"the summary is not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(data, dict):
        raise error("the summary is not a JSON object")
    found = data.get("schemaVersion")
    if found != version:
        raise error(f"summary schemaVersion {found!r} is not {version}{version_hint}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise error(f"summary field {where}: {first['msg']}") from None


def _compact(summary: ValidationSummary) -> str:
    return json.dumps(summary.to_wire(), separators=(",", ":"), sort_keys=True)
