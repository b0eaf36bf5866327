"""The options of `detinfer validate` and their defaults.

cli.py builds every subcommand's parser on each call, so this module imports nothing but
argparse and the shared defaults: `detinfer run` must not pay for httpx.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detinfer import validation_defaults

DEFAULT_TEMPERATURE = 0.0
DEFAULT_TIMEOUT_SECONDS = float(validation_defaults.TIMEOUT_SECONDS)
DEFAULT_REQUEST_TIMEOUT_SECONDS = 300.0
DEFAULT_WAIT_SECONDS = 120.0
PROTOCOLS = ("sglang", "openai")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `detinfer validate`."""
    parser.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="[NAME=]URL",
        help="an engine to validate (repeatable); NAME is a pod name, a bare URL is named "
        "host:port",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=PROTOCOLS[0],
        help="sglang: POST /generate (token ids, logprobs, cache flush); openai: "
        "POST /v1/completions (token strings and logprobs; no RadixCache); default %(default)s",
    )
    parser.add_argument(
        "--suites",
        default="all",
        help="comma-separated: Single,Mixed,Prefix,RadixCache,Concurrent,Sampling,CrossReplica, "
        "or all, or none (the fingerprint is always computed); default %(default)s",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=validation_defaults.TRIALS,
        help="samples per suite: batches (Mixed, Prefix), trials (RadixCache), requests "
        "(Concurrent, Sampling); Single's batches go up to 2 * trials + 1; default %(default)s",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=validation_defaults.MAX_NEW_TOKENS,
        help="tokens per sample; default %(default)s",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        help="largest Single batch, and bound of Sampling's (default: 2 * trials + 1)",
    )
    parser.add_argument(
        "--sampling-seed",
        type=int,
        default=validation_defaults.SAMPLING_SEED,
        help="sampling_params.sampling_seed (OpenAI: seed) of every request but Sampling's "
        "unseeded ones; default %(default)s",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=DEFAULT_TEMPERATURE,
        help="of the suites but Sampling, which samples at 0.8 with top_p 0.9 (the fingerprint is "
        "always greedy); default %(default)s",
    )
    parser.add_argument(
        "--expected-fingerprint",
        metavar="sha256:HEX",
        help="an endpoint whose fingerprint differs fails (FingerprintMismatch)",
    )
    parser.add_argument(
        "--timeout-seconds",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help="bound of the whole run; past it, exit 2; default %(default)s",
    )
    parser.add_argument(
        "--request-timeout-seconds",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT_SECONDS,
        help="bound of one HTTP request; default %(default)s",
    )
    parser.add_argument(
        "--wait-seconds",
        type=float,
        default=DEFAULT_WAIT_SECONDS,
        help="how long to wait for GET /health to answer 200 before testing; default %(default)s",
    )
    parser.add_argument(
        "--model", help="OpenAI protocol: the model name (default: the first of /v1/models)"
    )
    parser.add_argument("--report", type=Path, metavar="PATH", help="write the JSON report here")
    parser.add_argument(
        "--summary-file",
        type=Path,
        metavar="PATH",
        help="write the compact summary here, whatever the verdict (the Job: /dev/termination-log)",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print what each suite would send and the tokens it costs, then exit",
    )
