"""spec.engine.extraArgs against the engine's real flags: the refused flags, their CEL rules, and
the check by the flag table that the CRD cannot express.

SGLang parses its command line with a plain argparse.ArgumentParser (allow_abbrev=True): a
unique prefix of a flag is read as the flag, and "--flag=value" as well as "--flag value" set it.
So a refused flag is refused by argparse dest (all its aliases, in any release) and in every
abbreviation. extraArgs may use the flags of the release in spec.engine.version
(detinfer.engines.sglang.flags); an exact flag name is never taken for an abbreviation.

Enforced twice, with the same messages: the CRD's CEL rules (built here, the same for every
release; the API server and `detinfer render` run them) refuse refused flags, their
abbreviations, whitespace and --config; `flag_errors` with the pinned release's flags (run by
api.resource.parse_dis, that is by render and by the operator) refuses the rest: unknown
flags, other abbreviations, flags that release lacks, missing or stray values.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from detinfer.api.cel import CelRule
from detinfer.engines.flags import Nargs
from detinfer.engines.reference import flags as reference_flags
from detinfer.engines.sglang import flags as sglang_flags

# extraArgs the operator refuses: flag -> why, with every alias SGLang defines for the same dest
# added below. Both "--flag value" and "--flag=value" are caught, and so is every abbreviation.
MANAGED_FLAGS: dict[str, str] = {
    "--model-path": "set spec.model.path instead",
    "--model": "set spec.model.path instead",
    "--revision": "set spec.model.revision instead",
    "--host": "the operator sets the listen address",
    "--port": "the operator sets the port (30000)",
    "--attention-backend": "set spec.engine.attentionBackend instead",
    "--prefill-attention-backend": "it would override spec.engine.attentionBackend",
    "--decode-attention-backend": "it would override spec.engine.attentionBackend",
    "--tp-size": "set spec.engine.tensorParallelSize instead",
    "--tensor-parallel-size": "set spec.engine.tensorParallelSize instead",
    "--random-seed": "set spec.engine.samplingSeed instead",
    "--enable-deterministic-inference": "the operator always sets it (spec.engine.deterministicInference)",
    "--disable-radix-cache": "set spec.engine.radixCache: Disabled instead",
    "--disable-cuda-graph": "set spec.engine.cudaGraph: Disabled instead",
    # The per-phase spellings (0.5.14 on) override --disable-cuda-graph in SGLang.
    "--cuda-graph-backend-decode": "it would override spec.engine.cudaGraph",
    "--cuda-graph-backend-prefill": "it would override spec.engine.cudaGraph",
    "--cuda-graph-config": "it would override spec.engine.cudaGraph",
    "--disable-decode-cuda-graph": "set spec.engine.cudaGraph: Disabled instead",
    "--disable-prefill-cuda-graph": "set spec.engine.cudaGraph: Disabled instead",
    "--enable-metrics": "the operator always sets it",
}
NONDETERMINISTIC_FLAGS: dict[str, str] = {
    "--speculative-algorithm": "speculative decoding is not deterministic in SGLang",
    "--speculative-draft-model-path": "speculative decoding is not deterministic in SGLang",
}
UNSAFE_FLAGS: dict[str, str] = {
    # python/sglang/srt/server_args.py, prepare_server_args: the file's options are merged into
    # the command line, so it could carry any flag refused here.
    "--config": "SGLang would read more flags from that file, unchecked",
    "--help": "the engine would print its help and exit instead of serving",
}
# Flags whose value is a credential: in extraArgs it would be a literal in the Deployment's args,
# readable by anyone who may read the pod, the Deployment or this resource.
CREDENTIAL_FLAGS: dict[str, str] = {
    "--api-key": "a key in extraArgs is readable by anyone who may read the pods or this "
    "resource; name its Secret in spec.engine.apiKeySecret instead",
    "--admin-api-key": "a key in extraArgs is readable by anyone who may read the pods or this "
    "resource; name its Secret in spec.engine.adminApiKeySecret instead (unset, each pod makes "
    "its own)",
    "--ssl-keyfile-password": "a password in extraArgs is readable by anyone who may read the "
    "pods or this resource, and detinfer serves the engine over plain HTTP inside the cluster",
}
SAMPLING_BACKEND = "--sampling-backend"
# Deterministic mode forces the pytorch sampler; any other sampler breaks it.
SAMPLING_BACKEND_WHY = "deterministic inference needs the pytorch sampler"
ALLOWED_SAMPLING_BACKEND = "--sampling-backend=pytorch"
# The reference engine gets --device from spec.resources.gpusPerReplica.
REFERENCE_DEVICE = "--device"
REFERENCE_DEVICE_WHY = "the operator sets it from spec.resources.gpusPerReplica"
# The reference engine's test tool (engine/faults.py): it plants a known nondeterminism.
PLANTED_FAULT = "--planted-fault"
PLANTED_FAULT_WHY = (
    "a test tool that plants a known nondeterminism in the reference engine, never part of a "
    "deployment"
)

# What argparse takes for a value although it starts with "-" (its _negative_number_matcher).
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
# Whitespace in one item: argparse never reads "--flag value" given as one word as the flag.
_WHITESPACE = "[ \\t\\n\\r\\f\\v]"


def _with_aliases(flags: dict[str, str]) -> dict[str, str]:
    """`flags` plus every option string that has the same dest in some SGLang release."""
    out = dict(flags)
    for version_flags in sglang_flags.by_version().values():
        for flag, why in flags.items():
            if flag not in version_flags:
                continue
            dest = version_flags[flag].dest
            for option, other in sorted(version_flags.items()):
                if other.dest == dest:
                    out.setdefault(option, why)
    return out


MANAGED_FLAGS = _with_aliases(MANAGED_FLAGS)
NONDETERMINISTIC_FLAGS = _with_aliases(NONDETERMINISTIC_FLAGS)
UNSAFE_FLAGS = _with_aliases(UNSAFE_FLAGS)
CREDENTIAL_FLAGS = _with_aliases(CREDENTIAL_FLAGS)


@functools.cache
def sampling_backend_flags() -> dict[str, str]:
    """--sampling-backend and its aliases -> why; "<flag>=pytorch" is allowed."""
    return _with_aliases(
        {SAMPLING_BACKEND: f"{SAMPLING_BACKEND_WHY} (only {ALLOWED_SAMPLING_BACKEND} is allowed)"}
    )


@functools.cache
def refused_flags() -> dict[str, str]:
    """Every option string extraArgs must not hold (any engine kind) -> why."""
    return {
        **MANAGED_FLAGS,
        **NONDETERMINISTIC_FLAGS,
        **UNSAFE_FLAGS,
        **CREDENTIAL_FLAGS,
        **sampling_backend_flags(),
    }


# ---- messages (the CEL rules' and flag_errors' alike) ----


def abbreviation_refused(flag: str, why: str) -> str:
    return f"is an abbreviation of {flag}, which extraArgs must not contain: {why}"


WHITESPACE_REFUSED = (
    "holds whitespace: the engine would not read it as a flag; give the flag and its value as "
    "two items, or as --flag=value without spaces"
)


def _prefixes_pattern(flag: str) -> str:
    """RE2 for `flag` or any prefix of it ("--" and at least one more character)."""
    if not re.fullmatch(r"--[a-z0-9][a-z0-9-]+", flag):  # nothing to escape, in RE2 or CEL
        raise ValueError(f"unexpected flag name {flag!r}")
    nested = ""
    for char in reversed(flag[3:]):
        nested = f"({char}{nested})?"
    return f"{flag[2]}{nested}"


# An item that is a credential flag or an abbreviation of one, alone or with a value after "="
# or whitespace: its messages never repeat it, since the rest may be the credential itself.
CREDENTIAL_ITEM = (
    "^--("
    + "|".join(_prefixes_pattern(f) for f in sorted(CREDENTIAL_FLAGS) if f.startswith("--"))
    + f")(=|{_WHITESPACE}|$)"
)
HIDDEN_ITEM = "The item (not shown: it may hold a credential)"


def _quoted(token: str, message: str) -> str:
    if re.search(CREDENTIAL_ITEM, token):
        return f"{HIDDEN_ITEM} {message}"
    return f"'{token}' {message}"


def _quoted_cel(message: str) -> str:
    """A messageExpression that says what _quoted says."""
    return (
        f"self.matches('{CREDENTIAL_ITEM}') ? \"{HIDDEN_ITEM} {message}\" : "
        f'"\'" + self + "\' {message}"'
    )


# ---- the CRD's rules ----


def _flag_rule(flag: str, why: str) -> CelRule:
    return CelRule(
        rule=f"!self.extraArgs.exists(a, a == '{flag}' || a.startsWith('{flag}='))",
        message=f"extraArgs must not contain {flag}: {why}",
        field_path=".extraArgs",
        reason="FieldValueForbidden",
    )


def _sampling_backend_rule(flag: str) -> CelRule:
    allowed = f"{flag}=pytorch"
    return CelRule(
        rule=(
            f"!self.extraArgs.exists(a, a == '{flag}' || "
            f"(a.startsWith('{flag}=') && a != '{allowed}'))"
        ),
        message=f"extraArgs must not contain {flag} other than {allowed}: {SAMPLING_BACKEND_WHY}",
        field_path=".extraArgs",
        reason="FieldValueForbidden",
    )


REFERENCE_DEVICE_RULE = CelRule(
    rule=(
        f"self.kind != 'Reference' || !self.extraArgs.exists(a, a == '{REFERENCE_DEVICE}' || "
        f"a.startsWith('{REFERENCE_DEVICE}='))"
    ),
    message=f"extraArgs must not contain {REFERENCE_DEVICE} with kind: Reference: "
    f"{REFERENCE_DEVICE_WHY}",
    field_path=".extraArgs",
    reason="FieldValueForbidden",
)


REFERENCE_PLANTED_FAULT_RULE = CelRule(
    rule=(
        f"self.kind != 'Reference' || !self.extraArgs.exists(a, a == '{PLANTED_FAULT}' || "
        f"a.startsWith('{PLANTED_FAULT}='))"
    ),
    message=f"extraArgs must not contain {PLANTED_FAULT} with kind: Reference: {PLANTED_FAULT_WHY}",
    field_path=".extraArgs",
    reason="FieldValueForbidden",
)


def engine_rules() -> tuple[CelRule, ...]:
    """Rules on EngineSpec: the refused flags by exact name, "--flag" and "--flag=value"."""
    sampling = sampling_backend_flags()
    exact = {
        flag: why
        for flag, why in {
            **MANAGED_FLAGS,
            **NONDETERMINISTIC_FLAGS,
            **UNSAFE_FLAGS,
            **CREDENTIAL_FLAGS,
        }.items()
        if flag not in sampling
    }
    return (
        *(_flag_rule(flag, why) for flag, why in exact.items()),
        *(_sampling_backend_rule(flag) for flag in sampling),
        REFERENCE_DEVICE_RULE,
        REFERENCE_PLANTED_FAULT_RULE,
    )


def _wherever(option: str, flag: str) -> bool:
    """Whether `option` is a flag of every release, or of every release that has `flag`."""
    releases = sglang_flags.releases()
    if option in every_release_flags():
        return True
    return (
        option in releases
        and flag in releases
        and set(releases[flag].flags) <= set(releases[option].flags)
    )


def _prefix_pattern(flag: str) -> str:
    """RE2 for a proper prefix of `flag` ("--" and at least one more character), alone or
    with "=value": "--port" gives ^--p(o(r)?)?(=|$)."""
    if not re.fullmatch(r"--[a-z0-9][a-z0-9-]+", flag):  # nothing to escape, in RE2 or CEL
        raise ValueError(f"unexpected flag name {flag!r}")
    body = flag[2:-1]
    nested = ""
    for char in reversed(body[1:]):
        nested = f"({char}{nested})?"
    return f"^--{body[0]}{nested}(=|$)"


def _abbreviation_rule(flag: str, why: str) -> CelRule:
    # A flag that is itself a prefix of `flag` is that flag, not an abbreviation (argparse takes
    # exact names first), in every release that has it: the rule (which cannot see
    # engine.version) exempts those of every release, and those of every release that has
    # `flag` (--ssl-keyfile beside --ssl-keyfile-password, both from 0.5.10).
    exact = sorted(
        o
        for o in sglang_flags.releases()
        if o != flag and flag.startswith(o) and o.startswith("--") and _wherever(o, flag)
    )
    rule = f"!self.matches('{_prefix_pattern(flag)}')"
    for other in exact:
        rule += f" || self == '{other}' || self.startsWith('{other}=')"
    message = abbreviation_refused(flag, why)
    return CelRule(
        rule=rule,
        message=message,
        message_expression=_quoted_cel(message),
        reason="FieldValueForbidden",
    )


WHITESPACE_RULE = CelRule(
    rule=f"!self.startsWith('-') || !self.matches('{_WHITESPACE}')",
    message=WHITESPACE_REFUSED,
    message_expression=_quoted_cel(WHITESPACE_REFUSED),
    reason="FieldValueForbidden",
)


@functools.cache
def item_rules() -> tuple[CelRule, ...]:
    """Rules on each extraArgs item: whitespace, and an abbreviation of any refused flag."""
    long_flags = {f: why for f, why in refused_flags().items() if f.startswith("--")}
    return (WHITESPACE_RULE, *(_abbreviation_rule(f, w) for f, w in long_flags.items()))


# ---- the check by the flag table ----


@dataclass(frozen=True)
class EngineFlags:
    """The flags one engine kind accepts in extraArgs."""

    name: str
    usable: dict[str, Nargs]
    """Exact option strings extraArgs may use -> argparse nargs."""
    elsewhere: dict[str, str]
    """Option strings not usable although some release has them -> why (a message)."""
    refused: dict[str, str]
    """Option strings extraArgs must not contain -> why."""
    every_option: frozenset[str]
    """Every option string of any release: what an abbreviation may stand for."""


@functools.cache
def every_release_flags() -> frozenset[str]:
    return frozenset(o for o, p in sglang_flags.releases().items() if p.everywhere)


@functools.cache
def sglang(version: str | None = None) -> EngineFlags:
    """The flags of SGLang `version`; with None, those every supported release knows alike."""
    if version is not None:
        return _sglang_release(version)
    usable: dict[str, Nargs] = {}
    elsewhere: dict[str, str] = {}
    for option, presence in sglang_flags.releases().items():
        nargs = {flag.nargs for flag in presence.flags.values()}
        if presence.everywhere and len(nargs) == 1:
            usable[option] = nargs.pop()
        elif presence.everywhere:
            elsewhere[option] = (
                "takes different numbers of values in different supported SGLang releases, so "
                "the items after it would not mean the same in each"
            )
        else:
            elsewhere[option] = (
                f"is not a flag of every supported SGLang release (only of {presence.span()}); "
                f"extraArgs may use the flags that all of {sglang_flags.supported_range()} know"
            )
    return EngineFlags(
        name=f"SGLang {sglang_flags.supported_range()}",
        usable=usable,
        elsewhere=elsewhere,
        refused=refused_flags(),
        every_option=frozenset(sglang_flags.releases()),
    )


def _sglang_release(version: str) -> EngineFlags:
    own = sglang_flags.by_version()[version]
    elsewhere = {
        option: (
            f"is not a flag of SGLang {version} (spec.engine.version; only of {presence.span()})"
        )
        for option, presence in sglang_flags.releases().items()
        if option not in own
    }
    return EngineFlags(
        name=f"SGLang {version}",
        usable={option: flag.nargs for option, flag in own.items()},
        elsewhere=elsewhere,
        refused=refused_flags(),
        every_option=frozenset(own),
    )


@functools.cache
def reference() -> EngineFlags:
    """The reference engine's flags, from the table generated from its own parser
    (engines/reference/flags.py): the API layer does not import the engine."""
    usable = {option: nargs for option, (nargs, _) in reference_flags.FLAGS.items()}
    dests = {option: dest for option, (_, dest) in reference_flags.FLAGS.items()}
    refused = {o: why for o, why in refused_flags().items() if o in usable}
    refused[REFERENCE_DEVICE] = REFERENCE_DEVICE_WHY
    refused[PLANTED_FAULT] = PLANTED_FAULT_WHY
    by_dest = {dests[o]: why for o, why in refused.items() if o in dests}
    refused.update({o: by_dest[d] for o, d in dests.items() if d in by_dest})
    return EngineFlags(
        name="detinfer engine",
        usable=usable,
        elsewhere={},
        refused=refused,
        every_option=frozenset(usable),
    )


def _arity(nargs: Nargs) -> tuple[int, float]:
    if nargs is None:
        return 1, 1
    if isinstance(nargs, int):
        return nargs, nargs
    return {"?": (0, 1), "*": (0, float("inf")), "+": (1, float("inf"))}[nargs]


def _describe(nargs: Nargs) -> str:
    low, high = _arity(nargs)
    if low == high:
        return "a value" if low == 1 else f"{low} values"
    return "one or more values" if low == 1 else "values"


def is_value(token: str) -> bool:
    """Whether argparse reads `token` as a value rather than as an option string."""
    return not token.startswith("-") or token == "-" or bool(_NEGATIVE_NUMBER.match(token))


def flag_errors(engine: EngineFlags, args: Sequence[str]) -> Iterator[tuple[int, str]]:
    """(index, message) for every extraArgs item `engine` would not read as meant.

    Tokenizes as argparse does: a flag that takes values consumes the value items after it
    (never an item that starts with "-", except a negative number). The refused flags by exact
    name are the CRD's rules' (they name no index); everything else is reported here, the
    CEL-checked cases with the CEL rules' very messages.
    """
    pending: tuple[int, str, Nargs, int] | None = None  # index, flag, nargs, values taken
    swallow = False  # values after a refused or unknown flag are not reported again
    for index, token in enumerate(args):
        if is_value(token):
            if pending is not None and pending[3] < _arity(pending[2])[1]:
                pending = (*pending[:3], pending[3] + 1)
            elif not swallow:
                yield index, _quoted(token, "is not a flag, and no flag before it takes a value")
            continue
        if pending is not None and pending[3] < _arity(pending[2])[0]:
            yield pending[0], _missing_value(pending[1], pending[2])
        pending, swallow = None, True
        messages, flag, value = _classify(engine, token)
        for message in messages:
            yield index, _quoted(token, message)
        if messages or flag is None:  # flag None: refused by the CRD's rules, by name
            continue
        nargs = engine.usable[flag]
        low, high = _arity(nargs)
        if value is None:
            pending, swallow = (index, flag, nargs, 0), False
        elif high == 0:
            yield index, _quoted(token, f"gives a value, but {flag} takes none")
        elif low > 1:
            yield index, _quoted(token, f"gives one value, but {flag} takes {_describe(nargs)}")
        else:
            swallow = False
    if pending is not None and pending[3] < _arity(pending[2])[0]:
        yield pending[0], _missing_value(pending[1], pending[2])


def _missing_value(flag: str, nargs: Nargs) -> str:
    return _quoted(
        flag,
        f"takes {_describe(nargs)}, and no value item follows it (an item that starts with '-' "
        f"is a flag to the engine: give such a value as {flag}=VALUE)",
    )


def _classify(engine: EngineFlags, token: str) -> tuple[list[str], str | None, str | None]:
    """(messages, the usable flag, its "=value") for an item that is an option string."""
    if re.search(_WHITESPACE, token):
        return [WHITESPACE_REFUSED], None, None
    if token == "--":
        return ["would end the engine's options: every item after it would be refused"], None, None
    option, _, value = token.partition("=")
    explicit = value if "=" in token else None
    refused = {**refused_flags(), **engine.refused}
    if option in refused:
        if not (option in sampling_backend_flags() and explicit == "pytorch"):
            return [], None, None  # the CRD's rules refuse it by name
        if option not in engine.usable:
            return [f"is not a flag of {engine.name}"], None, None
        return [], option, explicit
    # As the CRD's rules: a flag of every SGLang release is itself, never an abbreviation.
    abbreviated = [
        f
        for f in sorted(refused)
        if option.startswith("--") and len(option) > 2 and f.startswith(option) and f != option
    ]
    if abbreviated and option not in engine.usable and option not in every_release_flags():
        return [abbreviation_refused(f, refused[f]) for f in abbreviated], None, None
    if option in engine.usable:
        return [], option, explicit
    if option in engine.elsewhere:
        return [engine.elsewhere[option]], None, None
    meant = sorted(
        f
        for f in engine.every_option
        if option.startswith("--") and len(option) > 2 and f.startswith(option) and f != option
    )
    if meant:
        shown = ", ".join(meant[:4]) + (f" and {len(meant) - 4} more" if len(meant) > 4 else "")
        return (
            [
                f"is an abbreviation of {shown}: write the flag in full ({engine.name} would "
                "read a unique abbreviation as the full flag; detinfer checks full names only)"
            ],
            None,
            None,
        )
    return [f"is not a flag of {engine.name}"], None, None
