"""Operator settings from the environment."""

from __future__ import annotations

import pydantic
import pytest

from detinfer.config import OperatorConfig


def test_defaults_and_environment():
    assert OperatorConfig.from_env({}).job_ttl_seconds == 3600
    config = OperatorConfig.from_env(
        {
            "DETINFER_VALIDATOR_IMAGE": "r/detinfer@sha256:" + "a" * 64,
            "DETINFER_RETRY_AFTER_SECONDS": "5",
            "UNRELATED": "x",
        }
    )
    assert config.validator_image.endswith("a" * 64)
    assert config.retry_after_seconds == 5


def test_bad_settings_name_the_variable_field():
    with pytest.raises(pydantic.ValidationError) as info:
        OperatorConfig.from_env({"DETINFER_JOB_TTL_SECONDS": "-1"})
    assert "job_ttl_seconds" in str(info.value)
