"""The live view as a person sees it: a real build in a pseudo-terminal, read frame by frame."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import uuid
from pathlib import Path

from tests.cli import cli_command
from tests.docker_env import DockerEnv

_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_a_terminal(command: list[str], cwd: Path, columns: int = 120) -> tuple[int, str]:
    """The command's exit code and everything it drew, escape sequences left out."""
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)}
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdin=terminal, stdout=terminal, stderr=terminal
    ) as process:
        os.close(terminal)
        screen = b""
        while True:
            ready, _, _ = select.select([main], [], [], 300)
            if not ready:
                process.kill()
                break
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the command has ended and closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        code = process.wait(timeout=60)
    os.close(main)
    return code, _ESCAPE.sub("", screen.decode(errors="replace"))


def test_the_timer_of_a_silent_step_advances_on_screen(
    tmp_path: Path, docker_env: DockerEnv
) -> None:
    (tmp_path / "Dockerfile").write_text(
        f"FROM {docker_env.base} AS base\n"
        "RUN echo base > /base\n"
        "FROM base AS slow\n"
        # unique per run: the daemon is shared, and a cached step shows no timer
        f"RUN sleep 3 && echo {uuid.uuid4().hex} > /slow\n"
        "RUN echo done > /done\n"
    )
    command = cli_command(*docker_env.build_args("--cache-repo", docker_env.cache_repo()))
    code, screen = run_in_a_terminal(command, tmp_path)
    assert code == 0, screen
    row = re.compile(r"slow\s+running\s+(\d+\.\d)s\s+\[1/2\] RUN sleep 3 && echo")
    timers = [float(seconds) for seconds in row.findall(screen)]
    assert len(set(timers)) >= 2, screen
    assert max(timers) > min(timers)
    assert not re.search(r"#\d+ ", screen), screen  # no BuildKit vertex ids
    assert "sha256:" not in screen
    summary = screen.rsplit("cache ref or error", 1)[1]
    assert re.search(r"slow\s+built\s+\d+\.\ds\s+localhost:5000/e2e-\w+/cache:slow-", summary)
