"""The README's first command and its samples: `scripts/quickstart` runs the main job for real,
and every sample output in README.md and docs/*.md matches what the commands print
(`scripts/readme_samples.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cli import ROOT
from tests.docker_env import DockerEnv

SAMPLES = ROOT / "scripts" / "readme_samples.py"
QUICKSTART = ROOT / "scripts" / "quickstart"
CHANGED = ROOT / "examples" / "quickstart" / "site" / "index.txt"


def check_samples(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SAMPLES), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def sections(output: str) -> dict[str, list[str]]:
    """The quickstart's output by section title's first word, its stages' log lines left out."""
    found: dict[str, list[str]] = {}
    for section in output.split("\n== ")[1:]:
        title, *lines = section.splitlines()
        found[title.split()[0]] = [line for line in lines if line and not line.startswith("[")]
    return found


def test_the_samples_that_need_no_service_match_the_commands() -> None:
    done = check_samples()
    assert done.returncode == 0, done.stderr


def test_the_quickstart_builds_cold_warm_and_after_a_change(
    docker_env: DockerEnv, tmp_path: Path
) -> None:
    """The README's first command (less the install, which the test run has done) as CI runs it
    on a fresh clone; its output is also what the README's quickstart samples must match."""
    before = CHANGED.read_bytes()
    report = tmp_path / "report.json"
    done = subprocess.run(
        ["bash", str(QUICKSTART), "--python", sys.executable],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # the summary is on stderr, the plans on stdout
        text=True,
        env={
            **os.environ,
            "DAGGER_STAGES_DOCKER": docker_env.docker,
            "PYTHONUNBUFFERED": "1",
            "QUICKSTART_REPORT": str(report),
        },
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout
    assert CHANGED.read_bytes() == before

    found = sections(done.stdout)
    cold, warm, changed = found["1/4"], found["2/4"], found["4/4"]
    assert [line.split()[:2] for line in cold] == [
        ["tools", "built"],
        ["site", "built"],
        ["app", "built"],
        ["test", "built"],
    ]
    assert [line.split()[1] for line in warm] == ["skipped", "skipped", "skipped", "cached:"]
    assert [line.split()[1] for line in changed] == ["cached:", "built", "built", "built"]
    assert "  site: COPY site/ changed: 1 file (site/index.txt)" in found["3/4"]

    output = tmp_path / "quickstart.out"
    output.write_text(done.stdout)
    checked = check_samples("--quickstart-output", str(output), "--quickstart-report", str(report))
    assert checked.returncode == 0, checked.stderr
