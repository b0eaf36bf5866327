"""Which observed objects are this resource's own: decided by owner UIDs, never by labels.

Anyone who may create pods, Jobs, Deployments or Services in a namespace can give them any
labels, any name that is free, and ownerReferences naming any UID they can read. So:

- an engine pod counts only when it is controlled by a ReplicaSet that is controlled by the
  Deployment this resource controls, and runs the containers of that ReplicaSet's template;
- a validation result counts only from the one pod controlled by the Job whose UID the operator
  recorded when it created it, running exactly the containers that Job's template prescribes;
- a child (Deployment, Service) is applied only when it is absent or controlled by this
  resource; one held by anything else is left untouched and reported.

Everything else that looks like ours is ignored and named once in a Warning Event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detinfer.api import constants as c
from detinfer.api.resource import DeterministicInferenceService
from detinfer.api.status import JobRecord
from detinfer.controller.observed import (
    ChildView,
    Container,
    Controller,
    JobView,
    PodView,
    ReplicaSetView,
    is_controlled_by,
)


@dataclass(frozen=True)
class Memory:
    """What this operator process learnt from its own writes that the indexes cannot show."""

    # Job name -> UID of the Jobs it created, until the status records them and the index
    # shows them (a status write can fail after the Job was created; the watch can lag).
    created_jobs: Mapping[str, str] = field(default_factory=dict)
    # (kind, name) -> why: children that a create found in the way, invisible to the indexes
    # (they lack our labels). Forgotten after a while, so the create is tried again.
    foreign_children: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # Job name -> why: names of validation Jobs that someone else's Job holds.
    taken_job_names: Mapping[str, str] = field(default_factory=dict)
    # Keys (see `key`) of ignored objects already named in a Warning Event.
    reported: frozenset[str] = frozenset()


def key(kind: str, name: str, uid: str) -> str:
    return f"{kind}/{name}/{uid}"


def _controller_text(controller: Controller | None) -> str:
    return str(controller) if controller else "none"


def in_the_way(kind: str, name: str, controller: Controller | None) -> str:
    """Why a child of this name cannot be applied."""
    return (
        f"{kind} {name} exists and is not controlled by this {c.KIND} (its controller: "
        f"{_controller_text(controller)}); it is left untouched"
    )


def own_deployment(
    dis: DeterministicInferenceService, children: Iterable[ChildView]
) -> ChildView | None:
    return next(
        (
            ch
            for ch in children
            if ch.kind == "Deployment"
            and ch.name == dis.name
            and is_controlled_by(ch.controller, c.KIND, dis.metadata.uid)
        ),
        None,
    )


def foreign_children(
    dis: DeterministicInferenceService,
    wanted: Iterable[tuple[str, str]],
    children: Iterable[ChildView],
    memory: Memory,
) -> dict[tuple[str, str], str]:
    """(kind, name) -> why, for each child this resource wants whose name someone else holds."""
    wanted = set(wanted)
    out = {k: why for k, why in memory.foreign_children.items() if k in wanted}
    for ch in children:
        k = (ch.kind, ch.name)
        if k in wanted and not is_controlled_by(ch.controller, c.KIND, dis.metadata.uid):
            out[k] = in_the_way(ch.kind, ch.name, ch.controller)
    return out


def engine_pods(
    dis: DeterministicInferenceService,
    pods: Iterable[PodView],
    deployment: ChildView | None,
    replicasets: Iterable[ReplicaSetView],
) -> tuple[list[PodView], dict[str, str]]:
    """The engine pods our Deployment made, and the ignored ones (key -> why).

    A pod whose ReplicaSet, or whose ReplicaSet's Deployment, the watch has not delivered yet is
    neither trusted nor reported: it waits for the next event.
    """
    sets = {rs.uid: rs for rs in replicasets}
    ours = {
        uid
        for uid, rs in sets.items()
        if deployment is not None and is_controlled_by(rs.controller, "Deployment", deployment.uid)
    }
    trusted, ignored = [], {}
    for pod in pods:
        ctrl = pod.controller
        why = f"was not made by its Deployment (its controller: {_controller_text(ctrl)})"
        if ctrl is not None and ctrl.kind == "ReplicaSet" and ctrl.uid in ours:
            if pod.containers == sets[ctrl.uid].containers:
                trusted.append(pod)
                continue
            # Anyone may name our ReplicaSet as their pod's controller.
            why = f"claims ReplicaSet {ctrl.name} but does not run its containers"
        elif (
            ctrl is not None
            and ctrl.kind == "ReplicaSet"
            and (ctrl.uid not in sets or deployment is None)
        ):
            continue
        ignored[key("Pod", pod.name, pod.uid)] = (
            f"pod {pod.name} has the engine labels of {dis.name} but {why}: it is not validated, "
            "not gated and not counted"
        )
    return trusted, ignored


def adopt_created(
    dis: DeterministicInferenceService,
    jobs: Iterable[JobView],
    memory: Memory,
    consumed: str | None,
) -> JobRecord | None:
    """The record of a Job this process created whose status write was lost or is pending
    (never the Job whose result was read last, `consumed`)."""
    for job in jobs:
        if (
            job.name != consumed
            and memory.created_jobs.get(job.name) == job.uid
            and is_controlled_by(job.controller, c.KIND, dis.metadata.uid)
            and job.revision
        ):
            return JobRecord(name=job.name, uid=job.uid, revision=job.revision)
    return None


def ignored_jobs(
    dis: DeterministicInferenceService, jobs: Iterable[JobView], memory: Memory
) -> dict[str, str]:
    """Jobs with our labels that this resource does not control, and the names taken from us.

    A Job controlled by this resource but not recorded is one of our earlier runs (or a copy of
    one, which is never read either): left alone without a warning. One under the name of the
    run about to start is adopted if it is that run (`same_validation_run`): an operator that
    was stopped between the Job's create and the status write that records it.
    """
    out = {}
    for job in jobs:
        if not is_controlled_by(job.controller, c.KIND, dis.metadata.uid):
            out[key("Job", job.name, job.uid)] = (
                f"Job {job.name} looks like a validation Job of {dis.name} but is not "
                f"controlled by it (its controller: {_controller_text(job.controller)}): "
                "ignored"
            )
    for name, why in memory.taken_job_names.items():
        out.setdefault(key("Job", name, ""), why)
    return out


def ignored_validator_pods(
    dis: DeterministicInferenceService,
    pods: Iterable[PodView],
    jobs: Iterable[JobView],
    in_flight: JobView | None,
) -> dict[str, str]:
    """Validator-looking pods that no Job of this resource made, and impostors of our Job."""
    ours = {j.uid for j in jobs if is_controlled_by(j.controller, c.KIND, dis.metadata.uid)}
    out = {}
    for pod in pods:
        ctrl = pod.controller
        claims_ours = ctrl is not None and ctrl.kind == "Job" and ctrl.uid in ours
        if pod.component != c.COMPONENT_VALIDATOR and not claims_ours:
            continue
        if not claims_ours:
            why = f"is not controlled by a validation Job of {dis.name} (its controller: "
            why += f"{_controller_text(ctrl)})"
        elif (
            in_flight is not None
            and ctrl is not None
            and ctrl.uid == in_flight.uid
            and pod.containers != in_flight.containers
        ):
            why = f"claims validation Job {in_flight.name} but does not run its containers"
        else:
            continue
        out[key("Pod", pod.name, pod.uid)] = (
            f"pod {pod.name} looks like a validator but {why}: its result is ignored"
        )
    return out


def job_pods(job: JobView, pods: Sequence[PodView]) -> tuple[list[PodView], PodView | None]:
    """Every pod that claims `job`, and the one whose result counts (if exactly one claims it
    and it runs the containers the Job's template prescribes)."""
    claims = [p for p in pods if is_controlled_by(p.controller, "Job", job.uid)]
    genuine = [p for p in claims if p.containers == job.containers]
    return claims, genuine[0] if len(claims) == 1 and genuine else None


def same_validation_run(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether the Job `existing`, found under the name of the Job `wanted` (a create answered
    409), is that very run: controlled by the same resource (owner UID) and running the same
    pod template (revision, endpoints, expected fingerprint, every container and init
    container), not being deleted. Such a Job is adopted instead of making a second one for the
    same revision: it is the one an earlier process created before it could record it.
    """
    if (existing.get("metadata") or {}).get("deletionTimestamp"):
        return False
    ours = Controller.of(wanted)
    if ours is None or not is_controlled_by(Controller.of(existing), ours.kind, ours.uid):
        return False
    found, made = JobView.from_body(existing), JobView.from_body(wanted)
    if (found.revision, found.pods, found.expected_fingerprint, found.containers) != (
        made.revision,
        made.pods,
        made.expected_fingerprint,
        made.containers,
    ):
        return False

    def pod_spec(job: Mapping[str, Any]) -> Mapping[str, Any]:
        return ((job.get("spec") or {}).get("template") or {}).get("spec") or {}

    found_init, made_init = (
        Container.all_of({"containers": pod_spec(job).get("initContainers")})
        for job in (existing, wanted)
    )
    return found_init == made_init
