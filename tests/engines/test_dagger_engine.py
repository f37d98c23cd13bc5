"""The Dagger executor against a fake engine: the real SDK, every query checked by the schema."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from pipeline.dockerfile.mounts import Mount, parse_mount
from pipeline.dockerfile.platforms import native_platform
from pipeline.engines.base import BuildSpec, Image, RegistryLogin, StageJob, TestRun
from pipeline.engines.dagger_engine import (
    DOCKERFILE,
    DOCKERIGNORE,
    RUN_ID_VARIABLE,
    DaggerExecutor,
    ignore_rules,
    upload_excludes,
)
from pipeline.engines.dagger_rules import dagger_available
from pipeline.errors import EngineUnavailable, StageFailed, UsageError
from pipeline.oci.reference import Reference
from pipeline.settings.secrets import Secrets
from tests.cli import fresh_python
from tests.fake_dagger import (
    ExecFailure,
    ExecResult,
    ExecRun,
    FakeDagger,
    RecordedQuery,
    run_fake_dagger,
)
from tests.registry_server import free_port

DOCKERFILE_TEXT = """\
FROM alpine:3.20 AS base
FROM base AS deps
RUN --mount=type=secret,id=npm_token cat /run/secrets/npm_token
FROM deps AS test
FROM deps AS web
"""
NPM_TOKEN = "npm-Secret-Value-4f1d9c"
FILE_SECRET = "file-Secret-Value-88b2e0"
REGISTRY_PASSWORD = "registry-Password-Value-1c7a"
SECRET_VALUES = (NPM_TOKEN, FILE_SECRET, REGISTRY_PASSWORD)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def spec(tmp_path: Path) -> BuildSpec:
    context = tmp_path / "context"
    context.mkdir()
    return BuildSpec(
        context=context,
        dockerfile=DOCKERFILE_TEXT,
        ignore_file="node_modules\n*.log",
        build_args={"NODE_ENV": "production", "EMPTY": ""},
        secrets=Secrets(),
        platform=None,
    )


NPM_MOUNT = parse_mount("type=secret,id=npm_token")


def job(target: str, index: int = 0, secrets: Sequence[Mount] = ()) -> StageJob:
    tag = Reference.parse(f"registry.test/app/cache:{target}")
    return StageJob(index, target, target, f"key-{target}", tag, secret_mounts=tuple(secrets))


class Log:
    """A `log` callback that keeps every line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


async def build_all(spec: BuildSpec, jobs: Sequence[StageJob], log: Log | None = None) -> None:
    async with DaggerExecutor().session(spec) as session, anyio.create_task_group() as group:
        for each in jobs:
            group.start_soon(session.build, each, log or Log())


def secret_names(fake: FakeDagger, ids: Sequence[str]) -> list[str]:
    names = []
    for secret_id in ids:
        made = fake.object_of(secret_id).find("setSecret")
        assert made is not None
        names.append(made.args["name"])
    return names


def overlapping(queries: Sequence[RecordedQuery]) -> bool:
    return any(
        a.started < b.ended and b.started < a.ended for a, b in itertools.combinations(queries, 2)
    )


# -- engine discovery, without importing dagger


def test_importing_the_executor_does_not_import_dagger() -> None:
    code = (
        "import sys, pipeline.engines.dagger_engine, pipeline.engines.dagger_rules as r\n"
        "r.dagger_available({})\n"
        "print(sorted(m for m in sys.modules if m == 'dagger' or m.startswith('dagger.')))\n"
    )
    assert fresh_python(code) == "[]"


def test_choosing_the_engine_loads_not_even_the_dagger_executor() -> None:
    """`auto` looks for a session or a CLI: every `plan` and every `build` asks."""
    code = (
        "import sys, pipeline.engines.dagger_rules as r\n"
        "r.engine_is_dagger('auto', {})\n"
        "print('pipeline.engines.dagger_engine' in sys.modules)\n"
    )
    assert fresh_python(code) == "False"


def test_dagger_available_needs_a_whole_session_or_a_cli(tmp_path: Path) -> None:
    empty = str(tmp_path)
    session = {"DAGGER_SESSION_PORT": "8080", "DAGGER_SESSION_TOKEN": "t", "PATH": empty}
    assert dagger_available(session)
    assert not dagger_available({"DAGGER_SESSION_PORT": "8080", "PATH": empty})
    assert not dagger_available({"PATH": empty})
    cli = tmp_path / "dagger"
    cli.write_text("#!/bin/sh\n")
    cli.chmod(0o755)
    assert dagger_available({"PATH": empty})


def test_ignore_rules_hide_the_private_folder() -> None:
    assert ignore_rules(None) == ".dagger-stages\n"
    assert ignore_rules("*\n!src") == "*\n!src\n.dagger-stages\n"
    assert f"{DOCKERFILE}.dockerignore" == DOCKERIGNORE


# -- builds


@pytest.mark.anyio
async def test_each_stage_is_a_docker_build_of_its_target(
    fake_dagger: FakeDagger, spec: BuildSpec
) -> None:
    spec = dataclasses.replace(
        spec,
        secrets=Secrets.of({"npm_token": NPM_TOKEN, "netrc": FILE_SECRET}),
        platform="linux/arm64",
    )
    log = Log()
    netrc = parse_mount("type=secret,id=netrc,target=/root/.netrc")
    await build_all(spec, [job("test", secrets=[NPM_MOUNT, netrc]), job("web", 1)], log)

    builds = sorted(fake_dagger.calls("dockerBuild"), key=lambda c: c.args["target"])
    assert [b.args["target"] for b in builds] == ["test", "web"]
    for build in builds:
        assert build.args["dockerfile"] == DOCKERFILE
        assert build.args["buildArgs"] == [
            {"name": "NODE_ENV", "value": "production"},
            {"name": "EMPTY", "value": ""},
        ]
        assert build.args["platform"] == "linux/arm64"
    assert "dagger: docker build --target test" in log.lines


@pytest.mark.anyio
async def test_the_context_carries_the_dockerfile_and_its_ignore_rules(
    fake_dagger: FakeDagger, spec: BuildSpec
) -> None:
    await build_all(spec, [job("web")])

    [directory] = fake_dagger.calls("directory")
    assert directory.args["path"] == str(spec.context.absolute())
    files = {c.args["path"]: c.args["contents"] for c in fake_dagger.calls("withNewFile")}
    assert files == {
        DOCKERFILE: DOCKERFILE_TEXT,
        DOCKERIGNORE: "node_modules\n*.log\n.dagger-stages\n",
    }
    [build] = fake_dagger.calls("dockerBuild")
    assert build.args["secrets"] == []


@pytest.mark.anyio
async def test_the_sdk_sends_one_query_per_build_ending_in_sync(
    fake_dagger: FakeDagger, spec: BuildSpec
) -> None:
    await build_all(spec, [job("web")])

    assert [q.root_fields for q in fake_dagger.queries] == [("__schema",), ("version",), ("host",)]
    [sync] = fake_dagger.calls("sync")
    assert sync.type == "Container"


@pytest.mark.anyio
async def test_stages_build_at_the_same_time_in_one_session(
    fake_dagger: FakeDagger, spec: BuildSpec
) -> None:
    fake_dagger.delays["sync"] = 0.3

    await build_all(spec, [job("base"), job("test", 1), job("web", 2)])

    syncs = fake_dagger.queries_with("sync")
    assert len(syncs) == 3
    assert overlapping(syncs)
    assert fake_dagger.max_in_flight >= 2


# -- publishing


@pytest.mark.anyio
async def test_push_publishes_with_registry_auth_and_returns_the_digest(
    fake_dagger: FakeDagger, spec: BuildSpec
) -> None:
    spec = dataclasses.replace(
        spec, logins=(RegistryLogin("registry.test", "ci", REGISTRY_PASSWORD),)
    )
    ref = "registry.test/app/cache:web-0123"
    log = Log()
    async with DaggerExecutor().session(spec) as session:
        image = await session.build(job("web"), log)
        digest = await session.push(image, Reference.parse(ref), log)

    assert digest == fake_dagger.published[ref]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    auths = fake_dagger.calls("withRegistryAuth")
    assert len(auths) == 2  # registered when the session opened, and again on the push
    for auth in auths:
        assert (auth.args["address"], auth.args["username"]) == ("registry.test", "ci")
        assert secret_names(fake_dagger, [auth.args["secret"]]) == [
            "dagger-stages.registry-password.registry.test"
        ]
    [publish] = fake_dagger.calls("publish")
    assert publish.args["address"] == ref
    [query] = fake_dagger.queries_with("publish")
    assert query.root_fields == ("node",)
    assert f"dagger: published {ref}@{digest}" in log.lines


@pytest.mark.anyio
async def test_push_refuses_an_image_from_another_executor(
    fake_dagger: FakeDagger, spec: BuildSpec
) -> None:
    async with DaggerExecutor().session(spec) as session:
        ref = Reference.parse("r.test/a:b")
        with pytest.raises(TypeError, match="not an image built by Dagger"):
            await session.push(Image(job("web"), handle="docker-tag"), ref, Log())


# -- running the tests

PINNED = "registry.test/app/cache@sha256:" + "ab" * 32
SH_TEST = ("/bin/sh", "-c", "npm test")


def a_test(tmp_path: Path, *artifacts: str, command: str | tuple[str, ...] = "npm test") -> TestRun:
    return TestRun(command, artifacts, tmp_path / "artifacts")


async def run_built(spec: BuildSpec, test: TestRun, log: Log, target: str = "test") -> int:
    async with DaggerExecutor().session(spec) as session:
        image = await session.build(job(target), Log())
        return await session.run(image, test, log)


async def run_ref(spec: BuildSpec, ref: str, test: TestRun, log: Log) -> int:
    async with DaggerExecutor().session(spec) as session:
        return await session.run(Reference.parse(ref), test, log)


@pytest.mark.anyio
async def test_run_execs_in_the_built_stage_and_returns_the_exit_code(
    fake_dagger: FakeDagger, spec: BuildSpec, tmp_path: Path
) -> None:
    fake_dagger.execs[SH_TEST] = ExecResult(0, stdout="ok 1\nok 2\n", stderr="npm WARN x\n")
    log = Log()

    code = await run_built(spec, a_test(tmp_path), log)

    assert code == 0
    [exec_] = fake_dagger.calls("withExec")
    assert exec_.args["args"] == list(SH_TEST)
    assert exec_.args["expect"] == "ANY"
    assert exec_.args["useEntrypoint"] is False
    assert fake_dagger.calls("from") == []
    [query] = fake_dagger.queries_with("withExec")
    assert query.root_fields == ("node",)  # on the container the build left, by its ID
    assert [c.field for c in query.calls][-2:] == ["withExec", "sync"]
    for field in ("exitCode", "combinedOutput"):  # read from that run, by the ID sync gave
        [read] = fake_dagger.queries_with(field)
        assert [c.field for c in read.calls] == ["node", field]
    assert "dagger: run /bin/sh -c 'npm test' in test" in log.lines
    output = [line for line in log.lines if not line.startswith("dagger: ")]
    assert output == ["ok 1", "ok 2", "npm WARN x"]
    assert "dagger: the test command exited with code 0" in log.lines


@pytest.mark.anyio
async def test_a_failing_command_returns_its_code_and_still_exports_artifacts(
    fake_dagger: FakeDagger, spec: BuildSpec, tmp_path: Path
) -> None:
    fake_dagger.execs[SH_TEST] = ExecResult(3, stderr="2 tests failed\n")
    fake_dagger.files["/app/junit.xml"] = "<testsuite failures='2'/>"
    fake_dagger.directories["/app/coverage"] = {"index.html": "<html/>", "lcov/lcov.info": "TN:"}
    test = a_test(tmp_path, "/app/junit.xml", "/app/coverage/")
    log = Log()

    code = await run_built(spec, test, log)

    assert code == 3
    out = test.artifacts_dir
    assert (out / "junit.xml").read_text() == "<testsuite failures='2'/>"
    assert (out / "coverage/index.html").read_text() == "<html/>"
    assert (out / "coverage/lcov/lcov.info").read_text() == "TN:"
    assert "2 tests failed" in log.lines
    assert f"artifact /app/junit.xml -> {out / 'junit.xml'}" in log.lines
    assert f"artifact /app/coverage/ -> {out / 'coverage'}" in log.lines
    exports = {(c.type, c.args["path"]) for c in fake_dagger.calls("export")}
    assert exports == {
        ("File", str((out / "junit.xml").absolute())),
        ("Directory", str((out / "coverage").absolute())),
    }
    # artifacts come from the container the command left, failed or not
    for query in fake_dagger.queries_with("export"):
        [node] = [c for c in query.calls if c.field == "node"]
        assert fake_dagger.object_of(node.args["id"]).find("withExec") is not None


@pytest.mark.anyio
async def test_file_and_directory_artifacts_are_told_apart_by_exists(
    fake_dagger: FakeDagger, spec: BuildSpec, tmp_path: Path
) -> None:
    fake_dagger.files["/out/report.txt"] = "report"
    fake_dagger.directories["/out/html"] = {"a.html": "a"}
    await run_built(spec, a_test(tmp_path, "/out/report.txt", "/out/html"), Log())

    checks = [(c.args["path"], c.args["expectedType"]) for c in fake_dagger.calls("exists")]
    assert checks == [
        ("/out/report.txt", "DIRECTORY_TYPE"),
        ("/out/report.txt", "REGULAR_TYPE"),
        ("/out/html", "DIRECTORY_TYPE"),
    ]
    assert [c.args["path"] for c in fake_dagger.calls("file")] == ["/out/report.txt"]
    dirs = [c.args["path"] for c in fake_dagger.calls("directory") if c.type == "Container"]
    assert dirs == ["/out/html"]


@pytest.mark.anyio
async def test_a_missing_artifact_is_logged_and_the_others_exported(
    fake_dagger: FakeDagger, spec: BuildSpec, tmp_path: Path
) -> None:
    fake_dagger.files["/app/junit.xml"] = "<testsuite/>"
    test = a_test(tmp_path, "/app/nope", "/app/junit.xml")
    log = Log()

    assert await run_built(spec, test, log) == 0

    assert "artifact /app/nope not found" in log.lines
    assert sorted(p.name for p in test.artifacts_dir.iterdir()) == ["junit.xml"]
    assert [c.args["path"] for c in fake_dagger.calls("file")] == ["/app/junit.xml"]


@pytest.mark.anyio
async def test_an_artifact_that_fails_to_export_is_logged(
    fake_dagger: FakeDagger, spec: BuildSpec, tmp_path: Path
) -> None:
    fake_dagger.files["/app/junit.xml"] = "<testsuite/>"
    fake_dagger.files["/app/log.txt"] = "log"
    fake_dagger.export_failures["/app/junit.xml"] = "open /app/junit.xml: permission denied"
    test = a_test(tmp_path, "/app/junit.xml", "/app/log.txt")
    log = Log()

    assert await run_built(spec, test, log) == 0

    [line] = [line for line in log.lines if line.startswith("artifact /app/junit.xml")]
    assert line.startswith("artifact /app/junit.xml not copied: ")
    assert "permission denied" in line
    assert (test.artifacts_dir / "log.txt").read_text() == "log"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("npm test -- --ci", ["/bin/sh", "-c", "npm test -- --ci"]),
        (("npm", "test", "--", "--ci"), ["npm", "test", "--", "--ci"]),
    ],
)
async def test_a_string_command_runs_under_sh_and_a_list_as_it_is(
    fake_dagger: FakeDagger,
    spec: BuildSpec,
    tmp_path: Path,
    command: str | tuple[str, ...],
    argv: list[str],
) -> None:
    await run_built(spec, a_test(tmp_path, command=command), Log())
    [exec_] = fake_dagger.calls("withExec")
    assert exec_.args["args"] == argv


@pytest.mark.anyio
async def test_a_restored_stage_is_pulled_by_its_pinned_ref_with_the_logins(
    fake_dagger: FakeDagger, spec: BuildSpec, tmp_path: Path
) -> None:
    spec = dataclasses.replace(
        spec,
        platform="linux/arm64",
        logins=(RegistryLogin("registry.test", "ci", REGISTRY_PASSWORD),),
    )
    fake_dagger.execs[("npm", "test")] = ExecResult(1, stdout="1 failing\n")
    fake_dagger.files["/app/junit.xml"] = "<testsuite/>"
    test = a_test(tmp_path, "/app/junit.xml", command=("npm", "test"))
    log = Log()

    code = await run_ref(spec, PINNED, test, log)

    assert code == 1
    assert fake_dagger.calls("dockerBuild") == []
    [query] = fake_dagger.queries_with("withExec")
    assert query.root_fields == ("container",)
    made = [c.field for c in query.calls]
    steps = ["container", "withRegistryAuth", "from", "withExec", "sync"]
    assert [f for f in made if f in steps] == steps  # logins before the pull
    containers = fake_dagger.calls("container")
    assert containers[-1].args["platform"] == "linux/arm64"
    [pull] = fake_dagger.calls("from")
    assert pull.args["address"] == PINNED
    auth = fake_dagger.calls("withRegistryAuth")[-1]
    assert (auth.args["address"], auth.args["username"]) == ("registry.test", "ci")
    assert secret_names(fake_dagger, [auth.args["secret"]]) == [
        "dagger-stages.registry-password.registry.test"
    ]
    assert (test.artifacts_dir / "junit.xml").read_text() == "<testsuite/>"
    assert f"dagger: run npm test in {PINNED}" in log.lines
    assert not [line for line in log.lines if REGISTRY_PASSWORD in line]
    carriers = [q for q in fake_dagger.queries if REGISTRY_PASSWORD in q.text]
    assert {q.root_fields for q in carriers} == {("setSecret",)}


@pytest.mark.anyio
async def test_without_a_platform_builds_and_pulls_are_for_the_clients_not_the_engines(
    fake_dagger: FakeDagger, spec: BuildSpec, tmp_path: Path
) -> None:
    """The keys were made for the client's platform: an engine of another architecture must
    not build for its own under those keys."""
    async with DaggerExecutor().session(spec) as session:
        await session.build(job("web"), Log())
        await session.run(Reference.parse(PINNED), a_test(tmp_path), Log())
    [build] = fake_dagger.calls("dockerBuild")
    [container] = fake_dagger.calls("container")
    assert build.args["platform"] == container.args["platform"] == str(native_platform())
    assert fake_dagger.calls("withRegistryAuth") == []


@pytest.mark.anyio
async def test_a_ref_that_cannot_be_pulled_fails_the_stage(
    fake_dagger: FakeDagger, spec: BuildSpec, tmp_path: Path
) -> None:
    fake_dagger.failures[PINNED] = f"failed to resolve source metadata for {PINNED}: not found"
    with pytest.raises(StageFailed, match=r"test run failed: failed to resolve") as caught:
        await run_ref(spec, PINNED, a_test(tmp_path, "/app/junit.xml"), Log())
    assert str(caught.value).startswith(f"{PINNED}: ")
    assert "not found" in caught.value.tail
    assert fake_dagger.calls("export") == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "failure",
    [
        ExecFailure(stderr="Killed\n", stdout="running 12 tests", exit_code=137, cmd=SH_TEST),
        'exec: "/bin/sh": stat /bin/sh: no such file or directory',
    ],
)
async def test_a_command_that_cannot_run_to_its_end_fails_the_stage(
    fake_dagger: FakeDagger, spec: BuildSpec, tmp_path: Path, failure: ExecFailure | str
) -> None:
    fake_dagger.execs[SH_TEST] = failure
    fake_dagger.files["/app/junit.xml"] = "<testsuite/>"
    log = Log()
    with pytest.raises(StageFailed, match=r"^test: test run failed: ") as caught:
        await run_built(spec, a_test(tmp_path, "/app/junit.xml"), log)
    if isinstance(failure, ExecFailure):
        assert str(caught.value).endswith("(exit code 137)")
        assert caught.value.tail == "Killed"
        assert "running 12 tests" in log.lines
    else:
        assert "no such file or directory" in caught.value.tail
    assert fake_dagger.calls("export") == []


@pytest.mark.anyio
async def test_a_signal_is_not_an_exit_code_even_with_expect_any(
    fake_dagger: FakeDagger, spec: BuildSpec, tmp_path: Path
) -> None:
    fake_dagger.execs[SH_TEST] = ExecResult(137, stderr="Killed\n")
    with pytest.raises(StageFailed, match=r"\(exit code 137\)$") as caught:
        await run_built(spec, a_test(tmp_path), Log())
    assert caught.value.tail == "Killed"


@pytest.mark.anyio
@pytest.mark.parametrize("dies_in", ["sync", "exists", "export"])
async def test_an_engine_that_goes_away_during_a_run_is_exit_3(
    fake_dagger: FakeDagger,
    spec: BuildSpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dies_in: str,
) -> None:
    import tenacity

    # the SDK's client retries a query 5 times, waiting 1+2+4+8 s; not here
    monkeypatch.setattr(tenacity.wait_exponential, "__call__", lambda *_: 0.0)
    fake_dagger.files["/app/junit.xml"] = "<testsuite/>"
    async with DaggerExecutor().session(spec) as session:
        image = await session.build(job("test"), Log())
        fake_dagger.hang_up_on.add(dies_in)
        sent = len(fake_dagger.queries)
        with pytest.raises(EngineUnavailable, match=r"^no Dagger engine \(") as caught:
            await session.run(image, a_test(tmp_path, "/app/junit.xml"), Log())
    assert caught.value.exit_code == 3
    assert "(5 attempts)" in str(caught.value)
    tries = [q for q in fake_dagger.queries[sent:] if any(c.field == dies_in for c in q.calls)]
    assert len(tries) == 5


@pytest.mark.anyio
async def test_run_refuses_an_image_from_another_executor(
    fake_dagger: FakeDagger, spec: BuildSpec, tmp_path: Path
) -> None:
    async with DaggerExecutor().session(spec) as session:
        with pytest.raises(TypeError, match="not an image built by Dagger"):
            await session.run(Image(job("test"), handle="docker-tag"), a_test(tmp_path), Log())


# -- failures


@pytest.mark.anyio
async def test_an_exec_error_fails_the_stage_with_the_end_of_stderr(
    fake_dagger: FakeDagger, spec: BuildSpec
) -> None:
    stderr = "\n".join(f"npm ERR! line {n}" for n in range(1, 31)) + "\n"
    fake_dagger.failures["test"] = ExecFailure(stderr=stderr, stdout="npm ci", exit_code=1)
    log = Log()
    async with DaggerExecutor().session(spec) as session:
        with pytest.raises(StageFailed) as caught:
            await session.build(job("test"), log)
        await session.build(job("web", 1), Log())

    failure = caught.value
    assert failure.exit_code == 1
    assert str(failure) == (
        'test: build failed: process "/bin/sh -c false" did not complete successfully (exit code 1)'
    )
    assert failure.tail.splitlines() == [f"npm ERR! line {n}" for n in range(11, 31)]
    assert "npm ERR! line 1" in log.lines
    assert len(fake_dagger.queries_with("sync")) == 2


@pytest.mark.anyio
async def test_a_query_error_fails_the_stage(fake_dagger: FakeDagger, spec: BuildSpec) -> None:
    fake_dagger.failures["web"] = "failed to resolve source metadata for docker.io/library/nope"
    async with DaggerExecutor().session(spec) as session:
        with pytest.raises(StageFailed, match=r"^web: build failed: failed to resolve") as caught:
            await session.build(job("web"), Log())
    assert "docker.io/library/nope" in caught.value.tail


@pytest.mark.dagger
@pytest.mark.anyio
async def test_a_refused_connection_means_no_engine(
    monkeypatch: pytest.MonkeyPatch, spec: BuildSpec
) -> None:
    monkeypatch.setenv("DAGGER_SESSION_PORT", str(free_port()))
    monkeypatch.setenv("DAGGER_SESSION_TOKEN", "token")
    with pytest.raises(EngineUnavailable) as caught:
        async with DaggerExecutor().session(spec):
            pytest.fail("connected to nothing")
    message = str(caught.value)
    assert caught.value.exit_code == 3
    assert message.startswith("no Dagger engine (connecting): ")
    assert "dagger run" in message
    assert "--engine docker" in message


@pytest.mark.anyio
async def test_a_wrong_session_token_means_no_engine(
    fake_dagger: FakeDagger, monkeypatch: pytest.MonkeyPatch, spec: BuildSpec
) -> None:
    monkeypatch.setenv("DAGGER_SESSION_TOKEN", "not-the-token")
    with pytest.raises(EngineUnavailable, match="no Dagger engine"):
        async with DaggerExecutor().session(spec):
            pytest.fail("connected with a wrong token")
    assert fake_dagger.queries == []


@pytest.mark.dagger
@pytest.mark.anyio
async def test_without_session_or_cli_it_fails_before_connecting(
    monkeypatch: pytest.MonkeyPatch, spec: BuildSpec, tmp_path: Path
) -> None:
    import dagger

    def connection(*_: object) -> None:
        pytest.fail("tried to connect, which would download a Dagger CLI")

    monkeypatch.setattr(dagger, "connection", connection)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("_EXPERIMENTAL_DAGGER_CLI_BIN", raising=False)
    with pytest.raises(EngineUnavailable, match=r"no `dagger run` session .* no dagger CLI"):
        async with DaggerExecutor().session(spec):
            pytest.fail("opened a session")


def fake_cli(directory: Path, body: str) -> Path:
    """A `dagger` on PATH; `dagger session` prints its connect params as the real one does."""
    directory.mkdir(exist_ok=True)
    path = directory / "dagger"
    path.write_text(f"#!{sys.executable}\nimport json, sys\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.dagger
@pytest.mark.anyio
async def test_without_a_session_the_sdk_runs_the_cli_on_path(
    monkeypatch: pytest.MonkeyPatch, spec: BuildSpec, tmp_path: Path
) -> None:
    import dagger.provisioning._engine as provisioning

    def download(*_: object) -> None:
        pytest.fail("the SDK went to download a Dagger CLI")

    monkeypatch.setattr(provisioning, "Downloader", download)
    monkeypatch.delenv("_EXPERIMENTAL_DAGGER_CLI_BIN", raising=False)
    with run_fake_dagger("cli-token") as fake:
        params = json.dumps({"port": fake.port, "session_token": "cli-token"})
        body = (
            "assert sys.argv[1] == 'session', sys.argv\n"
            f"print({params!r}, flush=True)\n"
            "sys.stdin.read()\n"
        )
        cli = fake_cli(tmp_path / "bin", body)
        monkeypatch.setenv("PATH", str(cli.parent))
        async with DaggerExecutor().session(spec) as session:
            await session.build(job("web"), Log())
    assert [c.args["target"] for c in fake.calls("dockerBuild")] == ["web"]
    assert "_EXPERIMENTAL_DAGGER_CLI_BIN" not in os.environ
    assert not fake.invalid


@pytest.mark.dagger
@pytest.mark.anyio
async def test_a_cli_that_cannot_start_a_session_means_no_engine(
    monkeypatch: pytest.MonkeyPatch, spec: BuildSpec, tmp_path: Path
) -> None:
    body = "sys.stderr.write('cannot connect to the engine runner\\n')\nsys.exit(1)\n"
    cli = fake_cli(tmp_path / "bin", body)
    monkeypatch.setenv("PATH", str(cli.parent))
    monkeypatch.delenv("_EXPERIMENTAL_DAGGER_CLI_BIN", raising=False)
    with pytest.raises(EngineUnavailable, match="no Dagger engine"):
        async with DaggerExecutor().session(spec):
            pytest.fail("opened a session")


@pytest.mark.anyio
async def test_a_secret_that_is_not_text_is_a_usage_error_naming_it(
    fake_dagger: FakeDagger, spec: BuildSpec
) -> None:
    """A file that is not UTF-8 arrives as surrogate escapes; Dagger's secrets are text."""
    binary = b"\x30\x82\xff\xfe".decode("utf-8", "surrogateescape")
    spec = dataclasses.replace(spec, secrets=Secrets.of({"key": binary}))
    with pytest.raises(UsageError) as caught:
        async with DaggerExecutor().session(spec):
            pytest.fail("opened a session")
    assert str(caught.value) == (
        "secret key: the file is not UTF-8 text, and Dagger takes text secrets; "
        "encode it (base64) or use --engine docker"
    )
    assert caught.value.exit_code == 2
    assert fake_dagger.queries == []


# -- secrets stay secret


@pytest.mark.anyio
async def test_secret_values_reach_the_engine_only_in_set_secret(
    fake_dagger: FakeDagger, spec: BuildSpec, capfd: pytest.CaptureFixture[str]
) -> None:
    spec = dataclasses.replace(
        spec,
        secrets=Secrets.of({"npm_token": NPM_TOKEN, "netrc": FILE_SECRET}),
        logins=(RegistryLogin("registry.test", "ci", REGISTRY_PASSWORD),),
    )
    fake_dagger.failures["test"] = ExecFailure(stderr="npm ERR! 401 Unauthorized\n")
    log = Log()
    errors: list[str] = []
    async with DaggerExecutor().session(spec) as session:
        image = await session.build(job("web"), log)
        await session.push(image, Reference.parse("registry.test/app/cache:web"), log)
        try:
            await session.build(job("test", 1), log)
        except StageFailed as exc:
            errors += [str(exc), repr(exc), exc.tail]

    assert errors
    captured = capfd.readouterr()
    ours = [*log.lines, *errors, captured.out, captured.err]
    assert not [text for text in ours if any(value in text for value in SECRET_VALUES)]
    carriers = [q for q in fake_dagger.queries if any(v in q.text for v in SECRET_VALUES)]
    assert carriers
    assert {q.root_fields for q in carriers} == {("setSecret",)}
    assert not [q for q in fake_dagger.queries if any(v in str(q.variables) for v in SECRET_VALUES)]


# -- the fake itself


def test_the_fake_engine_rejects_queries_outside_the_schema(fake_dagger: FakeDagger) -> None:
    answer = fake_dagger.answer({"query": "{ container { dockerBuild { id } } }"})
    assert answer["errors"]
    assert fake_dagger.invalid
    fake_dagger.invalid.clear()


def test_the_fake_engine_answers_introspection_and_version(fake_dagger: FakeDagger) -> None:
    answer = fake_dagger.answer({"query": "{ version __schema { queryType { name } } }"})
    assert answer == {"data": {"version": "v0.21.8", "__schema": {"queryType": {"name": "Query"}}}}


# -- issue 11: what the real engine does with logins, secrets, uploads and cached results


def only_run(fake: FakeDagger) -> ExecRun:
    [ran] = fake.ran
    return ran


@pytest.mark.anyio
async def test_logins_are_registered_before_the_first_build_pulls(
    fake_dagger: FakeDagger, spec: BuildSpec
) -> None:
    """The engine pulls FROM images inside dockerBuild with the logins registered earlier in
    the session; a login attached only to a push comes too late for a private base image."""
    fake_dagger.private_pulls["web"] = ("registry.test",)
    async with DaggerExecutor().session(spec) as session:
        with pytest.raises(StageFailed, match="401 Unauthorized"):
            await session.build(job("web"), Log())  # the fake refuses it without a login

    spec = dataclasses.replace(
        spec, logins=(RegistryLogin("registry.test", "ci", REGISTRY_PASSWORD),)
    )
    fake_dagger.queries.clear()
    await build_all(spec, [job("web")])

    first_build = fake_dagger.queries.index(fake_dagger.queries_with("dockerBuild")[0])
    [login] = fake_dagger.queries_with("withRegistryAuth")
    assert fake_dagger.queries.index(login) < first_build
    assert login.root_fields == ("container",)
    assert fake_dagger.logins == {"registry.test": "ci"}


@pytest.mark.anyio
async def test_a_login_the_engine_would_file_under_docker_hub_is_skipped_with_a_warning(
    fake_dagger: FakeDagger, spec: BuildSpec
) -> None:
    """auth/registry.go files a host with no dot, no port and no "localhost" under docker.io."""
    logins = (
        RegistryLogin("MyRegistry", "ci", REGISTRY_PASSWORD),
        RegistryLogin("localhost", "ci", REGISTRY_PASSWORD),
        RegistryLogin("localhost:5000", "ci", REGISTRY_PASSWORD),
    )
    spec = dataclasses.replace(spec, logins=logins)
    async with DaggerExecutor().session(spec) as session:
        await session.build(job("web"), Log())
        warnings = session.warnings

    assert {c.args["address"] for c in fake_dagger.calls("withRegistryAuth")} == {
        "localhost",
        "localhost:5000",
    }
    [warning] = warnings
    assert warning.startswith("registry MyRegistry: not logged in with Dagger")
    assert "--engine docker" in warning
    assert REGISTRY_PASSWORD not in warning


@pytest.mark.anyio
async def test_each_build_gets_only_the_secrets_its_run_steps_mount(
    fake_dagger: FakeDagger, spec: BuildSpec
) -> None:
    spec = dataclasses.replace(
        spec, secrets=Secrets.of({"npm_token": NPM_TOKEN, "netrc": FILE_SECRET})
    )
    await build_all(spec, [job("deps", secrets=[NPM_MOUNT]), job("web", 1)])

    builds = {c.args["target"]: c for c in fake_dagger.calls("dockerBuild")}
    assert secret_names(fake_dagger, builds["deps"].args["secrets"]) == ["npm_token"]
    assert builds["web"].args["secrets"] == []


@pytest.mark.anyio
async def test_the_test_command_and_the_pushed_image_carry_no_secret(
    fake_dagger: FakeDagger, spec: BuildSpec, tmp_path: Path
) -> None:
    """dockerBuild leaves every secret it got mounted in the container it returns, and each
    RUN's own mount and secret variable too: all of them are gone before the command runs."""
    spec = dataclasses.replace(
        spec, secrets=Secrets.of({"npm_token": NPM_TOKEN, "netrc": FILE_SECRET})
    )
    mounts = [
        NPM_MOUNT,
        parse_mount("type=secret,id=netrc,target=/root/.netrc"),
        parse_mount("type=secret,id=npm_token,env=NPM_TOKEN"),
    ]
    ref = Reference.parse("registry.test/app/cache:test")
    async with DaggerExecutor().session(spec) as session:
        image = await session.build(job("test", secrets=mounts), Log())
        await session.push(image, ref, Log())
        await session.run(image, a_test(tmp_path), Log())

    # what the engine's converter adds on top of dockerBuild's own mounts
    [publish] = fake_dagger.queries_with("publish")
    [node] = [c for c in publish.calls if c.field == "node"]
    built = fake_dagger.object_of(node.args["id"])
    removed = [c.args["path"] for c in built.chain if c.field == "withoutMount"]
    assert sorted(removed) == [
        "/root/.netrc",
        "/run/secrets/netrc",
        "/run/secrets/npm_token",
        "/run/secrets/npm_token",
        "/run/secrets/npm_token",
    ]
    unset = [c.args["name"] for c in built.chain if c.field == "withoutSecretVariable"]
    assert unset == ["NPM_TOKEN"]
    ran = only_run(fake_dagger)
    assert ran.secret_paths == ()
    assert ran.secret_variables == ()


@pytest.mark.anyio
async def test_the_test_command_gets_the_secrets_the_config_grants_and_no_other(
    fake_dagger: FakeDagger, spec: BuildSpec, tmp_path: Path
) -> None:
    spec = dataclasses.replace(
        spec, secrets=Secrets.of({"npm_token": NPM_TOKEN, "netrc": FILE_SECRET})
    )
    test = dataclasses.replace(a_test(tmp_path), secrets=("netrc",))
    async with DaggerExecutor().session(spec) as session:
        image = await session.build(job("test", secrets=[NPM_MOUNT]), Log())
        await session.run(image, test, Log())

    assert only_run(fake_dagger).secret_paths == ("/run/secrets/netrc",)


@pytest.mark.anyio
async def test_a_rerun_of_the_tests_is_never_a_replay_of_a_cached_result(
    fake_dagger: FakeDagger, spec: BuildSpec, tmp_path: Path
) -> None:
    """The engine memoizes withExec by its inputs, a failing exit with expect ANY included."""
    fake_dagger.execs[SH_TEST] = ExecResult(1, stderr="1 failing\n")
    for _ in range(2):
        assert await run_built(spec, a_test(tmp_path), Log()) == 1

    assert [run.argv for run in fake_dagger.ran] == [SH_TEST, SH_TEST]
    run_ids = {run.env[RUN_ID_VARIABLE] for run in fake_dagger.ran}
    assert len(run_ids) == 2


def test_the_upload_excludes_are_the_ignore_rules_as_buildkit_reads_them() -> None:
    text = "# deps\nnode_modules\n/.git/\n*.log\n!keep.log\n\n./build/../dist\n"
    assert upload_excludes(text) == ["node_modules", ".git", "*.log", "!keep.log", "dist"]
    assert upload_excludes(None) == []


@pytest.mark.anyio
async def test_ignored_files_are_not_uploaded(fake_dagger: FakeDagger, spec: BuildSpec) -> None:
    """The engine applies .dockerignore only after the upload: without `exclude`, node_modules
    and .git are synced on every run."""
    context = spec.context
    (context / "src").mkdir()
    (context / "src/app.js").write_bytes(b"x" * 1000)
    (context / "package.json").write_bytes(b"{}")
    (context / "node_modules/left-pad").mkdir(parents=True)
    (context / "node_modules/left-pad/index.js").write_bytes(b"y" * 500_000)
    (context / "node_modules/keep.txt").write_bytes(b"k" * 10)
    (context / ".git/objects").mkdir(parents=True)
    (context / ".git/objects/pack").write_bytes(b"z" * 300_000)
    spec = dataclasses.replace(spec, ignore_file="node_modules\n.git\n!node_modules/keep.txt\n")

    await build_all(spec, [job("web")])

    [directory] = fake_dagger.calls("directory")
    assert directory.args["exclude"] == ["node_modules", ".git", "!node_modules/keep.txt"]
    assert fake_dagger.uploads == [1000 + 2 + 10]
    files = {c.args["path"] for c in fake_dagger.calls("withNewFile")}
    assert files == {DOCKERFILE, DOCKERIGNORE}  # added after the upload, never excluded


@pytest.mark.anyio
async def test_output_the_engine_cut_short_is_said_in_the_failure(
    fake_dagger: FakeDagger, spec: BuildSpec
) -> None:
    """engine/engineutil/ref.go keeps the last 100 KiB of an exec's output behind a marker."""
    stderr = "[omitting 52000 bytes]...\n" + "npm ERR! tail\n"
    fake_dagger.failures["web"] = ExecFailure(stderr=stderr, exit_code=2)
    async with DaggerExecutor().session(spec) as session:
        with pytest.raises(StageFailed) as caught:
            await session.build(job("web"), Log())
    assert str(caught.value) == (
        'web: build failed: process "/bin/sh -c false" did not complete successfully'
        " (exit code 2); the engine kept only the last 100 KiB of its output"
        " (52000 bytes omitted)"
    )
