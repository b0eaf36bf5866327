"""One life for every one-shot Job a resource runs: the validation Job and the overhead benchmark
(and whatever runs once for a purpose next).

A Job is created for a purpose, its UID recorded in the status from the create response; it is
in flight while the status records it; its result is read once, from the one pod controlled by
that UID that runs the Job template's containers (trust.job_pods); it is cancelled when it no
longer applies, and deleted when done. Only how the pod's termination message is read differs
between purposes: the `read` each caller passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from detinfer.api import constants as c
from detinfer.api.status import JobRecord
from detinfer.controller import trust
from detinfer.controller.observed import JobView, PodView, is_controlled_by

T = TypeVar("T")


def in_flight(
    record: JobRecord | None, jobs: Sequence[JobView], owner_uid: str | None
) -> JobView | None:
    """The observed Job the record names: the one of its UID that this resource controls."""
    if record is None:
        return None
    return next(
        (
            j
            for j in jobs
            if j.uid == record.uid and is_controlled_by(j.controller, c.KIND, owner_uid)
        ),
        None,
    )


def ended_pod(job: JobView, pods: Sequence[PodView], noun: str) -> PodView | str | None:
    """The Job's one trusted pod once it terminated; why there is no result (a string) when
    none can give one; None while it runs. Two pods claiming the Job make no result at all."""
    claims, pod = trust.job_pods(job, pods)
    if len(claims) > 1:
        names = ", ".join(sorted(p.name for p in claims))
        return f"{len(claims)} pods claim {noun} {job.name} ({names}): none is trusted"
    if pod is not None and pod.terminated is not None:
        return pod
    if job.finished:
        return f"{noun} {job.name} left no result: {job.failure or 'its pod is gone'}"
    return None


def result_of(
    record: JobRecord,
    job: JobView | None,
    pods: Sequence[PodView],
    created_jobs: Mapping[str, str],
    noun: str,
    read: Callable[[JobView, PodView], T],
    no_result: Callable[[str], T],
) -> T | None:
    """The result of the recorded Job once it has ended, read from its pod by `read` (or, when
    it cannot give one, `no_result(why)`); None while it runs. The caller reads it once and
    drops the record."""
    if job is None and record.name in created_jobs:
        return None  # created by this process; the watch has not delivered it yet
    if job is None:
        return no_result(f"{noun} {record.name} is gone")
    found = ended_pod(job, pods, noun)
    if found is None:
        return None
    return no_result(found) if isinstance(found, str) else read(job, found)
