"""SGLang's command-line flags in every supported release, from the generated table.py.

`detinfer.api.extra_args` checks spec.engine.extraArgs against these. The table is made from
SGLang's own source by `python -m detinfer.engines.sglang.flags.generate` (docs/sglang.md).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from detinfer.engines.flags import Flag, Nargs
from detinfer.engines.sglang.flags.table import FLAGS, VERSIONS

__all__ = ["VERSIONS", "Flag", "Nargs", "by_version", "releases"]


def _nargs(text: str) -> Nargs:
    if text == "one":
        return None
    return int(text) if text.isdigit() else text


@functools.cache
def by_version() -> dict[str, dict[str, Flag]]:
    """release -> option string -> Flag, as table.py lists them."""
    out: dict[str, dict[str, Flag]] = {v: {} for v in VERSIONS}
    for line in FLAGS.strip().splitlines():
        option, span, dest, nargs = line.split()
        first, last = span.split("..")
        for version in VERSIONS[VERSIONS.index(first) : VERSIONS.index(last) + 1]:
            out[version][option] = Flag(dest, _nargs(nargs))
    return out


@dataclass(frozen=True)
class Presence:
    """Where one option string exists: the releases, and its Flag in each."""

    flags: dict[str, Flag]

    @property
    def everywhere(self) -> bool:
        return len(self.flags) == len(VERSIONS)

    def span(self) -> str:
        """The releases as ranges, e.g. "0.5.3 to 0.5.19" or "0.5.14 to 0.5.23"."""
        indexes = [VERSIONS.index(v) for v in self.flags]
        runs: list[list[int]] = []
        for i in indexes:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        return ", ".join(
            VERSIONS[r[0]] if len(r) == 1 else f"{VERSIONS[r[0]]} to {VERSIONS[r[-1]]}"
            for r in runs
        )


@functools.cache
def releases() -> dict[str, Presence]:
    """option string -> the releases that have it."""
    out: dict[str, dict[str, Flag]] = {}
    for version, flags in by_version().items():
        for option, flag in flags.items():
            out.setdefault(option, {})[version] = flag
    return {option: Presence(flags) for option, flags in sorted(out.items())}


def supported_range() -> str:
    return f"{VERSIONS[0]} to {VERSIONS[-1]}"
