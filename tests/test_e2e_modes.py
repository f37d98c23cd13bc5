"""Permission bits for real: a chmod of a copied file rebuilds its stage, as a clean build would."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.cli import run_cli
from tests.docker_env import DockerEnv, read_report
from tests.e2e_project import statuses

DOCKERFILE = """\
FROM {base} AS conf
COPY conf/ /conf/

FROM {base} AS other
RUN echo other > /other

FROM conf AS app
COPY --from=other /other /other
"""
FILE = "/conf/settings"
DIRECTORY = "/conf/sub"


def write_project(root: Path, base: str) -> Path:
    (root / "conf" / "sub").mkdir(parents=True)
    (root / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (root / "conf" / "settings").write_text("secret=1\n")
    (root / "conf" / "sub" / "inner").write_text("inner\n")
    (root / "conf" / "settings").chmod(0o644)
    (root / "conf" / "sub").chmod(0o755)
    return root


def build(project: Path, docker_env: DockerEnv, cache_repo: str) -> None:
    command = docker_env.build_args("--cache-repo", cache_repo, "--target", "app")
    result = run_cli(*command, "--report", str(project / "report.json"), cwd=project)
    assert result.returncode == 0, result.stderr


def modes(docker_env: DockerEnv, image: str) -> tuple[str, str]:
    shown = docker_env.run("run", "--rm", image, "stat", "-c", "%a", FILE, DIRECTORY)
    file_mode, directory_mode = shown.stdout.split()
    return file_mode, directory_mode


def test_a_chmod_rebuilds_the_stage_with_the_clean_build_modes(
    tmp_path: Path, docker_env: DockerEnv
) -> None:
    project = write_project(tmp_path / "project", docker_env.base)
    cache_repo = docker_env.cache_repo()
    clean = f"e2e-modes-{uuid.uuid4().hex[:12]}:clean"
    try:
        build(project, docker_env, cache_repo)
        assert modes(docker_env, read_report(project / "report.json")["app"]["cache_ref"]) == (
            "644",
            "755",
        )

        (project / "conf" / "settings").chmod(0o600)
        (project / "conf" / "sub").chmod(0o700)
        build(project, docker_env, cache_repo)
        assert statuses(project) == {"conf": "built", "other": "cached", "app": "built"}

        docker_env.build_clean("--target", "app", "-t", clean, ".", cwd=project)
        expected = modes(docker_env, clean)
        assert expected == ("600", "700")
        via_cache = read_report(project / "report.json")["app"]["cache_ref"]
        assert modes(docker_env, via_cache) == expected
    finally:
        docker_env.remove_images(cache_repo, clean)
