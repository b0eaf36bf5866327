"""One home per engine kind (detinfer.engines.kinds): every kind the schema names has a package
that answers the whole interface, and nothing outside those packages compares kinds."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from detinfer.api.resource import parse_dis
from detinfer.api.spec import EngineKind
from detinfer.engines import kinds
from tests.support import factories as f

OPERATOR = Path(__file__).resolve().parents[2] / "operator" / "detinfer"
INTERFACE = [
    name
    for name, member in inspect.getmembers(kinds.EngineKindSupport)
    if not name.startswith("_") and inspect.isfunction(member)
]


@pytest.mark.parametrize("kind", list(EngineKind))
def test_every_kind_has_a_package_that_answers_the_whole_interface(kind):
    support = kinds.support(kind)
    assert isinstance(support.app_name, str) and support.app_name
    for name in INTERFACE:
        ours = inspect.signature(getattr(support, name))
        theirs = inspect.signature(getattr(kinds.EngineKindSupport, name))
        assert list(ours.parameters) == list(theirs.parameters)[1:], (kind, name)
    assert kinds.PACKAGES[kind].startswith("detinfer.engines.")


def test_the_interface_is_what_the_builders_and_the_api_call():
    assert set(INTERFACE) >= {"command", "probes", "environment", "expectations"}
    assert {"extra_args_errors", "auto_candidates", "has_admin_key"} <= set(INTERFACE)


def test_the_kinds_render_their_own_containers():
    sglang = parse_dis(f.dis(engine={"version": "0.5.23"})).spec
    reference = parse_dis(f.dis(engine={"kind": "Reference"})).spec
    assert kinds.of(sglang).command(sglang, True)[0] == ["python3", "-m", "sglang.launch_server"]
    assert kinds.of(reference).command(reference, True)[0] == ["detinfer", "engine"]
    assert "--enable-deterministic-inference" not in kinds.of(sglang).command(sglang, False)[1]


def _kind_comparisons(source: str) -> list[int]:
    """The lines of `source` that name a kind (`EngineKind.X`)."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "EngineKind"
    ]


def test_nothing_outside_the_kinds_packages_and_the_schema_names_a_kind():
    """A fourth kind is a new package, not edits across the tree: the builders, the
    controller and the API (beyond the schema, api/spec.py) never branch on the kind."""
    allowed = {OPERATOR / "api" / "spec.py", OPERATOR / "engines" / "kinds.py"}
    found = [
        hit
        for path in sorted(OPERATOR.rglob("*.py"))
        if path not in allowed and not path.is_relative_to(OPERATOR / "engines")
        for hit in (
            f"{path.relative_to(OPERATOR)}:{n}" for n in _kind_comparisons(path.read_text())
        )
    ]
    assert found == []


def test_the_check_for_kind_comparisons_finds_one():
    """What the builders did before the kinds had packages."""
    before = "def f(spec):\n    x = 1\n    return spec.engine.kind == EngineKind.SGLANG\n"
    assert _kind_comparisons(before) == [3]


@pytest.mark.parametrize(
    ("engine", "kind"),
    [
        ({"kind": "LlamaCpp"}, "LlamaCpp"),
        ({}, "SGLang"),  # the schema's default
        ({"kind": "Bogus"}, "Unknown"),  # a label value never taken from the user as is
        ("not a mapping", "Unknown"),
    ],
)
def test_the_resources_engine_kind_is_read_even_from_a_spec_that_does_not_parse(engine, kind):
    from detinfer.controller.observed import ResourceView

    body = f.dis()
    body["spec"]["engine"] = engine
    assert ResourceView.from_body(body).engine_kind == kind
