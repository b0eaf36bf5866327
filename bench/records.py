"""What the engine benches share: records appended to a JSON-lines file as each run ends."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def collect(
    runs: list[Awaitable[dict[str, Any]]], out: str, describe: Callable[[dict[str, Any]], str]
) -> list[dict[str, Any]]:
    """Await the runs as they end; append each record to `out` at once (a bench cut short keeps
    what it finished) and print `describe(record)` with the progress. A run that raises (an
    engine that did not start) is said and skipped."""
    started = time.monotonic()
    tasks = [asyncio.ensure_future(r) for r in runs]
    records: list[dict[str, Any]] = []
    with open(out, "a") as file:
        for done in asyncio.as_completed(tasks):
            try:
                record = await done
            except Exception as exc:
                print(f"  run failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            records.append(record)
            file.write(json.dumps(record) + "\n")
            file.flush()
            print(
                f"  {describe(record)}; {len(records)}/{len(tasks)} after "
                f"{time.monotonic() - started:.0f} s",
                flush=True,
            )
    return records
