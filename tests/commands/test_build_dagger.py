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
    for call in builds:
        assert call.args["dockerfile"] == ".dagger-stages/Dockerfile"
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
