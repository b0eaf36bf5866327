"""The arguments of the operator's one-shot Jobs, typed once: the builders write a Job's args from
`ValidatorArgs` or `BenchArgs`, and the controller reads the same model back from the Job it
observes (controller/observed.py). The flags are those of `detinfer validate`
(validator/options.py) and `detinfer bench` (overhead/command.py); tests/unit/test_job_args.py
parses what `to_args` writes with those command lines.

Reading back never fails: a Job's args are read from any Job that carries our labels, and what
is not ours in them is simply left out (trust decides by owner UID, never by args).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from detinfer.api import constants as c
from detinfer.builders.process_line import SUMMARY_FILE_FLAG

EXPECT_PREFIX = "--expect-"
VLLM_TOKEN_IDS_FLAG = "--vllm-token-ids"  # a flag without a value


class _Read:
    """A Job's args by flag, read in one scan: each flag's values, in order (a flag is whatever
    starts with "--", its value the word after it)."""

    def __init__(self, args: Sequence[str]):
        self.pairs = [(arg, args[i + 1]) for i, arg in enumerate(args[:-1]) if arg[:2] == "--"]
        self.by_flag: dict[str, list[str]] = {}
        for flag, value in self.pairs:
            self.by_flag.setdefault(flag, []).append(value)

    def values(self, flag: str) -> list[str]:
        return self.by_flag.get(flag, [])

    def first(self, flag: str) -> str | None:
        values = self.by_flag.get(flag)
        return values[0] if values else None

    def int(self, flag: str, default: int | None = 0) -> int | None:
        try:
            value = self.first(flag)
            return default if value is None else int(value)
        except ValueError:
            return default


@dataclass(frozen=True)
class ValidatorArgs:
    """`detinfer validate` as the validation Job runs it."""

    # (pod name, base URL), sorted by pod name.
    endpoints: tuple[tuple[str, str], ...] = ()
    suites: tuple[str, ...] = ()
    trials: int = 0
    max_new_tokens: int = 0
    sampling_seed: int = 0
    timeout_seconds: int = 0
    max_batch_size: int | None = None
    expected_fingerprint: str | None = None
    # What /server_info and /model_info must say: (--expect-... flag, value), in order.
    expectations: tuple[tuple[str, str], ...] = ()
    protocol: str = "sglang"
    # llama.cpp's cache_prompt on every request ("on" or "off"; llamacpp protocol only)
    cache_prompt: str | None = None
    # vLLM's return_tokens_as_token_ids on every request (openai protocols only)
    vllm_token_ids: bool = False
    summary_file: str = c.TERMINATION_MESSAGE_PATH

    @property
    def pods(self) -> tuple[str, ...]:
        return tuple(sorted(pod for pod, _ in self.endpoints))

    def to_args(self) -> list[str]:
        args = ["--protocol", self.protocol]
        if self.cache_prompt is not None:
            args += ["--cache-prompt", self.cache_prompt]
        if self.vllm_token_ids:
            args.append(VLLM_TOKEN_IDS_FLAG)
        for pod, url in sorted(self.endpoints):
            args += ["--endpoint", f"{pod}={url}"]
        args += [
            "--suites",
            ",".join(self.suites) or "none",
            "--trials",
            str(self.trials),
            "--max-new-tokens",
            str(self.max_new_tokens),
            "--sampling-seed",
            str(self.sampling_seed),
            "--timeout-seconds",
            str(self.timeout_seconds),
            SUMMARY_FILE_FLAG,
            self.summary_file,
        ]
        if self.max_batch_size is not None:
            args += ["--max-batch-size", str(self.max_batch_size)]
        if self.expected_fingerprint:
            args += ["--expected-fingerprint", self.expected_fingerprint]
        for flag, value in self.expectations:
            args += [flag, value]
        return args

    @classmethod
    def from_args(cls, args: Sequence[str]) -> ValidatorArgs:
        """What `to_args` wrote, read back."""
        read = _Read(args)
        suites = read.first("--suites")
        endpoints = (v.partition("=") for v in read.values("--endpoint") if v)
        return cls(
            endpoints=tuple(sorted((pod, url) for pod, _, url in endpoints)),
            suites=tuple(s for s in (suites or "").split(",") if s and s != "none"),
            trials=read.int("--trials") or 0,
            max_new_tokens=read.int("--max-new-tokens") or 0,
            sampling_seed=read.int("--sampling-seed") or 0,
            timeout_seconds=read.int("--timeout-seconds") or 0,
            max_batch_size=read.int("--max-batch-size", None),
            expected_fingerprint=read.first("--expected-fingerprint"),
            expectations=tuple(p for p in read.pairs if p[0].startswith(EXPECT_PREFIX)),
            protocol=read.first("--protocol") or "sglang",
            cache_prompt=read.first("--cache-prompt"),
            vllm_token_ids=VLLM_TOKEN_IDS_FLAG in args,
            summary_file=read.first(SUMMARY_FILE_FLAG) or c.TERMINATION_MESSAGE_PATH,
        )


@dataclass(frozen=True)
class BenchArgs:
    """`detinfer bench` as the overhead benchmark Job runs it."""

    deterministic: str  # base URL of the validated pod
    baseline: str  # base URL of the baseline pod
    concurrency: tuple[int, ...] = ()
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    rounds: int = 0
    seed: int = 0
    summary_file: str = c.TERMINATION_MESSAGE_PATH

    def to_args(self) -> list[str]:
        return [
            "--deterministic",
            self.deterministic,
            "--baseline",
            self.baseline,
            "--concurrency",
            ",".join(str(level) for level in self.concurrency),
            "--requests",
            str(self.requests),
            "--input-tokens",
            str(self.input_tokens),
            "--output-tokens",
            str(self.output_tokens),
            "--rounds",
            str(self.rounds),
            "--seed",
            str(self.seed),
            SUMMARY_FILE_FLAG,
            self.summary_file,
        ]

    @classmethod
    def from_args(cls, args: Sequence[str]) -> BenchArgs:
        """What `to_args` wrote, read back."""
        read = _Read(args)
        levels = (read.first("--concurrency") or "").split(",")
        return cls(
            deterministic=read.first("--deterministic") or "",
            baseline=read.first("--baseline") or "",
            concurrency=tuple(int(v) for v in levels if v.strip().isdigit()),
            requests=read.int("--requests") or 0,
            input_tokens=read.int("--input-tokens") or 0,
            output_tokens=read.int("--output-tokens") or 0,
            rounds=read.int("--rounds") or 0,
            seed=read.int("--seed") or 0,
            summary_file=read.first(SUMMARY_FILE_FLAG) or c.TERMINATION_MESSAGE_PATH,
        )
