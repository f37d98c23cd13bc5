"""`dagger-stages shell` for real, driven under a pseudo-terminal as a person would drive it:
wait for the shell's prompt, type a command, read its output, exit with a code, and check
that code is the command's. On the docker executor (the local dockerd and registry) and on
the Dagger executor (the engine double)."""

from __future__ import annotations

import os
import pty
import select
import shlex
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipeline.dockerfile.platforms import native_platform
from tests.cli import cli_command, run_cli
from tests.docker_env import DockerEnv
from tests.e2e_project import SECRET, make_the_test_stage_fail, write_project

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tests.engine_double import EngineDouble

PROMPT = b"/ # "  # busybox sh, interactive, in / (the project sets no WORKDIR)
HANG = 120  # seconds without output before the test gives up: a guard, not a timing


@pytest.fixture
def project(tmp_path: Path, docker_env: DockerEnv) -> Path:
    folder = tmp_path / f"shell-{uuid.uuid4().hex[:10]}"
    folder.mkdir()
    return write_project(folder, docker_env.base)


def drive(argv: Sequence[str], cwd: Path, typed: bytes) -> tuple[int, str]:
    """Run `argv` on a pseudo-terminal; at the shell's prompt type `typed`; read to the end.

    Returns the exit code and everything the terminal showed.
    """
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, on the terminal
        os.chdir(cwd)
        os.execve(argv[0], list(argv), {**os.environ, "TOKEN": SECRET})
    seen = b""
    sent = False
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], HANG)
            assert ready, f"no output for {HANG}s; so far:\n{seen.decode(errors='replace')}"
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            seen += chunk
            if not sent and PROMPT in seen:
                os.write(fd, typed)
                sent = True
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def shell(docker_env: DockerEnv, cache_repo: str, *args: str) -> list[str]:
    return cli_command(
        "shell", "--engine", "docker", "--docker", docker_env.docker, "--cache-repo", cache_repo,
        "--secret", "id=token,env=TOKEN", *args,
    )  # fmt: skip


def test_a_shell_in_a_failing_stage_opens_it_before_the_failing_step(
    project: Path, docker_env: DockerEnv
) -> None:
    make_the_test_stage_fail(project)
    cache_repo = docker_env.cache_repo()
    try:
        code, screen = drive(
            shell(docker_env, cache_repo, "test"), project, b"cat /app/assets.list; exit 5\n"
        )
        assert code == 5, screen
        assert "tests are red" in screen
        assert (
            "test failed at Dockerfile:13 (RUN echo 'tests are red' && exit 7); this shell"
            " opens test just before that step, its last good layer"
        ) in screen
        typed_at = screen.rindex("cat /app/assets.list")
        assert "app.css" in screen[typed_at:]
    finally:
        docker_env.remove_images(cache_repo)


def test_a_shell_in_a_restored_stage_runs_a_command_after_two_dashes(
    project: Path, docker_env: DockerEnv
) -> None:
    cache_repo = docker_env.cache_repo()
    try:
        filled = run_cli(
            *docker_env.build_args("--cache-repo", cache_repo, "--secret", "id=token,env=TOKEN"),
            "--target", "app", cwd=project, env={"TOKEN": SECRET},
        )  # fmt: skip
        assert filled.returncode == 0, filled.stderr
        command = shell(docker_env, cache_repo, "app", "--", "sh", "-c", "cat /app/token.length")
        done = run_cli(*command[2:], cwd=project, env={"TOKEN": SECRET})
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [str(len(SECRET))]
        assert "[app] restored from" in done.stderr
        assert "loaded app as" not in done.stderr  # its name is private, and gone
        assert SECRET not in done.stdout + done.stderr
        again = run_cli(*command[2:-1], "exit 9", cwd=project, env={"TOKEN": SECRET})
        assert again.returncode == 9, again.stderr
    finally:
        docker_env.remove_images(cache_repo)


def test_a_shell_on_the_dagger_engine_opens_the_stage_loaded_into_docker(
    project: Path, docker_env: DockerEnv, engine_double: EngineDouble,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    engine_double.host_network = True
    monkeypatch.setenv("DAGGER_STAGES_ENGINE_REACHES", "*")
    cache_repo = docker_env.cache_repo()
    argv = cli_command(
        "shell", "--engine", "dagger", "--docker", docker_env.docker, "--cache-repo", cache_repo,
        "--secret", "id=token,env=TOKEN", "app",
    )  # fmt: skip
    try:
        code, screen = drive(argv, project, b"cat /app/token.length; exit 3\n")
        assert code == 3, screen
        typed_at = screen.rindex("cat /app/token.length")
        assert str(len(SECRET)) in screen[typed_at:]
    finally:
        docker_env.remove_images(cache_repo)


def test_a_failing_stage_on_the_dagger_engine_opens_before_its_failing_step(
    project: Path, docker_env: DockerEnv, engine_double: EngineDouble,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    engine_double.host_network = True
    monkeypatch.setenv("DAGGER_STAGES_ENGINE_REACHES", "*")
    make_the_test_stage_fail(project)
    cache_repo = docker_env.cache_repo()
    argv = cli_command(
        "shell", "--engine", "dagger", "--docker", docker_env.docker, "--cache-repo", cache_repo,
        "--secret", "id=token,env=TOKEN", "test", "--", "cat", "/app/assets.list",
    )  # fmt: skip
    try:
        done = run_cli(*argv[2:], cwd=project, env={"TOKEN": SECRET})
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["app.css"]
        assert "test failed at Dockerfile:13" in done.stderr
    finally:
        docker_env.remove_images(cache_repo)


def test_a_failed_stage_says_the_one_command_that_reproduces_it_and_that_command_works(
    project: Path, docker_env: DockerEnv
) -> None:
    """The way back from CI: the failure's log line and its JUnit message name the command;
    run as written (with a command after `--`), it opens the stage before its failing step."""
    make_the_test_stage_fail(project)
    cache_repo = docker_env.cache_repo()
    junit = project / "junit.xml"
    try:
        failed = run_cli(
            *docker_env.build_args("--cache-repo", cache_repo, "--secret", "id=token,env=TOKEN"),
            "--build-arg", "UNUSED=1", "--junit", str(junit), "--target", "test",
            cwd=project, env={"TOKEN": SECRET},
        )  # fmt: skip
        assert failed.returncode == 1
        line = next(line for line in failed.stderr.splitlines() if line.startswith("[test] failed"))
        command = line.split("; reproduce locally: ", 1)[1]
        assert command == (
            f"dagger-stages shell test --build-arg UNUSED=1 --platform {native_platform()}"
            f" --secret id=token,env=TOKEN --cache-repo {cache_repo}"
        )
        assert f"reproduce locally: {command}" in junit.read_text()
        assert SECRET not in failed.stderr + junit.read_text()

        words = shlex.split(command)
        assert words[0] == "dagger-stages"
        argv = [*words[1:], "--engine", "docker", "--docker", docker_env.docker]
        again = run_cli(*argv, "--", "cat", "/app/assets.list", cwd=project, env={"TOKEN": SECRET})
        assert again.returncode == 0, again.stderr
        assert again.stdout.split() == ["app.css"]
        assert "[deps] skipped" in again.stderr  # CI's cache stands in for what passed
    finally:
        docker_env.remove_images(cache_repo)
