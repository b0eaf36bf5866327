"""The one-shot Jobs' arguments: one typed model writes them (the builders) and reads them back
(the controller), and the validator's and the benchmark's own command lines parse what it
writes into the same values."""

from __future__ import annotations

import argparse

from detinfer.api import parse_dis
from detinfer.builders import build_validation_job
from detinfer.builders.job import Endpoint
from detinfer.builders.job_args import BenchArgs, ValidatorArgs
from detinfer.builders.overhead import build_bench_job
from detinfer.config import OperatorConfig
from detinfer.controller.observed import JobView
from detinfer.overhead import command as bench_command
from detinfer.validator import options
from detinfer.validator.command import config_from_args
from tests.support import factories as f

VALIDATOR = ValidatorArgs(
    endpoints=(("qwen-a", "http://10.0.0.1:30000"), ("qwen-b", "http://10.0.0.2:30000")),
    suites=("Single", "Prefix"),
    trials=7,
    max_new_tokens=24,
    sampling_seed=42,
    timeout_seconds=840,
    max_batch_size=96,
    expected_fingerprint="sha256:" + "ab" * 32,
    expectations=(
        ("--expect-deterministic-inference", "on"),
        ("--expect-tensor-parallel-size", "2"),
        ("--expect-radix-cache", "off"),
    ),
)
BENCH = BenchArgs(
    deterministic="http://10.0.0.1:30000",
    baseline="http://10.0.0.9:30000",
    concurrency=(1, 8, 32),
    requests=64,
    input_tokens=512,
    output_tokens=128,
    rounds=3,
    seed=7,
)


def test_what_the_models_write_they_read_back():
    assert ValidatorArgs.from_args(VALIDATOR.to_args()) == VALIDATOR
    assert BenchArgs.from_args(BENCH.to_args()) == BENCH
    bare = ValidatorArgs(endpoints=(("p", "http://h:1"),))
    assert ValidatorArgs.from_args(bare.to_args()) == bare


def test_the_validator_command_line_parses_what_the_model_writes():
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    config = config_from_args(parser.parse_args(VALIDATOR.to_args()))
    assert [(e.name, e.url) for e in config.endpoints] == list(VALIDATOR.endpoints)
    assert [s.value for s in config.suites] == list(VALIDATOR.suites)
    assert (config.trials, config.max_new_tokens, config.sampling_seed) == (7, 24, 42)
    assert (config.max_batch_size, config.timeout_seconds) == (96, 840)
    assert config.expected_fingerprint == VALIDATOR.expected_fingerprint
    assert config.expect.deterministic_inference is True
    assert config.expect.tensor_parallel_size == 2
    assert config.expect.radix_cache is False


def test_the_bench_command_line_parses_what_the_model_writes():
    parser = argparse.ArgumentParser()
    bench_command.add_arguments(parser)
    args = parser.parse_args(BENCH.to_args())
    assert (args.deterministic, args.baseline) == (BENCH.deterministic, BENCH.baseline)
    assert args.concurrency == "1,8,32"
    assert (args.requests, args.input_tokens, args.output_tokens) == (64, 512, 128)
    assert (args.rounds, args.seed) == (3, 7)


def test_the_controller_reads_the_built_jobs_through_the_same_models():
    endpoints = [Endpoint("qwen-b", "10.0.0.2"), Endpoint("qwen-a", "10.0.0.1")]
    job = build_validation_job(
        parse_dis(f.dis()), endpoints, "sha256:" + "cd" * 32, "qwen-1", OperatorConfig()
    )
    view = JobView.from_body(job)
    assert view.pods == ("qwen-a", "qwen-b")
    assert view.expected_fingerprint == "sha256:" + "cd" * 32
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ValidatorArgs.from_args(args).to_args() == args
    bench = build_bench_job(
        parse_dis(f.dis()), endpoints[1], endpoints[0], "qwen-b1", OperatorConfig()
    )
    args = bench["spec"]["template"]["spec"]["containers"][0]["args"]
    assert BenchArgs.from_args(args).to_args() == args


def test_reading_foreign_args_never_fails():
    weird = ["--trials", "many", "--endpoint", "", "--concurrency", "a,2", "--expect-version"]
    assert ValidatorArgs.from_args(weird).trials == 0
    assert ValidatorArgs.from_args(weird).endpoints == ()
    assert BenchArgs.from_args(weird).concurrency == (2,)
    assert ValidatorArgs.from_args([]) == ValidatorArgs()


def test_a_llama_cpp_validation_carries_its_protocol_and_prompt_cache():
    llama = ValidatorArgs(
        endpoints=(("llama-a", "http://10.0.0.3:30000"),),
        suites=("Single",),
        trials=4,
        max_new_tokens=16,
        sampling_seed=42,
        timeout_seconds=540,
        protocol="llamacpp",
        cache_prompt="off",
    )
    assert ValidatorArgs.from_args(llama.to_args()) == llama
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    config = config_from_args(parser.parse_args(llama.to_args()))
    assert config.protocol.value == "llamacpp" and config.sends_cache_prompt is False
