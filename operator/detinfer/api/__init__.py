"""The DeterministicInferenceService API (detinfer.io/v1alpha1): the single source of truth.

The CRD (crds/), the docs reference and the operator's parsing all derive from these models.
"""

from detinfer.api.constants import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    READINESS_GATE,
    VERSION,
    ConditionType,
    Reason,
)
from detinfer.api.resource import (
    DeterministicInferenceService,
    FieldError,
    SpecError,
    parse_dis,
)
from detinfer.api.spec import (
    AttentionBackend,
    DeterministicInferenceServiceSpec,
    EngineKind,
    FingerprintPolicy,
    Suite,
)
from detinfer.api.status import (
    Condition,
    ConditionStatus,
    DeterministicInferenceServiceStatus,
    SuiteOutcome,
    SuiteResult,
    Verdict,
)
from detinfer.api.summary import SummaryError, ValidationSummary

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "READINESS_GATE",
    "VERSION",
    "AttentionBackend",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "DeterministicInferenceService",
    "DeterministicInferenceServiceSpec",
    "DeterministicInferenceServiceStatus",
    "EngineKind",
    "FieldError",
    "FingerprintPolicy",
    "Reason",
    "SpecError",
    "Suite",
    "SuiteOutcome",
    "SuiteResult",
    "SummaryError",
    "ValidationSummary",
    "Verdict",
    "parse_dis",
]
