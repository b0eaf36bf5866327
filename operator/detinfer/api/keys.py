"""Who can open an engine's admin endpoints, decided from the spec alone.

SGLang's admin endpoints (weight updates, LoRA adapters, internal state, logging, the cache)
take the admin key when one is set, else the client key when one is set, else anyone
(python/sglang/srt/utils/auth.py, `decide_request_auth`, ADMIN_OPTIONAL). --admin-api-key exists
from SGLang 0.5.8; the reference engine has it too. The operator gives every engine that has it
an admin key (docs/architecture.md#threat-model).
"""

from __future__ import annotations

from enum import StrEnum

from detinfer.api.spec import EngineSpec
from detinfer.engines import kinds


class AdminAccess(StrEnum):
    ADMIN_KEY = "AdminKey"
    """Only the admin key opens them: from spec.engine.adminApiKeySecret, or made in the pod."""
    CLIENT_KEY = "ClientKey"
    """The release has no admin key: the client key (spec.engine.apiKeySecret) opens them."""
    OPEN = "Open"
    """The release has no admin key and no client key is set: anyone who reaches a pod."""


def has_admin_key(engine: EngineSpec) -> bool:
    """Whether the engine takes --admin-api-key."""
    return kinds.support(engine.kind).has_admin_key(engine)


def admin_access(engine: EngineSpec) -> AdminAccess:
    if has_admin_key(engine):
        return AdminAccess.ADMIN_KEY
    return AdminAccess.CLIENT_KEY if engine.api_key_secret else AdminAccess.OPEN
