"""Small, immutable views of the cluster objects the controller reads (pods, Jobs, children).

The operator indexes these instead of whole objects: less memory, and the planning code reads
only what it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from detinfer.api import constants as c
from detinfer.builders.common import applied_hash

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str | None
    message: str | None


@dataclass(frozen=True)
class PodView:
    name: str
    component: str | None
    revision: str | None
    phase: str | None
    ip: str | None
    deleting: bool
    containers_ready: bool
    # The readiness-gate condition (detinfer.io/validated) as it stands on the pod.
    validated: Mapping[str, Any] | None
    # Why the scheduler could not place the pod, if it could not.
    unschedulable: str | None
    job_name: str | None
    terminated: Terminated | None
    # When the containers last became ready (ContainersReady lastTransitionTime).
    ready_since: str | None = None

    @property
    def is_validated(self) -> bool:
        return bool(self.validated) and self.validated.get("status") == "True"

    @property
    def serving_ready(self) -> bool:
        """Running with its containers ready: it can be validated."""
        return (
            not self.deleting
            and self.phase == "Running"
            and self.containers_ready
            and bool(self.ip)
        )

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PodView:
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        status = body.get("status") or {}
        conditions = {cond.get("type"): cond for cond in status.get("conditions") or []}
        scheduled = conditions.get("PodScheduled") or {}
        unschedulable = None
        if scheduled.get("status") == "False":
            unschedulable = scheduled.get("message") or scheduled.get("reason") or "unschedulable"
        terminated = None
        for cs in status.get("containerStatuses") or []:
            state = (cs.get("state") or {}).get("terminated")
            if state:
                terminated = Terminated(
                    exit_code=int(state.get("exitCode", -1)),
                    reason=state.get("reason"),
                    message=state.get("message"),
                )
                break
        return cls(
            name=meta.get("name", ""),
            component=labels.get(c.LABEL_COMPONENT),
            revision=labels.get(c.LABEL_REVISION),
            phase=status.get("phase"),
            ip=status.get("podIP"),
            deleting=bool(meta.get("deletionTimestamp")),
            containers_ready=(conditions.get("ContainersReady") or {}).get("status") == "True",
            validated=dict(conditions[c.READINESS_GATE])
            if c.READINESS_GATE in conditions
            else None,
            unschedulable=unschedulable,
            job_name=next((labels[k] for k in JOB_NAME_LABELS if k in labels), None),
            terminated=terminated,
            ready_since=(conditions.get("ContainersReady") or {}).get("lastTransitionTime"),
        )


@dataclass(frozen=True)
class JobView:
    name: str
    revision: str | None
    pods: tuple[str, ...]
    expected_fingerprint: str | None
    created: str
    finished: bool
    # Why the Job failed, when Kubernetes says it did (e.g. DeadlineExceeded).
    failure: str | None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> JobView:
        meta = body.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        status = body.get("status") or {}
        finished = False
        failure = None
        for cond in status.get("conditions") or []:
            if cond.get("status") != "True":
                continue
            if cond.get("type") in ("Complete", "Failed"):
                finished = True
            if cond.get("type") == "Failed":
                failure = ": ".join(filter(None, [cond.get("reason"), cond.get("message")]))
        pods = annotations.get(c.ANNOTATION_PODS, "")
        return cls(
            name=meta.get("name", ""),
            revision=(meta.get("labels") or {}).get(c.LABEL_REVISION),
            pods=tuple(p for p in pods.split(",") if p),
            expected_fingerprint=annotations.get(c.ANNOTATION_EXPECTED_FINGERPRINT),
            created=meta.get("creationTimestamp") or "",
            finished=finished,
            failure=failure or ("failed" if finished and status.get("failed") else None),
        )


@dataclass(frozen=True)
class ChildView:
    """A long-lived child (Deployment, Service): enough to tell whether it needs applying."""

    kind: str
    name: str
    applied_hash: str | None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ChildView:
        return cls(
            kind=body.get("kind", ""),
            name=(body.get("metadata") or {}).get("name", ""),
            applied_hash=applied_hash(body),
        )


def owner_key(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, DIS name) of a child, from its labels."""
    meta = body.get("metadata") or {}
    instance = (meta.get("labels") or {}).get(c.LABEL_INSTANCE)
    if not instance:
        return None
    return meta.get("namespace", ""), instance
