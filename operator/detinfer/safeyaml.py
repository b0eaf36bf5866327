"""Reading the YAML files people hand to `detinfer render`: bounded, and only JSON's types.

What the API server receives is JSON, so a file is read as the JSON it stands for: strings, finite
numbers, booleans, null, lists and mappings with string keys. A YAML date, !!binary, !!set,
!!omap, a non-string or repeated key, .inf/.nan or a lone surrogate is refused with the path of
the value instead of being turned into something JSON cannot carry. Reading is bounded: the
file's size, the nesting depth and the aliases (their number and the nodes they expand to, which
stops "billion laughs" bombs) are checked on the parser's events, before any node is built.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from yaml import events as ev
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# The API server refuses request bodies above 3 MiB (its MaxRequestBodyBytes default).
MAX_BYTES = 3 * 1024 * 1024
# A resource nests 4 levels; kubectl's output with managedFields nests about 12.
MAX_DEPTH = 64
MAX_ALIASES = 256
# Nodes of a file once every alias is expanded, as the API server would receive them.
MAX_NODES = 1_000_000

# libyaml's parser is about 20 times faster than PyYAML's own; both compose the same nodes.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_REFUSED_TAGS = {
    f"{_TAG}timestamp": "a YAML timestamp",
    f"{_TAG}binary": "YAML binary data (!!binary)",
    f"{_TAG}set": "a YAML set (!!set)",
    f"{_TAG}omap": "a YAML ordered map (!!omap)",
    f"{_TAG}pairs": "YAML pairs (!!pairs)",
}


class YamlFileError(ValueError):
    """A file that cannot be read as JSON values; the message is one line."""


def load_file(path: Path) -> list[Any]:
    """The documents of a YAML file as JSON values (an empty document is None)."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise YamlFileError(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise YamlFileError(f"is larger than {MAX_BYTES} bytes (the API server's request limit)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YamlFileError(
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    return load_text(text)


def load_text(text: str) -> list[Any]:
    """The documents of a YAML text as JSON values (an empty document is None)."""
    try:
        # First the events alone, in C where libyaml is there: the limits are checked before a
        # single node is built, and before the composer (which recurses per level) runs.
        limits = _Limits()
        for event in yaml.parse(text, Loader=_LOADER):
            limits.see(event)
        loader = _LOADER(text)
        nodes = []
        while loader.check_node():
            nodes.append(loader.get_node())
    except yaml.MarkedYAMLError as exc:
        raise YamlFileError(f"is not valid YAML: {_one_line(exc)}") from None
    except yaml.YAMLError as exc:
        raise YamlFileError(f"is not valid YAML: {' '.join(str(exc).split())}") from None
    return [None if node is None else _value(node, "", loader) for node in nodes]


def _one_line(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
    context = f" ({' '.join(exc.context.split())})" if exc.context and exc.problem else ""
    return f"{where}{problem}{context}"


class _Limits:
    """Depth, alias and expansion accounting over the parser's events, in O(1) per event."""

    def __init__(self) -> None:
        self.aliases = 0
        self.nodes = 0
        # Per open collection: [anchor, node count when it opened, deepest level inside].
        self.open: list[list[Any]] = []
        # Finished anchors: name -> (nodes it expands to, levels of collections it holds).
        self.anchors: dict[str, tuple[int, int]] = {}

    def see(self, event: ev.Event) -> None:
        if isinstance(event, ev.DocumentStartEvent):
            self.anchors = {}  # YAML anchors are local to their document
        elif isinstance(event, ev.CollectionStartEvent):
            if len(self.open) >= MAX_DEPTH:
                raise self._error(event, f"nests deeper than {MAX_DEPTH} levels")
            self._count(event, 1)
            self.open.append([event.anchor, self.nodes - 1, len(self.open) + 1])
            self._reach(len(self.open))
        elif isinstance(event, ev.CollectionEndEvent):
            anchor, first, deepest = self.open.pop()
            if self.open:
                self._reach(deepest)
            if anchor is not None:
                self.anchors[anchor] = (self.nodes - first, deepest - len(self.open))
        elif isinstance(event, ev.ScalarEvent):
            self._count(event, 1)
            if event.anchor is not None:
                self.anchors[event.anchor] = (1, 0)
        elif isinstance(event, ev.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise self._error(event, f"has more than {MAX_ALIASES} aliases")
            if event.anchor not in self.anchors:
                if any(frame[0] == event.anchor for frame in self.open):
                    raise self._error(event, f"alias *{event.anchor} refers to itself")
                raise self._error(event, f"alias *{event.anchor} has no anchor before it")
            size, levels = self.anchors[event.anchor]
            if len(self.open) + levels > MAX_DEPTH:
                raise self._error(
                    event, f"alias *{event.anchor} nests deeper than {MAX_DEPTH} levels"
                )
            self._count(event, size)
            self._reach(len(self.open) + levels)

    def _reach(self, level: int) -> None:
        if self.open and level > self.open[-1][2]:
            self.open[-1][2] = level

    def _count(self, event: ev.Event, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > MAX_NODES:
            raise self._error(
                event, f"expands to more than {MAX_NODES} values (are aliases multiplying?)"
            )

    @staticmethod
    def _error(event: ev.Event, problem: str) -> YamlFileError:
        mark = event.start_mark
        if mark is None:  # PyYAML's parser marks every event; a hand-made one may not be
            return YamlFileError(problem)
        return YamlFileError(f"line {mark.line + 1}, column {mark.column + 1}: {problem}")


def _value(node: Node, path: str, constructor: yaml.SafeLoader) -> Any:
    if isinstance(node, ScalarNode):
        return _scalar(node, path, constructor)
    if isinstance(node, SequenceNode):
        if node.tag != f"{_TAG}seq":
            raise _refused(node, path)
        return [_value(item, f"{path}[{i}]", constructor) for i, item in enumerate(node.value)]
    if not isinstance(node, MappingNode) or node.tag != f"{_TAG}map":
        raise _refused(node, path)
    own = [k.value for k, _ in node.value if isinstance(k, ScalarNode) and k.tag == f"{_TAG}str"]
    if len(set(own)) < len(own):
        # kubectl refuses duplicate fields too; YAML's last-one-wins would hide a value.
        twice = next(k for k in own if own.count(k) > 1)
        raise YamlFileError(f"{_at(path, node)}the key {_show(twice)} appears twice")
    try:
        constructor.flatten_mapping(node)  # merge keys (<<), as kubectl's YAML reader has them
    except yaml.MarkedYAMLError as exc:
        raise YamlFileError(f"{_at(path, node)}{exc.problem}") from None
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag != f"{_TAG}str":
            key = (
                _show(key_node.value, quote=False)
                if isinstance(key_node, ScalarNode)
                else "a collection"
            )
            raise YamlFileError(
                f"{_at(path, key_node)}the key {key} is not a string; JSON keys are strings "
                "(quote it)"
            )
        key = _text(key_node, path)
        child = key if key.isprintable() and "." not in key else repr(key)
        out[key] = _value(value_node, f"{path}.{child}" if path else child, constructor)
    return out


def _scalar(node: ScalarNode, path: str, constructor: yaml.SafeLoader) -> Any:
    if node.tag == f"{_TAG}str":
        return _text(node, path)
    if node.tag not in {f"{_TAG}null", f"{_TAG}bool", f"{_TAG}int", f"{_TAG}float"}:
        raise _refused(node, path)
    try:
        value = constructor.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError) as exc:
        problem = " ".join(str(exc).split())
        raise YamlFileError(
            f"{_at(path, node)}{_show(node.value)} cannot be read: {problem}"
        ) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise YamlFileError(
            f"{_at(path, node)}{_show(node.value)} is not a finite number; JSON has no "
            "infinity or NaN"
        )
    return value


def _text(node: ScalarNode, path: str) -> str:
    try:
        node.value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise YamlFileError(
            f"{_at(path, node)}the string holds a lone surrogate "
            f"({node.value[exc.start]!r} at character {exc.start}), which is not Unicode text"
        ) from None
    return node.value


def _refused(node: Node, path: str) -> YamlFileError:
    what = _REFUSED_TAGS.get(node.tag, f"the YAML tag {node.tag}")
    shown = f" ({_show(node.value, quote=False)})" if isinstance(node, ScalarNode) else ""
    hint = "; quote it to make it a string" if isinstance(node, ScalarNode) else ""
    return YamlFileError(f"{_at(path, node)}{what}{shown} is not a JSON value{hint}")


def _at(path: str, node: Node) -> str:
    line = f"line {node.start_mark.line + 1}"
    return f"{path} ({line}): " if path else f"{line}: "


def _show(text: str, quote: bool = True) -> str:
    """A value for a one-line message: at most 40 characters, control characters escaped."""
    short = text if len(text) <= 40 else text[:37] + "..."
    return repr(short) if quote or not short.isprintable() else short
