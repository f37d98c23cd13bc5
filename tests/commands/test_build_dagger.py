"""The whole `build` command on the Dagger executor: the real SDK, the fake engine, a real registry.

The probe, keys and rewrite run for real against the registry; the engine is the fake one that
validates every query against Dagger's schema.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.dockerfile.parse import parse_text
from pipeline.dockerfile.stages import build_stages
from tests.fake_dagger import ExecFailure, FakeDagger
from tests.registry_server import RegistryServer, push_image

DOCKERFILE = """\
ARG BASE={host}/base/busybox:1
FROM $BASE AS deps
COPY deps.txt /deps.txt
FROM $BASE AS assets
RUN --mount=type=secret,id=token true
FROM deps AS app
COPY --from=assets / /assets
FROM app
RUN true
"""


@pytest.fixture
def project(tmp_path: Path, registry: RegistryServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    push_image(registry.url, "base/busybox", "1", config={"os": "linux"})
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.format(host=registry.host))
    (tmp_path / "deps.txt").write_text("deps")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOKEN", "dagger-secret-value")
    # The fake engine serves from this process, so it does share this machine's loopback.
    monkeypatch.setenv("DAGGER_STAGES_ENGINE_REACHES", registry.host)
    return tmp_path


def build(cache_repo: str, *args: str) -> int:
    return main(
        [
            "build",
            "--engine",
            "dagger",
            "--cache-repo",
            cache_repo,
            "--secret",
            "id=token,env=TOKEN",
            "--build-arg",
            "MODE=ci",
            "--report",
            "report.json",
            *args,
        ]
    )


def report(project: Path) -> dict[str, dict[str, object]]:
    document = json.loads((project / "report.json").read_text())
    assert document["engine"] == "dagger"
    return {stage["name"]: stage for stage in document["stages"]}


def test_every_missed_stage_is_a_docker_build_and_is_published(
    project: Path, registry: RegistryServer, fake_dagger: FakeDagger
) -> None:
    fake_dagger.delays["dockerBuild"] = 0.3
    cache_repo = f"{registry.host}/dagger-cold/cache"
    assert build(cache_repo) == 0
    builds = fake_dagger.calls("dockerBuild")
    assert sorted(b.args["target"] for b in builds) == [
        "app",
        "assets",
        "dagger-stages-3",
        "deps",
    ]
    # app and the last stage build on assets's pushed image, as its RUN mounts a secret
    dockerfiles = {call.args["target"]: call.args["dockerfile"] for call in builds}
    assert dockerfiles == {
        "deps": ".dagger-stages/Dockerfile",
        "assets": ".dagger-stages/Dockerfile",
        "app": ".dagger-stages/2/Dockerfile",
        "dagger-stages-3": ".dagger-stages/3/Dockerfile",
    }
    for call in builds:
        assert call.args["buildArgs"] == [{"name": "MODE", "value": "ci"}]
    assert fake_dagger.max_in_flight >= 2
    stages = report(project)
    published = sorted(call.args["address"] for call in fake_dagger.calls("publish"))
    assert published == sorted(str(stage["cache_ref"]) for stage in stages.values())
    assert {stage["status"] for stage in stages.values()} == {"built"}
    rewritten = next(
        call.args["contents"]
        for call in fake_dagger.calls("withNewFile")
        if call.args["path"] == ".dagger-stages/Dockerfile"
    )
    names = [stage.name for stage in build_stages(parse_text(rewritten)).stages]
    assert names == ["deps", "assets", "app", "dagger-stages-3"]
    files = {call.args["path"]: call.args["contents"] for call in fake_dagger.calls("withNewFile")}
    own = build_stages(parse_text(files[".dagger-stages/3/Dockerfile"])).stages
    assert [stage.name for stage in own] == names
    assert own[1].base == f"{cache_repo}@{stages['assets']['digest']}"
    assert files[".dagger-stages/3/Dockerfile.dockerignore"].endswith(".dagger-stages\n")


def test_a_full_hit_builds_nothing(
    project: Path,
    registry: RegistryServer,
    fake_dagger: FakeDagger,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache_repo = f"{registry.host}/dagger-warm/cache"
    assert main(["plan", "--json", "--cache-repo", cache_repo]) == 0
    refs = {s["name"]: s["cache_ref"] for s in json.loads(capsys.readouterr().out)["stages"]}
    push_image(registry.url, "dagger-warm/cache", refs["3"].rsplit(":", 1)[1], config={})
    assert build(cache_repo) == 0
    assert fake_dagger.calls("dockerBuild") == []
    assert fake_dagger.queries == []
    assert report(project)["3"]["status"] == "cached"


def test_a_failing_stage_exits_1_and_cancels_its_dependents(
    project: Path, registry: RegistryServer, fake_dagger: FakeDagger
) -> None:
    failure = ExecFailure(stderr="npm ERR! missing script: build")
    for target in ("assets", "app", "dagger-stages-3"):  # BuildKit fails what builds on it too
        fake_dagger.failures[target] = failure
    assert build(f"{registry.host}/dagger-fail/cache") == 1
    statuses = {name: stage["status"] for name, stage in report(project).items()}
    assert statuses == {"deps": "built", "assets": "failed", "app": "cancelled", "3": "cancelled"}


def test_a_private_registry_partial_hit_pulls_with_logins_registered_before_any_build(
    tmp_path: Path,
    auth_registry: RegistryServer,
    fake_dagger: FakeDagger,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a fresh runner the engine has no docker config for the cache: a missed stage built
    FROM a restored one pulls it inside dockerBuild, with the logins registered so far."""
    host, auth = auth_registry.host, auth_registry.auth
    assert auth is not None
    push_image(auth_registry.url, "base/busybox", "1", config={"os": "linux"}, auth=auth)
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.format(host=host))
    (tmp_path / "deps.txt").write_text("deps")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGGER_STAGES_ENGINE_REACHES", "*")  # the fake shares our loopback
    monkeypatch.setenv("TOKEN", "dagger-secret-value")
    monkeypatch.setenv("REGISTRY_USER", auth[0])
    monkeypatch.setenv("REGISTRY_PASSWORD", auth[1])
    cache_repo = f"{host}/dagger-private/cache"
    assert main(["plan", "--json", "--cache-repo", cache_repo]) == 0
    refs = {s["name"]: s["cache_ref"] for s in json.loads(capsys.readouterr().out)["stages"]}
    deps_tag = refs["deps"].rsplit(":", 1)[1]
    push_image(auth_registry.url, "dagger-private/cache", deps_tag, config={}, auth=auth)
    for target in ("deps", "assets", "app", "dagger-stages-3"):
        fake_dagger.private_pulls[target] = (host,)

    assert build(cache_repo) == 0

    statuses = {name: stage["status"] for name, stage in report(tmp_path).items()}
    assert statuses == {"deps": "cached", "assets": "built", "app": "built", "3": "built"}
    queries = fake_dagger.queries
    first_build = min(queries.index(q) for q in fake_dagger.queries_with("dockerBuild"))
    login = queries.index(fake_dagger.queries_with("withRegistryAuth")[0])
    assert login < first_build
    assert fake_dagger.logins == {host: auth[0]}
    captured = capsys.readouterr()
    assert auth[1] not in captured.out + captured.err + (tmp_path / "report.json").read_text()


def test_builds_get_only_their_secrets_and_the_test_command_none_unless_granted(
    project: Path, registry: RegistryServer, fake_dagger: FakeDagger
) -> None:
    config = "test:\n  stage: app\n  command: npm test\n"
    (project / "dagger-stages.yaml").write_text(config)
    assert build(f"{registry.host}/dagger-secrets/cache") == 0

    builds = {c.args["target"]: c.args["secrets"] for c in fake_dagger.calls("dockerBuild")}
    given = {target: len(ids) for target, ids in builds.items()}
    # deps runs no secret mount; app and the last stage build on assets's pushed image
    assert given == {"deps": 0, "assets": 1, "app": 0, "dagger-stages-3": 0}
    [ran] = fake_dagger.ran
    assert ran.argv == ("/bin/sh", "-c", "npm test")
    assert ran.secret_paths == ()

    (project / "dagger-stages.yaml").write_text(config + "  secrets: [token]\n")
    fake_dagger.ran.clear()
    assert build(f"{registry.host}/dagger-secrets/cache") == 0
    [ran] = fake_dagger.ran
    assert ran.secret_paths == ("/run/secrets/token",)


def test_a_test_secret_the_run_does_not_have_is_a_usage_error(
    project: Path,
    registry: RegistryServer,
    fake_dagger: FakeDagger,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (project / "dagger-stages.yaml").write_text(
        "test:\n  stage: app\n  command: npm test\n  secrets: [npm]\n"
    )
    assert build(f"{registry.host}/dagger-secrets/cache") == 2
    err = capsys.readouterr().err
    assert "dagger-stages.yaml: test.secrets: npm is not a secret of this run" in err
    assert "Traceback" not in err
    assert fake_dagger.queries == []


def test_the_registry_of_a_private_base_image_gets_a_login_too(
    tmp_path: Path,
    registry: RegistryServer,
    auth_registry: RegistryServer,
    fake_dagger: FakeDagger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not only the cache's and the published refs' hosts: every image the builds pull."""
    auth = auth_registry.auth
    assert auth is not None
    push_image(auth_registry.url, "base/busybox", "1", config={"os": "linux"}, auth=auth)
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.format(host=auth_registry.host))
    (tmp_path / "deps.txt").write_text("deps")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGGER_STAGES_ENGINE_REACHES", "*")  # the fake shares our loopback
    monkeypatch.setenv("TOKEN", "dagger-secret-value")
    monkeypatch.setenv("REGISTRY_USER", auth[0])
    monkeypatch.setenv("REGISTRY_PASSWORD", auth[1])
    for target in ("deps", "assets", "app", "dagger-stages-3"):
        fake_dagger.private_pulls[target] = (auth_registry.host,)

    assert build(f"{registry.host}/dagger-base/cache") == 0

    assert fake_dagger.logins == {registry.host: auth[0], auth_registry.host: auth[0]}
