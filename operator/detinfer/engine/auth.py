"""Who may call which endpoint: SGLang 0.5.23's API-key check, as an aiohttp middleware.

The decision is SGLang's `decide_request_auth` (python/sglang/srt/utils/auth.py), rebuilt from
its documented rules and checked against that very function over every combination
(tests/engine/test_auth.py), so that an attack played on the reference engine meets the same
door a real SGLang pod has. Its facts worth knowing: only `Authorization: Bearer <key>` is read
(no other header); /health*, /ready* and /metrics* never need a key; an admin key, once set, is
the only key the admin endpoints take; with only an admin key set, the normal endpoints are open.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ALWAYS_OPEN = ("/health", "/ready", "/metrics")
"""Path prefixes open whatever keys are set (SGLang: for probes and Prometheus without secrets)."""


class AuthLevel(enum.Enum):
    """An endpoint's level, as SGLang's `@auth_level` marks it (none: NORMAL)."""

    NORMAL = "normal"
    ADMIN_OPTIONAL = "admin_optional"
    ADMIN_FORCE = "admin_force"


def _bearer_is(authorization: str | None, key: str) -> bool:
    """`Bearer <key>`, the scheme in any case, the key all after the first space (SGLang splits
    there: a second space belongs to the key), compared in constant time."""
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(token, key)


def refusal(
    *,
    method: str,
    path: str,
    authorization: str | None,
    api_key: str | None,
    admin_api_key: str | None,
    level: AuthLevel,
) -> int | None:
    """The status SGLang 0.5.23 refuses the request with (401 or 403), None if it lets it in.
    An empty key counts as none set, as in SGLang."""
    if method == "OPTIONS" or path.startswith(ALWAYS_OPEN):
        return None
    if level is AuthLevel.ADMIN_FORCE:
        if not admin_api_key:
            return 403
        return None if _bearer_is(authorization, admin_api_key) else 401
    if level is AuthLevel.ADMIN_OPTIONAL and admin_api_key:
        return None if _bearer_is(authorization, admin_api_key) else 401
    if api_key:
        return None if _bearer_is(authorization, api_key) else 401
    return None


REFUSED = {401: "Unauthorized", 403: "Forbidden"}


def auth_middleware(
    api_key: str | None, admin_api_key: str | None, levels: Mapping[Handler, AuthLevel]
):
    """Refuse requests SGLang would refuse, with its body ({"error": "Unauthorized"}).
    `levels` gives each route handler its level; any other (an unknown path, a method the path
    does not serve) is NORMAL, as SGLang resolves it."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        status = refusal(
            method=request.method,
            path=request.path,
            authorization=request.headers.get("Authorization"),
            api_key=api_key,
            admin_api_key=admin_api_key,
            level=levels.get(request.match_info.handler, AuthLevel.NORMAL),
        )
        if status is not None:
            return web.json_response({"error": REFUSED[status]}, status=status)
        return await handler(request)

    return auth
