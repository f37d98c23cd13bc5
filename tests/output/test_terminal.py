from __future__ import annotations

import io

from pipeline.engines.runner import StageResult
from pipeline.output.terminal import (
    LiveReporter,
    PlainReporter,
    make_reporter,
    report_json,
    summary,
)
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


def test_summary_shows_each_stage_and_the_failure_tail_masked() -> None:
    text = summary(results(), Masker([SECRET]))
    assert text.splitlines()[:4] == [
        "  deps   cached: restored from r/c:deps-k0",
        "  app    built in 2.3s, cache pushed to r/c:app-k1",
        "  test   failed in 1.0s: echo *** failed",
        "  final  cancelled: test failed",
    ]
    assert text.splitlines()[4:] == ["--- test: last lines of its log ---", "x", "***"]


def test_report_json_contract() -> None:
    document = report_json(
        results(),
        ok=False,
        engine="docker",
        targets=["final"],
        cache_repo="r/c",
        seconds=3.14159,
        masker=Masker([SECRET]),
    )
    assert SECRET not in repr(document)
    assert document["seconds"] == 3.142
    assert document["stages"][1] == {
        "name": "app",
        "status": "built",
        "key": "k1",
        "cache_ref": "r/c:app-k1",
        "digest": "sha256:" + "b" * 64,
        "seconds": 2.345,
        "error": None,
    }
    assert [s["status"] for s in document["stages"]] == ["cached", "built", "failed", "cancelled"]
