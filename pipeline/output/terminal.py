"""What a build shows while it runs: the reporters the runner talks to.

On a terminal, a live table with a row per stage; on GitHub and GitLab, each stage's lines as
one collapsible block; elsewhere, plain lines a CI log can read, each prefixed by its stage.
Every line that leaves through here has known secret values masked, as a last line of defence.
The masker is the run's `settings.secrets.Masker`.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from pipeline.engines.results import Status
from pipeline.output import ci_formats

if TYPE_CHECKING:
    from pipeline.engines.results import StageResult
    from pipeline.settings.secrets import Masker

__all__ = [
    "GroupedReporter",
    "LiveReporter",
    "PlainReporter",
    "make_reporter",
]


class PlainReporter:
    """Lines for CI logs: `[stage] …`, and a status line whenever a stage changes state."""

    def __init__(self, stream: TextIO, masker: Masker) -> None:
        self._stream = stream
        self._mask = masker
        self._lock = threading.Lock()

    def _print(self, text: str) -> None:
        with self._lock:
            print(self._mask(text), file=self._stream, flush=True)

    def update(self, result: StageResult) -> None:
        if result.status is Status.RUNNING:
            self._print(f"[{result.name}] building")
        elif result.status.done:
            self._print(f"[{result.name}] {result.describe()}")

    def log(self, stage: str, line: str) -> None:
        self._print(f"[{stage}] {line}")

    def warning(self, message: str) -> None:
        self._print(f"dagger-stages: warning: {message}")

    def close(self) -> None:
        return None


class GroupedReporter(PlainReporter):
    """CI logs: each stage's lines are held back and printed as one collapsible block when it
    ends (`::group::` on GitHub, `section_start` on GitLab), so parallel stages don't interleave.
    """

    def __init__(self, stream: TextIO, masker: Masker, provider: str) -> None:
        super().__init__(stream, masker)
        self._provider = provider
        self._lines: dict[str, list[str]] = {}

    def log(self, stage: str, line: str) -> None:
        self._lines.setdefault(stage, []).append(line)

    def update(self, result: StageResult) -> None:
        if not result.status.done or result.name not in self._lines:
            super().update(result)
            return
        header = f"{result.name}: {result.describe()}"
        self._flush(result.name, header)
        if self._provider == "github" and result.status is Status.FAILED:
            self._print(ci_formats.github_error(header, title=result.name, masker=self._mask))

    def _flush(self, stage: str, header: str) -> None:
        lines = self._lines.pop(stage, [])
        if self._provider == "github":
            block = [ci_formats.github_group_start(header), *lines, ci_formats.github_group_end()]
        else:
            now = int(time.time())
            name = f"stage_{stage}"
            start = ci_formats.gitlab_section_start(name, header, collapsed=True, now=now)
            block = [start, *lines, ci_formats.gitlab_section_end(name, now=now)]
        self._print("\n".join(block))

    def close(self) -> None:
        """Lines logged after their stage ended, such as the test command's, as blocks too."""
        for stage in list(self._lines):
            self._flush(stage, f"{stage}: more output")


class LiveReporter:
    """A rich table that redraws in place, one row per stage, with its latest log line."""

    def __init__(self, stream: TextIO, masker: Masker) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=stream)
        self._mask = masker
        self._rows: dict[str, StageResult] = {}
        self._last: dict[str, str] = {}
        self._live = Live(console=self._console, refresh_per_second=8, transient=False)
        self._live.start()

    def _render(self) -> Any:
        """Log lines and names are shown as they are: a `[...]` in them is no rich markup."""
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, pad_edge=False)
        for column in ("stage", "status", "time", "last line"):
            table.add_column(column, no_wrap=column != "last line", overflow="ellipsis")
        now = time.monotonic()
        for name, result in self._rows.items():
            seconds = result.seconds
            if seconds is None and result.started is not None:
                seconds = now - result.started
            table.add_row(
                Text(name),
                result.status,
                "" if seconds is None else f"{seconds:.1f}s",
                Text(self._mask(self._last.get(name, ""))),
            )
        return table

    def update(self, result: StageResult) -> None:
        self._rows[result.name] = result
        self._live.update(self._render())

    def log(self, stage: str, line: str) -> None:
        if line.strip():
            self._last[stage] = line.strip()[:120]
            self._live.update(self._render())

    def warning(self, message: str) -> None:
        from rich.markup import escape

        warning = f"[yellow]warning:[/] {escape(self._mask(message))}"
        self._console.print(warning, markup=True, highlight=False)

    def close(self) -> None:
        self._live.stop()


def make_reporter(
    masker: Masker, stream: TextIO | None = None, *, provider: str = "local"
) -> PlainReporter | LiveReporter:
    """GitHub and GitLab get folded blocks per stage, a terminal the live table, others lines."""
    stream = stream or sys.stderr
    if provider in ("github", "gitlab"):
        return GroupedReporter(stream, masker, provider)
    if stream.isatty():
        return LiveReporter(stream, masker)
    return PlainReporter(stream, masker)
