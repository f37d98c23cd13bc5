"""The engine double's own rules, driven through the real dagger-io SDK: what the Dagger 0.21
engine does that the executor must cope with (see tests/engine_double.py for the sources)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.docker_env import DockerEnv
from tests.engine_double import EngineDouble
from tests.registry_server import RegistryServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def session() -> AsyncIterator[None]:
    """One client session on the double in the environment, as `dagger run` gives one."""
    import dagger

    async with dagger.connection(dagger.Config()):
        yield


def context(tmp_path: Path, dockerfile: str, **files: str) -> Path:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


async def build(
    directory: Path, *, exclude: Sequence[str] = (), secrets: Sequence[tuple[str, str]] = ()
) -> object:
    from dagger import dag

    return await (
        dag.host()
        .directory(str(directory), exclude=list(exclude))
        .docker_build(secrets=[dag.set_secret(name, value) for name, value in secrets])
        .sync()
    )


async def test_the_engines_loopback_is_its_own(
    engine_double: EngineDouble, docker_env: DockerEnv, tmp_path: Path
) -> None:
    import dagger

    directory = context(tmp_path, f"FROM {docker_env.base}\n")
    async with session():
        with pytest.raises(dagger.QueryError, match="connection refused"):
            await build(directory)
        assert engine_double.builds == []
    engine_double.host_network = True
    async with session():
        await build(directory)
    assert len(engine_double.builds) == 1


@pytest.mark.parametrize(
    ("dockerfile", "refused"),
    [
        ("# syntax=example.com/frontend:1\nFROM {base}\n", "unsupported syntax"),
        ("FROM {base}\nADD --checksum=sha256:00 https://example.com/x /x\n", "ADD --checksum"),
        ("FROM {base}\nRUN --mount=type=ssh true\n", "SSH mounts"),
    ],
)
async def test_what_the_engines_conversion_refuses(
    engine_double: EngineDouble,
    docker_env: DockerEnv,
    tmp_path: Path,
    dockerfile: str,
    refused: str,
) -> None:
    import dagger

    engine_double.host_network = True
    directory = context(tmp_path, dockerfile.format(base=docker_env.base))
    async with session():
        with pytest.raises(dagger.QueryError, match=f"failed to convert Dockerfile.*{refused}"):
            await build(directory)


async def test_a_docker_dockerfile_syntax_is_accepted(
    engine_double: EngineDouble, docker_env: DockerEnv, tmp_path: Path
) -> None:
    engine_double.host_network = True
    directory = context(tmp_path, f"# syntax=docker/dockerfile:1\nFROM {docker_env.base}\n")
    async with session():
        await build(directory)


async def test_uploads_are_counted_and_exclude_keeps_files_out(
    engine_double: EngineDouble, docker_env: DockerEnv, tmp_path: Path
) -> None:
    from dagger import dag

    engine_double.host_network = True
    dockerfile = f"FROM {docker_env.base}\nCOPY . /ctx/\n"
    directory = context(tmp_path, dockerfile, **{"node_modules/big.js": "x" * 5000, "a.txt": "a"})
    async with session():
        await build(directory)
        everything = engine_double.uploaded_bytes
        engine_double.uploaded_bytes = 0
        built = await build(directory, exclude=["node_modules"])
        assert engine_double.uploaded_bytes == len(dockerfile) + 1
        assert everything == engine_double.uploaded_bytes + 5000
        ctx = dag.host().directory(str(directory), exclude=["node_modules"]).docker_build()
        assert not await ctx.exists("/ctx/node_modules")
        assert await ctx.exists("/ctx/a.txt")
    assert built is not None


async def test_the_default_platform_is_the_engines(
    engine_double: EngineDouble, docker_env: DockerEnv, tmp_path: Path
) -> None:
    import dagger
    from dagger import dag

    engine_double.host_network = True
    engine_double.platform = "linux/amd64"
    directory = context(tmp_path, f"FROM {docker_env.base}\n")
    async with session():
        await build(directory)
        await (
            dag.host()
            .directory(str(directory))
            .docker_build(platform=dagger.Platform("linux/amd64"))
            .sync()
        )
    assert [record.platform for record in engine_double.builds] == ["linux/amd64"] * 2
    assert engine_double.calls("dockerBuild")[0].args.get("platform") is None


async def test_secrets_stay_mounted_on_the_result_and_later_runs(
    engine_double: EngineDouble, docker_env: DockerEnv, tmp_path: Path
) -> None:
    import dagger
    from dagger import dag

    engine_double.host_network = True
    dockerfile = (
        f"FROM {docker_env.base}\n"
        "RUN --mount=type=secret,id=token test -s /run/secrets/token\n"
        "RUN cat /run/secrets/token > /later\n"
    )
    directory = context(tmp_path, dockerfile)
    async with session():
        built = (
            dag.host()
            .directory(str(directory))
            .docker_build(secrets=[dag.set_secret("token", "hunter2")])
        )
        assert await built.with_exec(["cat", "/later"]).stdout() == "hunter2"
        ran = built.with_exec(["cat", "/run/secrets/token"], expect=dagger.ReturnType.ANY)
        assert await ran.stdout() == "hunter2"
    assert engine_double.builds[0].secret_ids == ("token",)


async def test_exec_results_are_replayed_for_the_same_inputs(
    engine_double: EngineDouble, docker_env: DockerEnv, tmp_path: Path
) -> None:
    import dagger
    from dagger import dag

    engine_double.host_network = True
    directory = context(tmp_path, f"FROM {docker_env.base}\n")
    # a value no two runs share (busybox date has no %N: two runs in one second printed alike)
    command = ["sh", "-c", "cat /proc/sys/kernel/random/uuid; exit 3"]
    outputs = []
    for _ in range(2):
        async with session():
            built = dag.host().directory(str(directory)).docker_build()
            ran = built.with_exec(command, expect=dagger.ReturnType.ANY)
            outputs.append((await ran.exit_code(), await ran.stdout()))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == 3
    assert engine_double.execs_run == 1
    async with session():
        busted = (
            dag.host()
            .directory(str(directory))
            .docker_build()
            .with_env_variable("CACHE_BUSTER", uuid.uuid4().hex)
            .with_exec(command, expect=dagger.ReturnType.ANY)
        )
        assert await busted.stdout() != outputs[0][1]
    assert engine_double.execs_run == 2


async def test_a_failing_command_is_an_exec_error_ending_in_its_exit_code(
    engine_double: EngineDouble, docker_env: DockerEnv, tmp_path: Path
) -> None:
    import dagger

    engine_double.host_network = True
    directory = context(tmp_path, f"FROM {docker_env.base}\nRUN echo red >&2 && exit 7\n")
    async with session():
        with pytest.raises(dagger.ExecError) as caught:
            await build(directory)
    assert caught.value.exit_code == 7
    assert str(caught.value.message).endswith("exit code: 7")
    assert "red" in caught.value.stderr


async def test_a_pull_needs_a_login_registered_earlier_in_the_session(
    engine_double: EngineDouble,
    docker_env: DockerEnv,
    auth_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    import dagger
    from dagger import dag

    assert auth_registry.auth is not None
    username, password = auth_registry.auth
    engine_double.host_network = True
    private = f"{auth_registry.host}/double-{uuid.uuid4().hex[:8]}/base:1"
    async with session():
        secret = dag.set_secret("registry-password", password)
        with pytest.raises(dagger.QueryError, match="invalid registry address"):
            await dag.container().with_registry_auth("registry", username, secret).sync()
        base = dag.container().from_(docker_env.base)
        await base.with_registry_auth(auth_registry.host, username, secret).publish(private)
    directory = context(tmp_path, f"FROM {private}\n")
    async with session():
        with pytest.raises(dagger.QueryError, match="401 Unauthorized"):
            await build(directory)
    async with session():
        secret = dag.set_secret("registry-password", password)
        await dag.container().with_registry_auth(auth_registry.host, username, secret).sync()
        await build(directory)


async def test_a_failing_commands_output_is_capped_at_100_kib(
    engine_double: EngineDouble, docker_env: DockerEnv, tmp_path: Path
) -> None:
    import dagger
    from dagger import dag

    engine_double.host_network = True
    directory = context(tmp_path, f"FROM {docker_env.base}\n")
    async with session():
        built = dag.host().directory(str(directory)).docker_build()
        with pytest.raises(dagger.ExecError) as caught:
            await built.with_exec(["sh", "-c", "yes x | head -c 300000 >&2; exit 1"]).sync()
    assert caught.value.exit_code == 1
    assert 100_000 < len(caught.value.stderr.encode()) <= 100 * 1024
