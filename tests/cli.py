"""The real command, as CI runs it: `python pipeline/main.py …` in a process of its own.

`run_cli` runs it to the end and returns its exit code and output; a test that must hold the
process (to signal it, read it line by line, or run two at once) starts `cli_command(…)` itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "pipeline" / "main.py"


def cli_command(*args: str) -> list[str]:
    """The script form, not the installed entry point: it runs from the checkout under test."""
    return [sys.executable, str(MAIN), *args]


def run_cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the command to its end; `env` is added to this process's environment.

    The default timeout leaves room for a real Docker build; it only stops a hung test.
    """
    return subprocess.run(
        cli_command(*args),
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def fresh_python(code: str) -> str:
    """What `code` prints in a new interpreter: which modules an import loads, as a run's
    start-up pays for them, cannot be seen in this test process, where they are loaded."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()
