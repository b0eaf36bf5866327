"""The reference engine's API-key check is SGLang 0.5.23's: the same decision over every
combination, and each route at the level SGLang's own http_server.py gives it.

Both are read from SGLang's wheel (in the cache `make sglang-flags` fills): auth.py's
`decide_request_auth` is loaded from its text, without importing the sglang package (which needs
GPU libraries), and http_server.py's routes are read from its syntax tree.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import itertools
import sys
import zipfile
from types import ModuleType

import httpx
import pytest
from aiohttp import web

from detinfer.engine.auth import AuthLevel, auth_middleware
from detinfer.engines.sglang.flags.generate import cached_wheel, wheel_cache

pytest.importorskip("torch", reason="the engine extra (torch) is not installed")

from detinfer.engine.server import ROUTES  # after the skip: it imports torch

SGLANG = "0.5.23"
API_KEY, ADMIN_KEY = "api-secret", "admin-secret"
KEYS = [(None, None), (API_KEY, None), (None, ADMIN_KEY), (API_KEY, ADMIN_KEY), ("", "")]
PATHS = [
    "/generate",
    "/flush_cache",
    "/v1/models",
    "/health",
    "/health_generate",
    "/ready",
    "/metrics",
]
METHODS = ["GET", "POST", "OPTIONS"]
HEADERS: dict[str, dict[str, str]] = {
    "none": {},
    "bearer api key": {"Authorization": f"Bearer {API_KEY}"},
    "bearer admin key": {"Authorization": f"Bearer {ADMIN_KEY}"},
    "bearer wrong key": {"Authorization": "Bearer not-the-key"},
    "lower-case scheme": {"Authorization": f"bearer {ADMIN_KEY}"},
    "upper-case scheme": {"Authorization": f"BEARER {API_KEY}"},
    "two spaces": {"Authorization": f"Bearer  {API_KEY}"},
    "no space": {"Authorization": f"Bearer{API_KEY}"},
    "basic scheme": {"Authorization": f"Basic {API_KEY}"},
    "x-api-key api key": {"x-api-key": API_KEY},
    "x-api-key admin key": {"x-api-key": ADMIN_KEY},
}


def _sglang_file(name: str) -> str:
    wheel = cached_wheel(SGLANG, wheel_cache())
    if wheel is None:
        pytest.fail(
            f"SGLang {SGLANG}'s wheel is not in {wheel_cache()}: `make sglang-flags` downloads it "
            "(in `make test`, `make verify` runs first and downloads every wheel)"
        )
    with zipfile.ZipFile(wheel) as z:
        return z.read(name).decode()


@pytest.fixture(scope="module")
def sglang_auth() -> ModuleType:
    """sglang/srt/utils/auth.py of the wheel, as a module of its own (it imports only the standard
    library at the top; dataclasses need it in sys.modules while the class is made)."""
    name = "sglang_0_5_23_auth"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        path = "sglang/srt/utils/auth.py"
        exec(compile(_sglang_file(path), path, "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    return module


def sglang_status(auth: ModuleType, method, path, headers, api_key, admin_api_key, level) -> int:
    """What SGLang answers: its middleware passes only the Authorization header."""
    decision = auth.decide_request_auth(
        method=method,
        path=path,
        authorization_header=headers.get("Authorization"),
        api_key=api_key,
        admin_api_key=admin_api_key,
        auth_level=auth.AuthLevel(level.value),
    )
    return 200 if decision.allowed else decision.error_status_code


async def _answer(request: web.Request) -> web.Response:
    return web.Response(text="let in")


async def _statuses(keys, level: AuthLevel) -> dict[tuple[str, str, str], tuple[int, str]]:
    """Every (method, path, header case) through the engine's middleware, on a real server on
    loopback whose every path is one handler at `level`."""
    api_key, admin_api_key = keys
    app = web.Application(middlewares=[auth_middleware(api_key, admin_api_key, {_answer: level})])
    app.router.add_route("*", "/{path:.*}", _answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    answers = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for method, path, case in itertools.product(METHODS, PATHS, HEADERS):
                r = await client.request(method, path, headers=HEADERS[case])
                answers[method, path, case] = (r.status_code, r.text)
    finally:
        await runner.cleanup()
    return answers


@pytest.mark.parametrize("level", list(AuthLevel), ids=lambda level: level.name)
@pytest.mark.parametrize("keys", KEYS, ids=lambda k: f"api={k[0]!r},admin={k[1]!r}")
def test_the_decision_is_sglangs_in_every_case(sglang_auth, keys, level):
    answers = asyncio.run(_statuses(keys, level))
    for (method, path, case), (status, body) in answers.items():
        expected = sglang_status(sglang_auth, method, path, HEADERS[case], *keys, level)
        where = f"{method} {path} with {case}"
        assert status == expected, f"{where}: the engine answers {status}, SGLang {expected}"
        if expected == 401:
            assert body == '{"error": "Unauthorized"}', where
        elif expected == 403:
            assert body == '{"error": "Forbidden"}', where


def sglang_route_levels() -> dict[tuple[str, str], str]:
    """(method, path) -> auth level of every route SGLang 0.5.23's http_server.py declares with
    a literal path (`@app.get(...)`, `@app.api_route(..., methods=[...])`; no @auth_level:
    NORMAL)."""
    tree = ast.parse(_sglang_file("sglang/srt/entrypoints/http_server.py"))
    levels = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        level, routes = "NORMAL", []
        for d in node.decorator_list:
            if not (isinstance(d, ast.Call) and d.args):
                continue
            if isinstance(d.func, ast.Name) and d.func.id == "auth_level":
                assert isinstance(d.args[0], ast.Attribute)
                level = d.args[0].attr
            elif isinstance(d.func, ast.Attribute) and isinstance(d.args[0], ast.Constant):
                routes += [(m, d.args[0].value) for m in _methods(d)]
        levels.update({route: level for route in routes})
    return levels


def _methods(decorator: ast.Call) -> list[str]:
    assert isinstance(decorator.func, ast.Attribute)
    if decorator.func.attr != "api_route":
        return [decorator.func.attr.upper()]
    (methods,) = [k.value for k in decorator.keywords if k.arg == "methods"]
    assert isinstance(methods, ast.List)
    return [m.value for m in methods.elts if isinstance(m, ast.Constant)]


def test_every_route_has_the_level_sglang_gives_it():
    sglang = sglang_route_levels()
    assert sglang["POST", "/update_weights_from_disk"] == "ADMIN_OPTIONAL"  # the reading works
    for method, path, _, level in ROUTES:
        assert (method, path) in sglang, f"{method} {path} is not a route of SGLang {SGLANG}"
        assert level.name == sglang[method, path], f"{method} {path}"
