"""`detinfer render`: what users review before they apply."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from detinfer import safeyaml
from detinfer.cli import EXIT_INVALID, EXIT_UNREADABLE, main
from tests.support import factories as f


def test_render_prints_every_object(capsys):
    assert main(["render", str(f.ROOT / "examples" / "service.yaml"), "-n", "ml"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == [
        "Deployment",
        "Service",
        "Service",
        "NetworkPolicy",
        "Job",
    ]
    assert all(d["metadata"]["namespace"] == "ml" for d in docs)


def test_render_json(capsys):
    assert main(["render", str(f.ROOT / "examples" / "reference.yaml"), "-o", "json"]) == 0
    import json

    listing = json.loads(capsys.readouterr().out)
    assert listing["kind"] == "List" and len(listing["items"]) == 6


def test_render_refuses_an_invalid_spec_with_the_field_path(tmp_path: Path, capsys):
    body = f.dis(engine={"image": "lmsysorg/sglang:v0.5.5"}, replicas=-1)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(body))
    assert main(["render", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        f"{path}: qwen: spec.replicas: Input should be greater than or equal to 0 (got -1)"
        in captured.err
    )


def test_render_refuses_cel_violations(tmp_path: Path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(f.dis(engine={"image": "lmsysorg/sglang:v0.5.5"})))
    assert main(["render", str(path)]) == 1
    assert (
        "spec.engine.image: engine.image lmsysorg/sglang:v0.5.5 is not pinned by digest"
        in capsys.readouterr().err
    )


def test_render_unreadable_file(tmp_path: Path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("a: [b")
    assert main(["render", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"{path}: is not valid YAML: line 2, column 1: did not find expected ',' or ']' "
        "(while parsing a flow sequence)\n"
    )
    assert main(["render", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err == (
        f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory\n"
    )
    assert main(["render", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"{tmp_path}: cannot read: Is a directory\n"


def render_fails(tmp_path: Path, capsys, content: str | bytes, *args: str) -> tuple[int, str]:
    """Render a file with `content`; the exit code and the one line of stderr, no stdout."""
    path = tmp_path / "bad.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    code = main(["render", str(path), *args])
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{path}: "), lines
    return code, lines[0][len(f"{path}: ") :]


def valid_yaml(**spec) -> str:
    return yaml.safe_dump(f.dis(**spec))


def with_spec_line(line: str) -> str:
    """A valid resource whose spec.model gets one more line, written as YAML text."""
    text = valid_yaml()
    return text.replace("  model:\n", f"  model:\n    {line}\n", 1)


METADATA_CASES = [
    # (how the resource's metadata is written, extra render arguments, words of the error)
    ("metadata: null", ["-n", "ml"], "qwen: metadata.name: is required"),
    ("metadata: null", [], "<unnamed>: metadata.name: is required"),
    ("metadata: [a]", [], "<unnamed>: metadata: must be an object (got ['a'])"),
    ("metadata: [a]", ["-n", "ml"], "<unnamed>: metadata: must be an object (got ['a'])"),
    (
        "metadata: {name: qwen, namespace: 123}",
        [],
        "qwen: metadata.namespace: Input should be a valid string (got 123)",
    ),
    (
        "metadata: {name: qwen, namespace: Bad_Space}",
        [],
        "qwen: metadata.namespace: String should match pattern",
    ),
    ("metadata: {name: 123}", [], "<unnamed>: metadata.name: must be a string (got 123)"),
]


@pytest.mark.parametrize(("metadata", "args", "words"), METADATA_CASES)
def test_render_refuses_bad_metadata(tmp_path: Path, capsys, metadata, args, words):
    body = f.dis()
    del body["metadata"]
    text = yaml.safe_dump(body) + metadata + "\n"
    code, line = render_fails(tmp_path, capsys, text, *args)
    assert code == EXIT_INVALID
    assert words.replace("qwen: ", "<unnamed>: ") in line or words in line, line


def test_render_null_metadata_with_a_namespace_names_the_missing_name(tmp_path: Path, capsys):
    body = f.dis()
    body["metadata"] = None
    code, line = render_fails(tmp_path, capsys, yaml.safe_dump(body), "-n", "ml")
    assert (code, line) == (EXIT_INVALID, "<unnamed>: metadata.name: is required")


WRONG_TYPES = [
    ("replicas", "'2'", "spec.replicas: Input should be a valid integer (got '2')"),
    ("replicas", "true", "spec.replicas: Input should be a valid integer (got True)"),
    ("replicas", "2.5", "spec.replicas: Input should be a valid integer (got 2.5)"),
    ("validation", "{trials: '4'}", "spec.validation.trials: Input should be a valid integer"),
    (
        "model",
        "{path: a, allowUnpinnedRevision: 'yes'}",
        "spec.model.allowUnpinnedRevision: Input should be a valid boolean (got 'yes')",
    ),
    (
        "model",
        "{path: a, allowUnpinnedRevision: 1}",
        "spec.model.allowUnpinnedRevision: Input should be a valid boolean (got 1)",
    ),
    (
        "resources",
        "{memory: '-1Gi'}",
        "spec.resources.memory: Input should not be negative: Kubernetes refuses negative pod "
        "resources (got '-1Gi')",
    ),
    ("resources", "{cpu: '...'}", "spec.resources.cpu: Input should be a Kubernetes quantity"),
    (
        "resources",
        "{sharedMemorySize: '1e999'}",
        "spec.resources.sharedMemorySize: Input should be at most 9223372036854775807: "
        "Kubernetes counts bytes in 64 bits (got '1e999')",
    ),
    ("resources", "{cpu: 8}", "spec.resources.cpu: Input should be a valid string (got 8)"),
]


@pytest.mark.parametrize(("field", "value", "words"), WRONG_TYPES)
def test_render_refuses_values_of_the_wrong_type(tmp_path: Path, capsys, field, value, words):
    body = f.dis()
    text = yaml.safe_dump({**body, "spec": {**body["spec"], field: "PLACEHOLDER"}})
    code, line = render_fails(tmp_path, capsys, text.replace("PLACEHOLDER", value))
    assert code == EXIT_INVALID
    assert line.startswith("qwen: ") and words in line, line


def test_render_takes_an_integral_float_as_the_api_server_does(tmp_path: Path, capsys):
    path = tmp_path / "ok.yaml"
    path.write_text(valid_yaml(replicas=3.0, validation={"trials": 4.0}))
    assert main(["render", str(path)]) == 0
    deployment = next(yaml.safe_load_all(capsys.readouterr().out))
    assert deployment["spec"]["replicas"] == 3


NOT_JSON = [
    ("since: 2024-01-01", "spec.model.since (line", "a YAML timestamp (2024-01-01)"),
    ("blob: !!binary aGVsbG8=", "spec.model.blob (line", "YAML binary data (!!binary)"),
    ("tags: !!set {a: null}", "spec.model.tags (line", "a YAML set (!!set)"),
    ("order: !!omap [a: 1]", "spec.model.order (line", "a YAML ordered map (!!omap)"),
    ("mine: !custom x", "spec.model.mine (line", "the YAML tag !custom"),
    ("1: one", "spec.model (line", "the key 1 is not a string"),
    ("null: one", "spec.model (line", "the key null is not a string"),
    ("[a, b]: one", "spec.model (line", "the key a collection is not a string"),
    ("path: again", "spec.model (line", "the key 'path' appears twice"),
    ("size: .inf", "spec.model.size (line", "is not a finite number"),
    ("size: .nan", "spec.model.size (line", "is not a finite number"),
    # libyaml refuses the escape of a lone surrogate as it reads it; PyYAML's own reader lets it
    # through and the loader refuses the string.
    (
        'note: "\\ud800"',
        "is not valid YAML: line 14, column" if yaml.__with_libyaml__ else "spec.model.note",
        "invalid Unicode character" if yaml.__with_libyaml__ else "lone surrogate",
    ),
]


@pytest.mark.parametrize(("line", "where", "words"), NOT_JSON)
def test_render_refuses_values_json_has_no_type_for(tmp_path: Path, capsys, line, where, words):
    code, error = render_fails(tmp_path, capsys, with_spec_line(line))
    assert code == EXIT_UNREADABLE
    assert error.startswith(where) and words in error, error


def test_render_refuses_a_file_that_is_not_utf8(tmp_path: Path, capsys):
    code, line = render_fails(tmp_path, capsys, valid_yaml().encode() + b"# caf\xe9\n")
    assert code == EXIT_UNREADABLE
    assert line.startswith("is not UTF-8 text (byte 0xe9 at offset"), line


def test_render_refuses_deep_nesting_without_recursing(tmp_path: Path, capsys):
    code, line = render_fails(tmp_path, capsys, "spec: " + "[" * 100_000 + "]" * 100_000)
    assert code == EXIT_UNREADABLE
    # libyaml stops at its own depth limit (1000) while it scans ahead; PyYAML's own parser
    # hands over every event and the loader stops at 64.
    assert line in {
        "is not valid YAML: line 1, column 1006: exceeded maximum nesting depth (while "
        "increasing flow level)",
        f"line 1, column {7 + safeyaml.MAX_DEPTH}: nests deeper than 64 levels",
    }, line
    code, line = render_fails(
        tmp_path, capsys, "spec:\n" + "".join(f"{' ' * i}- \n" for i in range(100))
    )
    assert (code, line) == (EXIT_UNREADABLE, "line 65, column 64: nests deeper than 64 levels")


def test_render_refuses_an_alias_bomb_before_expanding_it(tmp_path: Path, capsys):
    # 9 ** 10 strings once expanded, in a resource that is otherwise valid: the old reader ran
    # out of memory turning its spec into JSON.
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = valid_yaml() + "  bomb:\n" + "".join(f"    {x}\n" for x in lines)
    code, line = render_fails(tmp_path, capsys, bomb)
    assert code == EXIT_UNREADABLE
    assert line.endswith(
        f"expands to more than {safeyaml.MAX_NODES} values (are aliases multiplying?)"
    ), line


def test_render_refuses_too_many_aliases_and_a_recursive_one(tmp_path: Path, capsys):
    many = "a: &a x\nb: [" + ", ".join(["*a"] * (safeyaml.MAX_ALIASES + 1)) + "]\n"
    code, line = render_fails(tmp_path, capsys, many)
    assert (code, line.split(": ", 1)[1]) == (EXIT_UNREADABLE, "has more than 256 aliases")
    code, line = render_fails(tmp_path, capsys, "a: &a [*a]\n")
    assert (code, line) == (EXIT_UNREADABLE, "line 1, column 8: alias *a refers to itself")


def test_render_refuses_a_file_over_the_size_limit(tmp_path: Path, capsys):
    code, line = render_fails(tmp_path, capsys, "# x\n" * (safeyaml.MAX_BYTES // 4 + 1))
    assert (code, line) == (
        EXIT_UNREADABLE,
        "is larger than 3145728 bytes (the API server's request limit)",
    )


@pytest.mark.parametrize("content", ["", "# only a comment\n", "---\n---\n", "--- null\n"])
def test_render_refuses_a_file_with_no_resource(tmp_path: Path, capsys, content):
    code, line = render_fails(tmp_path, capsys, content)
    assert (code, line) == (
        EXIT_INVALID,
        "holds no resource (it is empty, or only comments and empty documents)",
    )


@pytest.mark.parametrize(
    ("content", "words"),
    [("- a\n- b\n", "a document is a list"), ("just text\n", "a document is the str 'just text'")],
)
def test_render_refuses_a_document_that_is_not_a_mapping(tmp_path: Path, capsys, content, words):
    code, line = render_fails(tmp_path, capsys, content)
    assert code == EXIT_INVALID and line.startswith(words), line


def test_render_syntax_errors_are_one_line_with_the_position(tmp_path: Path, capsys):
    code, line = render_fails(tmp_path, capsys, "a: [b\n")
    assert code == EXIT_UNREADABLE
    assert line.startswith("is not valid YAML: line 2, column 1: did not find expected ','"), line
    code, line = render_fails(tmp_path, capsys, "a: \x00\n")
    assert code == EXIT_UNREADABLE and "unacceptable character #x0000" in line, line


def test_render_checks_every_file_and_exits_with_the_worst(tmp_path: Path, capsys):
    good, invalid, unreadable = tmp_path / "good.yaml", tmp_path / "invalid.yaml", tmp_path / "u"
    good.write_text(valid_yaml())
    invalid.write_text(valid_yaml(replicas=-1))
    unreadable.write_bytes(b"\xff")
    assert main(["render", str(good), str(invalid)]) == EXIT_INVALID
    assert main(["render", str(invalid), str(unreadable), str(good)]) == EXIT_UNREADABLE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err.count("spec.replicas") == 2 and f"{unreadable}: is not UTF-8" in captured.err
    )


def test_render_names_a_bad_operator_setting(monkeypatch, capsys):
    monkeypatch.setenv("DETINFER_JOB_TTL_SECONDS", "soon")
    assert main(["render", str(f.ROOT / "examples" / "reference.yaml")]) == EXIT_UNREADABLE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "detinfer render: DETINFER_JOB_TTL_SECONDS: Input should be a valid integer, unable to "
        "parse string as an integer (got 'soon')\n"
    )


def test_render_help_documents_the_exit_codes_and_limits(capsys):
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit codes: 0 every resource rendered; 1 a resource is invalid" in text
    assert "2 a file cannot be read (missing, larger than 3 MiB, not UTF-8" in text
    assert "nested deeper than 64 levels, more than 256 aliases" in text


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "detinfer.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("detinfer ")
