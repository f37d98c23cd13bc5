from __future__ import annotations

import io

from pipeline.engines.results import StageResult
from pipeline.output.terminal import LiveReporter, PlainReporter, make_reporter
from pipeline.settings.secrets import Masker

SECRET = "hunter2-secret"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def results() -> dict[int, StageResult]:
    return {
        0: StageResult(0, "deps", "cached", "k0", "r/c:deps-k0", "sha256:" + "a" * 64),
        1: StageResult(1, "app", "built", "k1", "r/c:app-k1", "sha256:" + "b" * 64, 2.345),
        2: StageResult(
            2, "test", "failed", "k2", None, None, 1.0, f"echo {SECRET} failed", f"x\n{SECRET}\n"
        ),
        3: StageResult(3, "final", "cancelled", "k3", None, error="test failed"),
    }


def test_plain_reporter_prefixes_lines_and_masks() -> None:
    stream = io.StringIO()
    reporter = PlainReporter(stream, Masker([SECRET]))
    reporter.update(StageResult(1, "app", "running", "k1", None))
    reporter.log("app", f"#5 echo {SECRET}")
    reporter.update(results()[1])
    reporter.warning("registry slow")
    assert stream.getvalue().splitlines() == [
        "[app] building",
        "[app] #5 echo ***",
        "[app] built in 2.3s, cache pushed to r/c:app-k1",
        "dagger-stages: warning: registry slow",
    ]


def test_a_terminal_gets_the_live_table() -> None:
    terminal = Terminal()
    reporter = make_reporter(Masker([SECRET]), terminal)
    assert isinstance(reporter, LiveReporter)
    for result in results().values():
        reporter.update(result)
    reporter.log("test", f"running {SECRET}")
    reporter.close()
    screen = terminal.getvalue()
    assert "deps" in screen
    assert "cached" in screen
    assert SECRET not in screen
    assert isinstance(make_reporter(Masker(), io.StringIO()), PlainReporter)


def test_the_live_table_shows_brackets_in_log_lines_and_warnings_as_written() -> None:
    """BuildKit's errors quote the command in brackets, which rich would read as markup."""
    terminal = Terminal()
    reporter = make_reporter(Masker(), terminal)
    reporter.update(StageResult(0, "test", "running", "k0", None))
    reporter.log("test", "executor failed running [/bin/sh -c echo 'red' && exit 7]: exit code: 7")
    reporter.warning("test: [/bin/sh -c exit 7] [bold]failed")
    reporter.close()
    screen = terminal.getvalue()
    assert "[/bin/sh -c echo 'red' && exit 7]" in screen
    assert "[/bin/sh -c exit 7] [bold]failed" in screen
