"""Named model configurations and the engine's settings (flags named like sglang.launch_server)."""

from __future__ import annotations

from dataclasses import dataclass

from detinfer.engine.tokenizer import VOCAB_SIZE


@dataclass(frozen=True)
class ModelConfig:
    name: str
    hidden: int
    layers: int
    heads: int
    mlp: int
    context_length: int
    vocab_size: int = VOCAB_SIZE
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    synonym_spread: float = 1e-5
    """How far apart the LM-head rows of a byte and its case partner are (relative; each pair
    between half this and this). Trained models meet near-ties between top tokens often; random
    weights almost never do, so without this the last-bit noise of batch-variant kernels would
    rarely change a greedy token (random-weight Llama-style models on an H100 gave the same
    greedy tokens at every batch size of 1 to 64, docs/engine.md). At 1e-5 the tiny
    model's greedy outputs diverge between batch sizes after tens of tokens for some seeds and
    not within 64 for others, as real models do; 1e-6 diverged within a few tokens almost always,
    4e-5 almost never (measured with 64 tokens, seeds 2-7)."""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def parameters(self) -> int:
        per_layer = 4 * self.hidden * self.hidden + 3 * self.hidden * self.mlp + 2 * self.hidden
        return self.layers * per_layer + 2 * self.vocab_size * self.hidden + self.hidden


MODELS: dict[str, ModelConfig] = {
    # Tests, CI and the demo: starts in about a second, 32 x 64 tokens in a few seconds on 2 cores.
    "tiny": ModelConfig("tiny", hidden=128, layers=4, heads=4, mlp=352, context_length=8192),
    # The GPU tier: big enough that kernels, not Python, set the pace.
    "small": ModelConfig("small", hidden=1024, layers=12, heads=16, mlp=2816, context_length=8192),
}


def model_config(model_path: str) -> ModelConfig:
    """`--model-path tiny`, or a path whose last component names a configuration."""
    name = model_path.rstrip("/").rsplit("/", 1)[-1]
    if name not in MODELS:
        raise ValueError(
            f"--model-path {model_path!r}: the reference engine has the models "
            f"{', '.join(sorted(MODELS))}"
        )
    return MODELS[name]


ATTENTION_BACKENDS: tuple[str, ...] = ("tiled", "tree", "split_kv")
"""`detinfer engine --attention-backend`, the one list of the names (the first is the default).
What they mean with --enable-deterministic-inference (engine/kernels.py; docs/engine.md):

- `tiled`: products in tiles of 64 keys through the BLAS, sums over keys as trees over the
  tiles. Batch-invariant.
- `tree`: no BLAS; both products as elementwise products summed in pairwise trees over the
  whole row (head dimension, then keys). Batch-invariant; decode as fast, prefill slower; other
  bits than `tiled`.
- `split_kv`: A TEST CASE, NOT batch-invariant: split-KV attention whose number of key chunks
  depends on the batch (as flash decoding picks it), inside otherwise batch-invariant kernels.
  Fast; a validator must reject it (it is there to prove that a search over backends does).

In default mode every backend is the batch-variant attention of that mode: the name is
recorded and reported, the numbers are those of default mode."""
DEFAULT_ATTENTION_BACKEND = ATTENTION_BACKENDS[0]
BATCH_INVARIANT_ATTENTION_BACKENDS: tuple[str, ...] = ("tiled", "tree")
"""The backends that are batch-invariant with --enable-deterministic-inference."""


@dataclass(frozen=True)
class EngineArgs:
    model_path: str = "tiny"
    revision: str | None = None
    host: str = "127.0.0.1"
    port: int = 30000
    device: str = "cpu"
    dtype: str = "float32"
    random_seed: int = 0
    enable_deterministic_inference: bool = False
    attention_backend: str = DEFAULT_ATTENTION_BACKEND
    enable_metrics: bool = False
    disable_radix_cache: bool = False
    max_running_requests: int = 64
    max_queued_requests: int = 512
    max_prefill_tokens: int = 16384
    max_cache_tokens: int = 65536
    """Tokens of KV kept by the prefix cache (least recently used entries go first)."""
    served_model_name: str | None = None
    api_key: str | None = None
    """SGLang's --api-key: every endpoint but the health, readiness and metrics ones needs it (the
    admin endpoints take the admin key instead where one is set; engine/auth.py)."""
    admin_api_key: str | None = None
    """SGLang's --admin-api-key: the admin endpoints (weight updates, LoRA, /flush_cache) need it.
    Both keys come back in plain text from /server_info, as SGLang 0.5.23's do (server.py)."""
    weight_version: str = "default"
    """SGLang's --weight-version: what /model_info reports until a weight update names another."""
    enable_lora: bool = False
    """SGLang's --enable-lora: without it /load_lora_adapter and requests naming an adapter are
    refused, as SGLang 0.5.23 refuses them."""
    planted_faults: tuple[str, ...] = ()
    """A TEST TOOL (--planted-fault NAME[=N], engine/faults.py): known nondeterminisms planted in
    the engine, one each, for proving that a validator catches them. Reported by /server_info
    like every argument; the operator refuses the flag."""

    def __post_init__(self) -> None:
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"attention_backend {self.attention_backend!r}: the reference engine has "
                f"{', '.join(ATTENTION_BACKENDS)}"
            )

    @property
    def model(self) -> ModelConfig:
        return model_config(self.model_path)


SEED_MARK = "@seed="
"""How a model path names weights other than --random-seed's: the reference engine has no weight
files, so `tiny@seed=7` (in /update_weights_from_disk's model_path) is the tiny model with the
weights that seed 7 draws."""


def weights_of(model_path: str, default_seed: int) -> tuple[ModelConfig, int]:
    """The configuration and weight seed a model path names: `tiny` (or `/models/tiny`) with
    `default_seed`, `tiny@seed=7` with seed 7."""
    path, mark, seed = model_path.partition(SEED_MARK)
    if path.rstrip("/").rsplit("/", 1)[-1] not in MODELS:
        raise ValueError(
            f"model_path {model_path!r}: the reference engine has the models "
            f"{', '.join(sorted(MODELS))} (weights of another seed: tiny{SEED_MARK}7)"
        )
    if not mark:
        return model_config(path), default_seed
    if not (seed.isascii() and seed.isdigit()) or int(seed) >= 2**63:
        raise ValueError(
            f"model_path {model_path!r}: the seed after {SEED_MARK!r} must be an integer from 0 "
            f"to 2^63 - 1, not {seed!r}"
        )
    return model_config(path), int(seed)


@dataclass(frozen=True)
class ServedWeights:
    """What /model_info reports of the weights being served. A weight update replaces it: as
    SGLang's TokenizerManager does (_update_model_path_info), the new model_path becomes the
    served model name too, and the weight version moves only when the update names one."""

    model_path: str
    served_model_name: str
    weight_version: str

    @classmethod
    def at_start(cls, args: EngineArgs) -> ServedWeights:
        return cls(args.model_path, args.served_model_name or args.model_path, args.weight_version)
