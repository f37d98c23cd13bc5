"""The live view on a terminal: a row per stage, its status, a running timer and its step.

rich redraws the table four times a second from `_render`, whatever the builds print, so a
silent `RUN sleep 60` still shows its timer moving. The step is the one in progress as
BuildKit names it (`[2/5] RUN composer install`), never a vertex id or a digest, and is cut at
a word boundary to the width left. The tool's own lines about a stage (why it missed, the test
command's output) and warnings print above the table. When the run ends the table gives way to
each failure's whole log, then a summary table: status, time and cache ref of every stage.

Updates come from the event loop's thread, redraws from rich's: a lock keeps them apart.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pipeline.engines.results import Status
from pipeline.output.progress import BuildProgress, shorten

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pipeline.engines.results import StageResult
    from pipeline.settings.secrets import Masker

__all__ = ["REFRESH_PER_SECOND", "LiveReporter"]

REFRESH_PER_SECOND = 4
_STATUS_WIDTH = len("cancelled")
_TIME_WIDTH = len("1000.0s")
_STYLES = {
    Status.RUNNING: "cyan",
    Status.BUILT: "green",
    Status.CACHED: "green",
    Status.FAILED: "bold red",
    Status.CANCELLED: "yellow",
}


class LiveReporter:
    def __init__(self, stream: TextIO, masker: Masker) -> None:
        self._console = Console(file=stream, highlight=False)
        self._mask = masker
        self._lock = threading.Lock()
        self._rows: dict[str, StageResult] = {}
        self._doing: dict[str, str] = {}
        self._progress: dict[str, BuildProgress] = {}
        self._lines: dict[str, list[str]] = {}
        self._live = Live(
            console=self._console,
            get_renderable=self._render,
            refresh_per_second=REFRESH_PER_SECOND,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def _render(self) -> Table:
        with self._lock:
            rows = list(self._rows.values())
            doing = dict(self._doing)
        width = max((len(result.name) for result in rows), default=5)
        room = max(10, self._console.width - width - _STATUS_WIDTH - _TIME_WIDTH - 6)
        table = Table(box=None, pad_edge=False, show_header=False)
        table.add_column("stage", no_wrap=True)
        table.add_column("status", no_wrap=True, width=_STATUS_WIDTH)
        table.add_column("time", no_wrap=True, justify="right", width=_TIME_WIDTH)
        table.add_column("step", no_wrap=True)
        now = time.monotonic()
        for result in rows:
            step = doing.get(result.name, "building") if result.status is Status.RUNNING else ""
            table.add_row(
                result.name,
                Text(str(result.status), style=_STYLES.get(result.status, "")),
                _seconds(result, now),
                Text(shorten(self._mask(step), room), style="dim"),
            )
        return table

    def update(self, result: StageResult) -> None:
        with self._lock:
            before = self._rows.get(result.name)
            if result.status is Status.RUNNING and (before is None or before.started is None):
                self._doing.pop(result.name, None)  # a note from before it started
            self._rows[result.name] = result

    def log(self, stage: str, line: str) -> None:
        """Only what the line says the build is doing now is kept for the row."""
        with self._lock:
            self._lines.setdefault(stage, []).append(line)
            progress = self._progress.setdefault(stage, BuildProgress())
            progress.feed(line)
            doing = progress.current(stage)
            if doing is not None:
                self._doing[stage] = doing

    def note(self, stage: str, line: str) -> None:
        with self._lock:
            self._lines.setdefault(stage, []).append(line)
            self._doing[stage] = line
        self._console.print(Text(f"[{stage}] {self._mask(line)}"))

    def warning(self, message: str) -> None:
        self._console.print(Text("warning: ", style="yellow") + Text(self._mask(message)))

    def close(self) -> None:
        self._live.stop()

    def summary(self, results: Iterable[StageResult]) -> None:
        """Each failure's whole log, then the table of how every stage ended."""
        ordered = list(results)
        for result in ordered:
            lines = self._lines.get(result.name, [])
            if result.status is Status.FAILED and lines:
                self._console.rule(f"{result.name}: its log", style="red")
                self._console.print(Text(self._mask("\n".join(lines))))
                self._console.rule(style="red")
        table = Table(box=None, pad_edge=False)
        table.add_column("stage", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        table.add_column("cache ref or error", overflow="fold")
        for result in ordered:
            outcome = result.cache_ref if result.status.has_image else result.error
            table.add_row(
                result.name,
                Text(str(result.status), style=_STYLES.get(result.status, "")),
                _seconds(result, time.monotonic()),
                Text(self._mask(outcome or "")),
            )
        self._console.print(table)


def _seconds(result: StageResult, now: float) -> str:
    seconds = result.seconds
    if seconds is None and result.started is not None and result.status is Status.RUNNING:
        seconds = now - result.started
    return "" if seconds is None else f"{seconds:.1f}s"
