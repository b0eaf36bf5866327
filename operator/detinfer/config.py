"""Settings of the operator process (not of any one resource), read from the environment."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field

from detinfer import __version__


class OperatorConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    validator_image: str = Field(default=f"detinfer:{__version__}", min_length=1)
    """Image of the validation Jobs: the operator's own image, which also holds the validator.
    The Helm chart sets it to the operator image's digest."""

    job_ttl_seconds: int = Field(default=3600, ge=0)
    """ttlSecondsAfterFinished of validation Jobs; the operator reads a result long before."""

    retry_after_seconds: int = Field(default=60, ge=1)
    """A validation that could not test is tried again after this long; so is the create of a
    child whose name another object held."""

    gather_seconds: int = Field(default=60, ge=0)
    """Pods of a new revision are validated together (so CrossReplica compares them) once all
    desired replicas are ready, or once the first has waited this long for the others."""

    monitoring_namespace: str = Field(
        default="", pattern=r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$"
    )
    """The namespace whose pods scrape the engines' /metrics (Prometheus): admitted to the
    serving port by every resource's NetworkPolicy; empty: none beyond each resource's clients."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for field, var in (
            ("validator_image", "DETINFER_VALIDATOR_IMAGE"),
            ("job_ttl_seconds", "DETINFER_JOB_TTL_SECONDS"),
            ("retry_after_seconds", "DETINFER_RETRY_AFTER_SECONDS"),
            ("gather_seconds", "DETINFER_GATHER_SECONDS"),
            ("monitoring_namespace", "DETINFER_MONITORING_NAMESPACE"),
        ):
            if var in env:
                values[field] = env[var]
        return cls.model_validate(values)
