"""status of a DeterministicInferenceService: what the operator observed and proved."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from detinfer.api.base import KubeModel
from detinfer.api.constants import Reason
from detinfer.api.spec import AttentionBackend, OverheadWorkload, Suite


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Verdict(StrEnum):
    """The outcome of one validation run; the exit code of the validator follows from it."""

    DETERMINISTIC = "Deterministic"
    NOT_DETERMINISTIC = "NotDeterministic"
    FINGERPRINT_MISMATCH = "FingerprintMismatch"
    SERVER_MISMATCH = "ServerMismatch"
    """The server reported a version, attention backend, TP size, deterministic mode or radix
    cache other than the spec's (a wrong deployment); the suites did not run."""
    COULD_NOT_TEST = "CouldNotTest"

    @property
    def failed(self) -> bool:
        """The engines were tested and are not what the spec asks for (not "could not test")."""
        return self in (
            Verdict.NOT_DETERMINISTIC,
            Verdict.FINGERPRINT_MISMATCH,
            Verdict.SERVER_MISMATCH,
        )

    @property
    def exit_code(self) -> int:
        return 0 if self is Verdict.DETERMINISTIC else 1 if self.failed else 2

    @property
    def condition_reason(self) -> str:
        """The reason of the Validated condition and of the Event this verdict gives.

        Every verdict is its own reason but one: the validator's CouldNotTest (it could not test
        the engines) is the resource's CouldNotValidate (the revision is not validated). Both
        words are on the wire, the first in the summary and the report, the second in the
        conditions and Events, so both stay; this is the one place that maps one to the other.
        """
        return {
            Verdict.DETERMINISTIC: Reason.DETERMINISTIC,
            Verdict.NOT_DETERMINISTIC: Reason.NOT_DETERMINISTIC,
            Verdict.FINGERPRINT_MISMATCH: Reason.FINGERPRINT_MISMATCH,
            Verdict.SERVER_MISMATCH: Reason.SERVER_MISMATCH,
            Verdict.COULD_NOT_TEST: Reason.COULD_NOT_VALIDATE,
        }[self]


class Condition(KubeModel):
    """A metav1.Condition."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    status: ConditionStatus
    reason: Annotated[str, Field(min_length=1, max_length=1024)]
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    observed_generation: Annotated[int | None, Field(ge=0)] = None


class SuiteOutcome(StrEnum):
    """What one suite found; only Passed counts towards a Deterministic verdict."""

    PASSED = "Passed"
    """Every output was identical to its reference, and the outputs held evidence."""
    FAILED = "Failed"
    """Some output differed from its reference (firstDivergence says where)."""
    SKIPPED = "Skipped"
    """The suite could not run with this protocol or set-up (reason says why); not a pass."""
    COULD_NOT_TEST = "CouldNotTest"
    """The suite ran, but its outputs held no evidence: no tokens, fewer than asked, or
    logprobs that are not finite or all the same (reason says which)."""


class SuiteFindings(KubeModel):
    """What one suite found, defined once: SuiteResult (the summary's and the status's) and the
    validator's SuiteReport (the --report file's, with what the suite cost) add only the fields
    in which they differ on the wire."""

    name: str
    """A Suite, or in the report Fingerprint."""
    samples: Annotated[int, Field(ge=0)]
    """Outputs compared."""
    unique_outputs: Annotated[int, Field(ge=0)]
    """Distinct outputs among them (token ids, and logprobs where the engine gives them); 1 is
    deterministic."""
    passed: bool
    """True only when outcome is Passed."""
    first_divergence: Annotated[str | None, Field(max_length=512)] = None
    """Where the first two outputs differ: batch size, token position, the two tokens."""
    outcome: SuiteOutcome | None = None
    """Passed, Failed, Skipped or CouldNotTest; absent only from validators older than it."""
    tokens_compared: Annotated[int, Field(ge=0)] = 0
    """Output tokens compared bitwise, over all samples and endpoints: what a pass rests on."""
    logprobs_compared: Annotated[int, Field(ge=0)] = 0
    """Logprobs compared bitwise (output tokens, and prompt positions in RadixCache)."""
    characters_compared: Annotated[int | None, Field(ge=0)] = None
    """Characters of text compared, where a server gave text only (no tokens)."""


# The summary's and the status's findings of a suite; its docstring is the CRD's description.
class SuiteResult(SuiteFindings):
    """One suite of one validation run."""

    name: Suite
    reason: Annotated[str | None, Field(max_length=512)] = None
    """Why the suite was skipped or could not test."""


class ServerFacts(KubeModel):
    """What the engine reported about itself (GET /server_info) in a validation run; a field is
    absent when the server did not say, or when the validated pods did not all say the same."""

    version: Annotated[str | None, Field(max_length=64)] = None
    """The SGLang version (the reference engine: detinfer-reference-<version>)."""
    attention_backend: Annotated[str | None, Field(max_length=64)] = None
    """The attention backend in use, after SGLang's own choices."""
    deterministic_inference: bool | None = None
    """Whether --enable-deterministic-inference is on."""
    radix_cache: bool | None = None
    """Whether the radix (prefix) cache is on; SGLang turns it off itself with FlashInfer in
    deterministic mode."""
    tensor_parallel_size: Annotated[int | None, Field(ge=1)] = None


class ReplicaCounts(KubeModel):
    desired: Annotated[int, Field(ge=0)] = 0
    running: Annotated[int, Field(ge=0)] = 0
    """Pods of the current revision whose containers are ready."""
    validated: Annotated[int, Field(ge=0)] = 0
    """Pods of the current revision that passed validation and take traffic."""


class ValidationStatus(KubeModel):
    """The last validation run the operator read."""

    revision: str
    """Revision the run validated."""
    job_name: str
    verdict: Verdict
    message: Annotated[str, Field(max_length=1024)] = ""
    last_run_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    last_success_time: Annotated[str | None, Field(json_schema_extra={"format": "date-time"})] = (
        None
    )
    pods: list[str] = []
    """Pods the run validated."""
    duration_seconds: Annotated[int | None, Field(ge=0)] = None
    tokens_used: Annotated[int | None, Field(ge=0)] = None
    unique_outputs: Annotated[int | None, Field(ge=0)] = None
    """Largest number of distinct outputs in any suite."""
    suites: list[SuiteResult] = []
    server: ServerFacts | None = None
    """What the validated pods reported about themselves."""
    latency_p50_milliseconds: Annotated[int | None, Field(ge=0)] = None
    """Median request latency under the validator's own test load (not a comparison with
    anything: the cost of determinism is status.overhead)."""
    latency_p95_milliseconds: Annotated[int | None, Field(ge=0)] = None
    tokens_per_second: Annotated[int | None, Field(ge=0)] = None
    """Generation throughput under the validator's own test load."""


class JobRecord(KubeModel):
    """The validation Job in flight, as the API server returned it when the operator created it.

    Only a pod controlled by the Job of this UID can give a result; labels and names can be
    copied by anyone who may create pods or Jobs.
    """

    name: str
    uid: str
    revision: str
    """Revision the Job validates."""


class SideFigures(KubeModel):
    """One endpoint at one concurrency level, over all rounds. Latencies in milliseconds,
    nearest-rank percentiles over every request (TTFT, end to end) or every token gap (ITL)."""

    ttft_p50_ms: Annotated[float, Field(ge=0)]
    ttft_p95_ms: Annotated[float, Field(ge=0)]
    itl_p50_ms: Annotated[float, Field(ge=0)]
    itl_p95_ms: Annotated[float, Field(ge=0)]
    # Spelt e2eP50Ms on the wire (the alias generator would write e2EP50Ms).
    e2e_p50_ms: Annotated[float, Field(ge=0, alias="e2eP50Ms")]
    e2e_p95_ms: Annotated[float, Field(ge=0, alias="e2eP95Ms")]
    tokens_per_second: Annotated[float, Field(ge=0)]
    """Output tokens per second: the median over the rounds of generated tokens / wall time."""
    tokens_per_second_spread: Annotated[float, Field(ge=0)]
    """Max minus min of the rounds' tokens/s: the run-to-run noise of this figure."""


class LevelResult(KubeModel):
    concurrency: Annotated[int, Field(ge=1)]
    deterministic: SideFigures
    baseline: SideFigures
    throughput_overhead_percent: float
    """How much more time the deterministic endpoint needs for the same tokens:
    (baseline tokens/s / deterministic tokens/s - 1) x 100."""
    e2e_p50_overhead_percent: Annotated[float, Field(alias="e2eP50OverheadPercent")]
    """(deterministic / baseline end-to-end p50 - 1) x 100."""
    ttft_p50_overhead_percent: float
    itl_p50_overhead_percent: float


class OverheadJobRecord(JobRecord):
    """The benchmark Job in flight, as the API server returned it when the operator created it
    (only its own pod, by UID, gives a result)."""

    deterministic_pod: str
    baseline_pod: str


class OverheadStatus(KubeModel):
    """The last overhead measurement (spec.overhead): the deterministic pods against a
    temporary baseline of the same engine without determinism, on the same workload."""

    revision: str
    """Revision the measurement was made on."""
    measured: bool
    """False: the benchmark could not measure (message says why); no figure is given then."""
    message: Annotated[str, Field(max_length=1024)] = ""
    last_run_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    job_name: str
    deterministic_pod: str
    """The validated pod that was measured."""
    baseline_pod: str
    """The temporary baseline pod it was compared with (deleted since)."""
    workload: OverheadWorkload
    headline_percent: float | None = None
    """The throughput overhead at the highest concurrency level: how much more GPU time the same
    tokens take with determinism, in percent (kubectl's OVERHEAD)."""
    headline_concurrency: Annotated[int | None, Field(ge=1)] = None
    levels: list[LevelResult] = []
    """Per concurrency level: both sides' figures and the overhead ratios."""
    duration_seconds: Annotated[int | None, Field(ge=0)] = None


class AttentionTrial(KubeModel):
    """One backend the search (engine.attentionBackend Auto) tried, once its part is over."""

    backend: AttentionBackend
    revision: str
    """The revision the backend made (the spec with this backend instead of Auto)."""
    verdict: Verdict
    """The validation's verdict; CouldNotTest when no verdict came in time (then it is not
    chosen)."""
    overhead_percent: float | None = None
    """The measured throughput overhead (status.overhead's headline) of a backend that passed;
    None when it failed or could not be measured."""
    message: Annotated[str, Field(max_length=512)] = ""


class AttentionSearchStatus(KubeModel):
    """engine.attentionBackend Auto: each candidate is served in turn (validated, its overhead
    measured), then the cheapest that passed (controller/search.py, docs/overhead.md)."""

    search_revision: str
    """The revision of the spec as written (with Auto): a new one starts a new search."""
    candidates: Annotated[list[AttentionBackend], Field(max_length=8)]
    trials: Annotated[list[AttentionTrial], Field(max_length=8)] = []
    trying: AttentionBackend | None = None
    """The candidate served now for its trial; None once the search is over."""
    trial_started_time: Annotated[str | None, Field(json_schema_extra={"format": "date-time"})] = (
        None
    )
    chosen: AttentionBackend | None = None
    """The cheapest backend that passed, served from the end of the search on."""
    message: Annotated[str, Field(max_length=1024)] = ""


class DeterministicInferenceServiceStatus(KubeModel):
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    conditions: Annotated[list[Condition], Field(max_length=16)] = []
    revision: str | None = None
    """Hash of every spec field that can change the outputs; engine pods carry it as a label."""
    serving_revision: str | None = None
    """Revision of the pods the client Service sends traffic to."""
    fingerprint: str | None = None
    """sha256 of the canonical outputs of the validation prompts (token ids), recorded for
    fingerprintRevision; later pods of that revision must match it."""
    fingerprint_revision: str | None = None
    """The revision the fingerprint was recorded for."""
    short_fingerprint: str | None = None
    """The fingerprint's first 12 hex digits, for kubectl get."""
    replicas: ReplicaCounts = ReplicaCounts()
    validation: ValidationStatus | None = None
    validation_job: JobRecord | None = None
    """The validation Job in flight (cleared once its result is read)."""
    overhead: OverheadStatus | None = None
    overhead_job: OverheadJobRecord | None = None
    """The benchmark Job in flight (cleared once its result is read)."""
    attention_search: AttentionSearchStatus | None = None
    """engine.attentionBackend Auto: the trials and the choice."""
