"""The verdict of a run that ran to the end, from its suites and its endpoints' fingerprints."""

from __future__ import annotations

from collections.abc import Sequence

from detinfer.api.status import SuiteOutcome, Verdict
from detinfer.api.summary import REASON_LIMIT
from detinfer.validator.config import ValidatorConfig
from detinfer.validator.report import SUITE_NAMES, SuiteReport
from detinfer.validator.suites import clip


def decide(
    config: ValidatorConfig,
    suites: Sequence[SuiteReport],
    fingerprints: dict[str, str | None],
) -> tuple[Verdict, str, list[str], str | None]:
    """The verdict of a run that ran every suite on every endpoint: (verdict, reason, failed,
    fingerprint).

    A failure needs only the outputs that show it, so failures come first: nondeterminism
    found by a suite, fingerprints that differ between endpoints, then a fingerprint that is
    not the expected one. Then "could not test" where some suite's outputs (the fingerprint
    step's included) held no evidence. Deterministic only when every suite that ran passed.
    An endpoint whose fingerprint prompts gave no evidence has no fingerprint (None).
    """
    expected = config.expected_fingerprint
    distinct = sorted({fp for fp in fingerprints.values() if fp})
    everyone = all(fingerprints.values())
    common = distinct[0] if len(distinct) == 1 and everyone else None
    mismatched = [n for n, fp in fingerprints.items() if expected and fp and fp != expected]
    failed_suites = [s for s in suites if s.outcome == SuiteOutcome.FAILED]
    if failed_suites:
        first = failed_suites[0]
        more = len(failed_suites) - 1
        reason = f"not deterministic: {first.name}: {first.first_divergence}"
        if more:
            reason += f" (and {more} more suite{'s' if more > 1 else ''} failed)"
        failed = sorted({e for s in failed_suites for e in s.failed_endpoints} | set(mismatched))
        return Verdict.NOT_DETERMINISTIC, clip(reason, REASON_LIMIT), failed, common
    if expected and mismatched:
        got = ", ".join(f"{n} gave {fingerprints[n]}" for n in mismatched)
        reason = f"fingerprint mismatch: expected {expected}; {got}"
        return Verdict.FINGERPRINT_MISMATCH, clip(reason, REASON_LIMIT), mismatched, common
    if len(distinct) > 1:
        got = ", ".join(f"{n} {fp or 'none'}" for n, fp in fingerprints.items())
        reason = f"not deterministic: the endpoints gave different fingerprints: {got}"
        return Verdict.NOT_DETERMINISTIC, clip(reason, REASON_LIMIT), sorted(fingerprints), None
    lacking = [s for s in suites if s.outcome == SuiteOutcome.COULD_NOT_TEST]
    if lacking:
        first = lacking[0]
        reason = f"could not test: {first.name} on {first.could_not_test}"
        if len(lacking) > 1:
            more = len(lacking) - 1
            reason += f" (and {more} more suite{'s' if more > 1 else ''} could not test)"
        return Verdict.COULD_NOT_TEST, clip(reason, REASON_LIMIT), [], None
    ran = [s for s in suites if s.name in SUITE_NAMES and s.outcome == SuiteOutcome.PASSED]
    samples = sum(s.samples for s in ran)
    where = _names(list(fingerprints))
    if ran:
        what = (
            f"{len(ran)} suite{'s' if len(ran) > 1 else ''} "
            f"({', '.join(s.name for s in ran)}) gave one output per prompt in "
            f"{samples} samples on {where}"
        )
    else:
        what = f"no suite ran; the fingerprint prompts were answered on {where}"
    if expected:
        what += "; fingerprint as expected"
    return Verdict.DETERMINISTIC, clip(f"deterministic: {what}", REASON_LIMIT), [], common


def _names(names: list[str]) -> str:
    return (
        ", ".join(names) if len(names) <= 3 else f"{', '.join(names[:3])} and {len(names) - 3} more"
    )
