"""The validation program (`detinfer validate`): suites, comparison, fingerprint, report.

The importable API, for the bench and the tests:

    from detinfer.validator import ValidatorConfig, run_validation
    report = await run_validation(ValidatorConfig(endpoints=["pod-a=http://10.0.0.7:30000"]))
    report.verdict, report.reason, report.to_summary()

Names are resolved on first use, so `import detinfer.validator.options` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ValidatorConfig": "detinfer.validator.config",
    "EndpointSpec": "detinfer.validator.config",
    "Protocol": "detinfer.validator.config",
    "CouldNotTest": "detinfer.validator.errors",
    "ConfigError": "detinfer.validator.errors",
    "Report": "detinfer.validator.report",
    "run_validation": "detinfer.validator.runner",
    "suite_plans": "detinfer.validator.schedule",
    "batch_size_schedule": "detinfer.validator.schedule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
