"""The process line of detinfer's own containers: the builders write it, the local pod runner
reads it back, both through the names and functions here (a layout change cannot pass one by)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ENGINE_COMMAND = ("detinfer", "engine")
VALIDATOR_COMMAND = ("detinfer", "validate")
BENCH_COMMAND = ("detinfer", "bench")
HOST_FLAG = "--host"
ADMIN_KEY_FLAG = "--admin-api-key"
# An engine whose admin key no Secret names starts behind this: it appends a random admin key
# to the process line, made when the container starts and kept only in the process (python3 is
# in every image that runs an engine: SGLang and detinfer are Python).
ADMIN_KEY_WRAPPER = (
    "python3",
    "-c",
    "import os, secrets, sys; "
    f"os.execvp(sys.argv[1], sys.argv[1:] + ['{ADMIN_KEY_FLAG}', secrets.token_hex(32)])",
)
SUMMARY_FILE_FLAG = "--summary-file"


class LayoutError(ValueError):
    """A process line that is not laid out as the builders write it."""


def process_line(container: Mapping[str, Any]) -> list[str]:
    """What a container runs: its command, then its args (as the kubelet joins them)."""
    return [*(container.get("command") or []), *(container.get("args") or [])]


def unwrapped(line: Sequence[str]) -> tuple[list[str], bool]:
    """The line the wrapper runs, and whether ADMIN_KEY_WRAPPER starts `line`."""
    n = len(ADMIN_KEY_WRAPPER)
    if tuple(line[:n]) == ADMIN_KEY_WRAPPER:
        return list(line[n:]), True
    return list(line), False


def flag_value(line: Sequence[str], flag: str) -> str:
    """The value after `flag` (the builders write `--flag value`, never `--flag=value`)."""
    try:
        at = list(line).index(flag)
    except ValueError:
        raise LayoutError(f"{flag} is missing from {' '.join(line)!r}") from None
    if at + 1 >= len(line):
        raise LayoutError(f"{flag} has no value in {' '.join(line)!r}")
    return line[at + 1]


def with_flag_value(line: Sequence[str], flag: str, value: str) -> list[str]:
    """The line with `flag`'s value replaced by `value`."""
    flag_value(line, flag)
    out = list(line)
    out[out.index(flag) + 1] = value
    return out
