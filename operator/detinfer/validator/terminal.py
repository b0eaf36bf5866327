"""What a person sees of a run: a progress bar and a table on a terminal (rich), plain lines and
a plain table in a log.

rich is imported only when stdout is a terminal and rich is installed (the `validator` extra),
so the validator runs without it.
"""

from __future__ import annotations

from typing import IO, Any

from detinfer.api.status import SuiteOutcome, Verdict
from detinfer.validator.report import Report, SuiteReport
from detinfer.validator.suites import Progress, SuiteRecord

SUITE_COLUMNS = (
    "suite",
    "samples",
    "unique",
    "compared",
    "result",
    "tokens",
    "seconds",
    "first divergence / note",
)
"""compared: output tokens compared (characters, `N chars`, where a server gave text only);
tokens: tokens generated."""
RESULT_WORDS = {
    SuiteOutcome.PASSED: "passed",
    SuiteOutcome.FAILED: "FAILED",
    SuiteOutcome.SKIPPED: "skipped",
    SuiteOutcome.COULD_NOT_TEST: "could not test",
}


def suite_row(suite: SuiteReport) -> tuple[str, ...]:
    """One suite as the report's table shows it."""
    if suite.outcome == SuiteOutcome.SKIPPED:
        note = suite.skipped or ""
    elif suite.outcome == SuiteOutcome.COULD_NOT_TEST:
        note = suite.could_not_test or ""
    else:
        note = suite.first_divergence or "; ".join(suite.notes)
    return (
        suite.name,
        str(suite.samples),
        str(suite.unique_outputs),
        (
            f"{suite.characters_compared} chars"
            if suite.characters_compared and not suite.tokens_compared
            else str(suite.tokens_compared)
        ),
        RESULT_WORDS[suite.outcome],
        str(suite.generated_tokens),
        f"{suite.seconds:.1f}",
        note,
    )


def render_text(report: Report) -> str:
    """The report as a plain table for a log."""
    rows = [SUITE_COLUMNS, *(suite_row(suite) for suite in report.suites)]
    cells = len(SUITE_COLUMNS) - 1  # the note, last, is not padded
    left = (0, SUITE_COLUMNS.index("result"))
    widths = [max(len(r[i]) for r in rows) for i in range(cells)]
    lines = [
        "  ".join(
            [
                cell.ljust(widths[i]) if i in left else cell.rjust(widths[i])
                for i, cell in enumerate(row[:cells])
            ]
            + [row[cells]]
        ).rstrip()
        for row in rows
    ]
    lines.append("")
    lines.extend(summary_lines(report))
    return "\n".join(lines)


def summary_lines(report: Report) -> list[str]:
    lines = []
    for endpoint in report.endpoints:
        model = _model_of(endpoint.server)
        fp = endpoint.fingerprint or "none"
        lines.append(
            f"{endpoint.name}: {endpoint.url}"
            + (f", model {model}" if model else "")
            + f", compared on {endpoint.compared_on or 'nothing yet'}, fingerprint {fp}"
        )
        if endpoint.unchecked:
            lines.append(f"{endpoint.name}: not confirmed: {'; '.join(endpoint.unchecked)}")
    lat = (
        f"latency p50 {report.latency_p50_milliseconds:.1f} ms, "
        f"p95 {report.latency_p95_milliseconds:.1f} ms; "
        if report.latency_p50_milliseconds is not None
        and report.latency_p95_milliseconds is not None
        else ""
    )
    tps = f"{report.tokens_per_second:.0f} tokens/s; " if report.tokens_per_second else ""
    compared = (
        compared_words(report.tokens_compared, report.logprobs_compared, report.characters_compared)
        + "; "
    )
    lines.append(
        f"{compared}{lat}{tps}{report.generated_tokens} tokens generated, {report.prompt_tokens} prompt "
        f"tokens, {report.requests} requests in {report.duration_seconds:.1f} s"
    )
    return lines


def compared_words(tokens: int, logprobs: int, characters: int | None) -> str:
    """What was compared, in words, naming only what there was: a run on text alone says how
    many characters, not "0 tokens and 0 logprobs" (issue #28)."""
    parts = []
    if tokens or not characters:
        parts.append(f"{tokens} tokens")
    if logprobs:
        parts.append(f"{logprobs} logprobs")
    if characters:
        parts.append(f"{characters} characters of text")
    if len(parts) == 1 and tokens and not characters:
        return f"{parts[0]} compared (no logprobs)"
    return " and ".join(parts) + " compared"


def _model_of(server: dict[str, Any]) -> str | None:
    info = server.get("modelInfo")
    if isinstance(info, dict) and isinstance(info.get("model_path"), str):
        return info["model_path"]
    model = server.get("model")
    return model if isinstance(model, str) else None


def describe_record(record: SuiteRecord) -> str:
    outcome = record.outcome
    if outcome == SuiteOutcome.SKIPPED:
        return f"skipped: {record.skipped}"
    line = (
        f"{record.samples} samples, {record.unique_outputs} unique, "
        + compared_words(
            record.evidence.tokens,
            record.evidence.logprobs,
            record.evidence.characters if record.evidence.text_only else None,
        )
        + f", {RESULT_WORDS[outcome]}, {record.generated_tokens} tokens generated, "
        f"{record.seconds:.1f} s"
    )
    if record.first_divergence:
        line += f": {record.first_divergence}"
    elif outcome == SuiteOutcome.COULD_NOT_TEST:
        line += f": {record.evidence.missing}"
    return line


class PlainProgress(Progress):
    """One line per finished suite and endpoint."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def suite_done(self, endpoint: str, record: SuiteRecord) -> None:
        print(f"{endpoint}: {record.name}: {describe_record(record)}", file=self.stream, flush=True)


class RichProgress(Progress):
    """A progress bar per endpoint; finished suites are logged above the bars."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.console = console
        self.bars = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.tasks: dict[str, Any] = {}

    def begin(self, totals: dict[str, int]) -> None:
        self.bars.start()
        for name, total in totals.items():
            self.tasks[name] = self.bars.add_task(name, total=total)

    def advance(self, endpoint: str, steps: int = 1) -> None:
        if endpoint in self.tasks:
            self.bars.advance(self.tasks[endpoint], steps)

    def suite_done(self, endpoint: str, record: SuiteRecord) -> None:
        style = "green" if record.passed else "bold red"
        self.console.print(
            f"{endpoint}: {record.name}: [{style}]{describe_record(record)}[/]", highlight=False
        )

    def end(self) -> None:
        self.bars.stop()


class Terminal:
    """Chooses rich or plain output for a stream once, and prints through it."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.console: Any = None
        if _isatty(stream):
            try:
                from rich.console import Console
            except ImportError:
                pass
            else:
                self.console = Console(file=stream)

    def progress(self) -> Progress:
        return RichProgress(self.console) if self.console else PlainProgress(self.stream)

    def line(self, text: str) -> None:
        if self.console:
            self.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def report(self, report: Report) -> None:
        if not self.console:
            print(render_text(report), file=self.stream, flush=True)
            return
        from rich.table import Table

        table = Table(title="detinfer validate")
        right = {"samples", "unique", "compared", "tokens", "seconds"}
        for column in SUITE_COLUMNS:
            table.add_column(column, justify="right" if column in right else "left")
        styles = {
            "passed": "[green]passed[/]",
            "FAILED": "[bold red]FAILED[/]",
            "skipped": "[yellow]skipped[/]",
            "could not test": "[bold yellow]could not test[/]",
        }
        result = SUITE_COLUMNS.index("result")
        for suite in report.suites:
            row = suite_row(suite)
            table.add_row(*row[:result], styles[row[result]], *row[result + 1 :])
        self.console.print(table)
        for text in summary_lines(report):
            self.console.print(text, highlight=False, markup=False)

    def verdict(self, verdict: Verdict, reason: str) -> None:
        if self.console:
            style = {
                Verdict.DETERMINISTIC: "bold green",
                Verdict.COULD_NOT_TEST: "bold yellow",
            }.get(verdict, "bold red")
            self.console.print(reason, style=style, highlight=False, markup=False)
        else:
            print(reason, file=self.stream, flush=True)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
