"""Names of the API: group, kind, labels, condition types and reasons, ports."""

from __future__ import annotations

from typing import Final

GROUP = "detinfer.io"
VERSION = "v1alpha1"
# Spelled out (not f"{GROUP}/{VERSION}") so that the type checker sees the literal the
# resource model pins apiVersion to.
API_VERSION: Final = "detinfer.io/v1alpha1"
KIND: Final = "DeterministicInferenceService"
PLURAL = "deterministicinferenceservices"
SINGULAR = "deterministicinferenceservice"
SHORT_NAMES = ("dis",)
CATEGORIES = ("detinfer",)

FIELD_MANAGER = "detinfer"
# Who posts the Events (`kubectl describe` shows it under From).
REPORTING_CONTROLLER = f"{GROUP}/operator"

# Longest DIS name: the validation Job is "<name>-<10 hex>" and a Job name is a label value (63).
MAX_NAME_LENGTH = 52

# Labels and annotations on every child.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_REVISION = f"{GROUP}/revision"
ANNOTATION_APPLIED_HASH = f"{GROUP}/applied-hash"
# On a validation Job: the engine pods it validates, comma separated.
ANNOTATION_PODS = f"{GROUP}/pods"
ANNOTATION_EXPECTED_FINGERPRINT = f"{GROUP}/expected-fingerprint"
PART_OF = "detinfer"
MANAGED_BY = "detinfer"
COMPONENT_ENGINE = "engine"
COMPONENT_VALIDATOR = "validator"
# The temporary baseline (the same engine without determinism) and the benchmark Job that
# measures the overhead against it: no Service of the operator selects either.
COMPONENT_BASELINE = "baseline"
COMPONENT_BENCH = "overhead-bench"

# The pod readiness gate: an engine pod takes traffic only when this condition is True.
READINESS_GATE = f"{GROUP}/validated"

ENGINE_PORT = 30000
ENGINE_PORT_NAME = "http"
ENGINE_CONTAINER = "engine"
VALIDATOR_CONTAINER = "validator"
BENCH_CONTAINER = "bench"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# The keys' environment variables: the kubelet fills them from the Secrets the spec names
# (valueFrom.secretKeyRef) and expands $(NAME) in the engine's args; the validator and the
# benchmark read the client key from the same variable.
API_KEY_ENV = "DETINFER_API_KEY"
ADMIN_API_KEY_ENV = "DETINFER_ADMIN_API_KEY"
# Kubernetes keeps at most this many bytes of a termination message.
TERMINATION_MESSAGE_LIMIT = 4096


class ConditionType:
    """Condition types of a DeterministicInferenceService (status.conditions[].type)."""

    PROGRESSING = "Progressing"
    AVAILABLE = "Available"
    VALIDATED = "Validated"
    READY = "Ready"
    DEGRADED = "Degraded"
    # Who can open the engines' admin endpoints (api/keys.py); it never holds up Ready.
    ADMIN_ENDPOINTS_CLOSED = "AdminEndpointsClosed"

    ALL = (PROGRESSING, AVAILABLE, VALIDATED, READY, DEGRADED, ADMIN_ENDPOINTS_CLOSED)


class Reason:
    """Condition reasons, also used as Event reasons. CamelCase, specific."""

    INVALID_SPEC = "InvalidSpec"
    SCALED_TO_ZERO = "ScaledToZero"
    WAITING_FOR_PODS = "WaitingForPods"
    PODS_UNSCHEDULABLE = "PodsUnschedulable"
    VALIDATING = "Validating"
    VALIDATION_PENDING = "ValidationPending"
    ROLLOUT_COMPLETE = "RolloutComplete"
    VALIDATION_FAILED = "ValidationFailed"
    DETERMINISTIC = "Deterministic"
    NOT_DETERMINISTIC = "NotDeterministic"
    FINGERPRINT_MISMATCH = "FingerprintMismatch"
    SERVER_MISMATCH = "ServerMismatch"
    COULD_NOT_VALIDATE = "CouldNotValidate"
    REPLICAS_VALIDATED = "ReplicasValidated"
    REPLICAS_NOT_VALIDATED = "ReplicasNotValidated"
    MINIMUM_REPLICAS_AVAILABLE = "MinimumReplicasAvailable"
    NO_VALIDATED_REPLICAS = "NoValidatedReplicas"
    AS_EXPECTED = "AsExpected"
    # AdminEndpointsClosed has the values of api.keys.AdminAccess as its reasons.
    # An object of a child's name exists and is not controlled by this resource.
    CHILD_CONFLICT = "ChildConflict"
    # Events only.
    VALIDATION_STARTED = "ValidationStarted"
    FINGERPRINT_RECORDED = "FingerprintRecorded"
    VALIDATION_JOB_CANCELLED = "ValidationJobCancelled"
    # A pod or Job with our labels that this resource's own Deployment or Job did not make.
    UNTRUSTED_OBJECT = "UntrustedObject"
    # The overhead measurement (spec.overhead), Events only: it never holds up Ready.
    OVERHEAD_BASELINE_STARTED = "OverheadBaselineStarted"
    OVERHEAD_MEASUREMENT_STARTED = "OverheadMeasurementStarted"
    OVERHEAD_MEASURED = "OverheadMeasured"
    OVERHEAD_NOT_MEASURED = "OverheadNotMeasured"
    # engine.attentionBackend Auto (controller/search.py), Events only.
    ATTENTION_TRIAL_STARTED = "AttentionTrialStarted"
    ATTENTION_TRIAL_FINISHED = "AttentionTrialFinished"
    ATTENTION_BACKEND_CHOSEN = "AttentionBackendChosen"
