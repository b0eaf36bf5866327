"""engine.attentionBackend Auto: serve each candidate in turn, then the cheapest that passed.

A pure step at the start of plan(). The search serves one candidate at a time as the revision
(the spec with that backend instead of Auto), so a trial is an ordinary revision: the same
Deployment, the same validation Job, the same overhead measurement (spec.overhead, which Auto
requires), with the same trust rules. Pods of the last backend that passed keep serving while
the next is tried (maxUnavailable 0, readiness gates), so the search never takes traffic away.

A trial ends when its revision has a failed verdict, or a pass and an overhead measurement, or
when neither came within trial_limit_seconds (recorded as CouldNotTest, never chosen). Once
every candidate has had its trial, the one that passed with the lowest measured overhead is
chosen and served from then on; a new search revision (any change of the spec's revision)
starts over. The state is status.attentionSearch; nothing else is remembered.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from detinfer.api.constants import Reason as R
from detinfer.api.resource import DeterministicInferenceService
from detinfer.api.spec import AttentionBackend, DeterministicInferenceServiceSpec
from detinfer.api.status import (
    AttentionSearchStatus,
    AttentionTrial,
    DeterministicInferenceServiceStatus,
    Verdict,
)
from detinfer.api.timestamps import format_time, parse_time
from detinfer.builders.common import revision_of
from detinfer.controller.writes import Event
from detinfer.engines import kinds


def with_backend(
    dis: DeterministicInferenceService, backend: AttentionBackend
) -> DeterministicInferenceService:
    """The resource as if its spec named `backend` (what every builder then renders)."""
    engine = dis.spec.engine.model_copy(update={"attention_backend": backend})
    spec = dis.spec.model_copy(update={"engine": engine})
    return dis.model_copy(update={"spec": spec})


def trial_limit_seconds(spec: DeterministicInferenceServiceSpec) -> int:
    """How long one trial may take: rollout and validation (validation.timeoutSeconds), then
    the baseline's start and the benchmark (overhead.timeoutSeconds each)."""
    return spec.validation.timeout_seconds + 2 * spec.overhead.timeout_seconds


def plan_search(
    dis: DeterministicInferenceService,
    old: DeterministicInferenceServiceStatus,
    now: datetime,
) -> tuple[AttentionSearchStatus | None, DeterministicInferenceService, list[Event]]:
    """The new status.attentionSearch (None without Auto), the resource to render (the spec
    with the backend served now), and Events for each trial started or finished and the
    choice."""
    if dis.spec.engine.attention_backend != AttentionBackend.AUTO:
        return None, dis, []
    out: list[Event] = []
    search_revision = revision_of(dis)
    candidates = list(kinds.of(dis.spec).auto_candidates(dis.spec))
    search = old.attention_search
    if search is None or (search.search_revision, search.candidates) != (
        search_revision,
        candidates,
    ):
        search = _start(
            out,
            AttentionSearchStatus(search_revision=search_revision, candidates=candidates),
            candidates[0],
            now,
        )
    while search.trying is not None:
        trying = search.trying
        trial = _finished_trial(with_backend(dis, trying), trying, old, search, now)
        if trial is None:
            return search, with_backend(dis, trying), out
        out.append(
            Event(
                "Normal" if trial.verdict == Verdict.DETERMINISTIC else "Warning",
                R.ATTENTION_TRIAL_FINISHED,
                f"attentionBackend {trying.value}: {_describe(trial)}"[:1024],
            )
        )
        search = search.model_copy(update={"trials": [*search.trials, trial]})
        tried = {t.backend for t in search.trials}
        following = next((b for b in candidates if b not in tried), None)
        search = _start(out, search, following, now) if following else _choose(out, search)
    return search, with_backend(dis, search.chosen or candidates[0]), out


def _start(
    out: list[Event], search: AttentionSearchStatus, backend: AttentionBackend, now: datetime
) -> AttentionSearchStatus:
    done = len(search.trials)
    out.append(
        Event(
            "Normal",
            R.ATTENTION_TRIAL_STARTED,
            f"attentionBackend Auto: trying {backend.value} "
            f"({done + 1} of {len(search.candidates)})",
        )
    )
    return search.model_copy(
        update={"trying": backend, "trial_started_time": format_time(now), "message": ""}
    )


def _finished_trial(
    trial_dis: DeterministicInferenceService,
    backend: AttentionBackend,
    old: DeterministicInferenceServiceStatus,
    search: AttentionSearchStatus,
    now: datetime,
) -> AttentionTrial | None:
    """The trial of `backend` once its part is over; None while it runs."""
    revision = revision_of(trial_dis)
    run = old.validation if old.validation and old.validation.revision == revision else None
    measurement = old.overhead if old.overhead and old.overhead.revision == revision else None
    if run is not None and run.verdict.failed:
        return AttentionTrial(
            backend=backend, revision=revision, verdict=run.verdict, message=run.message[:512]
        )
    if run is not None and run.verdict == Verdict.DETERMINISTIC and measurement is not None:
        return AttentionTrial(
            backend=backend,
            revision=revision,
            verdict=run.verdict,
            overhead_percent=measurement.headline_percent if measurement.measured else None,
            message="" if measurement.measured else measurement.message[:512],
        )
    started = parse_time(search.trial_started_time)
    limit = trial_limit_seconds(trial_dis.spec)
    if started is not None and now - started < timedelta(seconds=limit):
        return None
    waited = (
        "an overhead measurement" if run and run.verdict == Verdict.DETERMINISTIC else "a verdict"
    )
    return AttentionTrial(
        backend=backend,
        revision=revision,
        verdict=run.verdict
        if run and run.verdict == Verdict.DETERMINISTIC
        else Verdict.COULD_NOT_TEST,
        message=f"no {waited} within {limit} s (validation.timeoutSeconds + 2 x "
        "overhead.timeoutSeconds)",
    )


def _choose(out: list[Event], search: AttentionSearchStatus) -> AttentionSearchStatus:
    passed = [t for t in search.trials if t.verdict == Verdict.DETERMINISTIC]
    measured = [t for t in passed if t.overhead_percent is not None]
    if measured:
        best = min(measured, key=lambda t: t.overhead_percent or 0.0)  # first of equals
        message = (
            f"{best.backend.value}: the lowest overhead of the {len(measured)} backend(s) that "
            f"passed, {best.overhead_percent:+.1f}%"
        )
    elif passed:
        best = passed[0]
        message = f"{best.backend.value}: passed, and no backend's overhead could be measured"
    else:
        message = (
            "no candidate passed validation; serving "
            f"{search.candidates[0].value}, the first, whose verdict Validated shows"
        )
        out.append(Event("Warning", R.ATTENTION_BACKEND_CHOSEN, message))
        return search.model_copy(update={"trying": None, "chosen": None, "message": message})
    out.append(Event("Normal", R.ATTENTION_BACKEND_CHOSEN, message))
    return search.model_copy(update={"trying": None, "chosen": best.backend, "message": message})


def _describe(trial: AttentionTrial) -> str:
    if trial.verdict == Verdict.DETERMINISTIC and trial.overhead_percent is not None:
        return f"passed, overhead {trial.overhead_percent:+.1f}%"
    if trial.verdict == Verdict.DETERMINISTIC:
        return f"passed, overhead not measured: {trial.message}"
    return f"{trial.verdict.value}: {trial.message}"
