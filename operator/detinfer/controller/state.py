"""What this operator process remembers between passes, beyond what the indexes show.

The body each status write returned, the children applied until the index shows them, and the
trust memory plan() gets (Jobs this process created, children and Job names found in the way,
ignored objects already reported). All of it is lost on restart by design: the indexes and the
status are the truth, this only saves writes and repeated Events while the watch lags.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from detinfer import metrics
from detinfer.api import constants as c
from detinfer.config import OperatorConfig
from detinfer.controller.cluster import Cluster, InTheWay
from detinfer.controller.observed import ChildView, Controller, JobView
from detinfer.controller.trust import Memory, in_the_way
from detinfer.controller.watches import Indexes
from detinfer.controller.workqueue import WorkQueue

# A Job this process created is remembered at most this long if the index never shows it.
CREATED_JOB_MEMORY_SECONDS = 600

Key = tuple[str, str]  # (namespace, name) of a DeterministicInferenceService


@dataclass
class ResourceMemory:
    """All this process remembers of one resource beyond what the indexes show: forgotten in
    one operation (State.forget). Times are time.monotonic()."""

    # The body our last status write returned: fresher than the index until the watch
    # delivers it, so a quick second sync does not act on stale status.
    written: dict[str, Any] | None = None
    # Children applied but maybe not yet in the index: (kind, name) -> (hash applied, hash the
    # index showed then, UID of the resource that owns it). Saves re-applying while the watch
    # lags.
    applied: dict[tuple[str, str], tuple[str, str | None, str]] = field(default_factory=dict)
    # What plan() gets as trust.Memory; see there.
    created_jobs: dict[str, tuple[str, float]] = field(default_factory=dict)
    foreign_children: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    taken_job_names: dict[str, str] = field(default_factory=dict)
    reported: frozenset[str] = frozenset()


class State:
    """What the handlers share, kept in kopf's memo."""

    def __init__(
        self,
        cluster: Cluster,
        config: OperatorConfig,
        post_event: Callable[[Mapping[str, str], str, str, str, str], None] | None = None,
    ):
        self.cluster = cluster
        self.config = config
        # The resources waiting for a pass (namespace, name); the workers take them from here.
        self.queue: WorkQueue[Key] = WorkQueue()
        # How Events are posted: the cluster's call itself, or (in the operator) a poster that
        # hands them to a thread of their own (controller/events.py).
        self.post_event = post_event if post_event is not None else cluster.post_event
        # Every index a pass reads (controller/watches.py), set by the start-up handler.
        self.indexes: Indexes | None = None
        # Everything remembered of each resource, in one place.
        self.resources: dict[Key, ResourceMemory] = {}

    def of(self, key: Key) -> ResourceMemory:
        """The memory of one resource (empty at first)."""
        memory = self.resources.get(key)
        if memory is None:
            memory = self.resources[key] = ResourceMemory()
        return memory

    def forget(self, key: Key) -> None:
        """A deleted resource: its memory and its metric series go."""
        self.resources.pop(key, None)
        metrics.forget(*key)

    def children(self, key: Key, indexed: Sequence[ChildView]) -> list[ChildView]:
        """The indexed children of one resource, with what this process applied since standing
        in for them until the index has caught up."""
        applied = self.of(key).applied
        out = []
        for child in indexed:
            mine, before, _ = applied.get((child.kind, child.name), (None, None, ""))
            if mine is None or child.applied_hash == mine:
                applied.pop((child.kind, child.name), None)
                out.append(child)
            elif child.applied_hash == before:  # applied since: taken over then
                out.append(replace(child, applied_hash=mine, created=False))
            else:  # changed by someone else since: trust the index
                applied.pop((child.kind, child.name), None)
                out.append(child)
        seen = {(child.kind, child.name) for child in indexed}
        for (kind, name), (mine, before, owner) in list(applied.items()):
            if (kind, name) not in seen and before is None:
                # Created or applied by this process as the owner's child: it is ours.
                out.append(ChildView(kind, name, mine, Controller(c.KIND, "", owner), created=True))
        return out

    def memory(
        self, key: Key, recorded_job_uid: str | None, indexed_jobs: Sequence[JobView]
    ) -> Memory:
        """What plan() must know beyond the indexes, after forgetting what is settled.

        `recorded_job_uid`: the UID of the Job in flight as the status records it."""
        now = time.monotonic()
        indexed = {j.uid for j in indexed_jobs}
        mine = self.of(key)
        for name, (uid, since) in list(mine.created_jobs.items()):
            if (uid == recorded_job_uid and uid in indexed) or (
                now - since > CREATED_JOB_MEMORY_SECONDS
            ):
                del mine.created_jobs[name]
        for child, (_, since) in list(mine.foreign_children.items()):
            if now - since > self.config.retry_after_seconds:
                del mine.foreign_children[child]  # try the create again: the object may be gone
        return Memory(
            created_jobs={name: uid for name, (uid, _) in mine.created_jobs.items()},
            foreign_children={child: why for child, (why, _) in mine.foreign_children.items()},
            taken_job_names=dict(mine.taken_job_names),
            reported=mine.reported,
        )

    def found_in_the_way(self, key: Key, exc: InTheWay) -> None:
        if exc.kind == "Job":
            self.of(key).taken_job_names[exc.name] = (
                f"Job {exc.name} holds the name of a validation Job of {key[1]} and is not "
                f"its own (its controller: {exc.controller or 'none'}): another name is used"
            )
        else:
            why = in_the_way(exc.kind, exc.name, exc.controller)
            self.of(key).foreign_children[(exc.kind, exc.name)] = (why, time.monotonic())
