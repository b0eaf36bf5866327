"""Key-protected engines: the client key of `detinfer validate` and `detinfer bench`, and what
neither may ever show (the key, and the secrets SGLang's /server_info answers in plain text)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest

from detinfer.api import Verdict
from detinfer.api.overhead import OverheadSummary
from detinfer.cli import main
from detinfer.client_key import API_KEY_ENV, ClientKeyError, read_client_key
from tests.support.fake_engine import FakeEngine
from tests.unit.test_validator import validate_cli  # noqa: F401 (a fixture)

KEY = "sk-client-7f3a9c1e5b"
SECRETS = {
    "api_key": KEY,
    "admin_api_key": "sk-admin-2d8e4f6a0c",
    "ssl_keyfile_password": "tls-pass-9b1d3f5e7a",
    "launch_command": "python3 -m sglang.launch_server --api-key sk-client-7f3a9c1e5b "
    "--hf-token hf_launchcmd_4c6e8a0b2d",
}
"""What SGLang 0.5.23's /server_info answers in plain text, with values no run may show."""


@pytest.fixture(autouse=True)
def _python_sigpipe():
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGPIPE, previous)


@pytest.fixture(autouse=True)
def _no_key_around(monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)


# --- where the key comes from --------------------------------------------------------------------


def test_the_environment_gives_the_key_and_an_empty_variable_is_none(tmp_path):
    assert read_client_key(None, {API_KEY_ENV: f" {KEY}\n"}).value == KEY
    assert read_client_key(None, {API_KEY_ENV: ""}) is None
    assert read_client_key(None, {}) is None
    path = tmp_path / "key"
    path.write_text(f"\n  {KEY}  \n")
    from_file = read_client_key(path, {API_KEY_ENV: ""})
    assert from_file is not None and from_file.value == KEY
    assert from_file.source == f"--api-key-file {path}"
    assert KEY not in repr(from_file) and KEY not in str(from_file)


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        (lambda p: None, "cannot read it (No such file or directory)"),
        (lambda p: p.mkdir(), "cannot read it (Is a directory)"),
        (lambda p: p.write_text(" \n\t"), "the file is empty"),
    ],
)
def test_a_key_file_that_cannot_give_a_key_is_named_with_its_path(tmp_path, setup, words):
    path = tmp_path / "key"
    setup(path)
    with pytest.raises(ClientKeyError) as refused:
        read_client_key(path, {})
    assert str(refused.value) == f"--api-key-file {path}: {words}"


def test_the_environment_and_a_file_at_once_are_refused(tmp_path):
    path = tmp_path / "key"
    path.write_text("sk-other")
    with pytest.raises(ClientKeyError, match="are both set") as refused:
        read_client_key(path, {API_KEY_ENV: KEY})
    assert KEY not in str(refused.value) and "sk-other" not in str(refused.value)


def test_help_documents_both_ways_and_no_option_takes_the_key(capsys):
    for command in ("validate", "bench"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--api-key-file FILE" in text and API_KEY_ENV in text
        assert "--api-key " not in text and "--api-key=" not in text


# --- validate against a key-protected engine ------------------------------------------------------


def test_the_key_from_the_environment_goes_on_every_request(validate_cli, monkeypatch):  # noqa: F811
    monkeypatch.setenv(API_KEY_ENV, KEY)
    with FakeEngine(api_key=KEY) as engine:
        run = validate_cli("--suites", "Single", endpoints=[("pod-a", engine)])
        assert engine.refused == [] and engine.generate_requests > 0
    assert run.rc == 0, run.out
    assert run.report["options"]["clientKey"] == API_KEY_ENV
    assert run.report["endpoints"][0]["server"]["serverInfo"]["version"] == "fake-0.1"


def test_the_key_from_a_file_goes_on_every_request(validate_cli, tmp_path):  # noqa: F811
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    with FakeEngine(api_key=KEY) as engine:
        run = validate_cli(
            "--suites", "Single", "--api-key-file", str(path), endpoints=[("pod-a", engine)]
        )
        assert engine.refused == []
    assert run.rc == 0, run.out


@pytest.mark.parametrize(
    ("given", "words"),
    [
        (None, "no client key was sent; set DETINFER_API_KEY or pass --api-key-file"),
        ("sk-wrong-5e7a9c", "a client key was sent; is it the engine's --api-key?"),
    ],
)
@pytest.mark.parametrize("protocol", ["sglang", "openai"])
def test_a_refused_request_is_could_not_test_and_says_whether_a_key_was_sent(
    validate_cli,  # noqa: F811
    monkeypatch,
    given,
    words,
    protocol,
):
    if given is not None:
        monkeypatch.setenv(API_KEY_ENV, given)
    with FakeEngine(api_key=KEY) as engine:
        run = validate_cli("--protocol", protocol, endpoints=[("pod-a", engine)])
        assert engine.generate_requests == 0
    request = "GET /model_info" if protocol == "sglang" else "GET /v1/models"
    assert run.rc == 2, run.out
    assert run.summary.verdict == Verdict.COULD_NOT_TEST
    assert run.summary.reason == (
        f"could not test: pod-a: the server refused {request} (HTTP 401): {words}"
    )
    assert given is None or given not in run.out + run.summary_text


def test_a_generation_refused_names_the_request(validate_cli, monkeypatch):  # noqa: F811
    monkeypatch.setenv(API_KEY_ENV, "sk-wrong-5e7a9c")
    with FakeEngine(api_key=KEY) as engine:
        # With --model the OpenAI protocol reads nothing first: the generation is refused.
        run = validate_cli(
            "--protocol", "openai", "--model", "fake/model", endpoints=[("pod-a", engine)]
        )
        assert engine.refused == ["/v1/completions"]
    assert run.rc == 2
    assert run.summary.reason == (
        "could not test: pod-a: the server refused POST /v1/completions (HTTP 401): a client "
        "key was sent; is it the engine's --api-key?"
    )


def test_an_unreadable_key_file_is_could_not_test_naming_the_option(validate_cli, tmp_path):  # noqa: F811
    missing = tmp_path / "no-such-key"
    with FakeEngine() as engine:
        run = validate_cli("--api-key-file", str(missing), endpoints=[("pod-a", engine)])
        assert engine.generate_requests == 0
    assert run.rc == 2
    assert run.summary.reason == (
        f"could not test: --api-key-file {missing}: cannot read it (No such file or directory)"
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (KEY, f"client key: sent as a bearer key on every request, from {API_KEY_ENV}"),
        (None, "client key: none (the engines must not need one)"),
    ],
)
def test_the_plan_says_whether_a_key_will_be_sent(capsys, monkeypatch, env, line):
    if env is not None:
        monkeypatch.setenv(API_KEY_ENV, env)
    assert main(["validate", "--plan"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == line
    assert KEY not in out


# --- nothing of /server_info but its named facts ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "rc"),
    [
        (["--suites", "Single"], 0),
        (["--expect-version", "0.5.22", "--expect-model-path", "other/model"], 1),
    ],
)
def test_no_key_and_no_launch_command_reach_the_report_the_summary_the_terminal_or_a_log(
    validate_cli,  # noqa: F811
    monkeypatch,
    tmp_path,
    caplog,
    args,
    rc,
):
    monkeypatch.setenv(API_KEY_ENV, KEY)
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at DEBUG
    secrets = [*SECRETS.values(), "hf_launchcmd_4c6e8a0b2d"]
    with FakeEngine(api_key=KEY, server_info=SECRETS, model_info=SECRETS) as engine:
        run = validate_cli(*args, endpoints=[("pod-a", engine)])
    assert run.rc == rc, run.out
    report_text = (tmp_path / "report.json").read_text()
    # The named facts are there: the rule keeps what it names and drops the rest.
    assert '"version": "fake-0.1"' in report_text and '"model_path": "fake/model"' in report_text
    for shown in (report_text, run.summary_text, run.out, run.err, caplog.text):
        for secret in secrets:
            assert secret not in shown
        for field in ("api_key", "admin_api_key", "ssl_keyfile_password", "launch_command"):
            assert field not in shown


# --- bench ---------------------------------------------------------------------------------------


def bench(engines: tuple[FakeEngine, FakeEngine], tmp_path: Path, *args: str) -> OverheadSummary:
    summary = tmp_path / "overhead.json"
    main(
        [
            "bench",
            "--deterministic",
            engines[0].url,
            "--baseline",
            engines[1].url,
            "--concurrency",
            "2",
            "--requests",
            "2",
            "--input-tokens",
            "4",
            "--output-tokens",
            "3",
            "--rounds",
            "1",
            "--summary-file",
            str(summary),
            *args,
        ]
    )
    return OverheadSummary.model_validate_json(summary.read_text())


def test_bench_sends_the_key_on_every_request(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(API_KEY_ENV, KEY)
    with FakeEngine(api_key=KEY) as det, FakeEngine(api_key=KEY) as base:
        summary = bench((det, base), tmp_path)
        assert det.refused == base.refused == [] and det.generate_requests == 3
    assert summary.measured, summary.reason
    assert KEY not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("given", "words"),
    [
        (None, "no client key was sent; set DETINFER_API_KEY or pass --api-key-file"),
        ("sk-wrong-5e7a9c", "a client key was sent; is it the engine's --api-key?"),
    ],
)
def test_bench_refused_is_could_not_measure_and_says_whether_a_key_was_sent(
    tmp_path, monkeypatch, capsys, given, words
):
    if given is not None:
        monkeypatch.setenv(API_KEY_ENV, given)
    with FakeEngine(api_key=KEY) as det, FakeEngine() as base:
        summary = bench((det, base), tmp_path)
    assert not summary.measured and summary.exit_code == 2
    assert summary.reason == (
        f"deterministic {det.url}: the server refused POST /generate (HTTP 401): {words}"
    )
    assert given is None or given not in capsys.readouterr().out + summary.reason


def test_bench_names_an_empty_key_file(tmp_path, capsys):
    path = tmp_path / "key"
    path.write_text("\n")
    rc = main(["bench", "--deterministic", "http://127.0.0.1:9", "--baseline",
               "http://127.0.0.1:9", "--api-key-file", str(path)])  # fmt: skip
    assert rc == 2
    assert f"detinfer bench: --api-key-file {path}: the file is empty" in capsys.readouterr().err
