"""The DeterministicInferenceService resource, and the one way to parse one: `parse_dis`.

Parsing applies the pydantic bounds and then the CRD's CEL rules, so a spec that the API server
would refuse is refused here with the same field path and message.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from detinfer.api.base import KubeModel, StrictKubeModel
from detinfer.api.constants import API_VERSION, KIND, MAX_NAME_LENGTH
from detinfer.api.spec import (
    DeterministicInferenceServiceSpec,
)
from detinfer.api.status import DeterministicInferenceServiceStatus
from detinfer.engines import kinds

NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ResourceName(StrictKubeModel):
    """The schema of metadata.name (a CRD may restrict name and generateName only)."""

    name: Annotated[str, Field(max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN)]
    """A DNS-1035 label (it names the Services) of at most 52 characters (the validation Job
    adds 11)."""


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads."""

    # Strict: the API server's metadata has real strings and integers; so must a file's.
    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    name: str
    namespace: Annotated[str, Field(max_length=63, pattern=NAMESPACE_PATTERN)] = "default"
    uid: str | None = None
    generation: int | None = None
    resourceVersion: str | None = None


class DeterministicInferenceService(KubeModel):
    """A DeterministicInferenceService as the operator sees it."""

    model_config = ConfigDict(alias_generator=None, extra="ignore")

    apiVersion: Literal["detinfer.io/v1alpha1"] = API_VERSION
    kind: Literal["DeterministicInferenceService"] = KIND
    metadata: ObjectMeta
    spec: DeterministicInferenceServiceSpec
    status: DeterministicInferenceServiceStatus = DeterministicInferenceServiceStatus()

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """An invalid resource; `errors` name every field that is wrong."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def parse_dis(obj: Mapping[str, Any]) -> DeterministicInferenceService:
    """Parse and validate a DeterministicInferenceService object (a dict as Kubernetes has it)."""
    errors: list[FieldError] = []
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != KIND:
        raise SpecError(
            [
                FieldError(
                    "apiVersion/kind",
                    f"{obj.get('apiVersion')}/{obj.get('kind')} is not {API_VERSION}/{KIND}",
                )
            ]
        )
    metadata = obj.get("metadata")
    meta: ObjectMeta | None = None
    if metadata is None:
        errors.append(FieldError("metadata.name", "is required"))
    elif not isinstance(metadata, Mapping):
        errors.append(FieldError("metadata", f"must be an object (got {_short(metadata)})"))
    else:
        name = metadata.get("name")
        if name is None:
            errors.append(FieldError("metadata.name", "is required"))
        elif not isinstance(name, str):
            errors.append(FieldError("metadata.name", f"must be a string (got {_short(name)})"))
        else:
            errors += _name_errors(name)
        try:
            # A null field is an absent one, as in the API server's JSON.
            meta = ObjectMeta.model_validate({k: v for k, v in metadata.items() if v is not None})
        except ValidationError as exc:
            errors += [
                _pydantic_error("metadata", e) for e in exc.errors() if e["loc"] != ("name",)
            ]
    spec_json = None
    if not isinstance(obj.get("spec"), Mapping):
        errors.append(FieldError("spec", "is required and must be an object"))
    else:
        try:
            spec_json = json.dumps(obj["spec"], sort_keys=True, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            # Only a caller that bypasses the YAML loader or the API server's JSON gets here.
            errors.append(FieldError("spec", f"is not JSON: {exc}"))
    if errors or meta is None or spec_json is None:
        raise SpecError(errors)

    spec = _parse_spec(spec_json)
    if isinstance(spec, SpecError):
        raise spec
    return DeterministicInferenceService(
        metadata=meta, spec=spec, status=parse_status(obj.get("status"))
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# CEL evaluation in pure Python takes milliseconds per rule, and the operator parses the same
# spec on every event and timer tick; the models are immutable, so parses are memoized.
@functools.lru_cache(maxsize=4096)
def _parse_spec(spec_json: str) -> DeterministicInferenceServiceSpec | SpecError:
    try:
        spec = DeterministicInferenceServiceSpec.model_validate_json(spec_json)
    except ValidationError as exc:
        return SpecError([_pydantic_error("spec", e) for e in exc.errors()])
    errors = list(cel_errors(spec, "spec"))
    # The flag table's check after the CEL rules; where both refuse an item they say the same.
    errors += [e for e in extra_args_errors(spec, "spec.engine") if e not in errors]
    return SpecError(errors) if errors else spec


@functools.lru_cache(maxsize=4096)
def _name_errors(name: str) -> tuple[FieldError, ...]:
    try:
        ResourceName(name=name)
    except ValidationError as exc:
        return tuple(_pydantic_error("metadata", e) for e in exc.errors())
    return ()


def cel_errors(model: KubeModel, path: str) -> Iterator[FieldError]:
    """Evaluate the CEL rules of `model` and of every model inside it."""
    wire = model.to_wire()
    for rule in type(model).cel_rules:
        if (failed := rule.check(wire)) is not None:
            yield FieldError(path + (rule.field_path or ""), failed)
    for field_name, rules in getattr(type(model), "item_cel_rules", {}).items():
        child = f"{path}.{type(model).model_fields[field_name].alias or field_name}"
        for i, item in enumerate(getattr(model, field_name)):
            for rule in rules:
                if (failed := rule.check(item)) is not None:
                    yield FieldError(f"{child}[{i}]", failed)
    for field_name, info in type(model).model_fields.items():
        value = getattr(model, field_name)
        child = f"{path}.{info.alias or field_name}"
        if isinstance(value, KubeModel):
            yield from cel_errors(value, child)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, KubeModel):
                    yield from cel_errors(item, f"{child}[{i}]")


def extra_args_errors(spec: DeterministicInferenceServiceSpec, path: str) -> Iterator[FieldError]:
    """extraArgs against the flags of the engine's kind and release, and whatever else the kind
    checks in them (detinfer.engines.kinds)."""
    for index, message in kinds.of(spec).extra_args_errors(spec):
        yield FieldError(f"{path}.extraArgs[{index}]", message)


def _pydantic_error(prefix: str, error: Mapping[str, Any]) -> FieldError:
    path = prefix
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    if error["type"] == "missing":
        return FieldError(path, "is required")
    if error["type"] == "extra_forbidden":
        return FieldError(path, "is not a known field")
    return FieldError(path, f"{error['msg']} (got {_short(error.get('input'))})")


def parse_status(raw: Any) -> DeterministicInferenceServiceStatus:
    """The status as last written. It is written only by the operator; a stale or foreign shape
    is treated as empty rather than blocking reconciliation."""
    if not isinstance(raw, Mapping):
        return DeterministicInferenceServiceStatus()
    try:
        return DeterministicInferenceServiceStatus.model_validate(raw)
    except ValidationError:
        overhead = raw.get("overhead")
        if isinstance(overhead, Mapping) and "revision" not in overhead:
            # Written by an operator older than spec.overhead (the validation's latency figures,
            # now in status.validation): dropped, the rest kept.
            return parse_status({k: v for k, v in raw.items() if k != "overhead"})
        return DeterministicInferenceServiceStatus()
