"""What an engine says about itself, and whether that contradicts what the deployment asked for.

SGLang's `GET /server_info` (0.5.23; `/get_server_info` is its deprecated name, the only one of
older releases) answers the resolved server arguments at the top level, after SGLang's own
decisions (python/sglang/srt/entrypoints/http_server.py, `build_server_info` in
srt/utils/common.py): `attention_backend`, `enable_deterministic_inference`,
`disable_radix_cache` (SGLang sets it itself with FlashInfer in deterministic mode), `tp_size`,
and `version`. These are what the server really runs with, whatever its command line said; a
value other than the spec's is a wrong deployment, which no determinism verdict may hide.

`GET /model_info` (`/get_model_info` before 0.5.6) says which model is loaded: `model_path` and
`weight_version`, which SGLang's weight-update endpoints change while the server runs (the
`model_info` handler in http_server.py). It is read before the suites and again after them:
outputs compared across a weight swap prove nothing about either model.

Only named fields are kept (KEPT_FIELDS): /server_info also answers `api_key`,
`admin_api_key`, `ssl_keyfile_password` and `launch_command` (the whole command line, flag
values included) in plain text (`build_server_info` in srt/utils/common.py; ServerArgs'
`resolved_dict` hides only the watermark fields), and nothing of an answer but the named fields
may reach the report, the summary, the terminal or a log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import Field

from detinfer.api.status import ServerFacts

SERVER_INFO_PATHS = ("/server_info", "/get_server_info")
"""Asked in this order; the second only when the first answers 404."""
MODEL_INFO_PATHS = ("/model_info", "/get_model_info")
PROPS_PATHS = ("/props",)
"""llama-server's properties (tools/server/server-context.cpp, `get_props`)."""
FACT_LIMIT = 64
"""Characters kept of a reported string (ServerFacts' limit)."""
VALUE_LIMIT = 1024
"""Characters kept of a named field's value in the report (a model path may be long)."""
KEPT_FIELDS: dict[str, tuple[str, ...]] = {
    SERVER_INFO_PATHS[0]: (
        "version",
        "attention_backend",
        "prefill_attention_backend",
        "decode_attention_backend",
        "enable_deterministic_inference",
        "disable_radix_cache",
        "tp_size",
        # The bounds the suites probe up to (limits below).
        "max_running_requests",
        "cuda_graph_max_bs",
        "context_length",
    ),
    MODEL_INFO_PATHS[0]: ("model_path", "weight_version", "context_length"),
    # The slots decide how requests batch; build_info names the llama.cpp commit.
    PROPS_PATHS[0]: ("total_slots", "model_path", "build_info"),
}
"""The fields of each answer that the validator reads, the only ones it keeps."""
MODEL_FIELDS = (("model path", "model_path"), ("weight version", "weight_version"))
"""The /model_info fields held to --expect-model-path and --expect-weight-version, and that
must not change during a run."""


class EngineFacts(ServerFacts):
    """ServerFacts and what /model_info says of the model loaded. The summary's and the
    status's ServerFacts (api/status.py) do not carry the model's two (`to_server_facts`)."""

    model_path: Annotated[str | None, Field(max_length=FACT_LIMIT)] = None
    weight_version: Annotated[str | None, Field(max_length=FACT_LIMIT)] = None

    def to_server_facts(self) -> ServerFacts:
        return ServerFacts.model_validate(self.model_dump(include=set(ServerFacts.model_fields)))


def kept(answer: Any, path: str) -> dict[str, Any]:
    """The named fields of an answer to `path` (KEPT_FIELDS), each a JSON scalar (a long
    string clipped); everything else is dropped, secrets included."""
    if not isinstance(answer, dict):
        return {}
    out: dict[str, Any] = {}
    for key in KEPT_FIELDS[path]:
        value = answer.get(key)
        if isinstance(value, str):
            out[key] = value[:VALUE_LIMIT]
        elif isinstance(value, bool | int | float):
            out[key] = value
    return out


@dataclass(frozen=True)
class Expectations:
    """What the deployment asked for (the --expect-* options); None: not checked."""

    version: str | None = None
    attention_backend: str | None = None
    """An SGLang --attention-backend value (fa3, flashinfer, triton, ...)."""
    tensor_parallel_size: int | None = None
    deterministic_inference: bool | None = None
    radix_cache: bool | None = None
    model_path: str | None = None
    """/model_info's model_path: SGLang's --model-path."""
    weight_version: str | None = None
    """/model_info's weight_version (SGLang's --weight-version, or what a weight update set)."""

    @property
    def given(self) -> bool:
        return any(v is not None for v in self.__dict__.values())

    @property
    def server_given(self) -> bool:
        """Whether anything of /server_info is expected (the model's fields are /model_info's)."""
        model = {field for _, field in MODEL_FIELDS}
        return any(v is not None for k, v in self.__dict__.items() if k not in model)

    def options(self) -> dict[str, object]:
        return {
            "expectVersion": self.version,
            "expectAttentionBackend": self.attention_backend,
            "expectTensorParallelSize": self.tensor_parallel_size,
            "expectDeterministicInference": self.deterministic_inference,
            "expectRadixCache": self.radix_cache,
            "expectModelPath": self.model_path,
            "expectWeightVersion": self.weight_version,
        }


def _text(info: dict[str, Any], key: str) -> str | None:
    value = info.get(key)
    # Clipped: the summary that carries it must stay under 4096 bytes.
    return value[:FACT_LIMIT] if isinstance(value, str) and value else None


def engine_facts(server_info: Any, model_info: Any) -> EngineFacts:
    """The facts of both answers; a field an answer lacks (or gives as another type) is None."""
    model = model_info if isinstance(model_info, dict) else {}
    return EngineFacts(
        **facts_of(server_info).model_dump(),
        model_path=_text(model, "model_path"),
        weight_version=_text(model, "weight_version"),
    )


def facts_of(info: Any) -> ServerFacts:
    """The facts in a /server_info answer; a field the answer lacks (or gives as another type)
    stays None."""
    if not isinstance(info, dict):
        return ServerFacts()

    def text(key: str) -> str | None:
        return _text(info, key)

    def flag(key: str) -> bool | None:
        value = info.get(key)
        return value if isinstance(value, bool) else None

    tp = info.get("tp_size")
    radix_off = flag("disable_radix_cache")
    return ServerFacts(
        version=text("version"),
        attention_backend=text("attention_backend"),
        deterministic_inference=flag("enable_deterministic_inference"),
        radix_cache=None if radix_off is None else not radix_off,
        tensor_parallel_size=tp if isinstance(tp, int) and not isinstance(tp, bool) else None,
    )


@dataclass(frozen=True)
class Limits:
    """The bounds an engine reports, which the suites probe up to; None: not reported."""

    max_running_requests: int | None = None
    """The largest batch the server runs (SGLang's resolved --max-running-requests)."""
    context_length: int | None = None
    """The longest sequence, prompt and output together."""


def limits(server_info: Any, model_info: Any) -> Limits:
    """The bounds in /server_info (SGLang's resolved server arguments), the context length from
    /model_info where /server_info leaves it unset."""

    def positive(info: Any, key: str) -> int | None:
        value = info.get(key) if isinstance(info, dict) else None
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        return value if ok else None

    return Limits(
        positive(server_info, "max_running_requests"),
        positive(server_info, "context_length") or positive(model_info, "context_length"),
    )


def _on(value: bool) -> str:
    return "on" if value else "off"


def check(info: Any, expected: Expectations) -> tuple[list[str], list[str]]:
    """(contradictions, unknowns) of a /server_info answer: each a phrase naming the field,
    what was expected and what the server reported; an unknown is an expected field the server
    did not report."""
    facts = facts_of(info)
    wrong: list[str] = []
    unknown: list[str] = []

    def compare(name: str, field: str, want: object, found: object, shown: str) -> None:
        if want is None:
            return
        if found is None:
            unknown.append(f"{name} (expected {shown}; /server_info has no {field})")
        elif found != want:
            got = _on(found) if isinstance(found, bool) else found
            wrong.append(f"{name}: expected {shown}, found {got} ({field})")

    compare("SGLang version", "version", expected.version, facts.version, str(expected.version))
    if expected.attention_backend is not None:
        want = expected.attention_backend.lower()
        compare(
            "attention backend",
            "attention_backend",
            want,
            facts.attention_backend.lower() if facts.attention_backend else None,
            want,
        )
        # --prefill- and --decode-attention-backend override it for one phase each.
        for phase in ("prefill", "decode"):
            found = info.get(f"{phase}_attention_backend") if isinstance(info, dict) else None
            if isinstance(found, str) and found and found.lower() != want:
                wrong.append(
                    f"{phase} attention backend: expected {want}, found {found} "
                    f"({phase}_attention_backend)"
                )
    compare(
        "tensor parallel size",
        "tp_size",
        expected.tensor_parallel_size,
        facts.tensor_parallel_size,
        str(expected.tensor_parallel_size),
    )
    if expected.deterministic_inference is not None:
        compare(
            "deterministic inference",
            "enable_deterministic_inference",
            expected.deterministic_inference,
            facts.deterministic_inference,
            _on(expected.deterministic_inference),
        )
    if expected.radix_cache is not None:
        compare(
            "radix cache",
            "disable_radix_cache",
            expected.radix_cache,
            facts.radix_cache,
            _on(expected.radix_cache),
        )
    return wrong, unknown


def check_model(
    info: dict[str, Any], expected: Expectations, when: str = ""
) -> tuple[list[str], list[str]]:
    """(contradictions, unknowns) of a /model_info answer (its kept fields, or {"error": ...})
    against --expect-model-path and --expect-weight-version; `when` says which reading a
    contradiction was found in. An unknown is an expected field the answer lacks."""
    wrong: list[str] = []
    unknown: list[str] = []
    error = info.get("error")
    for name, field in MODEL_FIELDS:
        want = getattr(expected, field)
        if want is None:
            continue
        found = info.get(field)
        if error is not None:
            unknown.append(f"{name} (expected {want}; {error})")
        elif not isinstance(found, str) or not found:
            unknown.append(f"{name} (expected {want}; /model_info has no {field})")
        elif found != want:
            wrong.append(f"{name}{when}: expected {want}, found {found} (/model_info {field})")
    return wrong, unknown


def model_changes(first: dict[str, Any], last: dict[str, Any]) -> list[str]:
    """How /model_info's model fields differ between two readings of one run (a weight update
    in between); nothing where either reading failed."""
    if "error" in first or "error" in last:
        return []
    return [
        f"{name} changed during the run: {first.get(field)} at the start, "
        f"{last.get(field)} at the end (/model_info {field})"
        for name, field in MODEL_FIELDS
        if first.get(field) != last.get(field)
    ]


F = TypeVar("F", bound=ServerFacts)


def common_facts(facts: list[F]) -> F | None:
    """The facts every endpoint agrees on; a field on which they differ is left out (None)."""
    if not facts:
        return None
    first = facts[0].model_dump()
    for other in facts[1:]:
        for key, value in other.model_dump().items():
            if first.get(key) != value:
                first[key] = None
    return type(facts[0]).model_validate(first)
