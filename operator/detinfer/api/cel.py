"""CEL validation rules: declared once next to the models, enforced twice.

The API server runs them (they are written into the CRD as x-kubernetes-validations); the
operator and `detinfer render` run the very same expressions with cel-python, so a spec that the
API server would refuse is refused offline with the same message.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import celpy

# apiextensions' validation of x-kubernetes-validations[].reason (k8s.io/apiextensions-apiserver,
# pkg/apis/apiextensions/validation): a CRD with any other reason is refused at install.
REASONS = frozenset(
    {"FieldValueInvalid", "FieldValueRequired", "FieldValueForbidden", "FieldValueDuplicate"}
)


@dataclass(frozen=True)
class CelRule:
    """One x-kubernetes-validations entry."""

    rule: str
    message: str
    # Relative path of the field the message is about, e.g. ".image" (CRD fieldPath).
    field_path: str | None = None
    # A CEL expression that builds the message from the object, so it can show the value.
    message_expression: str | None = None
    # FieldValueInvalid (the API server's default), FieldValueRequired, FieldValueForbidden or
    # FieldValueDuplicate: the only ones the API server accepts in a CRD (REASONS).
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.reason is not None and self.reason not in REASONS:
            raise ValueError(
                f"CEL rule reason {self.reason!r}: the API server accepts only {sorted(REASONS)}"
            )

    def to_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.message_expression:
            out["messageExpression"] = self.message_expression
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out

    def check(self, value: Any) -> str | None:
        """Evaluate against `self` = value (an object, or a list item such as a string); return
        None when it holds, else the message."""
        try:
            holds = bool(_evaluate(self.rule, value))
        except celpy.CELEvalError as exc:  # the API server also refuses on evaluation errors
            return f"{self.message} (rule could not be evaluated: {exc})"
        if holds:
            return None
        if self.message_expression:
            try:
                return str(_evaluate(self.message_expression, value))
            except celpy.CELEvalError:
                pass  # the API server falls back to `message` too
        return self.message


@functools.cache
def _program(expression: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(expression))


def _evaluate(expression: str, value: Any) -> Any:
    result = _program(expression).evaluate({"self": celpy.json_to_cel(value)})
    if isinstance(result, celpy.CELEvalError):
        raise result
    return result
