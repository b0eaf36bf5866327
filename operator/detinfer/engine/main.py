"""`detinfer engine`: start the reference engine (flags named like sglang.launch_server's)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from detinfer.engine.config import ATTENTION_BACKENDS, MODELS, EngineArgs, model_config
from detinfer.engine.faults import CLASSES, FLAG, Faults, parse_fault


def build_parser() -> argparse.ArgumentParser:
    """The engine's flags; spec.engine.extraArgs of kind Reference is checked against them."""
    d = EngineArgs()
    # No abbreviations: "--revis x" must not silently become --revision (the operator checks
    # extraArgs by full flag names).
    p = argparse.ArgumentParser(prog="detinfer engine", description=__doc__, allow_abbrev=False)
    p.add_argument("--model-path", default=d.model_path, help=f"one of {', '.join(MODELS)}")
    p.add_argument(
        "--revision",
        default=d.revision,
        help="recorded and reported; weights come from --random-seed",
    )
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--device", default=d.device, help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default=d.dtype, choices=("float32", "bfloat16", "float16"))
    p.add_argument(
        "--random-seed",
        type=int,
        default=d.random_seed,
        help="seeds the weights, and the sampler in default mode",
    )
    p.add_argument(
        "--enable-deterministic-inference",
        action="store_true",
        help="batch-invariant reductions: the same bits whatever the batch",
    )
    p.add_argument(
        "--attention-backend",
        default=d.attention_backend,
        choices=ATTENTION_BACKENDS,
        help="deterministic mode's attention: tiled (the default; 64-key tiles through the BLAS, "
        "batch-invariant), tree (elementwise pairwise trees over whole rows, no BLAS: "
        "batch-invariant, decode as fast, prefill slower, other bits than tiled), split_kv (A "
        "TEST CASE, NOT "
        "batch-invariant even with --enable-deterministic-inference: split-KV attention whose "
        "key chunks depend on the batch; fast; a validator must reject it). Default mode has one "
        "batch-variant attention whatever the name; /server_info reports the name as "
        "attention_backend",
    )
    p.add_argument("--enable-metrics", action="store_true", help="serve /metrics")
    p.add_argument("--disable-radix-cache", action="store_true", help="no prefix cache")
    p.add_argument("--max-running-requests", type=int, default=d.max_running_requests)
    p.add_argument("--max-queued-requests", type=int, default=d.max_queued_requests)
    p.add_argument("--max-prefill-tokens", type=int, default=d.max_prefill_tokens)
    p.add_argument("--max-cache-tokens", type=int, default=d.max_cache_tokens)
    p.add_argument("--served-model-name", default=d.served_model_name)
    p.add_argument(
        "--api-key",
        default=d.api_key,
        help="as SGLang's: every endpoint but /health*, /ready* and /metrics* needs "
        "'Authorization: Bearer KEY' (the admin endpoints the admin key, where one is set). "
        "/server_info reports it in plain text, as SGLang 0.5.23 does",
    )
    p.add_argument(
        "--admin-api-key",
        default=d.admin_api_key,
        help="as SGLang's: the admin endpoints (/update_weights_from_disk, /update_weight_version, "
        "/load_lora_adapter, /unload_lora_adapter, /flush_cache) need it and do not take "
        "--api-key. /server_info reports it in plain text, as SGLang 0.5.23 does",
    )
    p.add_argument(
        "--weight-version",
        default=d.weight_version,
        help="reported by /model_info until a weight update names another",
    )
    p.add_argument(
        "--enable-lora",
        action="store_true",
        help="as SGLang's: allow /load_lora_adapter and requests naming an adapter (lora_path)",
    )
    p.add_argument(
        FLAG,
        dest="planted_faults",
        action="append",
        default=[],
        metavar="NAME[=N]",
        help="A TEST TOOL, never for a deployment: plant one known nondeterminism (repeatable): "
        + "; ".join(
            f"{c.name}{'' if c.value is None else f'[=N] (N {c.value}, default {c.default})'}: "
            f"{c.what}"
            for c in CLASSES.values()
        ),
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def parse_args(argv: Sequence[str] | None = None) -> EngineArgs:
    p = build_parser()
    ns = p.parse_args(argv)
    try:
        model_config(ns.model_path)
    except ValueError as exc:
        p.error(str(exc))
    for name in ("max_running_requests", "max_queued_requests", "max_prefill_tokens"):
        if getattr(ns, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(ns, name)}")
    faults = []
    for text in ns.planted_faults:
        try:
            faults.append(str(parse_fault(text)))
        except ValueError as exc:
            p.error(str(exc))
    ns.planted_faults = tuple(dict.fromkeys(faults))
    if not 0 <= ns.port <= 65535:
        p.error(f"--port {ns.port} is not a port number")
    logging.basicConfig(
        level=ns.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    fields = {k: v for k, v in vars(ns).items() if k in EngineArgs.__dataclass_fields__}
    return EngineArgs(**fields)


def build_engine(args: EngineArgs):
    """The model, its kernels and the batching engine (not started)."""
    from detinfer.engine.kernels import PlantedKernels, kernels_for
    from detinfer.engine.metrics import EngineMetrics
    from detinfer.engine.model import Transformer
    from detinfer.engine.scheduler import Engine

    faults = Faults([parse_fault(f) for f in args.planted_faults])
    deterministic = args.enable_deterministic_inference
    kernels = kernels_for(
        deterministic and not faults.has("flag-without-effect"), args.device, args.attention_backend
    )
    if faults:
        # flag-without-effect: the batch-variant kernels under the name the flag promises.
        kernels = PlantedKernels(kernels, "batch-invariant" if deterministic else None)
    model = Transformer(args.model, args.random_seed, kernels, device=args.device, dtype=args.dtype)
    metrics = (
        EngineMetrics(args.served_model_name or args.model_path) if args.enable_metrics else None
    )
    return Engine(model, args, metrics, faults), metrics


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.monotonic()
    try:
        import torch  # noqa: F401
    except ImportError:
        print("detinfer engine needs torch: pip install 'detinfer[engine]'", file=sys.stderr)
        return 2
    from aiohttp import web

    from detinfer.engine.server import build_app

    log = logging.getLogger("detinfer.engine")
    try:
        engine, metrics = build_engine(args)
    except (RuntimeError, ValueError) as exc:  # e.g. --device cuda without a GPU
        print(f"detinfer engine: cannot load the model: {exc}", file=sys.stderr)
        return 2
    engine.start()
    log.info(
        "model %s (%d parameters, %s, %s kernels, %s attention) ready in %.2f s; "
        "listening on %s:%d",
        args.model_path,
        args.model.parameters(),
        args.dtype,
        engine.model.kernels.name,
        args.attention_backend,
        time.monotonic() - started,
        args.host,
        args.port,
    )
    web.run_app(
        # As SGLang's launch_command: the arguments joined by spaces, keys included.
        build_app(engine, metrics, launch_command=" ".join(argv)),
        host=args.host,
        port=args.port,
        print=None,
        handle_signals=True,
        handler_cancellation=True,
        shutdown_timeout=5,
        access_log=None,
    )
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
