"""The project both executors' end-to-end tests build: four stages, one secret mount, and how
those tests read the report and interrupt a build."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.docker_env import read_report

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

SECRET = "s3cr3t-value-that-must-not-leak"

DOCKERFILE = """\
ARG BASE={base}
FROM $BASE AS deps
COPY deps.txt /deps/
RUN sleep 1 && cp /deps/deps.txt /deps/installed.txt
FROM $BASE AS assets
COPY assets/ /assets/
RUN sleep 1 && ls /assets > /assets.list
FROM deps AS app
COPY --from=assets /assets.list /app/assets.list
COPY src/ /app/src/
RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /app/token.length
FROM app AS test
RUN ls -R /app > /test.out
"""


def write_project(directory: Path, base: str) -> Path:
    (directory / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (directory / "deps.txt").write_text("deps 1\n")
    (directory / "assets").mkdir()
    (directory / "assets" / "app.css").write_text("body{}\n")
    (directory / "src").mkdir()
    (directory / "src" / "main.py").write_text("print(1)\n")
    return directory


def make_the_test_stage_fail(project: Path) -> None:
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "RUN ls -R /app > /test.out", "RUN echo 'tests are red' && exit 7"
        )
    )


def assert_only_the_test_stage_failed(
    result: subprocess.CompletedProcess[str], project: Path, tags: Sequence[str]
) -> None:
    """Exit 1 with the end of the failing log, and the stages that passed are in the cache."""
    assert result.returncode == 1
    assert "tests are red" in result.stderr
    assert "--- test: its log ---" in result.stderr
    assert "Traceback" not in result.stderr
    assert statuses(project) == {
        "deps": "built",
        "assets": "built",
        "app": "built",
        "test": "failed",
    }
    cached = [tag.split("-", 1)[0] for tag in tags if "--" not in tag]
    assert sorted(cached) == ["app", "assets", "deps"]


def statuses(project: Path) -> dict[str, str]:
    return {name: stage["status"] for name, stage in read_report(project / "report.json").items()}


def interrupt_while_building(
    command: Sequence[str], *, cwd: Path, env: Mapping[str, str], stage: str = "deps"
) -> tuple[int, str]:
    """Start the command, send SIGINT a second after `stage` starts building, as a CI runner
    cancelling a job does; its exit code and the output after the signal."""
    with subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if f"[{stage}] started" in line:
                break
        time.sleep(1)
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=30)
        finally:
            process.kill()
            rest = process.stdout.read()
    return code, rest
