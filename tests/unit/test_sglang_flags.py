"""The SGLang flag table: current with the wheels, sane, and read by a reader that refuses what
it cannot follow."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from detinfer.engines.sglang import flags as sglang_flags
from detinfer.engines.sglang.flags import extract, generate, table


def test_the_committed_table_is_what_the_wheels_give(tmp_path: Path):
    """Regenerated from the wheel cache (downloaded only where a wheel is missing), the table is
    byte for byte the committed one."""
    out = tmp_path / "table.py"
    assert generate.main(["--output", str(out)]) == 0
    assert out.read_text() == generate.TABLE.read_text()


def test_every_supported_release_is_in_the_table():
    assert table.VERSIONS == generate.SUPPORTED_VERSIONS
    assert table.VERSIONS[0] == "0.5.3" and table.VERSIONS[-1] == "0.5.23"
    assert set(table.WHEELS) == set(table.VERSIONS)
    assert all(" sha256:" in w and w.startswith(f"sglang-{v}-") for v, w in table.WHEELS.items())


@pytest.mark.parametrize("version", table.VERSIONS)
def test_known_flags_are_in_every_release(version):
    flags = sglang_flags.by_version()[version]
    assert len(flags) > 250
    assert flags["--model-path"].dest == flags["--model"].dest == "model_path"
    assert flags["--model-path"].nargs is None
    assert flags["--attention-backend"] == extract.Flag("attention_backend", None)
    assert flags["--enable-deterministic-inference"] == extract.Flag(
        "enable_deterministic_inference", 0
    )
    assert flags["--speculative-draft-model"].dest == "speculative_draft_model_path"
    assert flags["--speculative-draft-model-path"].dest == "speculative_draft_model_path"
    assert flags["--tp-size"].dest == flags["--tensor-parallel-size"].dest
    assert flags["--help"] == flags["-h"] == extract.Flag("help", 0)
    assert flags["--config"].nargs is None


def test_spans_show_where_flags_came_and_went():
    releases = sglang_flags.releases()
    assert releases["--model-path"].everywhere
    # --cuda-graph-max-bs was dropped in 0.5.20 (its successors are the -decode/-prefill pair).
    assert releases["--cuda-graph-max-bs"].span() == "0.5.3 to 0.5.19"
    assert not releases["--cuda-graph-max-bs-decode"].everywhere
    # Post releases differ from their final: 0.5.3.post1 dropped --max-micro-batch-size.
    assert releases["--max-micro-batch-size"].span() == "0.5.3"


def test_the_real_wheels_read_as_argparse_would_build_them():
    """Facts of both source layouts: add_argument calls (0.5.13) and dataclass fields (0.5.23)."""
    old = sglang_flags.by_version()["0.5.13"]
    new = sglang_flags.by_version()["0.5.23"]
    assert old["--tensor-parallel-size"].dest == "tensor_parallel_size"  # first long option
    assert new["--tp-size"].dest == "tp_size"  # the field's name
    assert new["--disable-cuda-graph"].nargs == 0  # DeprecatedStoreTrueAction(nargs=0)
    assert new["--lora-paths"].nargs == "*"
    assert new["--bucket-time-to-first-token"].nargs == "+"  # a list field


def _wheel(tmp_path: Path, server_args: str, **more: str) -> Path:
    path = tmp_path / "sglang-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(extract.SERVER_ARGS, server_args)
        for member, text in more.items():
            z.writestr(member, text)
    return path


def _server_args(body: str) -> str:
    lines = "\n".join("        " + line for line in body.strip().splitlines())
    return f"import argparse\nclass ServerArgs:\n    def add_cli_args(parser):\n{lines}\n"


def test_the_reader_follows_add_argument(tmp_path: Path):
    source = _server_args(
        """
parser.add_argument("--a-flag", "--alias", type=int)
parser.add_argument("--switch", action="store_true")
parser.add_argument("--many", nargs="+", dest="other")
parser.add_argument("--toggle", action=argparse.BooleanOptionalAction)
parser.add_argument("--old", action=Retired)
"""
    ) + (
        "class Retired(argparse.Action):\n"
        "    def __init__(self, option_strings, dest, nargs=0, **kwargs):\n"
        "        super().__init__(option_strings, dest, nargs=nargs, **kwargs)\n"
    )
    flags = extract.flags_of_wheel(_wheel(tmp_path, source))
    assert flags == {
        "-h": extract.Flag("help", 0),
        "--help": extract.Flag("help", 0),
        "--a-flag": extract.Flag("a_flag", None),
        "--alias": extract.Flag("a_flag", None),
        "--switch": extract.Flag("switch", 0),
        "--many": extract.Flag("other", "+"),
        "--toggle": extract.Flag("toggle", 0),
        "--no-toggle": extract.Flag("toggle", 0),
        "--old": extract.Flag("old", 0),
    }


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('name = "--x"\nparser.add_argument(name)', "is not a literal"),
        ('if True:\n    parser.add_argument("--x")', "added conditionally"),
        ('for n in ("--x",):\n    parser.add_argument(n)', "added conditionally"),
        ("add_more_args(parser)", "receives the parser"),
        ('parser.add_argument("--x", action="custom")', "not supported"),
        ('parser.add_argument("--x", nargs=argparse.REMAINDER)', "not supported"),
        ('parser.add_argument("--x")\nparser.add_argument("--x")', "added twice"),
        ('parser.add_argument("positional")', "positional"),
        ("add_cli_args_from_dataclass(parser, ServerArgs)", "arg_utils.py is not in the wheel"),
    ],
)
def test_the_reader_refuses_what_it_cannot_follow(tmp_path: Path, body: str, words: str):
    with pytest.raises(extract.ExtractError, match=words):
        extract.flags_of_wheel(_wheel(tmp_path, _server_args(body)))


def test_a_new_shape_of_add_cli_args_from_dataclass_stops_the_reader(tmp_path: Path):
    arg_utils = (
        "def add_cli_args_from_dataclass(parser, cls):\n    pass\n"
        "def _unwrap_annotated(tp):\n    pass\n"
        "def _unwrap_optional(tp):\n    pass\n"
        "def _unwrap_literal(tp):\n    pass\n"
        "def _field_to_cli_name(name):\n    pass\n"
    )
    wheel = _wheel(
        tmp_path,
        _server_args("add_cli_args_from_dataclass(parser, ServerArgs)"),
        **{extract.ARG_UTILS: arg_utils},
    )
    with pytest.raises(extract.ExtractError, match=r"add_cli_args_from_dataclass\(\) changed"):
        extract.flags_of_wheel(wheel)


def test_a_cached_wheel_is_not_downloaded_again(tmp_path: Path, monkeypatch):
    (tmp_path / "0.5.3").mkdir()
    cached = tmp_path / "0.5.3" / "sglang-0.5.3-py3-none-any.whl"
    cached.write_bytes(b"")
    monkeypatch.setattr(generate.subprocess, "run", pytest.fail)
    assert generate.wheel("0.5.3", tmp_path) == cached
