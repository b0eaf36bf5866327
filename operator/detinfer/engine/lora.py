"""LoRA adapters loaded at run time (/load_lora_adapter) and the registry requests name them from.

The reference engine has no adapter files: an adapter's weights are drawn from a seed that its
lora_path hashes to, so the same path always gives the same adapter. Each adapter adds a rank-8
update to every layer's attention output projection (SGLang's o_proj), large enough that a
request naming it gets other tokens than the base model gives.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import torch

from detinfer.engine.config import ModelConfig
from detinfer.engine.kernels import Kernels

RANK = 8
SCALE = 0.5
"""B's scale: its update is then about as large as the projection's own output (measured on the
tiny model: greedy outputs change within the first tokens)."""
_ids = itertools.count(1)


@dataclass(eq=False)
class LoraAdapter:
    name: str
    path: str
    id: str
    """Unique per load, as SGLang's LoRARef.lora_id: the prefix cache keeps the KV an adapter made
    apart from the base model's and from an adapter loaded again under the same name."""
    down: list[torch.Tensor]
    """Per layer [hidden, RANK]."""
    up: list[torch.Tensor]
    """Per layer [RANK, hidden]."""

    def delta(self, kernels: Kernels, layer: int, x: torch.Tensor) -> torch.Tensor:
        """The adapter's addition to the output projection of `layer` for the rows `x`."""
        return kernels.linear(kernels.linear(x, self.down[layer]), self.up[layer])


def build_adapter(
    name: str, path: str, config: ModelConfig, device: torch.device, dtype: torch.dtype
) -> LoraAdapter:
    seed = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") >> 1
    gen = torch.Generator().manual_seed(seed)
    d = config.hidden

    def draw(rows: int, cols: int, scale: float) -> torch.Tensor:
        t = torch.randn(rows, cols, generator=gen) * scale
        return t.to(device=device, dtype=dtype)

    down = [draw(d, RANK, d**-0.5) for _ in range(config.layers)]
    up = [draw(RANK, d, SCALE * RANK**-0.5) for _ in range(config.layers)]
    return LoraAdapter(name, path, f"lora-{next(_ids)}", down, up)


class LoraRegistry:
    """Loaded adapters by name, refusing what SGLang 0.5.23 refuses with its messages
    (TokenizerManager.load_lora_adapter and _resolve_lora_path, LoRAManager,
    LoRARegistry.unregister). Used from the server's event loop only.

    As in SGLang 0.5.23, unloading does not forget an adapter: its TokenizerManager keeps every
    adapter ever loaded (lora_ref_cache), and a request that names an unloaded one loads it again
    ("Reloading evicted adapter"). Only a name never loaded is refused."""

    def __init__(self, enabled: bool, config: ModelConfig, device: torch.device, dtype):
        self.enabled = enabled
        self.config = config
        self.device = device
        self.dtype = dtype
        self.adapters: dict[str, LoraAdapter] = {}
        self.ever_loaded: dict[str, str] = {}
        """name -> lora_path of every adapter loaded since the start."""

    def _require_enabled(self) -> None:
        if not self.enabled:
            raise ValueError("LoRA is not enabled. Please set `--enable-lora` to enable LoRA.")

    def load(self, name: str, path: str) -> None:
        self._require_enabled()
        if name in self.adapters:
            raise ValueError(f"Failed to load LoRA adapter {name} because it is already loaded")
        self.adapters[name] = build_adapter(name, path, self.config, self.device, self.dtype)
        self.ever_loaded[name] = path

    def unload(self, name: str) -> None:
        """Requests already running with the adapter keep it to their end (they hold it); new
        ones can no longer name it, as SGLang unregisters it before unloading."""
        self._require_enabled()
        if name not in self.adapters:
            raise ValueError(
                f"LoRA with name {name} does not exist. Loaded LoRAs: {sorted(self.adapters)}"
            )
        del self.adapters[name]

    def resolve(self, name: str | None) -> LoraAdapter | None:
        """The adapter a request's lora_path names (None: the base model)."""
        if name is None:
            return None
        if not self.enabled:
            raise ValueError(
                f"LoRA adapter '{name}' was requested, but LoRA is not enabled. Please launch "
                "the server with --enable-lora flag and preload adapters using --lora-paths or "
                "/load_lora_adapter endpoint."
            )
        if name not in self.ever_loaded:
            raise ValueError(
                f"Got LoRA adapter that has never been loaded: {name}\n"
                f"All loaded adapters: {sorted(self.ever_loaded)}."
            )
        if name not in self.adapters:
            self.load(name, self.ever_loaded[name])
        return self.adapters[name]

    def paths(self) -> dict[str, str]:
        """SGLang's `loaded_adapters`: name -> lora_path."""
        return {name: a.path for name, a in self.adapters.items()}
