"""Shared or remote engines: the settings that point there reach the executors untouched.

Dagger's CLI reads `_EXPERIMENTAL_DAGGER_RUNNER_HOST`; the docker CLI reads `DOCKER_HOST`, and
buildx reads `BUILDX_BUILDER`. Many runners can then share one engine and one registry cache.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio.lowlevel
import pytest

from pipeline.engines.base import BuildSpec, StageJob
from pipeline.engines.dagger_engine import DaggerExecutor
from pipeline.engines.docker_engine import DockerExecutor
from pipeline.oci.reference import Reference
from pipeline.settings.secrets import Secrets
from tests.engines.test_dagger_engine import Log, fake_cli, job
from tests.fake_dagger import run_fake_dagger


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def spec(tmp_path: Path) -> BuildSpec:
    return BuildSpec(
        context=tmp_path,
        dockerfile="FROM busybox AS web\n",
        ignore_file=None,
        build_args={},
        secrets=Secrets(),
        platform=None,
    )


def fake_docker(directory: Path, record: Path, *, buildx: bool) -> Path:
    """A docker CLI that records each call's argv and the variables that choose the engine."""
    directory.mkdir(exist_ok=True)
    path = directory / "docker"
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(record)!r}, 'a') as out:\n"
        "    keys = ('DOCKER_HOST', 'BUILDX_BUILDER', 'DOCKER_BUILDKIT')\n"
        "    out.write(json.dumps([sys.argv[1:], {k: os.environ.get(k) for k in keys}]) + '\\n')\n"
        "if sys.argv[1:3] == ['buildx', 'inspect']:\n"
        f"    sys.exit(0 if {buildx} else 1)  # a builder named in BUILDX_BUILDER\n"
        "if sys.argv[1] == 'version':\n"
        "    print('27.3.1')\n"
    )
    path.chmod(0o755)
    return path


@pytest.mark.anyio
@pytest.mark.parametrize("buildx", [True, False])
async def test_docker_host_and_buildx_builder_reach_every_docker_call(
    tmp_path: Path, buildx: bool
) -> None:
    record = tmp_path / "calls.jsonl"
    docker = fake_docker(tmp_path / "bin", record, buildx=buildx)
    env = {
        "PATH": str(docker.parent),
        "HOME": str(tmp_path),
        "DOCKER_HOST": "tcp://buildkit.internal:2376",
        "BUILDX_BUILDER": "shared-builder",
    }
    if not buildx:
        (tmp_path / "bin" / "docker").write_text(docker.read_text().replace("27.3.1", "20.10.24"))
    executor = DockerExecutor(str(docker), env)
    async with executor.session(spec(tmp_path)) as session:
        job = StageJob(0, "web", "web", "k" * 64, Reference.parse("local/web:k"))
        await session.build(job, Log())
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls
    for _, seen in calls:
        assert seen["DOCKER_HOST"] == "tcp://buildkit.internal:2376"
        assert seen["BUILDX_BUILDER"] == "shared-builder"
    build = next(argv for argv, _ in calls if "build" in argv)
    assert build[:3] == (
        ["buildx", "build", "--load"] if buildx else ["build", "--progress=plain", "-f"]
    )


@pytest.mark.dagger
@pytest.mark.anyio
async def test_the_dagger_runner_host_reaches_the_dagger_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagger.provisioning._engine as provisioning

    monkeypatch.setattr(provisioning, "Downloader", lambda *_: pytest.fail("no download"))
    monkeypatch.delenv("_EXPERIMENTAL_DAGGER_CLI_BIN", raising=False)
    monkeypatch.setenv("_EXPERIMENTAL_DAGGER_RUNNER_HOST", "tcp://dagger-engine.internal:8080")
    seen = tmp_path / "runner-host"
    with run_fake_dagger("cli-token") as fake:
        params = json.dumps({"port": fake.port, "session_token": "cli-token"})
        body = (
            "import os\n"
            "host = os.environ.get('_EXPERIMENTAL_DAGGER_RUNNER_HOST', '')\n"
            f"open({str(seen)!r}, 'w').write(host)\n"
            f"print({params!r}, flush=True)\n"
            "sys.stdin.read()\n"
        )
        cli = fake_cli(tmp_path / "bin", body)
        monkeypatch.setenv("PATH", str(cli.parent))
        async with DaggerExecutor().session(spec(tmp_path)) as session:
            await session.build(job("web"), Log())
    assert seen.read_text() == "tcp://dagger-engine.internal:8080"
    assert [c.args["target"] for c in fake.calls("dockerBuild")] == ["web"]
    await anyio.lowlevel.checkpoint()
