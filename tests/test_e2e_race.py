"""Two runs, one stage: the first writer of a cache tag wins, and whatever a run pinned by
digest stays pullable when the tag moves under it.

Real builds on dockerd through the docker executor, a real registry at 127.0.0.1:5000. The
other run is put exactly where it must be by a hook, never by timing: between this run's plan
and its push (the other run pushed first: this run adopts), or between this run's push and
everything that follows it (the race window: the tag moved on after this run pushed).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import httpx
import pytest

import pipeline.commands.build as build_command
from pipeline.cli import main
from pipeline.engines.dagger_engine import DaggerSession
from pipeline.engines.docker_engine import DockerSession
from pipeline.oci.reference import Reference
from tests.cli import run_cli
from tests.docker_env import DockerEnv, read_report
from tests.e2e_project import SECRET, write_project
from tests.engine_double import EngineDouble
from tests.registry_server import push_image

if TYPE_CHECKING:
    from collections.abc import Callable

DOCKERFILE = """\
ARG BASE={base}
FROM $BASE AS deps
COPY deps.txt /deps/
RUN cp /deps/deps.txt /deps/installed.txt
FROM deps AS app
COPY src/ /app/src/
RUN ls -R /app > /app.list
"""
ACCEPT = (
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.oci.image.manifest.v1+json"
)


@pytest.fixture
def project(tmp_path: Path, docker_env: DockerEnv, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Its source is unique to the test, so no engine cache is shared with another test."""
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "Dockerfile").write_text(DOCKERFILE.format(base=docker_env.base))
    (directory / "deps.txt").write_text(f"deps {uuid.uuid4().hex}\n")
    (directory / "src").mkdir()
    (directory / "src" / "main.py").write_text(f"print({uuid.uuid4().hex!r})\n")
    monkeypatch.chdir(directory)
    return directory


def manifest(repository: str, reference: str) -> bytes | None:
    """The manifest `reference` (a tag or a digest) names in the repository, None if nothing:
    a GET from the registry, as a pull starts."""
    name = repository.split("/", 1)[1]
    response = httpx.get(
        f"http://127.0.0.1:5000/v2/{name}/manifests/{reference}",
        headers={"Accept": ACCEPT},
        timeout=30,
        trust_env=False,
    )
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.content


def digest_of(repository: str, reference: str) -> str | None:
    body = manifest(repository, reference)
    return None if body is None else "sha256:" + hashlib.sha256(body).hexdigest()


def pullable(docker_env: DockerEnv, repository: str, digest: str) -> bool:
    """The registry serves the manifest by digest, and dockerd pulls it by digest."""
    if digest_of(repository, digest) != digest:
        return False
    return docker_env.run("pull", "--quiet", f"{repository}@{digest}", check=False).returncode == 0


def cache_tags(docker_env: DockerEnv, cache_repo: str) -> dict[str, str]:
    """Every tag of the cache repo, and the digest it holds."""
    found = {}
    for tag in docker_env.tags(cache_repo):
        digest = digest_of(cache_repo, tag)
        assert digest is not None, tag
        found[tag] = digest
    return found


def report(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def after_the_plan(monkeypatch: pytest.MonkeyPatch, other_run: Callable[[], None]) -> None:
    """This run's `build` runs `other_run` to its end once its plan is made, before building."""
    real_plan = build_command.plans_for

    async def plan_then_the_other_run(*args: Any, **kwargs: Any) -> Any:
        plan = await real_plan(*args, **kwargs)
        await anyio.to_thread.run_sync(other_run)
        return plan

    monkeypatch.setattr(build_command, "plans_for", plan_then_the_other_run)


def after_the_push(
    monkeypatch: pytest.MonkeyPatch,
    session: type[DockerSession | DaggerSession],
    cache_repo: str,
    stage: str,
) -> dict[str, str]:
    """Once this run has pushed the stage's cache tag, another run pushes another image to it;
    returns {tag: the other run's digest}. The hint tag, which the docker executor pushes
    beside the cache tag, is left to this run."""
    repository = Reference.parse(cache_repo + ":x").repository
    other: dict[str, str] = {}
    real_push = session.push

    async def push_then_the_other_run(self: Any, image: Any, ref: Reference, log: Any) -> str:
        digest = await real_push(self, image, ref, log)
        hint = ref.tag is None or "--" in ref.tag
        if str(ref).startswith(f"{cache_repo}:{stage}-") and ref.tag is not None and not hint:
            config = {"os": "linux", "architecture": "amd64", "other run": uuid.uuid4().hex}
            other[ref.tag] = push_image("http://127.0.0.1:5000", repository, ref.tag, config=config)
        return digest

    monkeypatch.setattr(session, "push", push_then_the_other_run)
    return other


def test_a_run_finding_its_tag_written_by_another_run_adopts_that_image(
    project: Path,
    docker_env: DockerEnv,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Run B plans app as a miss; run A then builds and pushes app completely; B then builds
    app, and finds its tag written: it leaves A's tag as it is and uses A's image throughout.

    On one daemon the two app images differ, as on two engines: A builds app along with deps
    (`--no-cache`), while B builds it on the deps image it restored.
    """
    cache_repo = docker_env.cache_repo()
    image_repo = cache_repo.replace("/cache", "/image")
    common = ["build", "--engine", "docker", "--docker", docker_env.docker]
    common += ["--cache-repo", cache_repo]
    warm = run_cli(*common, "--target", "deps", cwd=project)
    assert warm.returncode == 0, warm.stderr
    after_a: dict[str, str] = {}

    def run_a() -> None:
        command = [*common, "--target", "app", "--no-cache", "--report", "a.json"]
        done = run_cli(*command, cwd=project)
        assert done.returncode == 0, done.stderr
        after_a.update(cache_tags(docker_env, cache_repo))

    after_the_plan(monkeypatch, run_a)
    code = main(
        [
            *common,
            "--target",
            "app",
            "--report",
            "b.json",
            "--push",
            "--image-repo",
            image_repo,
            "--publish",
            "app=race-b",
        ]
    )
    stderr = capsys.readouterr().err
    assert code == 0, stderr

    a, b = read_report(project / "a.json"), read_report(project / "b.json")
    assert (a["app"]["status"], a["app"]["adopted"]) == ("built", False)
    assert (a["deps"]["status"], a["deps"]["adopted"]) == ("built", False)  # --no-cache pushes
    assert a["deps"]["digest"] == after_a[a["deps"]["cache_ref"].rpartition(":")[2]]
    theirs = a["app"]["digest"]
    app_tag = a["app"]["cache_ref"].rpartition(":")[2]
    assert after_a[app_tag] == theirs
    assert b["deps"]["status"] == "cached"
    assert (b["app"]["status"], b["app"]["adopted"]) == ("built", True)
    assert (b["app"]["digest"], b["app"]["cache_ref"]) == (theirs, a["app"]["cache_ref"])
    assert f"already written by another run; adopted {theirs}" in stderr
    # B's own app image, left under the local name both runs built it as, is another image
    built = docker_env.run("image", "inspect", "--format", "{{.Id}}", a["app"]["cache_ref"])
    config = json.loads(manifest(cache_repo, theirs) or b"{}")["config"]["digest"]
    assert built.stdout.strip() != config
    # A's tags are as A left them: B moved none of them, and added only its hint tag, on A's app
    assert cache_tags(docker_env, cache_repo) == {**after_a, "app--local": theirs}
    published = report(project / "b.json")["published"]
    assert published == [{"stage": "app", "ref": f"{image_repo}:race-b", "digest": theirs}]
    assert pullable(docker_env, image_repo, theirs)
    assert pullable(docker_env, cache_repo, theirs)


def test_what_a_run_pinned_stays_pullable_after_another_run_moves_the_tag(
    project: Path,
    docker_env: DockerEnv,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The race window: both runs found the tag absent and both pushed. Here the other run's
    push lands right after this run's, before this run moves its hint and publishes; this run
    keeps using the digest it pushed, which the registry still serves."""
    cache_repo = docker_env.cache_repo()
    image_repo = cache_repo.replace("/cache", "/image")
    other = after_the_push(monkeypatch, DockerSession, cache_repo, "app")
    code = main(
        [
            *["build", "--engine", "docker", "--docker", docker_env.docker],
            *["--cache-repo", cache_repo, "--target", "app", "--report", "b.json"],
            *["--push", "--image-repo", image_repo, "--publish", "app=race-b"],
        ]
    )
    stderr = capsys.readouterr().err
    assert code == 0, stderr
    app = read_report(project / "b.json")["app"]
    ours = app["digest"]
    tag = app["cache_ref"].rpartition(":")[2]
    assert (app["status"], app["adopted"]) == ("built", False)
    assert other[tag] != ours
    tags = cache_tags(docker_env, cache_repo)
    assert tags[tag] == other[tag]  # the last writer holds the tag
    assert tags["app--local"] == ours  # the hint moved to what this run pushed
    published = report(project / "b.json")["published"]
    assert published == [{"stage": "app", "ref": f"{image_repo}:race-b", "digest": ours}]
    assert digest_of(image_repo, "race-b") == ours
    assert pullable(docker_env, cache_repo, ours)
    assert pullable(docker_env, image_repo, ours)


# --- the Dagger executor (engine double): stages built on a pushed image pin its digest -----


@pytest.fixture
def engine(engine_double: EngineDouble, monkeypatch: pytest.MonkeyPatch) -> EngineDouble:
    """The double on the host's network, so that localhost:5000 is the registry, as
    tests/engines/test_dagger_e2e.py has it."""
    engine_double.host_network = True
    monkeypatch.setenv("DAGGER_STAGES_ENGINE_REACHES", "*")
    monkeypatch.setenv("TOKEN", SECRET)
    return engine_double


@pytest.fixture
def secret_project(tmp_path: Path, docker_env: DockerEnv, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`app` mounts a secret, so on Dagger `test` builds on app's pushed image, by digest."""
    (tmp_path / "secret-project").mkdir()
    directory = write_project(tmp_path / "secret-project", docker_env.base)
    (directory / "src" / "main.py").write_text(f"print({uuid.uuid4().hex!r})\n")
    monkeypatch.chdir(directory)
    return directory


def dagger_build(cache_repo: str, *args: str) -> list[str]:
    return [
        *["build", "--engine", "dagger", "--cache-repo", cache_repo],
        *["--secret", "id=token,env=TOKEN", "--target", "test", "--report", "b.json", *args],
    ]


def built_on(engine: EngineDouble, target: str) -> tuple[str, ...]:
    return next(build.images for build in engine.builds if build.target == target)


def test_on_dagger_a_stage_built_on_an_adopted_image_builds_on_that_digest(
    secret_project: Path,
    docker_env: DockerEnv,
    engine: EngineDouble,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Run B (Dagger) plans; run A (docker) builds and pushes everything; B adopts A's app, and
    builds test on it."""
    cache_repo = docker_env.cache_repo()

    def run_a() -> None:
        command = [*docker_env.build_args("--cache-repo", cache_repo, "--target", "test")]
        command += ["--secret", "id=token,env=TOKEN", "--report", "a.json"]
        done = run_cli(*command, cwd=secret_project)
        assert done.returncode == 0, done.stderr

    after_the_plan(monkeypatch, run_a)
    code = main(dagger_build(cache_repo))
    assert code == 0, capsys.readouterr().err
    a, b = read_report(secret_project / "a.json"), read_report(secret_project / "b.json")
    assert {name: stage["adopted"] for name, stage in b.items()} == dict.fromkeys(b, True)
    assert {name: stage["digest"] for name, stage in b.items()} == {
        name: stage["digest"] for name, stage in a.items()
    }
    assert f"{cache_repo}@{a['app']['digest']}" in built_on(engine, "test")
    assert engine.published == {}  # B pushed nothing


def test_on_dagger_a_stage_built_on_a_pushed_image_still_pulls_it_after_the_tag_moved(
    secret_project: Path,
    docker_env: DockerEnv,
    engine: EngineDouble,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The race window on Dagger: app's tag moves right after this run pushed app, before test,
    which waits for that push, builds on app's image by its digest."""
    cache_repo = docker_env.cache_repo()
    other = after_the_push(monkeypatch, DaggerSession, cache_repo, "app")
    code = main(dagger_build(cache_repo))
    assert code == 0, capsys.readouterr().err
    b = read_report(secret_project / "b.json")
    ours = b["app"]["digest"]
    tag = b["app"]["cache_ref"].rpartition(":")[2]
    assert b["test"]["status"] == "built"
    assert digest_of(cache_repo, tag) == other[tag] != ours
    assert f"{cache_repo}@{ours}" in built_on(engine, "test")
    assert pullable(docker_env, cache_repo, ours)
