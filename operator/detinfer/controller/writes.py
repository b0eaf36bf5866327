"""What one pass plans to write: a list of typed writes (controller/reconcile.py decides,
controller/sync.py carries them out, in the list's order).

Each write carries the Events that announce it, posted once it succeeded: a Job's creation or
deletion, or the status write that records a transition. A created Job's UID, which only the
create response tells, reaches the status by one rule (`with_job_uids`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from detinfer.api.resource import SpecError
from detinfer.api.status import DeterministicInferenceServiceStatus, JobRecord, Verdict

# The UID of a Job the plan creates, until the create response gives the real one.
PENDING_UID = ""

# What a one-shot Job is for (controller/jobs.py).
Purpose = Literal["validation", "benchmark"]


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Apply:
    """Server-side apply of a child; `observed_hash`: its applied hash as the index showed it
    (None: not seen as ours, so the executor creates it first); `created`: its fields are
    still a create's, not an apply's."""

    obj: dict[str, Any]
    seen: bool = False
    observed_hash: str | None = None
    created: bool = False
    events: tuple[Event, ...] = ()

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])


@dataclass(frozen=True)
class CreateJob:
    """A one-shot Job; its Events are posted only when this create made it."""

    purpose: Purpose
    body: dict[str, Any]
    events: tuple[Event, ...] = ()

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])


@dataclass(frozen=True)
class DeleteJob:
    """Delete the Job of this name only if it still is the one of this UID."""

    name: str
    uid: str
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class DeleteDeployment:
    name: str
    uid: str
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class DeleteNetworkPolicy:
    name: str
    uid: str
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class SetPodCondition:
    """The readiness-gate condition of one engine pod."""

    pod: str
    condition: dict[str, Any]
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class WriteStatus:
    """The whole new status; None when it would not change, and only its Events are posted."""

    status: DeterministicInferenceServiceStatus | None
    events: tuple[Event, ...] = ()


Write = (
    Apply
    | CreateJob
    | DeleteJob
    | DeleteDeployment
    | DeleteNetworkPolicy
    | SetPodCondition
    | WriteStatus
)
# The order the executor writes in: children first, the status (which records the rest) last.
ORDER: tuple[type, ...] = (
    Apply,
    DeleteJob,
    CreateJob,
    DeleteDeployment,
    DeleteNetworkPolicy,
    SetPodCondition,
    WriteStatus,
)
_RANK = {kind: i for i, kind in enumerate(ORDER)}
W = TypeVar("W")


@dataclass(frozen=True)
class Plan:
    writes: tuple[Write, ...] = ()
    # The validation result read in this pass, if any (for metrics).
    consumed: Verdict | None = None
    invalid: SpecError | None = None
    # Key -> why, of every object that looks like ours and is ignored (see trust.py).
    ignored: Mapping[str, str] = field(default_factory=dict)
    # Only the first writes of a larger plan (sync's `deployment_first`): the next pass, queued
    # at once, plans and makes the rest.
    follow_up: bool = False

    @staticmethod
    def of(writes: Sequence[Write], **kwargs: Any) -> Plan:
        """A plan of these writes in the executor's order (stable within one type)."""
        return Plan(tuple(sorted(writes, key=lambda w: _RANK[type(w)])), **kwargs)

    def each(self, kind: type[W]) -> list[W]:
        return [w for w in self.writes if isinstance(w, kind)]

    def count(self) -> int:
        """How many API writes the plan makes (a WriteStatus of None makes none)."""
        return sum(not (isinstance(w, WriteStatus) and w.status is None) for w in self.writes)

    # Views for reading a plan (the tests, the executor's logs).
    @property
    def status(self) -> DeterministicInferenceServiceStatus | None:
        return next((w.status for w in self.each(WriteStatus)), None)

    @property
    def events(self) -> list[Event]:
        return [e for w in self.writes for e in w.events]

    @property
    def apply(self) -> list[dict[str, Any]]:
        return [w.obj for w in self.each(Apply)]

    def created(self, purpose: Purpose) -> dict[str, Any] | None:
        return next((w.body for w in self.each(CreateJob) if w.purpose == purpose), None)

    @property
    def create_job(self) -> dict[str, Any] | None:
        return self.created("validation")

    @property
    def create_bench_job(self) -> dict[str, Any] | None:
        return self.created("benchmark")

    @property
    def delete_jobs(self) -> list[str]:
        return [w.name for w in self.each(DeleteJob)]

    @property
    def pod_conditions(self) -> dict[str, dict[str, Any]]:
        return {w.pod: w.condition for w in self.each(SetPodCondition)}

    @property
    def delete_deployments(self) -> dict[str, str]:
        return {w.name: w.uid for w in self.each(DeleteDeployment)}

    @property
    def delete_policies(self) -> dict[str, str]:
        return {w.name: w.uid for w in self.each(DeleteNetworkPolicy)}


def with_job_uids(
    status: DeterministicInferenceServiceStatus, uids: Mapping[str, str]
) -> DeterministicInferenceServiceStatus:
    """`status` with each Job record still pending filled in with the UID its create returned
    (name -> UID): the status records a Job by the UID only the create response tells."""
    update = {}
    for name in type(status).model_fields:
        record = getattr(status, name)
        if isinstance(record, JobRecord) and record.uid == PENDING_UID and record.name in uids:
            update[name] = record.model_copy(update={"uid": uids[record.name]})
    return status.model_copy(update=update) if update else status
