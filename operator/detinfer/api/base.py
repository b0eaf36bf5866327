"""The base of every API model: camelCase on the wire, unknown fields refused, CEL rules attached;
and of the models users write, which are validated strictly."""

from __future__ import annotations

import functools
import types
from enum import StrEnum
from typing import Any, ClassVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator
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


class StrictKubeModel(KubeModel):
    """A part of what users write (the spec): the CRD's types exactly, as the API server checks
    them. Strict mode takes no "2" for an integer and no "yes" or 1 for a boolean; it is meant for
    JSON input (model_validate_json), where enums are read from their values."""

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _integral_floats_are_integers(cls, data: Any) -> Any:
        # The API server takes 2.0 for an integer field and stores 2 (measured on
        # kube-apiserver 1.36; JSON Schema counts 2.0 as an integer), and so does this.
        if not isinstance(data, dict):
            return data
        names = _integer_keys(cls)
        return {
            k: int(v) if k in names and type(v) is float and v.is_integer() else v
            for k, v in data.items()
        }


@functools.cache
def _integer_keys(model: type[BaseModel]) -> frozenset[str]:
    keys = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if get_origin(annotation) in (Union, types.UnionType):
            annotation = next((a for a in get_args(annotation) if a is not type(None)), None)
        if annotation is int:
            keys.update({name, info.alias or name})
    return frozenset(keys)


class Toggle(StrEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"
