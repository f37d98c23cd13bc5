"""What a build shows while it runs: the reporters the runner talks to.

On a terminal, a live table with a row per stage (`output.live`); on GitHub and GitLab, each
stage's lines as one collapsible block; elsewhere, one line per stage event that a CI log
reads: started, restored, each step, built, pushed, failed, with a failing stage's whole log.
`--verbose` gives every line of every build and push, each prefixed by its stage.

A reporter hears three kinds of text: `log`, the engine's lines for a stage (BuildKit's
progress, the docker CLI's push), which are noise until a stage fails; `note`, the tool's own
line about a stage (why it missed, what it builds on, the test command's output), always
shown; and `warning`. Every line that leaves through here has known secret values masked, as
a last line of defence. The masker is the run's `settings.secrets.Masker`.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Protocol, TextIO

from pipeline.engines.results import Status
from pipeline.output.progress import BuildProgress
from pipeline.output.report import summary

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pipeline.engines.results import StageResult
    from pipeline.settings.secrets import Masker

__all__ = [
    "GroupedReporter",
    "PlainReporter",
    "TerminalReporter",
    "make_reporter",
]


class TerminalReporter(Protocol):
    """What `BuildRun` asks of any of them."""

    def update(self, result: StageResult) -> None: ...

    def log(self, stage: str, line: str) -> None: ...

    def note(self, stage: str, line: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def close(self) -> None: ...

    def summary(self, results: Iterable[StageResult]) -> None: ...


class PlainReporter:
    """Lines for CI logs, `[stage] event`: one per stage event, each step once.

    Several builds run a step they share (a stage they all need): each build prints it, under
    its own `#` number. It is shown once, under the stage BuildKit says it belongs to. A
    failing stage's whole log follows its `failed` line, so the cause is in the log even when
    it came early in a long build.
    """

    def __init__(self, stream: TextIO, masker: Masker, *, verbose: bool = False) -> None:
        self._stream = stream
        self._mask = masker
        self._verbose = verbose
        self._lock = threading.Lock()
        self._lines: dict[str, list[str]] = {}
        self._progress: dict[str, BuildProgress] = {}
        self._stages: set[str] = set()
        self._steps: set[str] = set()

    def _print(self, text: str) -> None:
        with self._lock:
            print(self._mask(text), file=self._stream, flush=True)

    def update(self, result: StageResult) -> None:
        self._stages.add(result.name)
        text = _event(result)
        if text is not None:
            self._print(f"[{result.name}] {text}")
        if result.status is Status.FAILED and not self._verbose:
            self._print_log(result.name)

    def _print_log(self, stage: str) -> None:
        lines = self._lines.get(stage, [])
        if lines:
            self._print("\n".join([f"--- {stage}: its log ---", *lines, f"--- end of {stage} ---"]))

    def log(self, stage: str, line: str) -> None:
        self._lines.setdefault(stage, []).append(line)
        if self._verbose:
            self._print(f"[{stage}] {line}")
            return
        step = self._progress.setdefault(stage, BuildProgress()).feed(line)
        if step is None or step.is_from or str(step) in self._steps:
            return
        self._steps.add(str(step))
        owner = step.stage if step.stage in self._stages else stage
        self._print(f"[{owner}] {step.label}")

    def note(self, stage: str, line: str) -> None:
        self._lines.setdefault(stage, []).append(line)
        self._print(f"[{stage}] {line}")

    def warning(self, message: str) -> None:
        self._print(f"dagger-stages: warning: {message}")

    def close(self) -> None:
        return None

    def summary(self, results: Iterable[StageResult]) -> None:
        """How each stage ended; the failures' logs were shown as they failed."""
        self._print(summary(results, self._mask, tails=self._verbose))


def _event(result: StageResult) -> str | None:
    """The line a stage's new state gets: `started`, `pushed to …`, `failed in 2.1s: …`."""
    if result.status is Status.RUNNING:
        return "started"
    if result.status is Status.CACHED:
        return f"restored from {result.cache_ref}"
    if result.status is Status.SKIPPED:
        return "skipped: only restored stages need it"
    if result.status is Status.BUILT and result.digest is not None:
        return f"pushed to {result.cache_ref}"  # `built in …` was noted before the push
    if result.status is Status.BUILT and result.push_error is not None:
        return "cache not pushed"  # the runner has warned why
    if result.status.done:
        return result.describe()
    return None


class GroupedReporter(PlainReporter):
    """CI logs: each stage's lines are held back and printed as one collapsible block when it
    ends (`::group::` on GitHub, `section_start` on GitLab), so parallel stages don't interleave.

    `output.ci_formats` is imported where a marker is printed: no other reporter needs it, and
    its import is a cost of every run's start-up.
    """

    def __init__(self, stream: TextIO, masker: Masker, provider: str) -> None:
        super().__init__(stream, masker)
        self._provider = provider
        self._held: dict[str, list[str]] = {}

    def log(self, stage: str, line: str) -> None:
        self._held.setdefault(stage, []).append(line)

    def note(self, stage: str, line: str) -> None:
        self.log(stage, line)

    def update(self, result: StageResult) -> None:
        if not result.status.done or result.name not in self._held:
            text = _event(result)
            if text is not None:
                self._print(f"[{result.name}] {text}")
            return
        header = f"{result.name}: {result.describe()}"
        self._flush(result.name, header)
        if self._provider == "github" and result.status is Status.FAILED:
            from pipeline.output import ci_formats

            self._print(ci_formats.github_error(header, title=result.name, masker=self._mask))

    def _flush(self, stage: str, header: str) -> None:
        from pipeline.output import ci_formats

        lines = self._held.pop(stage, [])
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
        for stage in list(self._held):
            self._flush(stage, f"{stage}: more output")

    def summary(self, results: Iterable[StageResult]) -> None:
        """The blocks are folded: the end of each failure's log shows under the summary."""
        self._print(summary(results, self._mask))


def make_reporter(
    masker: Masker,
    stream: TextIO | None = None,
    *,
    provider: str = "local",
    verbose: bool = False,
) -> TerminalReporter:
    """GitHub and GitLab get folded blocks per stage (every line is in them), a terminal the
    live table, others lines; `verbose` gets every line outside the blocks too."""
    stream = stream or sys.stderr
    if provider in ("github", "gitlab"):
        return GroupedReporter(stream, masker, provider)
    if stream.isatty() and not verbose:
        from pipeline.output.live import LiveReporter

        return LiveReporter(stream, masker)
    return PlainReporter(stream, masker, verbose=verbose)
