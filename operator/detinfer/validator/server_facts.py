"""What an engine says about itself, and whether that contradicts what the deployment asked for.

SGLang's `GET /server_info` (0.5.23; `/get_server_info` is its deprecated name, the only one of
older releases) answers the resolved server arguments at the top level, after SGLang's own
decisions (python/sglang/srt/entrypoints/http_server.py, `build_server_info` in
srt/utils/common.py): `attention_backend`, `enable_deterministic_inference`,
`disable_radix_cache` (SGLang sets it itself with FlashInfer in deterministic mode), `tp_size`,
and `version`. These are what the server really runs with, whatever its command line said; a
value other than the spec's is a wrong deployment, which no determinism verdict may hide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from detinfer.api.status import ServerFacts

SERVER_INFO_PATHS = ("/server_info", "/get_server_info")
"""Asked in this order; the second only when the first answers 404."""
MODEL_INFO_PATHS = ("/model_info", "/get_model_info")
FACT_LIMIT = 64
"""Characters kept of a reported string (ServerFacts' limit)."""


@dataclass(frozen=True)
class Expectations:
    """What the deployment asked for (the --expect-* options); None: not checked."""

    version: str | None = None
    attention_backend: str | None = None
    """An SGLang --attention-backend value (fa3, flashinfer, triton, ...)."""
    tensor_parallel_size: int | None = None
    deterministic_inference: bool | None = None
    radix_cache: bool | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in self.__dict__.values())

    def options(self) -> dict[str, object]:
        return {
            "expectVersion": self.version,
            "expectAttentionBackend": self.attention_backend,
            "expectTensorParallelSize": self.tensor_parallel_size,
            "expectDeterministicInference": self.deterministic_inference,
            "expectRadixCache": self.radix_cache,
        }


def facts_of(info: Any) -> ServerFacts:
    """The facts in a /server_info answer; a field the answer lacks (or gives as another type)
    stays None."""
    if not isinstance(info, dict):
        return ServerFacts()

    def text(key: str) -> str | None:
        value = info.get(key)
        # Clipped: the summary that carries it must stay under 4096 bytes.
        return value[:FACT_LIMIT] if isinstance(value, str) and value else None

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


def common_facts(facts: list[ServerFacts]) -> ServerFacts | None:
    """The facts every endpoint agrees on; a field on which they differ is left out (None)."""
    if not facts:
        return None
    first = facts[0].model_dump()
    for other in facts[1:]:
        for key, value in other.model_dump().items():
            if first.get(key) != value:
                first[key] = None
    return ServerFacts.model_validate(first)
