"""The base of every API model: camelCase on the wire, unknown fields refused, CEL rules attached."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from detinfer.api.cel import CelRule


def _schema_extra(schema: dict, cls: type) -> None:
    # Pydantic calls this per model class; the CEL rules go into the CRD at the class's node.
    rules = getattr(cls, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_schema() for rule in rules]


class KubeModel(BaseModel):
    """A part of the resource. Field docstrings become the CRD's descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        use_enum_values=False,
        json_schema_extra=_schema_extra,
    )

    # Written into the CRD at this node and evaluated offline by detinfer.api.validation.
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    def to_wire(self) -> dict:
        """The object as it appears in Kubernetes (camelCase, no nulls)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Toggle(StrEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"
