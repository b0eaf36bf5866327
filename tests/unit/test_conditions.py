"""Condition bookkeeping: transition times move only on a status change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from detinfer.api import ConditionStatus, timestamps
from detinfer.controller import conditions as cond

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def _changes(conds, *args) -> bool:
    before = list(conds)
    cond.set_condition(conds, *args)
    return conds != before


def test_set_condition_keeps_transition_time_unless_status_changes():
    conds = []
    assert _changes(conds, "Ready", ConditionStatus.FALSE, "Waiting", "m", 1, T0)
    assert conds[0].last_transition_time == "2026-11-22T10:00:00Z"
    later = T0 + timedelta(minutes=5)
    assert not _changes(conds, "Ready", ConditionStatus.FALSE, "Waiting", "m", 1, later)
    assert _changes(conds, "Ready", ConditionStatus.FALSE, "Other", "m2", 2, later)
    assert conds[0].last_transition_time == "2026-11-22T10:00:00Z"
    assert (conds[0].reason, conds[0].observed_generation) == ("Other", 2)
    assert _changes(conds, "Ready", ConditionStatus.TRUE, "Done", "", 2, later)
    assert conds[0].last_transition_time == "2026-11-22T10:05:00Z"
    assert len(conds) == 1
    assert cond.find(conds, "Ready") is conds[0] and cond.find(conds, "Nope") is None


def test_time_round_trip_and_bad_times():
    assert timestamps.parse_time(timestamps.format_time(T0)) == T0
    assert timestamps.parse_time("yesterday") is None and timestamps.parse_time(None) is None


def test_pod_conditions_compare_without_times():
    a = cond.pod_condition("detinfer.io/validated", ConditionStatus.TRUE, "Deterministic", "ok", T0)
    b = cond.pod_condition(
        "detinfer.io/validated",
        ConditionStatus.TRUE,
        "Deterministic",
        "ok",
        T0 + timedelta(hours=1),
    )
    assert cond.same_pod_condition(a, b)
    assert not cond.same_pod_condition(None, b)
    assert not cond.same_pod_condition({**a, "status": "False"}, b)
