"""What one pass plans to write (controller/reconcile.py decides, controller/sync.py writes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detinfer.api.resource import SpecError
from detinfer.api.status import DeterministicInferenceServiceStatus, Verdict


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str
    # Posted once its write succeeded: the status write, or the Job's creation or deletion.
    after: str = "status"  # status | job-created | job-deleted | bench-created


@dataclass
class Plan:
    apply: list[dict[str, Any]] = field(default_factory=list)
    create_job: dict[str, Any] | None = None
    delete_jobs: list[str] = field(default_factory=list)
    # pod name -> the readiness-gate condition to set on it
    pod_conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The whole new status, or None when it would not change.
    status: DeterministicInferenceServiceStatus | None = None
    events: list[Event] = field(default_factory=list)
    # The validation result read in this pass, if any (for metrics).
    consumed: Verdict | None = None
    invalid: SpecError | None = None
    # (kind, name) -> applied hash of the children as observed (controlled by this resource)
    # when planning; a child to apply that is not here is created, not applied.
    observed_hashes: dict[tuple[str, str], str | None] = field(default_factory=dict)
    # (kind, name) of the observed children whose fields are still a create's, not an apply's.
    created_children: set[tuple[str, str]] = field(default_factory=set)
    # Job name -> UID, for each Job in delete_jobs: deleted only if it still is that Job.
    delete_job_uids: dict[str, str] = field(default_factory=dict)
    # Key -> why, of every object that looks like ours and is ignored (see trust.py).
    ignored: dict[str, str] = field(default_factory=dict)
    # The overhead measurement (controller/overhead.py): the benchmark Job to create, the
    # baseline Deployments to delete (name -> UID: only that one).
    create_bench_job: dict[str, Any] | None = None
    delete_deployments: dict[str, str] = field(default_factory=dict)
    # NetworkPolicies of this resource no longer wanted (spec.networkPolicy off): name -> UID.
    delete_policies: dict[str, str] = field(default_factory=dict)
    # Only the first writes of a larger plan (sync's `deployment_first`): the next pass, queued
    # at once, plans and makes the rest.
    follow_up: bool = False
