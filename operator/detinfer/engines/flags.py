"""A command-line flag as an engine's argparse-style parser reads it: the shape of every engine
kind's generated flag table (detinfer.api.extra_args checks spec.engine.extraArgs against them).
"""

from __future__ import annotations

from dataclasses import dataclass

# argparse's nargs, as the tables write it: None one value, 0 none, or "?", "*", "+", N.
Nargs = int | str | None


@dataclass(frozen=True)
class Flag:
    dest: str
    nargs: Nargs
