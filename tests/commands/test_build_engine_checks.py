"""When a build starts its engine checks (`Executor.prepare`): a run that restores everything
from a nearby cache never starts them, as they would slow the registry's answers down; one whose
cache keeps the plan waiting starts them during that wait, and one that builds starts them as
soon as the cache has said so. The registry is an httpx mock whose
answers come after a delay; the executor only counts its checks.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, NoReturn

import anyio
import httpx
import pytest

from pipeline.commands import build as build_module
from pipeline.commands.build import HIDDEN_BEHIND, BuildRun
from pipeline.dockerfile.graph import select
from pipeline.dockerfile.parse import parse_text
from pipeline.dockerfile.stages import build_stages
from pipeline.engines.results import Status
from pipeline.oci.credentials import CredentialSource
from pipeline.oci.reference import Repository
from pipeline.oci.registry import DOCKER_MANIFEST, RegistryClient
from pipeline.settings.resolve import Settings

if TYPE_CHECKING:
    from pathlib import Path

    from pipeline.dockerfile.graph import Graph
    from pipeline.engines.base import BuildSpec, RegistryLogin
    from pipeline.oci.reference import Reference

DOCKERFILE = "FROM registry.test/base AS a\nCOPY a.txt /a\nFROM a AS b\nCOPY b.txt /b\n"
CACHED = "sha256:" + "1" * 64


class CountedChecks:
    """An executor that only counts how often its checks start; with `hang`, they never end."""

    name = "docker"

    def __init__(self, *, hang: bool = False) -> None:
        self.started = 0
        self.hang = hang
        self.prefetched: list[Reference] = []
        self.logins: list[RegistryLogin | None] = []
        self.closed = False

    async def prepare(self) -> None:
        self.started += 1
        if self.hang:
            await anyio.sleep_forever()

    async def prefetch(
        self, ref: Reference, platform: str | None = None, login: RegistryLogin | None = None
    ) -> None:
        self.prefetched.append(ref)
        self.logins.append(login)

    async def close(self) -> None:
        self.closed = True

    def session(self, spec: BuildSpec) -> NoReturn:
        raise AssertionError("a run that restores everything opens no session")


def registry(delay: float, base_delay: float) -> httpx.MockTransport:
    """The base image and every cache tag are there; anything else (a hint) is not."""

    async def answer(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(base_delay if "/base/" in request.url.path else delay)
        if request.method != "HEAD":
            return httpx.Response(404)
        headers = {"Docker-Content-Digest": CACHED, "Content-Type": DOCKER_MANIFEST}
        return httpx.Response(200, headers={**headers, "Content-Length": "2"})

    return httpx.MockTransport(answer)


def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checks: CountedChecks
) -> tuple[Settings, Graph]:
    """DOCKERFILE's project, whose build of `b` runs on `checks`."""
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    settings = Settings(
        context=str(tmp_path),
        dockerfile=str(tmp_path / "Dockerfile"),
        cache_repo=Repository.parse("registry.test/x/cache"),
        engine="docker",
    )
    monkeypatch.setattr(build_module, "choose_executor", lambda settings, client=None: checks)
    return settings, select(build_stages(parse_text(DOCKERFILE)), ["b"])


def warm_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delay: float, base_delay: float | None = None
) -> int:
    """How often a run that restores every stage started the engine checks, which never end:
    the run does not wait for them. The registry answers after `delay`, about the base image
    after `base_delay` (by default the same)."""
    checks = CountedChecks(hang=True)
    settings, graph = project(tmp_path, monkeypatch, checks)

    async def run() -> None:
        transport = registry(delay, delay if base_delay is None else base_delay)
        with anyio.fail_after(10):
            async with RegistryClient(transport=transport, retries=0) as client:
                report = await BuildRun(settings, graph, client).run()
        assert {stage.status for stage in report.stages} == {Status.CACHED, Status.SKIPPED}

    anyio.run(run)
    return checks.started


def test_a_warm_run_next_to_its_cache_never_starts_the_engine_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert warm_run(tmp_path, monkeypatch, delay=0) == 0


def test_a_cache_that_keeps_the_plan_waiting_hides_the_engine_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert warm_run(tmp_path, monkeypatch, delay=2 * HIDDEN_BEHIND) == 1


def test_a_cache_that_answered_quickly_is_nearby_however_long_its_plan_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base image's digest came at once; the cache tags take their time, past the moment
    the checks would start behind a distant registry."""
    assert warm_run(tmp_path, monkeypatch, delay=2 * HIDDEN_BEHIND, base_delay=0) == 0


def test_a_cold_run_next_to_its_cache_starts_the_checks_once_the_cache_says_it_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No cache tag is there: the checks start as soon as the probe has answered, while the
    plan still reads the hints (which here never answer), not once the plan is done."""
    checks = CountedChecks()
    settings, graph = project(tmp_path, monkeypatch, checks)
    hints: list[str] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        if "/base/" in request.url.path:
            headers = {"Docker-Content-Digest": CACHED, "Content-Type": DOCKER_MANIFEST}
            return httpx.Response(200, headers={**headers, "Content-Length": "2"})
        if request.method == "HEAD":
            return httpx.Response(404)
        hints.append(request.url.path)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def run() -> None:
        transport = httpx.MockTransport(answer)
        async with RegistryClient(transport=transport, retries=0) as client:
            with anyio.move_on_after(1):
                await BuildRun(settings, graph, client).run()

    anyio.run(run)
    assert hints, "the plan was reading a hint"
    assert checks.started == 1


def test_prefetches_are_given_the_runs_credentials_and_the_run_closes_its_executor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine pulls what the plan finds with the credentials the run has for that
    registry (a CI's token in the environment), which the user's Docker config may lack."""
    checks = CountedChecks()
    settings, graph = project(tmp_path, monkeypatch, checks)
    source = CredentialSource("registry.test", "env", "CI_USER", "CI_PASSWORD")
    settings = replace(settings, credentials=(source,))
    monkeypatch.setenv("CI_USER", "ci")
    monkeypatch.setenv("CI_PASSWORD", "hunter2")

    async def run() -> None:
        with anyio.fail_after(10):
            transport = registry(delay=0, base_delay=0)
            async with RegistryClient(transport=transport, retries=0) as client:
                await BuildRun(settings, graph, client).run()

    anyio.run(run)
    assert checks.prefetched
    assert {login.host if login else None for login in checks.logins} == {"registry.test"}
    assert {login.password if login else None for login in checks.logins} == {"hunter2"}
    assert checks.closed
