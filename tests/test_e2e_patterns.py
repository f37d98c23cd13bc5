"""The real-world patterns built for real (tests/patterns.py): a cold build with the stage cache,
one change (an edit of a context file, or another target platform), a second build that must
rebuild exactly the stages expected and restore the rest, and a final image whose files and
config are those of a clean `docker build --no-cache` of the changed build.

Only the cases dockerd 20.10's built-in frontend can build have a `real_build`: it has no
heredocs, `--link`, `--parents` or `--exclude`, and does not follow an ONBUILD trigger's `--from`.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cli import run_cli
from tests.docker_env import DockerEnv, read_report
from tests.patterns import Case, edit, load_cases

REAL = [case for case in load_cases() if case.real_build is not None]
# What a restored stage or one that only restored stages needed reports.
NOT_REBUILT = {"cached", "skipped"}
CONFIG = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User")


def build(case: Case, project: Path, docker_env: DockerEnv, cache_repo: str) -> dict[str, str]:
    """`build` with the stage cache; each needed stage's status. The report is written beside
    the project, never into its context."""
    command = docker_env.build_args(
        "--cache-repo",
        cache_repo,
        f"--dockerfile={project / case.dockerfile}",
        f"--context={project}",
        f"--report={project.parent / 'report.json'}",
        *case.options(),
    )
    result = run_cli(*command, cwd=project)
    assert result.returncode == 0, result.stderr
    report = read_report(project.parent / "report.json")
    return {name: stage["status"] for name, stage in report.items()}


def config(docker_env: DockerEnv, image: str) -> dict[str, Any]:
    shown = docker_env.run("image", "inspect", "--format", "{{json .Config}}", image).stdout
    document: dict[str, Any] = json.loads(shown)
    return {name: document.get(name) for name in CONFIG}


@pytest.mark.parametrize("case", REAL, ids=lambda case: case.id)
def test_a_change_rebuilds_exactly_what_it_reaches_and_the_image_is_a_clean_builds(
    case: Case, tmp_path: Path, docker_env: DockerEnv
) -> None:
    assert case.real_build is not None
    project = case.copy_to(tmp_path)
    cache_repo = docker_env.cache_repo()
    clean = f"patterns-{uuid.uuid4().hex[:12]}:clean"
    try:
        cold = build(case, project, docker_env, cache_repo)
        assert cold == dict.fromkeys(case.stages, "built")

        change = case.real_build
        if change.edit is not None:
            edit(project, change.edit)
        if change.platform is not None:
            case = dataclasses.replace(case, platform=change.platform)
        warm = build(case, project, docker_env, cache_repo)
        built = {name for name, status in warm.items() if status == "built"}
        assert built == change.built, warm
        assert set(warm.values()) <= {"built", *NOT_REBUILT}, warm

        (target,) = json.loads((tmp_path / "report.json").read_text())["targets"]
        image = read_report(tmp_path / "report.json")[target]["cache_ref"]
        docker_env.build_clean(
            "-t", clean, "-f", str(project / case.dockerfile), *case.options(), str(project)
        )
        assert docker_env.image_files(image) == docker_env.image_files(clean)
        assert config(docker_env, image) == config(docker_env, clean)
    finally:
        images = docker_env.run("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        ours = [name for name in images if name.startswith(f"{cache_repo}:")]
        docker_env.run("rmi", "-f", clean, *ours, check=False)
