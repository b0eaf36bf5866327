"""spec.engine.extraArgs against the engines' real flags: every known bypass, every abbreviation of
a refused flag, values as argparse reads them, and the reference engine's parser."""

from __future__ import annotations

import argparse

import pytest
import yaml

from detinfer.api import SpecError, extra_args, parse_dis
from detinfer.cli import main
from detinfer.engine.main import build_parser
from detinfer.engine.main import parse_args as engine_parse_args
from detinfer.engines.sglang import flags as sglang_flags
from tests.support import factories as f

REFERENCE = {
    "engine": {"kind": "Reference"},
    "resources": {"gpusPerReplica": 0, "gpuProduct": None},
}


def errors_of(args: list[str], kind: str = "SGLang", **engine) -> list[str]:
    overrides = {"engine": {"extraArgs": args, **engine}}
    if kind == "Reference":
        overrides = {**REFERENCE, "engine": {"kind": "Reference", "extraArgs": args}}
    with pytest.raises(SpecError) as info:
        parse_dis(f.dis(**overrides))
    return [str(e) for e in info.value.errors]


def accepted(args: list[str], kind: str = "SGLang", **engine) -> list[str]:
    overrides = {"engine": {"extraArgs": args, **engine}}
    if kind == "Reference":
        overrides = {**REFERENCE, "engine": {"kind": "Reference", "extraArgs": args}}
    return list(parse_dis(f.dis(**overrides)).spec.engine.extra_args)


# Each bypass found in issue #12: extraArgs, the item refused, the words of its message.
BYPASSES = [
    (
        ["--attention-back", "triton"],
        0,
        "'--attention-back' is an abbreviation of --attention-backend",
    ),
    (["--revis", "main"], 0, "'--revis' is an abbreviation of --revision"),
    (["--random-se", "7"], 0, "'--random-se' is an abbreviation of --random-seed"),
    (["--model-pat", "other/model"], 0, "'--model-pat' is an abbreviation of --model-path"),
    (
        ["--tensor-parallel-siz", "2"],
        0,
        "'--tensor-parallel-siz' is an abbreviation of --tensor-parallel-size",
    ),
    (
        ["--disable-radix-cach"],
        0,
        "'--disable-radix-cach' is an abbreviation of --disable-radix-cache",
    ),
    (
        ["--speculative-algo", "NGRAM"],
        0,
        "'--speculative-algo' is an abbreviation of --speculative-algorithm",
    ),
    (
        ["--sampling-backen", "flashinfer"],
        0,
        "'--sampling-backen' is an abbreviation of --sampling-backend",
    ),
    (["--por", "1234"], 0, "'--por' is an abbreviation of --port"),
    (
        ["--attention-back=triton"],
        0,
        "'--attention-back=triton' is an abbreviation of --attention-backend",
    ),
    (["--dtype", "bfloat16", "--por=1234"], 2, "'--por=1234' is an abbreviation of --port"),
    (
        ["--attention-backend triton"],
        0,
        "'--attention-backend triton' holds whitespace: the engine would not read it as a flag",
    ),
    (["--mem-frac", "0.8"], 0, "'--mem-frac' is an abbreviation of --mem-fraction-static"),
]


@pytest.mark.parametrize(("args", "index", "words"), BYPASSES)
def test_every_bypass_is_refused_naming_the_item_and_the_full_flag(args, index, words):
    errors = errors_of(args)
    assert any(e.startswith(f"spec.engine.extraArgs[{index}]: ") and words in e for e in errors), (
        errors
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["--speculative-draft-model", "x"],
            "must not contain --speculative-draft-model: speculative decoding is not deterministic",
        ),
        (["--config", "/etc/more-flags.yaml"], "must not contain --config: SGLang would read more"),
        (["--config=/etc/more-flags.yaml"], "must not contain --config"),
        (["--help"], "must not contain --help"),
        (["-h"], "must not contain -h"),
    ],
)
def test_aliases_and_config_are_refused_by_name(args, words):
    errors = errors_of(args)
    assert any(e.startswith("spec.engine.extraArgs: ") and words in e for e in errors), errors


def test_managed_flags_are_refused_under_every_alias_sglang_defines():
    # By argparse dest: --speculative-draft-model is an alias of --speculative-draft-model-path,
    # --tensor-parallel-size of --tp-size (python/sglang/srt/server_args.py).
    assert "--speculative-draft-model" in extra_args.NONDETERMINISTIC_FLAGS
    assert {"--model", "--model-path"} <= set(extra_args.MANAGED_FLAGS)
    assert {"--tp-size", "--tensor-parallel-size"} <= set(extra_args.MANAGED_FLAGS)
    refused_options = extra_args.refused_flags()
    for version, flags in extra_args.sglang_flags.by_version().items():
        refused = {flags[o].dest for o in refused_options if o in flags}
        for option, flag in flags.items():
            if flag.dest in refused:
                assert option in refused_options, (version, option)


@pytest.mark.parametrize(
    ("args", "index", "words"),
    [
        (["--not-a-flag", "1"], 0, "'--not-a-flag' is not a flag of SGLang 0.5.23"),
        (["-x"], 0, "'-x' is not a flag of SGLang"),
        (["--"], 0, "'--' would end the engine's options"),
        (
            ["--cuda-graph-max-bs", "8"],
            0,
            "'--cuda-graph-max-bs' is not a flag of SGLang 0.5.23 (spec.engine.version; only of "
            "0.5.3 to 0.5.19)",
        ),
        (["--mem-fraction-static"], 0, "'--mem-fraction-static' takes a value, and no value"),
        (
            ["--chat-template", "-x"],
            0,
            "'--chat-template' takes a value, and no value item follows it (an item that starts "
            "with '-' is a flag to the engine: give such a value as --chat-template=VALUE)",
        ),
        (["--mem-fraction-static", "0.8", "0.9"], 2, "'0.9' is not a flag, and no flag before"),
        (["stray"], 0, "'stray' is not a flag, and no flag before it takes a value"),
        (["--mem-fraction-static=0.8", "0.9"], 1, "'0.9' is not a flag"),
        (["--enable-metrics-for-all-schedulers=1"], 0, "takes none"),
        (["--bucket-time-to-first-token"], 0, "takes one or more values"),
    ],
)
def test_the_flag_table_refuses_what_sglang_would_not_read_as_meant(args, index, words):
    errors = errors_of(args)
    assert any(e.startswith(f"spec.engine.extraArgs[{index}]: ") and words in e for e in errors), (
        errors
    )


@pytest.mark.parametrize(
    ("args", "accepted_by", "refused_by", "only_of"),
    [
        (["--cuda-graph-max-bs", "8"], "0.5.19", "0.5.20", "0.5.3 to 0.5.19"),
        (["--cuda-graph-max-seq-len-prefill", "64"], "0.5.21", "0.5.20", "0.5.21 to 0.5.23"),
        (["--cuda-graph-max-bs-decode", "8"], "0.5.14", "0.5.13.post1", "0.5.14 to 0.5.23"),
    ],
)
def test_extra_args_are_checked_against_the_pinned_release(args, accepted_by, refused_by, only_of):
    """engine.version picks the flag table: a flag of that release passes, one it lacks is
    refused naming the releases that have it."""
    assert accepted(args, version=accepted_by) == args
    errors = errors_of(args, version=refused_by)
    assert errors == [
        f"spec.engine.extraArgs[0]: '{args[0]}' is not a flag of SGLang {refused_by} "
        f"(spec.engine.version; only of {only_of})"
    ]


def test_an_abbreviation_is_read_against_the_pinned_release():
    token = "--cuda-graph-max-seq-len-pre"
    errors = errors_of([token, "8"], version="0.5.23")
    assert (
        "is an abbreviation of --cuda-graph-max-seq-len-prefill: write the flag in full"
        in (errors[0])
    )
    assert errors_of([token, "8"], version="0.5.20") == [
        f"spec.engine.extraArgs[0]: '{token}' is not a flag of SGLang 0.5.20"
    ]


CHUNKED = "--chunked-prefill-size"


@pytest.mark.parametrize(
    ("engine", "args", "index", "words"),
    [
        (
            {"attentionBackend": "FlashInfer"},
            [CHUNKED, "2048"],
            1,
            "--chunked-prefill-size 2048 is below the prefill alignment of SGLang 0.5.23 with "
            "attentionBackend FlashInfer in deterministic mode, 4096 "
            "(spec.engine.numerics.flashinferPrefillSplitTileSize)",
        ),
        (
            {
                "attentionBackend": "FlashInfer",
                "numerics": {"flashinferPrefillSplitTileSize": 8192},
            },
            [f"{CHUNKED}=4096"],
            0,
            "--chunked-prefill-size 4096 is below the prefill alignment of SGLang 0.5.23",
        ),
        (
            {"attentionBackend": "Triton", "version": "0.5.18"},
            [CHUNKED, "128"],
            1,
            "4096 (spec.engine.numerics.tritonPrefillTruncationAlignSize): a prompt longer than "
            "128 tokens would never be scheduled (SGLang issue #36344)",
        ),
        ({}, [CHUNKED, "many"], 1, "'many': --chunked-prefill-size takes an integer"),
    ],
)
def test_chunked_prefill_below_the_alignment_is_refused(engine, args, index, words):
    errors = errors_of(args, **engine)
    assert any(e.startswith(f"spec.engine.extraArgs[{index}]: ") and words in e for e in errors), (
        errors
    )


@pytest.mark.parametrize(
    ("engine", "args"),
    [
        ({"attentionBackend": "FA3"}, [CHUNKED, "128"]),  # FA3 aligns nothing
        ({"attentionBackend": "Triton", "version": "0.5.22"}, [CHUNKED, "128"]),  # no more
        ({"attentionBackend": "FlashInfer"}, [CHUNKED, "-1"]),  # no chunking
        ({"attentionBackend": "FlashInfer"}, [CHUNKED, "6000"]),  # rounded down to 4096
        (
            {
                "attentionBackend": "FlashInfer",
                "numerics": {"flashinferPrefillSplitTileSize": 1024},
            },
            [f"{CHUNKED}=2048"],
        ),
    ],
)
def test_chunked_prefill_at_or_above_the_alignment_passes(engine, args):
    assert accepted(args, **engine) == args


@pytest.mark.parametrize(
    "args",
    [
        ["--chat-template=-x"],  # a value that starts with "-" in the =value form
        ["--chat-template", "chatml", "--mem-fraction-static", "0.8"],
        ["--bucket-time-to-first-token", "0.1", "0.5", "1", "--dtype", "float16"],  # nargs "+"
        ["--lora-paths", "--dtype", "float16"],  # nargs "*" takes none here
        ["--max-running-requests", "-1"],  # argparse takes a negative number for a value
        ["--sampling-backend=pytorch", "--enable-metrics-for-all-schedulers"],
        ["--model-loader-extra-config", '{"a": 1}'],  # a value item may hold spaces
        ["-"],
    ],
)
def test_values_are_read_as_argparse_reads_them(args):
    if args == ["-"]:  # argparse reads "-" as a value; no flag before it takes one
        assert any("'-' is not a flag" in e for e in errors_of(args))
        return
    assert accepted(args) == args


def _proper_prefixes(flag: str) -> list[str]:
    # "--" alone is the end of the options, refused on its own; an abbreviation has more. A
    # prefix that is an allowed flag wherever `flag` is one (--ssl-keyfile of
    # --ssl-keyfile-password) is that flag, not an abbreviation.
    refused = extra_args.refused_flags()
    return [
        flag[:n]
        for n in range(3, len(flag))
        if flag[:n] in refused or not extra_args._wherever(flag[:n], flag)
    ]


def _refused_long_flags(flags: extra_args.EngineFlags) -> list[str]:
    return sorted(o for o in flags.refused if o.startswith("--"))


@pytest.mark.parametrize(
    ("kind", "flags"),
    [("SGLang", extra_args.sglang), ("Reference", extra_args.reference)],
)
def test_no_abbreviation_of_a_refused_flag_passes(kind, flags):
    """Every proper prefix of every refused flag, alone and with =value, is refused; batched 64
    items to a spec (the CEL rules are evaluated in pure Python)."""
    tokens = sorted(
        {
            form
            for flag in _refused_long_flags(flags())
            for prefix in _proper_prefixes(flag)
            for form in (prefix, f"{prefix}=v")
        }
    )
    assert len(tokens) > (400 if kind == "SGLang" else 150)
    for start in range(0, len(tokens), 64):
        batch = tokens[start : start + 64]
        errors = errors_of(batch, kind)
        for i, token in enumerate(batch):
            option = token.partition("=")[0]
            named = [
                e
                for e in errors
                if e.startswith(f"spec.engine.extraArgs[{i}]: {extra_args._quoted(token, '')}")
                or e.startswith(f"spec.engine.extraArgs: extraArgs must not contain {option}:")
            ]
            assert named, (token, errors)


def test_the_crd_alone_refuses_every_abbreviation_of_a_refused_sglang_flag():
    """What the API server enforces: the item rules (or, for a prefix that is itself a refused
    flag such as --model, the rules by name) refuse each prefix, naming the full flag."""
    by_name = {r.message.split(" must not contain ")[1].split(":")[0] for r in _engine_rules()}
    for flag in _refused_long_flags(extra_args.sglang()):
        for prefix in _proper_prefixes(flag):
            for token in (prefix, f"{prefix}=v"):
                failed = [m for r in extra_args.item_rules() if (m := r.check(token))]
                if prefix in by_name:
                    continue
                assert any(f"is an abbreviation of {flag}," in m for m in failed), (token, failed)
                assert all(m.startswith(extra_args._quoted(token, "")) for m in failed)


def _engine_rules():
    return [r for r in extra_args.engine_rules() if " must not contain " in r.message]


def test_harmless_flags_of_every_release_are_not_taken_for_abbreviations():
    every = extra_args.every_release_flags()
    for token in sorted(every - set(extra_args.refused_flags())):
        assert all(r.check(token) is None for r in extra_args.item_rules()[1:]), token


# ---- the reference engine ----


def test_reference_engine_refuses_abbreviations_itself():
    assert build_parser().allow_abbrev is False
    with pytest.raises(SystemExit):
        engine_parse_args(["--revis", "abc"])
    with pytest.raises(SystemExit):
        engine_parse_args(["--max-running-req=4"])
    assert engine_parse_args(["--revision", "abc", "--port=1234"]).port == 1234


def test_reference_engine_attention_backends_are_one_list(capsys):
    from detinfer.engine.config import ATTENTION_BACKENDS, EngineArgs

    assert engine_parse_args([]).attention_backend == "tiled" == ATTENTION_BACKENDS[0]
    for name in ATTENTION_BACKENDS:
        assert engine_parse_args(["--attention-backend", name]).attention_backend == name
    with pytest.raises(SystemExit):
        engine_parse_args(["--attention-backend", "fa3"])
    assert (
        "argument --attention-backend: invalid choice: 'fa3' (choose from tiled, tree, split_kv)"
        in capsys.readouterr().err.replace("'tiled', 'tree', 'split_kv'", "tiled, tree, split_kv")
    )
    with pytest.raises(ValueError, match="attention_backend 'fa3': the reference engine has"):
        EngineArgs(attention_backend="fa3")


def test_reference_table_is_the_parser_itself():
    parser = build_parser()
    options = {o: a.nargs for a in parser._actions for o in a.option_strings}
    assert extra_args.reference().usable == options
    assert options["--enable-deterministic-inference"] == 0
    assert options["--max-running-requests"] is None
    assert extra_args.reference().refused["--device"] == extra_args.REFERENCE_DEVICE_WHY
    # Exactly the SGLang refused flags that the engine has, plus --device and the test tool.
    engine_refused = {o for o in extra_args.refused_flags() if o in options}
    assert set(extra_args.reference().refused) == engine_refused | {"--device", "--planted-fault"}


@pytest.mark.parametrize(
    ("args", "index", "words"),
    [
        (["--devic", "cuda"], 0, "'--devic' is an abbreviation of --device, which extraArgs"),
        (["--max-running-req", "4"], 0, "'--max-running-req' is an abbreviation of --max-running"),
        (["--mem-fraction-static", "0.8"], 0, "'--mem-fraction-static' is not a flag of detinfer"),
        (["--sampling-backend=pytorch"], 0, "is not a flag of detinfer engine"),
        (["--attention-back", "x"], 0, "is an abbreviation of --attention-backend"),
    ],
)
def test_reference_extra_args_are_checked_against_its_parser(args, index, words):
    errors = errors_of(args, "Reference")
    assert any(e.startswith(f"spec.engine.extraArgs[{index}]: ") and words in e for e in errors), (
        errors
    )


def test_reference_accepts_its_own_flags():
    args = ["--max-running-requests", "4", "--dtype=bfloat16", "--served-model-name", "tiny"]
    assert accepted(args, "Reference") == args
    # What the operator would run parses with the engine's own parser.
    engine_parse_args(["--device", "cpu", *args])


def test_render_refuses_an_abbreviation(tmp_path, capsys):
    path = tmp_path / "dis.yaml"
    path.write_text(yaml.safe_dump(f.dis(engine={"extraArgs": ["--attention-back", "triton"]})))
    assert main(["render", str(path)]) == 1
    err = capsys.readouterr().err
    assert (
        "spec.engine.extraArgs[0]: '--attention-back' is an abbreviation of --attention-backend, "
        "which extraArgs must not contain: set spec.engine.attentionBackend instead"
    ) in err
    assert "Traceback" not in err


def test_is_value_follows_argparse():
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--x")
    for token in ("-1", "-0.5", "-.5", "value", "-", ""):
        assert extra_args.is_value(token)
        assert parser.parse_args(["--x", token]).x == token
    for token in ("-x", "--y", "-1x", "-1.2.3"):
        assert not extra_args.is_value(token)
        with pytest.raises(argparse.ArgumentError):
            parser.parse_args(["--x", token])


def test_no_flag_of_some_releases_is_a_prefix_of_a_refused_flag():
    """The CRD's item rules exempt from a refused flag's abbreviation rule only the flags of
    every release and those of every release that has the refused flag (an item rule cannot see
    engine.version): a flag of some other releases only that is a proper prefix of a refused
    flag would be refused there although the pinned release has it."""
    releases = sglang_flags.releases()
    every = extra_args.every_release_flags()
    refused = [f for f in extra_args.refused_flags() if f.startswith("--")]
    clashes = {
        option: [
            f
            for f in refused
            if f.startswith(option)
            and f != option
            and not (f in releases and set(releases[f].flags) <= set(releases[option].flags))
        ]
        for option in releases
        if option not in every and option not in extra_args.refused_flags()
    }
    assert {o: f for o, f in clashes.items() if f} == {}


def test_ssl_keyfile_is_not_taken_for_an_abbreviation_of_its_password():
    """--ssl-keyfile (0.5.10 on) stays usable; only --ssl-keyfile-password is refused."""
    assert all(r.check("--ssl-keyfile") is None for r in extra_args.item_rules())
    parse_dis(f.dis(engine={"extraArgs": ["--ssl-keyfile", "/keys/tls.key"]}))
    assert errors_of(["--ssl-keyfile-password", "pw"], "SGLang") == [
        "spec.engine.extraArgs: extraArgs must not contain --ssl-keyfile-password: "
        + extra_args.CREDENTIAL_FLAGS["--ssl-keyfile-password"]
    ]


def test_the_reference_flag_table_is_the_engines_parser():
    """engines/reference/flags.py is generated from `detinfer engine`'s parser (`make crds`)."""
    from pathlib import Path

    from detinfer.engine import flag_table

    root = Path(__file__).resolve().parents[2]
    assert (root / flag_table.TABLE_PATH).read_text() == flag_table.render(), (
        "engines/reference/flags.py is stale: run `make crds`"
    )


def test_the_api_checks_reference_flags_without_importing_the_engine():
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from detinfer.api import extra_args\n"
        "assert extra_args.reference().usable['--max-running-requests'] is None\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] == ['detinfer', 'engine']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout
