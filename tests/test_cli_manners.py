"""Unix manners of the real command: a reader that goes away ends it quietly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.errors import EXIT_PIPE
from tests.cli import cli_command
from tests.conftest import FIXTURES


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ("plan", "--offline", "--json"),
        ("plan", "--offline"),
        ("plan", "--offline", "--format", "mermaid"),
        ("--help",),
        ("prune", "--help"),
        ("--version",),
    ],
)
def test_a_closed_pipe_ends_quietly_with_141(args: tuple[str, ...], tmp_path: Path) -> None:
    """`plan --json | head`, made deterministic: the read end is closed before anything is
    written, so every write fails as the one after `head` has gone would."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            cli_command(*args),
            cwd=FIXTURES / "php",
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert result.returncode == EXIT_PIPE
    assert "internal error" not in result.stderr
    assert "Traceback" not in result.stderr
    assert "BrokenPipeError" not in result.stderr
