"""`detinfer render`: what users review before they apply."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from detinfer.cli import main
from tests import factories as f


def test_render_prints_every_object(capsys):
    assert main(["render", str(f.ROOT / "examples" / "service.yaml"), "-n", "ml"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "Service", "Job"]
    assert all(d["metadata"]["namespace"] == "ml" for d in docs)


def test_render_json(capsys):
    assert main(["render", str(f.ROOT / "examples" / "reference.yaml"), "-o", "json"]) == 0
    import json

    listing = json.loads(capsys.readouterr().out)
    assert listing["kind"] == "List" and len(listing["items"]) == 4


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
    assert "cannot read" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "missing.yaml")]) == 2


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "detinfer.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("detinfer ")
