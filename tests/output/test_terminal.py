from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import pytest

from pipeline.engines.results import StageResult
from pipeline.output.live import LiveReporter
from pipeline.output.terminal import GroupedReporter, PlainReporter, make_reporter
from pipeline.settings.secrets import Masker
from tests.cli import run_cli
from tests.docker_env import DockerEnv
from tests.e2e_project import SECRET as TOKEN
from tests.e2e_project import make_the_test_stage_fail, write_project

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


BUILDKIT = [
    "#1 [internal] load build definition from Dockerfile",
    "#1 sha256:4024e0e0ce899d08466efa4da832cbda56270ca6897ccd68046ac36d2ac2d95f",
    "#1 DONE 0.0s",
    "",
    "#4 [deps 1/3] FROM localhost:5000/busybox:1@sha256:" + "9" * 64,
    "#4 DONE 0.0s",
    "#6 [deps 2/3] COPY deps.txt /deps/",
    "#6 CACHED",
    "#7 [app 2/2] RUN make",
    f"#7 0.312 echo {SECRET}",
]


def test_plain_lines_are_stage_events_and_each_step_once() -> None:
    stream = io.StringIO()
    reporter = PlainReporter(stream, Masker([SECRET]))
    for name in ("deps", "app"):
        reporter.update(StageResult(0, name, "pending", "k", None))
    reporter.update(StageResult(1, "app", "running", "k1", None, started=1.0))
    reporter.note("app", "missed: COPY src/ changed")
    for line in BUILDKIT:
        reporter.log("app", line)
    for line in BUILDKIT[4:8]:  # the same shared steps, in another build
        reporter.log("deps", line.replace("#", "#1"))
    reporter.note("app", "built in 2.0s, pushing its cache")
    reporter.update(results()[1])
    reporter.update(results()[0])
    reporter.warning("registry slow")
    assert stream.getvalue().splitlines() == [
        "[app] started",
        "[app] missed: COPY src/ changed",
        "[deps] [2/3] COPY deps.txt /deps/",
        "[app] [2/2] RUN make",
        "[app] built in 2.0s, pushing its cache",
        "[app] pushed to r/c:app-k1",
        "[deps] restored from r/c:deps-k0",
        "dagger-stages: warning: registry slow",
    ]


def test_a_failing_stage_gets_its_whole_log_masked() -> None:
    stream = io.StringIO()
    reporter = PlainReporter(stream, Masker([SECRET]))
    for line in BUILDKIT:
        reporter.log("test", line)
    reporter.update(results()[2])
    reporter.summary(results().values())
    text = stream.getvalue()
    assert SECRET not in text
    log = text.split("--- test: its log ---\n", 1)[1].split("--- end of test ---", 1)[0]
    assert log.splitlines() == [line.replace(SECRET, "***") for line in BUILDKIT]
    assert "last lines of its log" not in text  # shown whole already


def test_verbose_gives_every_line() -> None:
    stream = io.StringIO()
    reporter = make_reporter(Masker([SECRET]), stream, verbose=True)
    for line in BUILDKIT:
        reporter.log("app", line)
    assert stream.getvalue().splitlines() == [
        f"[app] {line}".replace(SECRET, "***") for line in BUILDKIT
    ]


def test_ci_providers_keep_their_folded_blocks() -> None:
    stream = io.StringIO()
    reporter = make_reporter(Masker(), stream, provider="github")
    assert isinstance(reporter, GroupedReporter)
    reporter.log("app", BUILDKIT[0])
    reporter.update(results()[1])
    assert stream.getvalue().splitlines()[0].startswith("::group::app: built in 2.3s")


def test_a_terminal_gets_the_live_table_and_a_summary_table() -> None:
    terminal = Terminal()
    reporter = make_reporter(Masker([SECRET]), terminal)
    assert isinstance(reporter, LiveReporter)
    for result in results().values():
        reporter.update(result)
    reporter.log("test", f"#3 [test 1/1] RUN run {SECRET}")
    reporter.close()
    reporter.summary(results().values())
    screen = terminal.getvalue()
    assert "r/c:app-k1" in screen
    assert "cached" in screen
    assert SECRET not in screen
    assert isinstance(make_reporter(Masker(), io.StringIO()), PlainReporter)


# -- real builds on the docker executor, as a CI log shows them ---------------------------------


@pytest.fixture
def project(tmp_path: Path, docker_env: DockerEnv) -> Path:
    return write_project(tmp_path, docker_env.base)


def build(project: Path, docker_env: DockerEnv, *args: str) -> subprocess.CompletedProcess[str]:
    command = docker_env.build_args("--cache-repo", docker_env.cache_repo())
    command += ["--secret", "id=token,env=TOKEN", "--target", "test", *args]
    return run_cli(*command, cwd=project, env={"TOKEN": TOKEN})


def test_a_four_stage_build_reads_in_about_30_lines(project: Path, docker_env: DockerEnv) -> None:
    result = build(project, docker_env)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) <= 32, result.stderr
    assert len(lines) == len(set(lines)), "a line repeats"
    for stage in ("deps", "assets", "app", "test"):
        assert f"[{stage}] started" in lines
        assert any(line.startswith(f"[{stage}] pushed to ") for line in lines)
    steps = [line for line in lines if re.match(r"\[\w+\] \[\d+/\d+\] ", line)]
    assert len(steps) == 8, steps  # each stage's steps, once, shared or not, FROM left out
    assert "[app] [2/3] COPY src/ /app/src/" in steps
    assert not [line for line in lines if re.search(r"#\d+ |sha256:", line)]


def test_a_failing_stage_prints_its_whole_log(project: Path, docker_env: DockerEnv) -> None:
    make_the_test_stage_fail(project)
    result = build(project, docker_env)
    assert result.returncode == 1
    log = result.stderr.split("--- test: its log ---\n", 1)[1].split("--- end of test ---")[0]
    # from its start; BuildKit numbers its two first steps (the Dockerfile, .dockerignore) in
    # whichever order they report first
    assert re.search(r"^#[12] \[internal\] load build definition from Dockerfile$", log, re.M)
    assert "tests are red" in log
    assert TOKEN not in result.stderr


def test_verbose_prints_every_build_line(project: Path, docker_env: DockerEnv) -> None:
    result = build(project, docker_env, "--verbose")
    assert result.returncode == 0, result.stderr
    for stage in ("deps", "assets", "app", "test"):
        line = rf"^\[{stage}\] #[12] \[internal\] load build definition from Dockerfile$"
        assert re.search(line, result.stderr, re.M), stage
