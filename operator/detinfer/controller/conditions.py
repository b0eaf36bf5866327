"""Pure condition logic: set a condition, keep its transition time, read one back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from detinfer.api.status import Condition, ConditionStatus
from detinfer.api.timestamps import format_time


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> None:
    """Set one condition in place; lastTransitionTime moves only when the status changes."""
    for i, old in enumerate(conditions):
        if old.type != type_:
            continue
        conditions[i] = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=old.last_transition_time
            if old.status == status
            else format_time(now),
            observed_generation=generation,
        )
        return
    conditions.append(
        Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=format_time(now),
            observed_generation=generation,
        )
    )


def find(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((cond for cond in conditions if cond.type == type_), None)


def pod_condition(
    type_: str, status: ConditionStatus, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """A pod status condition (as patched into pod.status.conditions)."""
    return {
        "type": type_,
        "status": status.value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_time(now),
        "lastProbeTime": None,
    }


def same_pod_condition(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    """Equal apart from the times: patching would change nothing that matters."""
    if a is None:
        return False
    return all(a.get(k) == b.get(k) for k in ("type", "status", "reason", "message"))
