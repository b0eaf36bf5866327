"""Ollama's command line, environment and Modelfile as the package writes them (no server:
tests/engines/test_ollama.py runs the real one)."""

from __future__ import annotations

import re
from pathlib import Path

from detinfer.engines.ollama import (
    OLLAMA_VERSION,
    binary,
    create_command,
    modelfile,
    server_command,
    server_env,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_uses_the_version_hack_pins():
    pinned = re.search(r"^OLLAMA_VERSION=v(\S+)$", (ROOT / "hack/versions.env").read_text(), re.M)
    assert pinned is not None and pinned.group(1) == OLLAMA_VERSION


def test_the_binary_is_cached_by_version(monkeypatch, tmp_path):
    monkeypatch.setenv("DETINFER_CACHE", str(tmp_path))
    assert binary() == tmp_path / "ollama" / OLLAMA_VERSION / "bin" / "ollama"


def test_the_server_takes_its_settings_from_the_environment(tmp_path):
    env = server_env(8123, tmp_path / "models", parallel=4, base={"PATH": "/bin"})
    assert env == {
        "PATH": "/bin",
        "OLLAMA_HOST": "127.0.0.1:8123",
        "OLLAMA_MODELS": str(tmp_path / "models"),
        "OLLAMA_NUM_PARALLEL": "4",
        "OLLAMA_KEEP_ALIVE": "-1",
        "OLLAMA_NO_CLOUD": "1",
    }
    assert "OLLAMA_FLASH_ATTENTION" not in env
    off = server_env(1, tmp_path, flash_attention=False, base={})
    assert off["OLLAMA_FLASH_ATTENTION"] == "0"
    assert server_command(Path("/x/ollama")) == ["/x/ollama", "serve"]


def test_the_modelfile_holds_the_guides_settings():
    text = modelfile("./tiny.gguf")
    assert text.splitlines() == [
        "FROM ./tiny.gguf",
        "TEMPLATE {{ .Prompt }}",
        "PARAMETER seed 42",
        "PARAMETER temperature 0",
        "PARAMETER top_k 1",
        "PARAMETER num_ctx 8192",
        "PARAMETER num_thread 2",
    ]
    assert create_command(Path("/x/ollama"), "m", Path("/d/Modelfile")) == [
        "/x/ollama",
        "create",
        "m",
        "-f",
        "/d/Modelfile",
    ]
