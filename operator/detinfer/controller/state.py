"""What this operator process remembers between passes, beyond what the indexes show.

The body each status write returned, the children applied until the index shows them, and the
trust memory plan() gets (Jobs this process created, children and Job names found in the way,
ignored objects already reported). All of it is lost on restart by design: the indexes and the
status are the truth, this only saves writes and repeated Events while the watch lags.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from detinfer.api import constants as c
from detinfer.config import OperatorConfig
from detinfer.controller.cluster import Cluster, InTheWay
from detinfer.controller.observed import ChildView, Controller, JobView
from detinfer.controller.trust import Memory, in_the_way
from detinfer.controller.workqueue import WorkQueue

# A Job this process created is remembered at most this long if the index never shows it.
CREATED_JOB_MEMORY_SECONDS = 600


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
        self.queue: WorkQueue[tuple[str, str]] = WorkQueue()
        # How Events are posted: the cluster's call itself, or (in the operator) a poster that
        # hands them to a thread of their own (controller/events.py).
        self.post_event = post_event if post_event is not None else cluster.post_event
        # The body our last status write returned, per resource: fresher than the index until
        # the watch delivers it, so a quick second sync does not act on stale status.
        self.written: dict[tuple[str, str], dict[str, Any]] = {}
        # The indexes sync reads, by name: kopf's of the resources (as the handlers receive it)
        # and the children's (controller/watches.py); set by the first trigger.
        self.indexes: Mapping[str, Any] | None = None
        # The children's indexes, from the start-up on (controller/watches.py).
        self.children_indexes: Mapping[str, Any] = {}
        # Children applied but maybe not yet in the index: (namespace, kind, name) ->
        # (hash applied, hash the index showed then, UID of the resource that owns it). Saves
        # re-applying while the watch lags.
        self.applied: dict[tuple[str, str, str], tuple[str, str | None, str]] = {}
        # What plan() gets as trust.Memory, per resource; see there. Times are time.monotonic().
        self.created_jobs: defaultdict[tuple[str, str], dict[str, tuple[str, float]]] = defaultdict(
            dict
        )
        self.foreign_children: defaultdict[
            tuple[str, str], dict[tuple[str, str], tuple[str, float]]
        ] = defaultdict(dict)
        self.taken_job_names: defaultdict[tuple[str, str], dict[str, str]] = defaultdict(dict)
        self.reported: dict[tuple[str, str], frozenset[str]] = {}

    def children(self, namespace: str, indexed: Sequence[ChildView]) -> list[ChildView]:
        """The indexed children, with what this process applied since standing in for them
        until the index has caught up."""
        out = []
        seen = set()
        for child in indexed:
            key = (namespace, child.kind, child.name)
            seen.add(key)
            applied, before, _ = self.applied.get(key, (None, None, ""))
            if applied is None or child.applied_hash == applied:
                self.applied.pop(key, None)
                out.append(child)
            elif child.applied_hash == before:  # applied since: taken over then
                out.append(replace(child, applied_hash=applied, created=False))
            else:  # changed by someone else since: trust the index
                self.applied.pop(key, None)
                out.append(child)
        for (ns, kind, name), (applied, before, owner) in list(self.applied.items()):
            if ns == namespace and (ns, kind, name) not in seen and before is None:
                # Created or applied by this process as the owner's child: it is ours.
                out.append(
                    ChildView(kind, name, applied, Controller(c.KIND, "", owner), created=True)
                )
        return out

    def memory(
        self, key: tuple[str, str], recorded_job_uid: str | None, indexed_jobs: Sequence[JobView]
    ) -> Memory:
        """What plan() must know beyond the indexes, after forgetting what is settled.

        `recorded_job_uid`: the UID of the Job in flight as the status records it."""
        now = time.monotonic()
        indexed = {j.uid for j in indexed_jobs}
        created = self.created_jobs[key]
        for name, (uid, since) in list(created.items()):
            if (uid == recorded_job_uid and uid in indexed) or (
                now - since > CREATED_JOB_MEMORY_SECONDS
            ):
                del created[name]
        foreign = self.foreign_children[key]
        for child, (_, since) in list(foreign.items()):
            if now - since > self.config.retry_after_seconds:
                del foreign[child]  # try the create again: the object may be gone
        return Memory(
            created_jobs={name: uid for name, (uid, _) in created.items()},
            foreign_children={child: why for child, (why, _) in foreign.items()},
            taken_job_names=dict(self.taken_job_names[key]),
            reported=self.reported.get(key, frozenset()),
        )

    def found_in_the_way(self, key: tuple[str, str], exc: InTheWay) -> None:
        if exc.kind == "Job":
            self.taken_job_names[key][exc.name] = (
                f"Job {exc.name} holds the name of a validation Job of {key[1]} and is not "
                f"its own (its controller: {exc.controller or 'none'}): another name is used"
            )
        else:
            why = in_the_way(exc.kind, exc.name, exc.controller)
            self.foreign_children[key][(exc.kind, exc.name)] = (why, time.monotonic())

    def forget(self, namespace: str, name: str) -> None:
        self.written.pop((namespace, name), None)
        for memory in (
            self.created_jobs,
            self.foreign_children,
            self.taken_job_names,
            self.reported,
        ):
            memory.pop((namespace, name), None)
        for key in [
            k
            for k in self.applied
            if k[0] == namespace
            and k[2] in (name, f"{name}-pods", f"{name}-baseline", f"{name}-engine")
        ]:
            del self.applied[key]
