"""Reproduce and debug locally, for real: `build --load` and `build --output` on the docker
executor (the local dockerd and registry) and on the Dagger executor (the engine double),
for a target built in the run and for one restored from the cache."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.docker_env import DockerEnv
from tests.e2e_project import SECRET, statuses, write_project
from tests.engine_double import EngineDouble


@pytest.fixture
def project(tmp_path: Path, docker_env: DockerEnv) -> Path:
    """A context folder of its own name: `--load`'s default name comes from it, and the
    daemon is shared."""
    folder = tmp_path / f"Local-{uuid.uuid4().hex[:10]}"
    folder.mkdir()
    return write_project(folder, docker_env.base)


@pytest.fixture(params=["docker", "dagger"])
def engine(
    request: pytest.FixtureRequest, docker_env: DockerEnv, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """The flags that choose the executor; Dagger's is the double, on the host's network."""
    if request.param == "docker":
        return ["--engine", "docker", "--docker", docker_env.docker]
    double: EngineDouble = request.getfixturevalue("engine_double")
    double.host_network = True
    monkeypatch.setenv("DAGGER_STAGES_ENGINE_REACHES", "*")
    return ["--engine", "dagger", "--docker", docker_env.docker]


def build(project: Path, engine: list[str], cache_repo: str, *args: str) -> str:
    command = ["build", *engine, "--cache-repo", cache_repo, "--secret", "id=token,env=TOKEN"]
    done = run_cli(
        *command, "--report", str(project / "report.json"), *args,
        cwd=project, env={"TOKEN": SECRET},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_load_puts_a_built_then_a_restored_target_in_docker(
    project: Path, docker_env: DockerEnv, engine: list[str]
) -> None:
    cache_repo = docker_env.cache_repo()
    name = f"{project.name.lower()}/app:dev"
    tag = f"e2e-load-{uuid.uuid4().hex[:8]}/{{target}}:v1"
    loaded = tag.replace("{target}", "app")
    try:
        cold = build(project, engine, cache_repo, "--target", "app", "--load")
        assert statuses(project)["app"] == "built"
        assert f"loaded app as {name}: docker run -it --rm {name}" in cold
        ran = docker_env.run("run", "--rm", name, "cat", "/app/assets.list", "/app/token.length")
        assert ran.stdout.split() == ["app.css", str(len(SECRET))]

        docker_env.run("rmi", name)
        build(project, engine, cache_repo, "--target", "app", "--load", "--load-tag", tag)
        assert statuses(project)["app"] == "cached"
        ran = docker_env.run("run", "--rm", loaded, "cat", "/app/assets.list")
        assert ran.stdout.split() == ["app.css"]
    finally:
        docker_env.remove_images(cache_repo, name, loaded)


def test_output_copies_a_directory_and_a_file_from_built_then_restored_stages(
    project: Path, docker_env: DockerEnv, engine: list[str]
) -> None:
    cache_repo = docker_env.cache_repo()
    out = project / "out"
    outputs = ["--output", f"assets:/assets={out}/assets", "--output", f"app:/app/src={out}"]
    outputs += ["--output", f"app:/app/assets.list={out}"]
    try:
        build(project, engine, cache_repo, "--target", "app", *outputs)
        assert statuses(project) == dict.fromkeys(["deps", "assets", "app"], "built")
        assert sorted(p.name for p in out.iterdir()) == ["assets", "assets.list", "main.py"]
        assert (out / "assets" / "app.css").read_text() == "body{}\n"
        assert (out / "assets.list").read_text() == "app.css\n"

        for path in [out / "assets" / "app.css", out / "assets.list", out / "main.py"]:
            path.unlink()
        build(project, engine, cache_repo, "--target", "app", *outputs)
        assert statuses(project) == {"deps": "skipped", "assets": "cached", "app": "cached"}
        assert (out / "assets" / "app.css").read_text() == "body{}\n"
        assert (out / "main.py").read_text() == "print(1)\n"
    finally:
        docker_env.remove_images(cache_repo)


def test_a_path_the_image_lacks_fails_the_run_and_says_which(
    project: Path, docker_env: DockerEnv
) -> None:
    cache_repo = docker_env.cache_repo()
    command = docker_env.build_args("--cache-repo", cache_repo, "--target", "assets")
    command += ["--output", f"assets:/nothing/here={project / 'out'}"]
    try:
        done = run_cli(*command, cwd=project)
        assert done.returncode == 1, done.stderr
        assert f"assets: /nothing/here not copied to {project / 'out'}" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        docker_env.remove_images(cache_repo)


def test_an_output_of_a_stage_the_file_lacks_is_a_usage_error(project: Path) -> None:
    done = run_cli("build", "--engine", "docker", "--output", "nope:/x=out", cwd=project)
    assert done.returncode == 2
    assert 'target stage "nope" could not be found' in done.stderr
