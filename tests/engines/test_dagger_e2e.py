"""`build --engine dagger` for real: the Dagger executor on the engine double, which builds on
the local dockerd and pushes to the real registry, through the same scenarios as the docker
executor's end-to-end tests (tests/test_e2e_docker.py).

The double's network is the host's here (as an engine started with the host network, or with
localhost:5000 set insecure), so the cache at localhost:5000 is reachable; the rule that the
engine's loopback is its own has a test of its own.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli import cli_command, run_cli
from tests.docker_env import DockerEnv, read_report
from tests.e2e_project import (
    SECRET,
    assert_only_the_test_stage_failed,
    interrupt_while_building,
    make_the_test_stage_fail,
    statuses,
    write_project,
)
from tests.engine_double import EngineDouble
from tests.registry_server import RegistryServer

# Each test command's output is unique to its run, so it says whether the command ran.
TEST_CONFIG = """\
test:
  stage: test
  command: >-
    mkdir -p /out; date +%s%N > /out/ran; cat /out/ran;
    ls /run/secrets > /out/secrets 2>&1 || true; cp /test.out /out/test.out
  artifacts: [/out/ran, /out/secrets, /out/test.out]
"""


@pytest.fixture
def engine(engine_double: EngineDouble, monkeypatch: pytest.MonkeyPatch) -> EngineDouble:
    """The double, sharing the host's network so that localhost:5000 is the registry; the
    build is told so, as a user of such an engine tells it (`DAGGER_STAGES_ENGINE_REACHES`)."""
    engine_double.host_network = True
    monkeypatch.setenv("DAGGER_STAGES_ENGINE_REACHES", "*")
    return engine_double


@pytest.fixture
def project(tmp_path: Path, docker_env: DockerEnv) -> Path:
    return write_project(tmp_path, docker_env.base)


def build_args(cache_repo: str, *args: str) -> list[str]:
    return [
        "build",
        "--engine",
        "dagger",
        "--cache-repo",
        cache_repo,
        "--secret",
        "id=token,env=TOKEN",
        *args,
    ]


def build(
    project: Path, cache_repo: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = build_args(cache_repo, "--report", str(project / "report.json"), *args)
    return run_cli(*command, cwd=project, env={"TOKEN": SECRET, **(env or {})})


def test_cold_then_warm_then_one_change(
    project: Path, docker_env: DockerEnv, engine: EngineDouble
) -> None:
    cache_repo = docker_env.cache_repo()
    cold = build(project, cache_repo, "--target", "test")
    assert cold.returncode == 0, cold.stderr
    assert statuses(project) == dict.fromkeys(["deps", "assets", "app", "test"], "built")
    report = read_report(project / "report.json")
    tags = docker_env.tags(cache_repo)
    assert [tag for tag in tags if "--" not in tag] == sorted(
        stage["cache_ref"].rsplit(":", 1)[1] for stage in report.values()
    )
    for stage in report.values():
        assert engine.published[stage["cache_ref"]] == stage["digest"]
    builds = len(engine.builds)

    warm = build(project, cache_repo, "--target", "test")
    assert warm.returncode == 0, warm.stderr
    assert statuses(project) == {
        "deps": "skipped",
        "assets": "skipped",
        "app": "skipped",
        "test": "cached",
    }
    assert len(engine.builds) == builds

    (project / "src" / "main.py").write_text("print(2)\n")
    changed = build(project, cache_repo, "--target", "test")
    assert changed.returncode == 0, changed.stderr
    assert statuses(project) == {
        "deps": "cached",
        "assets": "cached",
        "app": "built",
        "test": "built",
    }
    app = read_report(project / "report.json")["app"]["cache_ref"]
    main = docker_env.run("run", "--rm", app, "cat", "/app/src/main.py")
    assert main.stdout == "print(2)\n"


def test_a_failing_stage_keeps_the_passing_stages_cache(
    project: Path, docker_env: DockerEnv, engine: EngineDouble
) -> None:
    make_the_test_stage_fail(project)
    cache_repo = docker_env.cache_repo()
    result = build(project, cache_repo, "--target", "test")
    assert_only_the_test_stage_failed(result, project, docker_env.tags(cache_repo))
    assert "exit code: 7" in result.stderr


def registry_login(registry: RegistryServer) -> dict[str, str]:
    assert registry.auth is not None
    username, password = registry.auth
    return {"REGISTRY_USER": username, "REGISTRY_PASSWORD": password}


def test_a_private_cache_cold_build_pushes_with_the_login(
    project: Path, auth_registry: RegistryServer, engine: EngineDouble
) -> None:
    login = registry_login(auth_registry)
    cache_repo = f"{auth_registry.host}/private-cold/cache"
    cold = build(project, cache_repo, "--target", "app", env=login)
    assert cold.returncode == 0, cold.stderr
    assert statuses(project) == dict.fromkeys(["deps", "assets", "app"], "built")
    assert login["REGISTRY_PASSWORD"] not in cold.stdout + cold.stderr


def test_a_private_cache_partial_hit_pulls_the_restored_stage_with_the_login(
    project: Path, auth_registry: RegistryServer, engine: EngineDouble
) -> None:
    login = registry_login(auth_registry)
    cache_repo = f"{auth_registry.host}/private-partial/cache"
    assert build(project, cache_repo, "--target", "app", env=login).returncode == 0
    (project / "src" / "main.py").write_text("print(2)\n")
    partial = build(project, cache_repo, "--target", "app", env=login)
    assert partial.returncode == 0, partial.stderr
    assert statuses(project) == {"deps": "cached", "assets": "cached", "app": "built"}


def with_a_secret_reader(project: Path) -> None:
    """A later RUN that mounts no secret tries to read it, as a pull request's code could."""
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "RUN ls -R /app > /test.out",
            "RUN (cat /run/secrets/token 2>/dev/null || echo none) > /later.read\n"
            "RUN ls -R /app > /test.out",
        )
    )


def test_the_secret_never_leaks_to_logs_reports_or_image_configs(
    project: Path, docker_env: DockerEnv, engine: EngineDouble
) -> None:
    with_a_secret_reader(project)
    cache_repo = docker_env.cache_repo()
    result = build(project, cache_repo, "--target", "test")
    assert result.returncode == 0, result.stderr
    report = read_report(project / "report.json")
    assert SECRET not in result.stdout + result.stderr + (project / "report.json").read_text()
    for stage in report.values():
        assert SECRET not in repr(docker_env.image_config(stage["cache_ref"]))
    length = docker_env.run("run", "--rm", report["app"]["cache_ref"], "cat", "/app/token.length")
    assert length.stdout.strip() == str(len(SECRET))


def test_a_later_run_that_mounts_no_secret_cannot_read_it(
    project: Path, docker_env: DockerEnv, engine: EngineDouble
) -> None:
    """The engine keeps app's secret mount on the later RUNs of a build that runs app's steps
    (util/llbtodagger/exec.go), so test is built on app's pushed image, with no secret."""
    with_a_secret_reader(project)
    result = build(project, docker_env.cache_repo(), "--target", "test")
    assert result.returncode == 0, result.stderr
    test_image = read_report(project / "report.json")["test"]["cache_ref"]
    later = docker_env.run("run", "--rm", test_image, "cat", "/later.read")
    assert later.stdout.strip() == "none"


def test_a_stage_gets_only_the_secrets_its_runs_mount(
    project: Path, docker_env: DockerEnv, engine: EngineDouble
) -> None:
    cache_repo = docker_env.cache_repo()
    assert build(project, cache_repo, "--target", "test").returncode == 0
    secrets_by_target = {record.target: record.secret_ids for record in engine.builds}
    assert secrets_by_target["deps"] == secrets_by_target["assets"] == ()
    assert secrets_by_target["app"] == ("token",)


def with_test_command(project: Path) -> None:
    (project / "dagger-stages.yaml").write_text(TEST_CONFIG)


def test_the_test_stage_runs_and_its_artifacts_come_out(
    project: Path, docker_env: DockerEnv, engine: EngineDouble
) -> None:
    with_test_command(project)
    cache_repo = docker_env.cache_repo()
    result = build(project, cache_repo, "--target", "test", "--artifacts-dir", "artifacts")
    assert result.returncode == 0, result.stderr
    document = json.loads((project / "report.json").read_text())
    assert document["test"]["exit_code"] == 0
    artifacts = project / "artifacts"
    assert (artifacts / "ran").read_text().strip() in result.stderr
    assert "/app/src:" in (artifacts / "test.out").read_text()
    assert engine.execs_run == 1


def test_the_test_command_sees_no_secret(
    project: Path, docker_env: DockerEnv, engine: EngineDouble
) -> None:
    with_test_command(project)
    result = build(project, docker_env.cache_repo(), "--target", "test", "--artifacts-dir", "a")
    assert result.returncode == 0, result.stderr
    assert "token" not in (project / "a" / "secrets").read_text()


def test_a_rerun_runs_the_tests_again(
    project: Path, docker_env: DockerEnv, engine: EngineDouble
) -> None:
    """The second and third runs test the same restored image: the same inputs, so on a warm
    engine the third replays the second's result unless the run is made unique."""
    with_test_command(project)
    cache_repo = docker_env.cache_repo()
    runs = ("first", "second", "third")
    for run in runs:
        result = build(project, cache_repo, "--target", "test", "--artifacts-dir", run)
        assert result.returncode == 0, result.stderr
    assert statuses(project)["test"] == "cached"
    assert engine.execs_run == 3
    assert len({(project / run / "ran").read_text() for run in runs}) == 3


def test_sigint_stops_the_build_and_pushes_no_tag_for_it(
    project: Path, docker_env: DockerEnv, engine: EngineDouble
) -> None:
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("sleep 1 && cp", "sleep 60 && cp"))
    cache_repo = docker_env.cache_repo()
    command = cli_command(*build_args(cache_repo, "--target", "test"))
    code, rest = interrupt_while_building(command, cwd=project, env={"TOKEN": SECRET})
    assert code == 130, rest
    assert "Traceback" not in rest
    tags = docker_env.tags(cache_repo)
    assert not any(tag.startswith(("deps-", "app-", "test-")) for tag in tags)


def test_a_cache_on_the_runners_loopback_is_caught_when_the_plan_is_made(
    project: Path, docker_env: DockerEnv, engine_double: EngineDouble
) -> None:
    cache_repo = docker_env.cache_repo()
    result = build(project, cache_repo, "--target", "deps")
    assert result.returncode == 2, result.stderr
    assert "--engine docker" in result.stderr
    assert engine_double.builds == []


def test_ignored_files_are_not_uploaded(
    project: Path, docker_env: DockerEnv, engine: EngineDouble
) -> None:
    (project / ".dockerignore").write_text("node_modules\n.git\n")
    for folder in ("node_modules/left-pad", ".git/objects"):
        (project / folder).mkdir(parents=True)
        (project / folder / "blob").write_bytes(b"x" * 200_000)
    result = build(project, docker_env.cache_repo(), "--target", "app")
    assert result.returncode == 0, result.stderr
    assert 0 < engine.uploaded_bytes < 100_000


def test_an_engine_of_another_platform_builds_for_the_keys_platform(
    project: Path, docker_env: DockerEnv, engine: EngineDouble
) -> None:
    client = engine.platform
    engine.platform = "linux/arm64" if client != "linux/arm64" else "linux/amd64"
    build(project, docker_env.cache_repo(), "--target", "app")
    assert engine.builds
    assert {record.platform for record in engine.builds} == {client}


def test_a_frontend_the_engine_refuses_is_exit_2_when_the_plan_is_made(
    project: Path, docker_env: DockerEnv, engine: EngineDouble
) -> None:
    dockerfile = project / "Dockerfile"
    dockerfile.write_text("# syntax=example.com/frontend:1\n" + dockerfile.read_text())
    result = build(project, docker_env.cache_repo(), "--target", "deps")
    assert result.returncode == 2, result.stderr
    assert "Dockerfile:1" in result.stderr
    assert "--engine docker" in result.stderr
    assert "Traceback" not in result.stderr
    assert engine.builds == []


def test_no_cache_runs_every_step_again_though_the_engine_caches_them(
    tmp_path: Path, docker_env: DockerEnv, engine: EngineDouble
) -> None:
    """dockerBuild has no noCache: an ARG with a new value per run makes each RUN new, and it
    reaches neither the image's Env nor the keys."""
    stamped = "FROM {base} AS stamp\nRUN head -c 16 /dev/urandom | od -An -tx1 > /stamp\n"
    (tmp_path / "Dockerfile").write_text(stamped.format(base=docker_env.base))
    cache_repo = docker_env.cache_repo()
    report = str(tmp_path / "report.json")
    stamps, keys = [], []
    for args in ((), ("--no-cache",), ("--no-cache",)):
        command = build_args(cache_repo, "--report", report, *args)
        result = run_cli(*command, cwd=tmp_path, env={"TOKEN": SECRET})
        assert result.returncode == 0, result.stderr
        stage = read_report(Path(report))["stamp"]
        keys.append(stage["key"])
        stamps.append(docker_env.run("run", "--rm", stage["cache_ref"], "cat", "/stamp").stdout)
        env = docker_env.image_config(stage["cache_ref"])["config"].get("Env") or []
        assert not [e for e in env if e.startswith("DAGGER_STAGES")]
    assert len(set(stamps)) == 3
    assert len(set(keys)) == 1
    nonces = [b.build_args.get("DAGGER_STAGES_NO_CACHE") for b in engine.builds]
    assert nonces[0] is None
    assert len(set(nonces[1:])) == 2
