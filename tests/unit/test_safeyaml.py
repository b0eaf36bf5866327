"""The YAML reader of `detinfer render`: JSON values out, limits enforced before anything is built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from detinfer import safeyaml
from detinfer.safeyaml import YamlFileError, load_file, load_text


def refusal(text: str) -> str:
    with pytest.raises(YamlFileError) as info:
        load_text(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_json_values_come_out_as_json_would_have_them():
    docs = load_text(
        "a: 1\nb: 1.5\nc: true\nd: null\ne: [x, 'y', \"z\"]\nf: {g: h}\nh: '2024-01-01'\n"
        "--- \n---\n- 0x10\n- 1_000\n- -2.5e+3\n"
    )
    assert docs == [
        {
            "a": 1,
            "b": 1.5,
            "c": True,
            "d": None,
            "e": ["x", "y", "z"],
            "f": {"g": "h"},
            "h": "2024-01-01",
        },
        None,
        [16, 1000, -2500.0],
    ]
    assert json.loads(json.dumps(docs, allow_nan=False)) == docs


def test_anchors_aliases_and_merge_keys_work_within_the_limits():
    docs = load_text(
        "base: &base {image: x, kind: Reference}\n"
        "one: {<<: *base, kind: SGLang}\n"
        "two: *base\n"
        "list: &l [1, 2]\n"
        "again: [*l, *l]\n"
    )
    assert docs[0]["one"] == {"image": "x", "kind": "SGLang"}
    assert docs[0]["two"] == {"image": "x", "kind": "Reference"}
    assert docs[0]["again"] == [[1, 2], [1, 2]]
    # A copy per alias, as JSON would carry it: changing one leaves the other alone.
    docs[0]["again"][0].append(3)
    assert docs[0]["again"][1] == [1, 2]


def test_anchors_are_local_to_their_document():
    assert refusal("a: &x 1\n---\nb: *x\n") == "line 3, column 4: alias *x has no anchor before it"


def test_the_depth_limit_is_exact_and_counts_what_aliases_bring():
    depth = safeyaml.MAX_DEPTH
    assert load_text("[" * depth + "]" * depth) is not None
    assert refusal("[" * (depth + 1) + "]" * (depth + 1)).endswith(
        f"nests deeper than {depth} levels"
    )
    # An anchor of 40 levels used at level 30 would be 70 deep once expanded.
    deep = "[" * 40 + "]" * 40
    text = f"a: &d {deep}\nb: {'[' * 29}*d{']' * 29}\n"
    assert refusal(text).endswith(f"alias *d nests deeper than {depth} levels")


def test_a_bomb_is_refused_from_its_events_not_by_building_it():
    lines = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 30)]
    # 10 ** 30 values if expanded; refused as soon as the count passes the limit.
    assert refusal("\n".join(lines)).endswith(
        f"expands to more than {safeyaml.MAX_NODES} values (are aliases multiplying?)"
    )


def test_the_expansion_limit_counts_the_whole_file():
    values = safeyaml.MAX_NODES // 2
    doc = "[" + ", ".join(["1"] * values) + "]\n"
    assert len(load_text(doc)[0]) == values
    assert "expands to more than" in refusal(doc + "---\n" + doc)


def test_keys_and_values_json_has_not_are_refused_with_their_path():
    assert refusal("a:\n  b: [1, 2020-02-02]\n") == (
        "a.b[1] (line 2): a YAML timestamp (2020-02-02) is not a JSON value; quote it to make "
        "it a string"
    )
    assert (
        refusal("? [1]\n: x\n")
        == "line 1: the key a collection is not a string; JSON keys are strings (quote it)"
    )
    assert refusal("a: {true: x}\n").startswith("a (line 1): the key true is not a string")
    assert refusal("a: {b: 1, b: 2}\n") == "a (line 1): the key 'b' appears twice"
    assert refusal("a: -.inf\n").startswith("a (line 1): '-.inf' is not a finite number")
    assert refusal("a: !!python/object:os.system x\n").startswith(
        "a (line 1): the YAML tag tag:yaml.org,2002:python/object:os.system"
    )


def test_a_lone_surrogate_is_refused():
    message = refusal('a: ["\\ud83d"]\n')
    if yaml.__with_libyaml__:
        assert message == (
            "is not valid YAML: line 1, column 8: found invalid Unicode character escape code "
            "(while parsing a quoted scalar)"
        )
    else:
        assert message.startswith("a[0] (line 1): the string holds a lone surrogate")


def test_messages_stay_on_one_line_whatever_the_keys_and_values_hold():
    assert refusal('a: {"x\\ny": 2020-01-01}').startswith("a.'x\\ny' (line 1): a YAML timestamp")
    assert refusal('b: {"k.j": [2020-01-01]}').startswith("b.'k.j'[0] (line 1): a YAML")
    assert refusal("a: !x |\n  line1\n  line2\n") == (
        "a (line 1): the YAML tag !x ('line1\\nline2\\n') is not a JSON value; quote it to make "
        "it a string"
    )


def test_a_huge_integer_is_refused_not_raised():
    assert "cannot be read" in refusal("a: " + "9" * 5000 + "\n")


def test_files_bom_encoding_and_size(tmp_path: Path):
    path = tmp_path / "f.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert load_file(path) == [{"a": 1}]
    path.write_bytes("a: 1\n".encode("utf-16"))
    with pytest.raises(YamlFileError, match=r"^is not UTF-8 text \(byte 0xff at offset 0\)$"):
        load_file(path)
    path.write_bytes(b" " * safeyaml.MAX_BYTES)
    assert load_file(path) == []
    path.write_bytes(b" " * (safeyaml.MAX_BYTES + 1))
    with pytest.raises(YamlFileError, match="is larger than"):
        load_file(path)


def test_an_endless_file_is_read_only_up_to_the_limit():
    # /dev/zero never ends; the reader stops after the limit instead of filling the memory.
    with pytest.raises(YamlFileError, match="is larger than"):
        load_file(Path("/dev/zero"))
