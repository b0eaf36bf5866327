"""The one percentile definition of the project: the validator's latency figures and the
benchmarks' tables both use it, so a p99 means the same thing everywhere."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank percentile `q` (0-100) of `values`: the smallest value that at least
    `q` percent of the values are less than or equal to. Raises ValueError for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q={q!r} is not between 0 and 100")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
