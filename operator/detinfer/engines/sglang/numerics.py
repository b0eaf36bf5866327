"""spec.engine.numerics: the environment it pins in the engine, and the extraArgs it refuses.

SGLang reads its deterministic numerics from environment variables (detinfer.engines.sglang.features
says which release reads which); the operator sets each one the pinned release reads, from the
spec, so an image whose defaults differ cannot change the outputs unseen.

With FlashInfer (every release) or Triton (up to 0.5.21) in deterministic mode, SGLang's scheduler
aligns chunked prefill to a tile size and never schedules a chunk shorter than it: with
--chunked-prefill-size below that size a longer prompt waits forever while /health stays 200
(SGLang issue #36344; 0.5.22 refuses to start instead). The operator refuses that configuration.
"""

from __future__ import annotations

from collections.abc import Iterator

from detinfer.api.base import Toggle
from detinfer.api.spec import NumericsSpec
from detinfer.engines.sglang import features

CHUNKED_PREFILL_SIZE = "--chunked-prefill-size"
_NO_CHUNKING = -1  # SGLang's value for "prefill in one forward"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def field_path(variable: features.NumericsVariable) -> str:
    return f"spec.engine.numerics.{_camel(variable.field)}"


def environment(
    numerics: NumericsSpec, version: str, tensor_parallel_size: int
) -> list[dict[str, str]]:
    """The numerics environment of SGLang `version`, from spec.engine.numerics."""
    env = []
    for variable in features.NUMERICS_VARIABLES:
        if not variable.read_by(version):
            continue
        if variable.tensor_parallel_only and tensor_parallel_size == 1:
            continue
        value = getattr(numerics, variable.field)
        if isinstance(value, Toggle):
            text = "1" if value == Toggle.ENABLED else "0"
        else:
            text = str(value)
        env.append({"name": variable.name, "value": text})
    return env


def chunked_prefill_errors(
    extra_args: list[str], numerics: NumericsSpec, version: str, backend: str, backend_field: str
) -> Iterator[tuple[int, str]]:
    """(index, message) for a --chunked-prefill-size that SGLang `version` would hang on (or
    refuse to start with) given the prefill alignment of `backend` (SGLang's name)."""
    variable = features.prefill_alignment_variable(version, backend)
    for index, token in enumerate(extra_args):
        if token == CHUNKED_PREFILL_SIZE and index + 1 < len(extra_args):
            value_index, text = index + 1, extra_args[index + 1]
        elif token.startswith(CHUNKED_PREFILL_SIZE + "="):
            value_index, text = index, token.partition("=")[2]
        else:
            continue
        try:
            size = int(text)
        except ValueError:
            yield value_index, f"'{text}': --chunked-prefill-size takes an integer"
            continue
        if variable is None or size == _NO_CHUNKING:
            continue
        align = getattr(numerics, variable.field)
        if size < align:
            yield (
                value_index,
                f"--chunked-prefill-size {size} is below the prefill alignment of SGLang "
                f"{version} with attentionBackend {backend_field} in deterministic mode, "
                f"{align} ({field_path(variable)}): a prompt longer than {size} tokens would "
                f"never be scheduled (SGLang issue #36344); use at least {align}, -1 (no "
                f"chunking), or a smaller {field_path(variable)}",
            )
