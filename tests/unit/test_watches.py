"""The children's watches (controller/watches.py): the index by owner, and which events queue
their resource (only a changed view does)."""

from __future__ import annotations

import json
import threading

import pytest
from kubernetes.client.rest import ApiException

from detinfer.api import constants as c
from detinfer.controller.observed import ChildView, PodView
from detinfer.controller.watches import ChildWatch, ChildWatches, Kind, OwnerIndex
from tests.support import factories as f

KEY = ("ml", "qwen")


class Response:
    def __init__(self, body: dict):
        self.data = json.dumps(body).encode()


class Lister:
    """The list call of one kind: pages of a list, as the API server returns them."""

    def __init__(self, pages: list[list[dict]], version: str = "7"):
        self.pages, self.version, self.calls = pages, version, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        number = int(kwargs.get("_continue") or 0)
        more = number + 1 < len(self.pages)
        meta = {"resourceVersion": self.version, "continue": str(number + 1) if more else None}
        return Response({"items": self.pages[number], "metadata": meta})


def pod_watch(lister=list, namespace=None):
    changed: list[tuple[str, str]] = []
    index: OwnerIndex[PodView] = OwnerIndex()
    kind = Kind("pods", "Pod", lister, lister, PodView.from_body)
    return (
        ChildWatch(kind, index, lambda key, front: changed.append(key), namespace),
        index,
        changed,
    )


def test_a_view_that_does_not_change_queues_nothing():
    watch, index, changed = pod_watch()
    pod = f.engine_pod("qwen-a", "r", ready=False)
    watch.handle({"type": "ADDED", "object": pod})
    assert changed == [KEY] and [p.name for p in index.get(KEY)] == ["qwen-a"]
    # A status update the controller does not read (e.g. kwok's hostIP): nothing to do.
    pod["status"]["hostIP"] = "127.0.0.1"
    pod["metadata"]["resourceVersion"] = "12"
    watch.handle({"type": "MODIFIED", "object": pod})
    assert changed == [KEY]
    assert watch._version == "12"
    # Its containers become ready: that is read, the resource is queued.
    watch.handle({"type": "MODIFIED", "object": f.engine_pod("qwen-a", "r", ready=True)})
    assert changed == [KEY, KEY] and index.get(KEY)[0].containers_ready


def test_a_deleted_or_relabelled_object_leaves_the_index_and_queues_its_old_owner():
    watch, index, changed = pod_watch()
    watch.handle({"type": "ADDED", "object": f.engine_pod("qwen-a", "r")})
    watch.handle({"type": "MODIFIED", "object": f.engine_pod("qwen-a", "r", instance="other")})
    assert changed[0] == KEY and sorted(changed[1:]) == [("ml", "other"), KEY]
    assert index.get(KEY) == [] and KEY not in index
    watch.handle({"type": "DELETED", "object": f.engine_pod("qwen-a", "r", instance="other")})
    assert changed[-1] == ("ml", "other") and index.get(("ml", "other")) == []
    # Without our instance label an object is nobody's: not indexed, nothing queued.
    unlabelled = f.engine_pod("qwen-b", "r")
    del unlabelled["metadata"]["labels"][c.LABEL_INSTANCE]
    watch.handle({"type": "ADDED", "object": unlabelled})
    assert len(changed) == 4


def test_bookmarks_move_the_version_and_errors_end_the_watch():
    watch, _, changed = pod_watch()
    watch.handle({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "40"}}})
    assert watch._version == "40" and changed == []
    with pytest.raises(ApiException) as gone:
        watch.handle({"type": "ERROR", "object": {"code": 410, "message": "too old"}})
    assert gone.value.status == 410


def test_a_list_fills_the_index_in_pages_and_drops_what_is_gone():
    pods = [f.engine_pod(f"qwen-{i}", "r") for i in range(3)]
    lister = Lister([pods[:2], pods[2:]])
    watch, index, changed = pod_watch(lister)
    watch._list()
    assert {p.name for p in index.get(KEY)} == {"qwen-0", "qwen-1", "qwen-2"}
    assert watch.listed.is_set() and watch._version == "7" and changed == [KEY]
    assert lister.calls[0]["label_selector"] == f"{c.LABEL_PART_OF}={c.PART_OF}"
    assert lister.calls[1]["_continue"] == "1"
    # Listed again (after a 410): a pod gone meanwhile leaves the index.
    lister.pages = [pods[:1]]
    watch._list()
    assert [p.name for p in index.get(KEY)] == ["qwen-0"] and changed == [KEY, KEY]


def test_a_listed_child_gets_its_kind_which_list_items_lack():
    body = f.deployment_view_body()
    body["metadata"]["labels"] = {c.LABEL_INSTANCE: "qwen", c.LABEL_PART_OF: c.PART_OF}
    del body["kind"]
    lister = Lister([[body]])
    index: OwnerIndex[ChildView] = OwnerIndex()
    kind = Kind("deployments", "Deployment", lister, lister, ChildView.from_body)
    ChildWatch(kind, index, lambda key, front: None)._list()
    assert [(v.kind, v.name) for v in index.get(KEY)] == [("Deployment", "qwen")]


def test_a_namespaced_watch_lists_its_namespace_only():
    calls = []

    def namespaced(namespace, **kwargs):
        calls.append(namespace)
        return Response({"items": [], "metadata": {"resourceVersion": "1"}})

    index: OwnerIndex[PodView] = OwnerIndex()
    kind = Kind("pods", "Pod", None, namespaced, PodView.from_body)
    ChildWatch(kind, index, lambda key, front: None, "ml")._list()
    assert calls == ["ml"]


def test_start_waits_for_every_list_and_says_which_did_not_come():
    watches = ChildWatches.__new__(ChildWatches)
    never = threading.Event()
    watch, _, _ = pod_watch()
    watch.start = lambda: None  # type: ignore[method-assign]
    watch.listed = never
    watches.watches = [watch]
    with pytest.raises(TimeoutError, match="pods"):
        watches.start(timeout=0.01)


def test_an_ended_validator_or_benchmark_pod_queues_its_resource_in_front():
    seen: list[tuple[tuple[str, str], bool]] = []
    index: OwnerIndex[PodView] = OwnerIndex()
    kind = Kind("pods", "Pod", list, list, PodView.from_body)
    watch = ChildWatch(kind, index, lambda key, front: seen.append((key, front)))

    def pod(name: str, component: str, ended: bool) -> dict:
        body = f.engine_pod(name, "r", ready=not ended)
        body["metadata"]["labels"][c.LABEL_COMPONENT] = component
        if ended:
            state = {"terminated": {"exitCode": 0, "reason": "Completed", "message": "{}"}}
            body["status"]["containerStatuses"] = [{"name": "validator", "state": state}]
        return body

    for component in (c.COMPONENT_VALIDATOR, c.COMPONENT_BENCH):
        seen.clear()
        name = f"qwen-{component}"
        watch.handle({"type": "ADDED", "object": pod(name, component, ended=False)})
        watch.handle({"type": "MODIFIED", "object": pod(name, component, ended=True)})
        watch.handle({"type": "DELETED", "object": pod(name, component, ended=True)})
        assert seen == [(KEY, False), (KEY, True), (KEY, False)], component
    # An engine pod that ends is no result: the rest lane.
    seen.clear()
    watch.handle({"type": "ADDED", "object": pod("qwen-a", c.COMPONENT_ENGINE, ended=True)})
    assert seen == [(KEY, False)]
