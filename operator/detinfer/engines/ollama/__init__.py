"""Ollama: where hack/build-ollama.sh caches it, how `ollama serve` is started, and the Modelfile
that turns a GGUF file into an Ollama model.

The binary is built from Ollama's Go module (the Go module proxy), so the module's version names
the build. One binary is the server (`ollama serve`) and the client (`ollama create`), which
finds the server through OLLAMA_HOST as well.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

OLLAMA_VERSION = "0.17.4"
"""The module version the binary is built from; hack/versions.env pins v<the same> (a unit test
checks)."""

MODEL_NAME = "detinfer-tiny"
"""What the tests call the model they create (`ollama create`); requests name it."""


def build_dir(version: str = OLLAMA_VERSION) -> Path:
    """$DETINFER_CACHE/ollama/<version> (DETINFER_CACHE defaults to ~/.cache/detinfer)."""
    cache = os.environ.get("DETINFER_CACHE") or str(Path.home() / ".cache" / "detinfer")
    return Path(cache) / "ollama" / version


def binary(version: str = OLLAMA_VERSION) -> Path:
    return build_dir(version) / "bin" / "ollama"


def server_env(
    port: int,
    models: Path,
    *,
    parallel: int = 1,
    flash_attention: bool | None = None,
    host: str = "127.0.0.1",
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of `ollama serve` (Ollama takes its server settings from the
    environment, not from flags) and of `ollama create` against it.

    OLLAMA_NUM_PARALLEL is the number of slots of a loaded model (1 is the default): more decode
    their requests together in one batch. OLLAMA_KEEP_ALIVE -1 keeps the model loaded (the
    default unloads it after 5 idle minutes; a reload would be another process). OLLAMA_NO_CLOUD
    turns off the cloud features: nothing here needs the network. OLLAMA_FLASH_ATTENTION is left
    to Ollama's choice unless given."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "OLLAMA_HOST": f"{host}:{port}",
            "OLLAMA_MODELS": str(models),
            "OLLAMA_NUM_PARALLEL": str(parallel),
            "OLLAMA_KEEP_ALIVE": "-1",
            "OLLAMA_NO_CLOUD": "1",
        }
    )
    if flash_attention is not None:
        env["OLLAMA_FLASH_ATTENTION"] = "1" if flash_attention else "0"
    return env


def server_command(path: Path) -> list[str]:
    return [str(path), "serve"]


def modelfile(gguf: str, *, seed: int = 42, context: int = 8192, threads: int = 2) -> str:
    """A Modelfile with the guides' settings as the model's defaults: a fixed `seed`,
    `temperature` 0 and `top_k` 1 (greedy). `TEMPLATE {{ .Prompt }}` passes a prompt through
    unchanged, so the OpenAI-compatible endpoints (which apply the template) see what
    /api/generate with `raw` sees. `num_ctx` is per slot (Ollama allocates num_ctx times
    OLLAMA_NUM_PARALLEL): 8192 holds the validator's longest prompt (4,097 characters) and its
    output. A request that sends another num_ctx makes Ollama load the model again."""
    return "\n".join(
        [
            f"FROM {gguf}",
            "TEMPLATE {{ .Prompt }}",
            f"PARAMETER seed {seed}",
            "PARAMETER temperature 0",
            "PARAMETER top_k 1",
            f"PARAMETER num_ctx {context}",
            f"PARAMETER num_thread {threads}",
            "",
        ]
    )


def create_command(path: Path, name: str, modelfile_path: Path) -> list[str]:
    """`ollama create NAME -f Modelfile`: the client uploads the GGUF to the server named by
    OLLAMA_HOST (POST /api/blobs/<digest>) and asks it to create the model (POST /api/create)."""
    return [str(path), "create", name, "-f", str(modelfile_path)]
