"""`detinfer validate`: a config in, a report and a summary out, and the exit code of the verdict.

The summary file is written on every path out of here, "could not test" included, so the
operator always has a verdict to read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from detinfer.api.status import Verdict
from detinfer.api.summary import REASON_LIMIT, ValidationSummary
from detinfer.client_key import ClientKey, ClientKeyError, read_client_key
from detinfer.validator.config import Protocol, ValidatorConfig, parse_suites
from detinfer.validator.errors import ConfigError
from detinfer.validator.protocols import describe_requests, key_header
from detinfer.validator.report import Report
from detinfer.validator.runner import run_validation
from detinfer.validator.schedule import suite_plans
from detinfer.validator.server_facts import Expectations
from detinfer.validator.terminal import Terminal

EXIT_COULD_NOT_TEST = Verdict.COULD_NOT_TEST.exit_code


def config_from_args(args: argparse.Namespace) -> ValidatorConfig:
    endpoints = args.endpoint or (["http://127.0.0.1:30000"] if args.plan else [])
    return ValidatorConfig(
        endpoints=endpoints,
        protocol=Protocol(args.protocol),
        suites=parse_suites(args.suites),
        trials=args.trials,
        max_new_tokens=args.max_new_tokens,
        max_batch_size=args.max_batch_size,
        sampling_seed=args.sampling_seed,
        temperature=args.temperature,
        expected_fingerprint=args.expected_fingerprint,
        timeout_seconds=args.timeout_seconds,
        request_timeout_seconds=args.request_timeout_seconds,
        wait_seconds=args.wait_seconds,
        model=args.model,
        expect=Expectations(
            version=args.expect_version,
            attention_backend=args.expect_attention_backend,
            tensor_parallel_size=args.expect_tensor_parallel_size,
            deterministic_inference=_on_off(args.expect_deterministic_inference),
            radix_cache=_on_off(args.expect_radix_cache),
            model_path=args.expect_model_path,
            weight_version=args.expect_weight_version,
        ),
        api_key=_client_key(args.api_key_file),
        cache_prompt=_on_off(args.cache_prompt),
        vllm_token_ids=args.vllm_token_ids,
        stop_at_first_failure=args.stop_at_first_failure,
    )


def _client_key(key_file: Path | None) -> ClientKey | None:
    try:
        return read_client_key(key_file)
    except ClientKeyError as exc:
        raise ConfigError(str(exc)) from None


def _on_off(value: str | None) -> bool | None:
    return None if value is None else value == "on"


def run_command(args: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    stdout = stdout or sys.stdout
    terminal = Terminal(stdout)
    report: Report | None = None
    try:
        config = config_from_args(args)
        if args.plan:
            terminal.line(render_plan(config))
            terminal.line(describe_requests(config))
            terminal.line(_key_line(config.api_key, config.protocol))
            return 0
        terminal.line(_banner(config))
        report = asyncio.run(run_validation(config, terminal.progress()))
        summary = report.to_summary()
        terminal.report(report)
    except ConfigError as exc:
        summary = _could_not_test(str(exc))
    except Exception as exc:  # the promise: exit 2 with a summary, never a traceback
        summary = _could_not_test(f"internal error: {type(exc).__name__}: {exc}")
        if os.environ.get("DETINFER_DEBUG"):
            traceback.print_exc(file=sys.stderr)
    return _finish(terminal, summary, report, args.summary_file, args.report)


def bad_arguments(argv: Sequence[str], message: str, stdout: IO[str] | None = None) -> int:
    """Arguments argparse refused: still a summary where --summary-file can be found."""
    terminal = Terminal(stdout or sys.stdout)
    summary_file = None
    for i, word in enumerate(argv):
        if word == "--summary-file" and i + 1 < len(argv):
            summary_file = Path(argv[i + 1])
        elif word.startswith("--summary-file="):
            summary_file = Path(word.split("=", 1)[1])
    summary = _could_not_test(f"invalid arguments: {message}")
    return _finish(terminal, summary, None, summary_file, None)


def _finish(
    terminal: Terminal,
    summary: ValidationSummary,
    report: Report | None,
    summary_file: Path | None,
    report_file: Path | None,
) -> int:
    if report_file is not None and report is not None:
        try:
            report_file.write_text(report.to_json())
        except OSError as exc:
            summary = _could_not_test(f"cannot write the report to {report_file}: {exc}")
    terminal.verdict(summary.verdict, summary.reason)
    if summary_file is not None:
        try:
            summary_file.write_text(summary.to_termination_message())
        except OSError as exc:
            print(f"cannot write the summary to {summary_file}: {exc}", file=sys.stderr)
            return EXIT_COULD_NOT_TEST
    return summary.exit_code


def _could_not_test(why: str) -> ValidationSummary:
    reason = " ".join(f"could not test: {why}".split())
    return ValidationSummary(verdict=Verdict.COULD_NOT_TEST, reason=reason[:REASON_LIMIT])


def render_plan(config: ValidatorConfig) -> str:
    rows = [("suite", "requests", "sequences", "generated tokens", "what")]
    steps = suite_plans(config)
    for step in steps:
        rows.append(
            (
                step.name,
                str(step.requests),
                str(step.sequences),
                str(step.generated_tokens),
                step.what,
            )
        )
    rows.append(
        (
            "total",
            str(sum(s.requests for s in steps)),
            str(sum(s.sequences for s in steps)),
            str(sum(s.generated_tokens for s in steps)),
            f"per endpoint; {config.max_new_tokens} new tokens, {config.trials} trials",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(
            [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in (1, 2, 3)] + [row[4]]
        )
        for row in rows
    )


def _key_line(key: ClientKey | None, protocol: Protocol) -> str:
    """Whether the requests will carry a key, in which header, and from where; never the key."""
    if key is None:
        return "client key: none (the engines must not need one)"
    return f"client key: sent as {key_header(protocol)} on every request, from {key.source}"


def _banner(config: ValidatorConfig) -> str:
    names = ", ".join(e.name for e in config.endpoint_specs)
    suites = ",".join(s.value for s in config.suite_list) or "none"
    key = f"; {config.api_key}" if config.api_key else ""
    cache = config.sends_cache_prompt
    cache_prompt = "" if cache is None else f", cache_prompt {'on' if cache else 'off'}"
    return (
        f"detinfer validate: {config.protocol.value} on {names}; suites {suites}; "
        f"{config.trials} trials, {config.max_new_tokens} new tokens, seed "
        f"{config.sampling_seed}, temperature {config.temperature:g}{cache_prompt}{key}"
    )
