"""Small, immutable views of the cluster objects the controller reads (the resource, its pods,
Jobs and children).

The operator indexes these instead of whole objects: less memory, and the planning code reads
only what it needs. Each view keeps its object's UID and controller reference, because labels
and names say nothing about who made an object: only owner UIDs do (see docs/architecture.md,
"Threat model").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detinfer.api import constants as c
from detinfer.api.resource import SpecError, parse_dis, parse_status
from detinfer.api.spec import DEFAULT_ENGINE_KIND, EngineKind
from detinfer.api.status import DeterministicInferenceServiceStatus
from detinfer.builders.common import RevisionContext, applied_hash
from detinfer.builders.job_args import ValidatorArgs

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


@dataclass(frozen=True)
class Controller:
    """The ownerReference with controller: true."""

    kind: str
    name: str
    uid: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Controller | None:
        for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("controller"):
                return cls(ref.get("kind", ""), ref.get("name", ""), ref.get("uid", ""))
        return None

    def __str__(self) -> str:
        return f"{self.kind} {self.name} (uid {self.uid})"


def is_controlled_by(controller: Controller | None, kind: str, uid: str | None) -> bool:
    return controller is not None and bool(uid) and (controller.kind, controller.uid) == (kind, uid)


@dataclass(frozen=True)
class Container:
    """What a container runs: compared between a validator pod and its Job's template."""

    name: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]

    @classmethod
    def all_of(cls, pod_spec: Mapping[str, Any] | None) -> tuple[Container, ...]:
        return tuple(
            cls(
                name=ct.get("name", ""),
                image=ct.get("image", ""),
                command=tuple(ct.get("command") or ()),
                args=tuple(ct.get("args") or ()),
            )
            for ct in (pod_spec or {}).get("containers") or []
        )


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
    # When the engine container's current run started (state.running.startedAt): later than
    # the pod's verdict means the process that was validated is gone.
    running_since: str | None = None
    uid: str = ""
    controller: Controller | None = None
    containers: tuple[Container, ...] = ()

    @property
    def is_validated(self) -> bool:
        return self.validated is not None and self.validated.get("status") == "True"

    @property
    def can_be_validated(self) -> bool:
        """Running with its containers ready and an address (serving is decided by the gate)."""
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
            running_since=next(
                (
                    ((cs.get("state") or {}).get("running") or {}).get("startedAt")
                    for cs in status.get("containerStatuses") or []
                ),
                None,
            ),
            uid=meta.get("uid", ""),
            controller=Controller.of(body),
            containers=Container.all_of(body.get("spec")),
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
    uid: str = ""
    controller: Controller | None = None
    # The containers its pod template prescribes (immutable once the Job exists).
    containers: tuple[Container, ...] = ()
    # Its pod template's component: a validation Job's, or the overhead benchmark's.
    component: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> JobView:
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        template = (body.get("spec") or {}).get("template") or {}
        containers = Container.all_of(template.get("spec"))
        # Revision, pods and expected fingerprint come from the pod template, which nobody can
        # change after creation, not from the Job's labels and annotations, which anyone who
        # may patch Jobs can.
        template_labels = (template.get("metadata") or {}).get("labels") or {}
        run = ValidatorArgs.from_args(containers[0].args if containers else ())
        finished = False
        failure = None
        for cond in status.get("conditions") or []:
            if cond.get("status") != "True":
                continue
            if cond.get("type") in ("Complete", "Failed"):
                finished = True
            if cond.get("type") == "Failed":
                failure = ": ".join(filter(None, [cond.get("reason"), cond.get("message")]))
        return cls(
            name=meta.get("name", ""),
            revision=template_labels.get(c.LABEL_REVISION),
            pods=run.pods,
            expected_fingerprint=run.expected_fingerprint,
            created=meta.get("creationTimestamp") or "",
            finished=finished,
            failure=failure or ("failed" if finished and status.get("failed") else None),
            uid=meta.get("uid", ""),
            controller=Controller.of(body),
            containers=containers,
            component=template_labels.get(c.LABEL_COMPONENT),
        )


@dataclass(frozen=True)
class ReplicaSetView:
    """A ReplicaSet with our labels: the link between an engine pod and our Deployment."""

    name: str
    uid: str
    controller: Controller | None
    # The containers its pod template prescribes: a pod that claims the ReplicaSet must run them.
    containers: tuple[Container, ...] = ()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ReplicaSetView:
        meta = body.get("metadata") or {}
        template = (body.get("spec") or {}).get("template") or {}
        return cls(
            meta.get("name", ""),
            meta.get("uid", ""),
            Controller.of(body),
            Container.all_of(template.get("spec")),
        )


@dataclass(frozen=True)
class ChildView:
    """A long-lived child (Deployment, Service): enough to tell whether it needs applying."""

    kind: str
    name: str
    applied_hash: str | None
    controller: Controller | None = None
    uid: str = ""
    # Our fields are still recorded as a create's ("Update"), not an apply's: the first apply
    # must take them over first (Cluster.apply).
    created: bool = False
    creation_timestamp: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ChildView:
        meta = body.get("metadata") or {}
        return cls(
            kind=body.get("kind", ""),
            name=meta.get("name", ""),
            applied_hash=applied_hash(body),
            controller=Controller.of(body),
            uid=meta.get("uid", ""),
            created=any(
                (e.get("manager"), e.get("operation"), e.get("subresource"))
                == (c.FIELD_MANAGER, "Update", None)
                for e in meta.get("managedFields") or []
            ),
            creation_timestamp=meta.get("creationTimestamp"),
        )


_KINDS = frozenset(k.value for k in EngineKind)


def _engine_kind(body: Mapping[str, Any]) -> str:
    spec = body.get("spec")
    engine = spec.get("engine") if isinstance(spec, Mapping) else None
    kind = engine.get("kind", DEFAULT_ENGINE_KIND.value) if isinstance(engine, Mapping) else None
    return kind if kind in _KINDS else "Unknown"


@dataclass(frozen=True)
class ResourceView:
    """A DeterministicInferenceService, parsed once per body: who it is, its status as last
    written, and its spec at its revision, or why the spec is invalid."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    resource_version: str | None
    status: DeterministicInferenceServiceStatus
    stored_status: Mapping[str, Any]
    """The status as read, raw: the status write removes what it no longer holds."""
    parsed: RevisionContext | SpecError
    engine_kind: str = DEFAULT_ENGINE_KIND.value
    """spec.engine.kind as written (the schema's default when unset), or "Unknown": read even
    from a spec that does not parse, so the metrics always carry it."""

    @property
    def status_keys(self) -> frozenset[str]:
        """The keys of the status as stored (none when it has no status yet)."""
        return frozenset(self.stored_status)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ResourceView:
        meta = body.get("metadata") or {}
        raw_status = body.get("status")
        parsed: RevisionContext | SpecError
        try:
            parsed = RevisionContext.of(parse_dis(body))
        except SpecError as exc:
            parsed = exc
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            generation=meta.get("generation"),
            resource_version=meta.get("resourceVersion"),
            status=parse_status(raw_status),
            stored_status=raw_status if isinstance(raw_status, Mapping) else {},
            parsed=parsed,
            engine_kind=_engine_kind(body),
        )

    @property
    def reference(self) -> dict[str, str]:
        """The resource as an Event's `regarding` names it."""
        return {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }


@dataclass(frozen=True)
class Observed:
    """What the indexes show of one resource's pods, Jobs, children and ReplicaSets."""

    pods: Sequence[PodView] = ()
    jobs: Sequence[JobView] = ()
    children: Sequence[ChildView] = ()
    replicasets: Sequence[ReplicaSetView] = ()


def owner_key(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, DIS name) of a child, from its labels."""
    meta = body.get("metadata") or {}
    instance = (meta.get("labels") or {}).get(c.LABEL_INSTANCE)
    if not instance:
        return None
    return meta.get("namespace", ""), instance
