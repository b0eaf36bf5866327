"""Read the command-line flags of one SGLang wheel from its source, with `ast` (no import).

`python -m sglang.launch_server` builds a plain `argparse.ArgumentParser()` and fills it in
`ServerArgs.add_cli_args` (python/sglang/srt/server_args.py in SGLang's repository). Up to
0.5.13 that function calls `parser.add_argument` once per flag; from 0.5.14 it also calls
`add_cli_args_from_dataclass(parser, ServerArgs)` (python/sglang/srt/arg_groups/arg_utils.py),
which turns every `A[T, "help"]` / `A[T, Arg(...)]` field of ServerArgs into a flag; from 0.5.20
those fields live in namespace classes under python/sglang/srt/arg_groups/fields/ and are
collected by `collect_input_fields(_INPUT_NAMESPACES)`.

Anything this reader cannot follow statically (a flag name that is not a literal, a flag added
under a condition, a helper that receives the parser, an action it does not know, a new shape
of add_cli_args_from_dataclass) is an `ExtractError`: the table is never silently incomplete.
"""

from __future__ import annotations

import ast
import hashlib
import zipfile
from collections.abc import Iterator
from pathlib import Path

from detinfer.engines.flags import Flag, Nargs

SERVER_ARGS = "sglang/srt/server_args.py"
ARG_UTILS = "sglang/srt/arg_groups/arg_utils.py"

# Actions that take no value: argparse's own, by their registered names.
_NO_VALUE_ACTIONS = {"store_true", "store_false", "store_const", "append_const", "count", "help"}
_VALUE_ACTIONS = {"store", "append", "extend"}

# add_cli_args_from_dataclass and the helpers it uses, as reviewed (ast.unparse without
# docstrings, sha256, first 16 hex). The mapping from a field to a flag below (names, dest,
# nargs) follows these; a new shape must be read and its digest added here.
_REVIEWED_ARG_UTILS = {
    "add_cli_args_from_dataclass": {"a38a9c8839898bc9", "b1f7c696d66d8ba2"},
    "_unwrap_annotated": {"17ca209acf07b0ca"},
    "_unwrap_optional": {"dbb3cbccde69bd0f"},
    "_unwrap_literal": {"d2130e31151fadad"},
    "_field_to_cli_name": {"a0875e1b36534e86"},
}


class ExtractError(ValueError):
    """The source holds something this reader cannot follow statically."""


class _Wheel:
    def __init__(self, path: Path):
        self.zip = zipfile.ZipFile(path)
        self.names = set(self.zip.namelist())
        self._modules: dict[str, ast.Module] = {}

    def module(self, member: str) -> ast.Module:
        if member not in self._modules:
            if member not in self.names:
                raise ExtractError(f"{member} is not in the wheel")
            self._modules[member] = ast.parse(self.zip.read(member), filename=member)
        return self._modules[member]

    def module_of(self, dotted: str) -> str:
        base = dotted.replace(".", "/")
        for member in (f"{base}.py", f"{base}/__init__.py"):
            if member in self.names:
                return member
        raise ExtractError(f"module {dotted} is not in the wheel")


def flags_of_wheel(path: Path) -> dict[str, Flag]:
    """Every option string of `sglang.launch_server`'s parser -> its dest and nargs."""
    wheel = _Wheel(path)
    tree = wheel.module(SERVER_ARGS)
    server_args = _class(tree, "ServerArgs", SERVER_ARGS)
    add_cli_args = _function(server_args, "add_cli_args", SERVER_ARGS)
    reader = _Reader(wheel, SERVER_ARGS)
    # argparse.ArgumentParser() adds -h/--help itself.
    flags = {"-h": Flag("help", 0), "--help": Flag("help", 0)}
    for call in _calls(add_cli_args):
        name = _call_name(call)
        if name == "add_argument":
            new = reader.add_argument(call)
        elif name == "add_cli_args_from_dataclass":
            _check_reviewed(wheel)
            new = reader.dataclass_flags(call, tree, server_args)
        elif any(isinstance(a, ast.Name) and a.id == "parser" for a in call.args) or any(
            isinstance(k.value, ast.Name) and k.value.id == "parser" for k in call.keywords
        ):
            raise ExtractError(f"{SERVER_ARGS}:{call.lineno}: {name}() receives the parser")
        else:
            continue
        for option, flag in new.items():
            if option in flags:
                raise ExtractError(f"{SERVER_ARGS}: {option} is added twice")
            flags[option] = flag
    return flags


def _calls(function: ast.FunctionDef) -> Iterator[ast.Call]:
    """The calls in `function`; one that adds a flag under a condition or loop is an error."""

    def visit(node: ast.AST, guarded: bool) -> Iterator[ast.Call]:
        for child in ast.iter_child_nodes(node):
            inner = guarded or isinstance(
                child, (ast.If, ast.For, ast.While, ast.Try, ast.With, ast.IfExp, ast.Match)
            )
            if isinstance(child, ast.Call):
                if inner and _call_name(child) in ("add_argument", "add_cli_args_from_dataclass"):
                    raise ExtractError(f"line {child.lineno}: a flag is added conditionally")
                yield child
            yield from visit(child, inner)

    yield from visit(function, False)


def _call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ast.unparse(func)


def _class(tree: ast.Module, name: str, where: str) -> ast.ClassDef:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise ExtractError(f"{where}: no class {name}")


def _function(cls: ast.ClassDef, name: str, where: str) -> ast.FunctionDef:
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise ExtractError(f"{where}: {cls.name} has no {name}()")


def _without_docstrings(node: ast.AST) -> ast.AST:
    for child in ast.walk(node):
        body = getattr(child, "body", None)
        if (
            isinstance(child, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            child.body = body[1:] or [ast.Pass()]
    return node


def digest(node: ast.AST) -> str:
    return hashlib.sha256(ast.unparse(_without_docstrings(node)).encode()).hexdigest()[:16]


def _check_reviewed(wheel: _Wheel) -> None:
    tree = wheel.module(ARG_UTILS)
    found = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for name, reviewed in _REVIEWED_ARG_UTILS.items():
        if name not in found:
            raise ExtractError(f"{ARG_UTILS}: no {name}()")
        if (got := digest(found[name])) not in reviewed:
            raise ExtractError(
                f"{ARG_UTILS}: {name}() changed (digest {got}); read it, update this reader "
                "if the flags it makes changed, and add the digest to _REVIEWED_ARG_UTILS"
            )


class _Reader:
    """Literal values, names and actions as one module of the wheel sees them."""

    def __init__(self, wheel: _Wheel, member: str):
        self.wheel = wheel
        self.member = member
        self.tree = wheel.module(member)
        self.assigned: dict[str, ast.expr] = {}
        self.imported: dict[str, tuple[str, str]] = {}
        for node in self.tree.body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.assigned[target.id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if node.value is not None:
                    self.assigned[node.target.id] = node.value
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    self.imported[alias.asname or alias.name] = (node.module, alias.name)

    def error(self, node: ast.AST, what: str) -> ExtractError:
        return ExtractError(f"{self.member}:{getattr(node, 'lineno', '?')}: {what}")

    # ---- parser.add_argument(...) ----

    def add_argument(self, call: ast.Call) -> dict[str, Flag]:
        options = []
        for arg in call.args:
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                raise self.error(arg, f"flag name {ast.unparse(arg)} is not a literal")
            options.append(arg.value)
        if not options or not all(o.startswith("-") for o in options):
            raise self.error(call, f"positional argument {options}")
        keywords = {k.arg: k.value for k in call.keywords if k.arg}
        dest = self.literal(keywords["dest"]) if "dest" in keywords else _auto_dest(options)
        nargs, negatives = self.action_nargs(keywords.get("action"), keywords)
        return _flags(options, dest, nargs, negatives)

    def literal(self, node: ast.expr):
        try:
            return ast.literal_eval(node)
        except ValueError:
            raise self.error(node, f"{ast.unparse(node)} is not a literal") from None

    def nargs_value(self, node: ast.expr | None) -> Nargs:
        if node is None:
            return None
        if isinstance(node, ast.Attribute) and ast.unparse(node) in (
            "argparse.REMAINDER",
            "argparse.PARSER",
            "argparse.SUPPRESS",
        ):
            raise self.error(node, f"nargs={ast.unparse(node)} is not supported")
        value = self.literal(node)
        if value is None or value in ("?", "*", "+") or (isinstance(value, int) and value >= 0):
            return value
        raise self.error(node, f"nargs={value!r} is not supported")

    def action_nargs(
        self, action: ast.expr | None, keywords: dict[str, ast.expr]
    ) -> tuple[Nargs, bool]:
        """(nargs, whether it also adds --no-X) of an add_argument call with these keywords."""
        given = keywords.get("nargs")
        if action is None:
            return self.nargs_value(given), False
        if isinstance(action, ast.Constant) and isinstance(action.value, str):
            if action.value in _NO_VALUE_ACTIONS:
                return 0, False
            if action.value in _VALUE_ACTIONS:
                return self.nargs_value(given), False
            raise self.error(action, f"action {action.value!r} is not supported")
        name = ast.unparse(action)
        if name in ("argparse.BooleanOptionalAction", "BooleanOptionalAction"):
            return 0, True
        if isinstance(action, ast.Name):
            cls_reader, cls = self.resolve_class(action.id)
            return cls_reader.custom_action_nargs(cls, given), False
        raise self.error(action, f"action {name} is not supported")

    def resolve_class(self, name: str) -> tuple[_Reader, ast.ClassDef]:
        for node in self.tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return self, node
        if name in self.imported:
            module, original = self.imported[name]
            reader = _Reader(self.wheel, self.wheel.module_of(module))
            return reader.resolve_class(original)
        raise ExtractError(f"{self.member}: class {name} not found")

    def custom_action_nargs(self, cls: ast.ClassDef, given: ast.expr | None) -> Nargs:
        """nargs of an argparse.Action subclass: the call's, else its __init__'s default."""
        if [ast.unparse(b) for b in cls.bases] != ["argparse.Action"]:
            raise self.error(cls, f"action {cls.name} is not a direct argparse.Action subclass")
        init = next(
            (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
            None,
        )
        if init is None:
            return self.nargs_value(given)
        params = init.args.args + init.args.kwonlyargs
        defaults = dict(
            zip(
                [p.arg for p in init.args.args[len(init.args.args) - len(init.args.defaults) :]],
                init.args.defaults,
                strict=True,
            )
        )
        defaults.update(
            {
                p.arg: d
                for p, d in zip(init.args.kwonlyargs, init.args.kw_defaults, strict=True)
                if d
            }
        )
        super_calls = [
            c
            for c in ast.walk(init)
            if isinstance(c, ast.Call) and _call_name(c) == "__init__" and c is not init
        ]
        if len(super_calls) != 1:
            raise self.error(init, f"{cls.name}.__init__ does not call super().__init__ once")
        passed = {k.arg: k.value for k in super_calls[0].keywords if k.arg}
        if "nargs" not in [p.arg for p in params]:
            if "nargs" in passed:
                raise self.error(init, f"{cls.name}.__init__ sets nargs itself")
            return self.nargs_value(given)
        passed_nargs = passed.get("nargs")
        if not (isinstance(passed_nargs, ast.Name) and passed_nargs.id == "nargs"):
            raise self.error(init, f"{cls.name}.__init__ does not pass its nargs on")
        if given is not None:
            return self.nargs_value(given)
        return self.nargs_value(defaults.get("nargs"))

    # ---- add_cli_args_from_dataclass(parser, ServerArgs) ----

    def dataclass_flags(
        self, call: ast.Call, tree: ast.Module, server_args: ast.ClassDef
    ) -> dict[str, Flag]:
        if [ast.unparse(a) for a in call.args] != ["parser", "ServerArgs"] or call.keywords:
            raise self.error(call, f"unsupported call {ast.unparse(call)}")
        sources: list[tuple[_Reader, ast.ClassDef]] = [
            *self.input_namespaces(tree),
            (self, server_args),
        ]
        fields: dict[str, tuple[_Reader, ast.AnnAssign]] = {}
        for reader, cls in sources:
            for name, found in reader.class_fields(cls).items():
                fields[name] = found
        out: dict[str, Flag] = {}
        for name, (reader, node) in fields.items():
            for option, flag in reader.field_flags(name, node).items():
                if option in out:
                    raise reader.error(node, f"{option} is made twice")
                out[option] = flag
        return out

    def input_namespaces(self, tree: ast.Module) -> list[tuple[_Reader, ast.ClassDef]]:
        """The classes passed to collect_input_fields(...) at module level, if any."""
        calls = [
            n
            for n in tree.body
            if isinstance(n, ast.Assign)
            and isinstance(n.value, ast.Call)
            and _call_name(n.value) == "collect_input_fields"
        ]
        if not calls:
            return []
        call = calls[0].value
        if len(calls) != 1 or not isinstance(call, ast.Call) or len(call.args) != 1:
            raise self.error(calls[0], "unsupported collect_input_fields call")
        listed = call.args[0]
        if isinstance(listed, ast.Name):
            listed = self.assigned.get(listed.id, listed)
        if not isinstance(listed, (ast.List, ast.Tuple)) or not all(
            isinstance(e, ast.Name) for e in listed.elts
        ):
            raise self.error(listed, "the input namespaces are not a literal list of classes")
        return [self.resolve_class(e.id) for e in listed.elts if isinstance(e, ast.Name)]

    def class_fields(self, cls: ast.ClassDef) -> dict[str, tuple[_Reader, ast.AnnAssign]]:
        fields: dict[str, tuple[_Reader, ast.AnnAssign]] = {}
        for base in cls.bases:
            name = ast.unparse(base)
            if name in ("msgspec.Struct", "object"):
                continue
            if not isinstance(base, ast.Name):
                raise self.error(cls, f"base {name} of {cls.name} is not supported")
            reader, base_cls = self.resolve_class(base.id)
            fields.update(reader.class_fields(base_cls))
        for node in cls.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                fields[node.target.id] = (self, node)
        return fields

    def field_flags(self, name: str, node: ast.AnnAssign) -> dict[str, Flag]:
        annotation = node.annotation
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            annotation = ast.parse(annotation.value, mode="eval").body
        if not (
            isinstance(annotation, ast.Subscript)
            and ast.unparse(annotation.value) in ("A", "Annotated", "typing.Annotated")
        ):
            return {}  # not an A[...] field: no flag
        parts = annotation.slice
        if not isinstance(parts, ast.Tuple) or len(parts.elts) < 2:
            raise self.error(node, f"{name}: unsupported annotation")
        arg = self.arg_metadata(name, parts.elts[1:])
        if arg is None:
            return {}
        if arg.get("no_cli") is True:
            return {}
        cli_name = arg.get("cli_name") or "--" + name.replace("_", "-")
        options = [cli_name, *(arg.get("aliases") or [])]
        action_kwargs = arg.get("action_kwargs") or {}
        if "action" in arg:
            if "dest" in action_kwargs:
                raise self.error(node, f"{name}: action_kwargs sets dest")
            nargs, negatives = self.action_nargs(arg["action"], action_kwargs)
            return _flags(options, name, nargs, negatives)
        inner = self.without_optional(parts.elts[0])
        if self.is_literal_type(inner):
            nargs = None
        elif self.is_list_type(inner) and "type_parser" not in arg:
            nargs = self.nargs_value(arg.get("nargs_node")) or "+"
        elif self.is_bool_type(inner):
            nargs = 0
        else:
            nargs = self.nargs_value(arg.get("nargs_node"))
        return _flags(options, name, nargs, False)

    def arg_metadata(self, name: str, metadata: list[ast.expr]) -> dict | None:
        """What add_cli_args_from_dataclass reads from the first Arg(...) or help string."""
        for item in metadata:
            if isinstance(item, ast.Name) and item.id in self.assigned:
                item = self.assigned[item.id]
            if isinstance(item, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                if isinstance(item, ast.Constant) and not isinstance(item.value, str):
                    raise self.error(item, f"{name}: unsupported metadata {ast.unparse(item)}")
                return {}
            if isinstance(item, ast.Call):
                called = _call_name(item)
                if called in ("NS", "Derived"):
                    continue
                if called != "Arg" or item.args:
                    raise self.error(item, f"{name}: unsupported metadata {ast.unparse(item)}")
                out: dict = {}
                for keyword in item.keywords:
                    key, value = keyword.arg, keyword.value
                    if key in ("no_cli", "cli_name", "aliases"):
                        out[key] = self.literal(value)
                    elif key == "action":
                        if not (isinstance(value, ast.Constant) and value.value is None):
                            out["action"] = value
                    elif key == "action_kwargs":
                        if not isinstance(value, ast.Dict) or None in value.keys:
                            raise self.error(value, f"{name}: action_kwargs is not a literal")
                        out[key] = {
                            self.literal(k): v
                            for k, v in zip(value.keys, value.values, strict=True)
                            if k is not None  # refused above; tells the type checker
                        }
                    elif key == "nargs":
                        out["nargs_node"] = value
                    elif key == "type_parser":
                        if not (isinstance(value, ast.Constant) and value.value is None):
                            out["type_parser"] = value
                    elif key is None:
                        raise self.error(item, f"{name}: Arg(**...) is not supported")
                return out
            raise self.error(item, f"{name}: unsupported metadata {ast.unparse(item)}")
        return None

    def resolve_type(self, node: ast.expr, depth: int = 0) -> ast.expr:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node = ast.parse(node.value, mode="eval").body
        if isinstance(node, ast.Name) and node.id in self.assigned and depth < 8:
            return self.resolve_type(self.assigned[node.id], depth + 1)
        return node

    def without_optional(self, node: ast.expr) -> ast.expr:
        node = self.resolve_type(node)
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) in (
            "Optional",
            "typing.Optional",
        ):
            return self.resolve_type(node.slice)
        members = None
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) in (
            "Union",
            "typing.Union",
        ):
            members = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            members = _union_members(node)
        if members is not None:
            rest = [m for m in members if not (isinstance(m, ast.Constant) and m.value is None)]
            rest = [m for m in rest if ast.unparse(m) not in ("None", "type(None)")]
            if len(rest) == 1:
                return self.resolve_type(rest[0])
        return node

    def is_literal_type(self, node: ast.expr) -> bool:
        return isinstance(node, ast.Subscript) and ast.unparse(node.value) in (
            "Literal",
            "typing.Literal",
        )

    def is_list_type(self, node: ast.expr) -> bool:
        # typing.get_origin is list for List[X] and list[X], not for a bare list.
        return isinstance(node, ast.Subscript) and ast.unparse(node.value) in (
            "list",
            "List",
            "typing.List",
        )

    def is_bool_type(self, node: ast.expr) -> bool:
        return isinstance(node, ast.Name) and node.id == "bool"


def _union_members(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union_members(node.left) + _union_members(node.right)
    return [node]


def _auto_dest(options: list[str]) -> str:
    # argparse: the first long option string, else the first short one, without its dashes.
    long = [o for o in options if o.startswith("--")]
    return (long or options)[0].lstrip("-").replace("-", "_")


def _flags(options: list[str], dest: str, nargs: Nargs, negatives: bool) -> dict[str, Flag]:
    out = {option: Flag(dest, nargs) for option in options}
    if negatives:  # BooleanOptionalAction also registers --no-X for every --X
        out.update({"--no-" + o[2:]: Flag(dest, 0) for o in options if o.startswith("--")})
    return out
