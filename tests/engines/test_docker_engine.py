"""The docker executor against a fake docker CLI: how it finds its engine and uses hints."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from pipeline.engines import docker_engine
from pipeline.engines.base import BuildSpec, Image, RegistryLogin, StageJob, TestRun
from pipeline.engines.docker_engine import DockerExecutor
from pipeline.errors import EngineUnavailable, StageFailed
from pipeline.oci.reference import Reference
from pipeline.oci.registry import RegistryClient
from pipeline.settings.secrets import Secrets
from tests.cli import fresh_python
from tests.registry_server import RegistryServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# BuildKit's plain progress for a one-step stage, as dockerd 20.10 prints it
BUILD_OUTPUT = """\
#4 [web 1/2] FROM docker.io/library/busybox
#4 DONE 0.0s

#5 [web 2/2] RUN true
#5 DONE 0.1s

#6 exporting to image
#6 exporting layers 0.0s done
#6 writing image sha256:0123 done
#6 naming to cache:web-k done
#6 DONE 0.1s
"""


PUSHED = "sha256:" + "d" * 64


def fake_docker(
    tmp_path: Path,
    *,
    driver: str | None = None,
    failing_pull: str = "",
    build_output: str = "",
    saved: Path | None = None,
    build_code: int = 0,
    stored: dict[str, str] | None = None,
    save_seconds: float = 0.0,
) -> Path:
    """A docker 20.10 CLI that records its calls (and the config a pull or build is given);
    `driver` gives it buildx with that driver;
    its builds print `build_output`; `docker save -o` writes `saved`; a push pushes PUSHED;
    its image store holds the images `stored` names, each of the platform given; a save takes
    `save_seconds`, and says it ended."""
    path = tmp_path / "bin" / "docker"
    path.parent.mkdir()
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"with open({str(tmp_path / 'calls.jsonl')!r}, 'a') as out:\n"
        "    out.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "args = sys.argv[1:]\n"
        "if args[0] in ('pull', 'build') and 'DOCKER_CONFIG' in __import__('os').environ:\n"
        f"    with open({str(tmp_path / 'calls.jsonl')!r}, 'a') as out:\n"
        "        config = __import__('os').environ['DOCKER_CONFIG']\n"
        "        out.write(json.dumps([args[0] + ' config', config]) + '\\n')\n"
        "if args[:2] == ['buildx', 'inspect']:\n"
        f"    sys.exit(print('Name: x\\nDriver: {driver}') if {driver is not None} else 1)\n"
        "if args[0] == 'version':\n"
        "    print('20.10.24')\n"
        f"if args[0] == 'pull' and args[-1] == {failing_pull!r}:\n"
        "    sys.exit(print('Error response from daemon: manifest unknown') or 1)\n"
        "if args[0] == 'pull':\n"
        "    __import__('time').sleep(0.3)\n"
        f"    with open({str(tmp_path / 'calls.jsonl')!r}, 'a') as out:\n"
        "        out.write(json.dumps(['pulled', args[-1]]) + '\\n')\n"
        "if args[0] == 'build':\n"
        f"    print({build_output!r}, end='')\n"
        f"    sys.exit({build_code})\n"
        f"if args[:2] == ['image', 'inspect'] and args[3] == {docker_engine._PLATFORM!r}:\n"
        f"    stored = {stored or {}!r}\n"
        "    sys.exit(print(stored[args[-1]]) if args[-1] in stored else 1)\n"
        "if args[:2] == ['image', 'inspect']:\n"
        "    print(1000)\n"
        "if args[0] == 'save':\n"
        f"    __import__('time').sleep({save_seconds})\n"
        f"    with open({str(tmp_path / 'calls.jsonl')!r}, 'a') as out:\n"
        "        out.write(json.dumps(['saved']) + '\\n')\n"
        f"if args[0] == 'save' and {str(saved)!r} != 'None':\n"
        f"    __import__('shutil').copyfile({str(saved)!r}, args[2])\n"
        "if args[0] == 'push':\n"
        f"    print('web-k: digest: {PUSHED} size: 1')\n"
    )
    path.chmod(0o755)
    return path


def calls(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def spec(tmp_path: Path) -> BuildSpec:
    return BuildSpec(tmp_path, "FROM busybox AS web\n", None, {}, Secrets(), None)


def job(*cache_from: str) -> StageJob:
    pulls = tuple(Reference.parse(ref) for ref in cache_from)
    return StageJob(0, "web", "web", "k" * 64, Reference.parse("cache:web-k"), cache_from=pulls)


@pytest.mark.anyio
async def test_cache_images_are_pulled_before_a_daemon_build(tmp_path: Path) -> None:
    docker = fake_docker(tmp_path, failing_pull="cache:gone--main")
    lines: list[str] = []
    executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)})
    async with executor.session(spec(tmp_path)) as session:
        await session.build(job("cache:web--feature", "cache:gone--main"), lines.append)
    made = calls(tmp_path)
    pulls = [argv[-1] for argv in made if argv[0] == "pull"]
    assert sorted(pulls) == ["cache:gone--main", "cache:web--feature"]
    build = next(argv for argv in made if argv[0] == "build")
    assert build.count("--cache-from") == 1
    assert build[build.index("--cache-from") + 1] == "cache:web--feature"
    assert made.index(build) > max(made.index(argv) for argv in made if argv[0] == "pull")
    assert lines == [
        "cache image cache:gone--main not pulled, building without it: "
        "Error response from daemon: manifest unknown"
    ]


@pytest.mark.anyio
async def test_builds_sharing_a_hint_wait_for_one_pull(tmp_path: Path) -> None:
    docker = fake_docker(tmp_path)
    executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)})
    async with executor.session(spec(tmp_path)) as session, anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(session.build, job("cache:mid--main"), lambda _: None)
    made = calls(tmp_path)
    assert [argv for argv in made if argv[0] == "pull"] == [["pull", "--quiet", "cache:mid--main"]]
    builds = [argv for argv in made if argv[0] == "build"]
    assert len(builds) == 3
    assert all("cache:mid--main" in argv for argv in builds)


@pytest.mark.anyio
@pytest.mark.parametrize("round_trip", [0.1, 0.001])
async def test_a_distant_build_pulls_the_images_it_reads_beside_its_hints(
    tmp_path: Path, round_trip: float
) -> None:
    """Beside the hints it waits for anyway, and only then: for the build's platform, quietly,
    as BuildKit resolves what was not pulled itself. Next to the registry, not at all."""
    base = "registry.test/busybox@sha256:" + "a" * 64
    docker = fake_docker(tmp_path, failing_pull=base)
    lines: list[str] = []
    reads = (Reference.parse(base), Reference.parse("registry.test/cache@sha256:" + "b" * 64))
    async with RegistryClient() as client:
        client.stats.fastest["registry.test"] = round_trip
        executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)}, registry=client)
        build_spec = replace(spec(tmp_path), platform="linux/arm64")
        async with executor.session(build_spec) as session:
            hinted = replace(job("registry.test/cache:web--main"), reads=reads)
            await session.build(hinted, lines.append)
            await session.build(replace(hinted, cache_from=()), lines.append)
    pulls = sorted(argv[1:] for argv in calls(tmp_path) if argv[0] == "pull")
    hint = ["--quiet", "registry.test/cache:web--main"]
    if round_trip < docker_engine.PULL_BESIDE:
        assert pulls == [hint]
    else:
        beside = [["--quiet", "--platform", "linux/arm64", str(ref)] for ref in reads]
        assert pulls == sorted([hint, *beside])
    assert lines == []


@pytest.mark.anyio
async def test_a_hint_prefetched_while_planning_is_not_pulled_again(tmp_path: Path) -> None:
    """`prefetch` pulls a hint before the session opens; a build given it waits for that pull.
    One that failed is pulled again by the session, whose failure is then said."""
    docker = fake_docker(tmp_path, failing_pull="cache:gone--main")
    lines: list[str] = []
    executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)})
    async with anyio.create_task_group() as group:
        for ref in ("cache:web--main", "cache:gone--main"):
            group.start_soon(executor.prefetch, Reference.parse(ref))
        await anyio.sleep(0.1)  # the pulls are under way, as the plan ends
        async with executor.session(spec(tmp_path)) as session:
            await session.build(job("cache:web--main", "cache:gone--main"), lines.append)
    made = calls(tmp_path)
    pulls = sorted(argv[-1] for argv in made if argv[0] == "pull")
    assert pulls == ["cache:gone--main", "cache:gone--main", "cache:web--main"]
    assert [argv[0] for argv in made].count("version") == 1, "one check for both callers"
    assert made.index(next(a for a in made if a[0] == "build")) == len(made) - 1
    assert lines == [
        "cache image cache:gone--main not pulled, building without it: "
        "Error response from daemon: manifest unknown"
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("round_trip", [0.1, 0.001])
async def test_a_base_image_is_pulled_while_planning_only_from_a_distant_registry(
    tmp_path: Path, round_trip: float
) -> None:
    """A build without hints that reads the base waits for its pull under way, so BuildKit
    does not resolve it through the registry meanwhile; next to the registry, none is made."""
    docker = fake_docker(tmp_path)
    base = Reference.parse("registry.test/busybox@sha256:" + "a" * 64)
    async with RegistryClient() as client:
        client.stats.fastest["registry.test"] = round_trip
        executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)}, registry=client)
        async with anyio.create_task_group() as group:
            group.start_soon(executor.prefetch, base, "linux/arm64")
            await anyio.sleep(0.05)  # the plan ends while the pull is under way
            async with executor.session(spec(tmp_path)) as session:
                await session.build(replace(job(), reads=(base,)), lambda line: None)
    made = calls(tmp_path)
    pulls = [argv for argv in made if argv[0] == "pull"]
    if round_trip < docker_engine.PULL_BESIDE:
        assert pulls == []
    else:
        assert pulls == [["pull", "--quiet", "--platform", "linux/arm64", str(base)]]
        build = made.index(next(argv for argv in made if argv[0] == "build"))
        assert made.index(["pulled", str(base)]) < build


@pytest.mark.anyio
@pytest.mark.parametrize("held", ["linux/arm64/v8", "linux/amd64"])
async def test_an_image_a_build_reads_that_the_store_holds_is_not_pulled_again(
    tmp_path: Path, held: str
) -> None:
    """A pinned base or restored stage the image store holds for the build's platform is read
    from there by BuildKit: no pull asks the registry for it again, neither while planning
    nor beside the hints. One held for another platform only (pulled from the same index) is
    pulled."""
    base = Reference.parse("registry.test/busybox:1@sha256:" + "a" * 64)
    stage = Reference.parse("registry.test/cache@sha256:" + "b" * 64)
    docker = fake_docker(tmp_path, stored={str(base): held, str(stage): held})
    async with RegistryClient() as client:
        client.stats.fastest["registry.test"] = 0.1
        executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)}, registry=client)
        build_spec = replace(spec(tmp_path), platform="linux/arm64")
        async with anyio.create_task_group() as group:
            group.start_soon(executor.prefetch, base, "linux/arm64")
            await anyio.sleep(0.05)
            async with executor.session(build_spec) as session:
                hinted = replace(job("registry.test/cache:web--main"), reads=(base, stage))
                await session.build(hinted, lambda line: None)
    pulled = sorted(argv[-1] for argv in calls(tmp_path) if argv[0] == "pulled")
    if held == "linux/amd64":
        assert pulled == sorted([str(base), str(stage), "registry.test/cache:web--main"])
    else:
        assert pulled == ["registry.test/cache:web--main"]


@pytest.mark.anyio
async def test_a_container_builder_imports_its_cache_itself(tmp_path: Path) -> None:
    docker = fake_docker(tmp_path, driver="docker-container")
    executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)})
    async with executor.session(spec(tmp_path)) as session:
        await session.build(job("cache:web--main"), lambda _: None)
    made = calls(tmp_path)
    assert not [argv for argv in made if argv[0] == "pull"]
    build = next(argv for argv in made if "build" in argv)
    assert build[:3] == ["buildx", "build", "--load"]
    assert "cache:web--main" in build


@pytest.mark.anyio
async def test_prepare_asks_once_and_keeps_a_problem_for_the_session(tmp_path: Path) -> None:
    executor = DockerExecutor(str(tmp_path / "no-docker"), {"PATH": ""})
    await executor.prepare()
    await executor.prepare()
    with pytest.raises(EngineUnavailable, match="cannot run the docker CLI"):
        async with executor.session(spec(tmp_path)):
            pass


@pytest.mark.anyio
async def test_the_engine_is_found_in_one_round_of_two_calls(tmp_path: Path) -> None:
    docker = fake_docker(tmp_path)
    executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)})
    await executor.prepare()
    async with executor.session(spec(tmp_path)):
        pass
    assert sorted(calls(tmp_path)) == [
        ["buildx", "inspect"],
        ["version", "--format", "{{.Client.Version}}"],
    ]


@pytest.mark.anyio
async def test_the_test_command_sees_only_the_secrets_granted_to_it(tmp_path: Path) -> None:
    docker = fake_docker(tmp_path)
    executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)})
    secrets = Secrets.of({"token": "t-value", "netrc": "n-value"})
    the_spec = replace(spec(tmp_path), secrets=secrets, platform="linux/arm64")
    test = TestRun("make check", (), tmp_path / "artifacts", secrets=("netrc",))
    ref = Reference.parse("cache:web-k")
    async with executor.session(the_spec) as session:
        await session.run(ref, test, lambda line: None)
        await session.run(ref, replace(test, secrets=()), lambda line: None)
    granted, plain = [argv for argv in calls(tmp_path) if argv[0] == "run"]
    mounts = [granted[i + 1] for i, arg in enumerate(granted) if arg == "--mount"]
    [mount] = mounts
    assert mount.startswith("type=bind,src=")
    assert mount.endswith(",dst=/run/secrets/netrc,readonly")
    assert "--mount" not in plain
    assert plain[plain.index("--platform") + 1] == "linux/arm64"
    assert not [arg for arg in granted + plain if "value" in arg]


@pytest.mark.anyio
async def test_a_job_with_its_own_dockerfile_is_built_from_it(tmp_path: Path) -> None:
    """BuildKit reads `<dockerfile>.dockerignore` first, so the rules go beside each copy."""
    docker = fake_docker(tmp_path)
    executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)})
    own = "FROM cache@sha256:" + "1" * 64 + " AS base\nFROM base AS web\n"
    with_rules = replace(spec(tmp_path), ignore_file="node_modules\n")
    async with executor.session(with_rules) as session:
        await session.build(job(), lambda _: None)
        await session.build(replace(job(), dockerfile=own), lambda _: None)
        shared, private = (
            Path(argv[argv.index("-f") + 1]) for argv in calls(tmp_path) if argv[0] == "build"
        )
        assert shared.read_text() == "FROM busybox AS web\n"
        assert private.read_text() == own
        assert private.parent == shared.parent
        ignore = private.with_name(f"{private.name}.dockerignore")
        assert ignore.read_text() == "node_modules\n"


@pytest.mark.anyio
async def test_a_build_says_once_when_it_starts_exporting_its_image(tmp_path: Path) -> None:
    """The runner sends the HEAD of the stage's cache tag then, while the image is written."""
    docker = fake_docker(tmp_path, build_output=BUILD_OUTPUT)
    executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)})
    lines: list[str] = []
    exported: list[int] = []
    async with executor.session(spec(tmp_path)) as session:
        await session.build(job(), lines.append, lambda: exported.append(len(lines)))
        await session.build(job(), lines.append)
    assert lines[exported[0] - 1] == "#6 exporting to image"
    assert exported == [7]
    assert len(lines) == 2 * len(BUILD_OUTPUT.splitlines())


@pytest.mark.anyio
async def test_a_build_says_once_when_its_first_step_after_from_starts(tmp_path: Path) -> None:
    """The runner starts the builds that share this one's steps then."""
    docker = fake_docker(tmp_path, build_output=BUILD_OUTPUT)
    executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)})
    lines: list[str] = []
    said: list[tuple[str, int]] = []
    async with executor.session(spec(tmp_path)) as session:
        assert session.tells_running
        await session.build(
            job(),
            lines.append,
            lambda: said.append(("exporting", len(lines))),
            lambda: said.append(("running", len(lines))),
        )
    assert said == [("running", 4), ("exporting", 7)]
    assert lines[3] == "#5 [web 2/2] RUN true"


def containerd_style_save(tmp_path: Path) -> Path:
    """A `docker save` archive as a containerd image store writes it: compressed layer blobs."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("empty"))
    diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    blob = gzip.compress(layer.getvalue())
    blob_name = "blobs/sha256/" + hashlib.sha256(blob).hexdigest()
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "Layers": [blob_name]}]).encode()
    archive = tmp_path / "saved.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in [(blob_name, blob), ("config.json", config), ("manifest.json", manifest)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


@pytest.mark.anyio
async def test_an_archive_docker_save_writes_otherwise_is_pushed_by_docker_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image to push from `docker save` whose archive is not the layer tarballs its config
    names is pushed by `docker push`, before any upload of ours."""
    monkeypatch.setattr(docker_engine, "uploads_faster", lambda size, round_trip: True)
    docker = fake_docker(tmp_path, saved=containerd_style_save(tmp_path))
    lines: list[str] = []
    async with RegistryClient() as client:
        executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)}, registry=client)
        async with executor.session(spec(tmp_path)) as session:
            image = Image(job())
            digest = await session.push(image, Reference.parse("cache:web-k"), lines.append)
        assert client.stats.requests == 0
    assert digest == PUSHED
    made = [call[0] for call in calls(tmp_path)]
    # the inspect beside the save; each fake process writes down its call as it starts, so
    # under load the session's `docker version` may be written down after them
    assert {"image", "save", "saved"} <= set(made[:-1])
    assert made[-1] == "push"
    assert any("is not layer sha256:" in line and "docker push" in line for line in lines)


@pytest.mark.anyio
async def test_the_save_of_an_image_too_big_to_push_ourselves_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The save starts with the size check beside it; an image the check finds too big for
    our push is pushed by `docker push`, its save stopped rather than waited for."""
    monkeypatch.setattr(docker_engine, "uploads_faster", lambda size, round_trip: size == 0)
    docker = fake_docker(tmp_path, saved=containerd_style_save(tmp_path), save_seconds=30)
    lines: list[str] = []
    async with RegistryClient() as client:
        executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)}, registry=client)
        async with executor.session(spec(tmp_path)) as session:
            digest = await session.push(Image(job()), Reference.parse("cache:web-k"), lines.append)
        assert client.stats.requests == 0
    assert digest == PUSHED
    made = [call[0] for call in calls(tmp_path)]
    # the save may be stopped before the fake CLI even wrote down its call: that it never
    # ended is what counts
    assert "saved" not in made
    assert made[-1] == "push"
    assert lines == ["web-k: digest: " + PUSHED + " size: 1"]


def test_our_push_is_chosen_only_where_the_round_trips_it_spares_cost_more_than_the_save() -> None:
    megabyte = 1_000_000
    assert not docker_engine.uploads_faster(2 * megabyte, 0.0015)  # a registry next door
    assert not docker_engine.uploads_faster(2 * megabyte, None)  # nothing measured
    assert docker_engine.uploads_faster(2 * megabyte, 0.025)
    assert not docker_engine.uploads_faster(20 * megabyte, 0.025)
    assert docker_engine.uploads_faster(80 * megabyte, 0.1)
    assert not docker_engine.uploads_faster(200 * megabyte, 0.1)


@pytest.mark.anyio
@pytest.mark.parametrize("build_code", [0, 1], ids=["never-pushed", "failed"])
async def test_uploads_opened_while_a_stage_builds_are_cancelled_if_unused(
    registry: RegistryServer, tmp_path: Path, build_code: int
) -> None:
    """Over a distant registry, a build opens uploads for its image's new layers and config;
    a failed build cancels them, and those of an image never pushed (its cache tag adopted)
    go when the session ends: one POST and one DELETE each, nothing left open."""
    saved = containerd_style_save(tmp_path)  # not ours to push: nothing uploaded
    docker = fake_docker(tmp_path, build_code=build_code, saved=saved)
    tag = Reference.parse(f"{registry.host}/tests/spare:web-k")
    async with RegistryClient(insecure=[registry.host]) as client:
        client.stats.fastest[registry.host] = 0.1
        executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)}, registry=client)
        async with executor.session(replace(spec(tmp_path), push_cache=True)) as session:
            stage = replace(job(), tag=tag, layers=2)
            with contextlib.suppress(StageFailed):
                await session.build(stage, lambda line: None)
        assert client.stats.requests == 2 * 3


@pytest.mark.anyio
async def test_the_engine_checks_are_made_again_if_the_caller_making_them_is_cancelled(
    tmp_path: Path,
) -> None:
    """Callers at the same time share one check; one left waiting makes it itself once the
    caller making it is cancelled (the plan stops its own when it builds nothing)."""
    docker = fake_docker(tmp_path)
    executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)})

    async def cancelled_soon() -> None:
        with anyio.move_on_after(0.005):
            await executor.prepare()

    async with anyio.create_task_group() as group:
        group.start_soon(cancelled_soon)
        await anyio.lowlevel.checkpoint()  # the checks are under way, in that caller
        async with executor.session(spec(tmp_path)) as session:
            await session.build(job(), lambda line: None)
    assert "build" in [argv[0] for argv in calls(tmp_path)]


def test_our_pushes_are_loaded_only_once_a_session_builds() -> None:
    """A run that restores every stage never pushes, and its start-up is most of its time."""
    probe = (
        "import sys, pipeline.engines.docker_engine\n"
        "print(sorted(m for m in sys.modules if m in ('pipeline.oci.upload', 'tarfile')))"
    )
    assert fresh_python(probe) == "[]"


@pytest.mark.anyio
async def test_prefetches_log_in_with_the_runs_credentials_once_for_the_run(
    tmp_path: Path,
) -> None:
    """The user's Docker config may hold nothing for the cache registry (a CI's token in the
    environment): a prefetch logs in to it through the run's private config, which the
    session then uses without logging in again, and which closing the executor removes."""
    docker = fake_docker(tmp_path)
    login = RegistryLogin("cache.test", "ci", "hunter2")
    executor = DockerExecutor(str(docker), {"PATH": str(docker.parent), "HOME": str(tmp_path)})
    async with anyio.create_task_group() as group:
        for ref in ("cache.test/app:web--main", "cache.test/app:api--main"):
            group.start_soon(executor.prefetch, Reference.parse(ref), None, login)
    async with executor.session(replace(spec(tmp_path), logins=(login,))) as session:
        await session.build(job("cache.test/app:web--main"), lambda line: None)
    made = calls(tmp_path)
    logins = [argv for argv in made if "login" in argv]
    assert len(logins) == 1
    assert logins[0][-2:] == ["--password-stdin", "cache.test"]
    config = logins[0][logins[0].index("--config") + 1]
    assert [argv for argv in made if argv[0].endswith(" config")] == [
        ["pull config", config],
        ["pull config", config],
        ["build config", config],
    ]
    assert "hunter2" not in json.dumps(made)
    assert exists(config)
    await executor.close()
    assert not exists(config)


def exists(path: str) -> bool:
    return Path(path).exists()


@pytest.mark.anyio
async def test_a_prefetch_whose_login_fails_leaves_the_pull_and_the_error_to_the_session(
    tmp_path: Path,
) -> None:
    docker = fake_docker(tmp_path)
    script = docker.read_text().replace(
        "args = sys.argv[1:]\n",
        "args = sys.argv[1:]\nif 'login' in args:\n    sys.exit(print('unauthorized') or 1)\n",
    )
    docker.write_text(script)
    login = RegistryLogin("cache.test", "ci", "wrong")
    executor = DockerExecutor(str(docker), {"PATH": str(docker.parent), "HOME": str(tmp_path)})
    await executor.prefetch(Reference.parse("cache.test/app:web--main"), None, login)
    assert not [argv for argv in calls(tmp_path) if argv[0] == "pull"]
    with pytest.raises(EngineUnavailable, match=r"docker login to cache\.test failed"):
        async with executor.session(replace(spec(tmp_path), logins=(login,))):
            pass
    await executor.close()


@pytest.mark.anyio
async def test_a_save_that_leaves_no_archive_is_pushed_by_docker_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`docker save` said it saved, yet wrote nothing readable (a full disk, a CLI that lies):
    not a crash, but the push `docker push` makes anyway. A suite run on a loaded machine,
    where the local registry's round trip made our own push the faster, crashed on it."""
    monkeypatch.setattr(docker_engine, "uploads_faster", lambda size, round_trip: True)
    docker = fake_docker(tmp_path)  # its save writes no archive
    lines: list[str] = []
    async with RegistryClient() as client:
        executor = DockerExecutor(str(docker), {"PATH": str(docker.parent)}, registry=client)
        async with executor.session(spec(tmp_path)) as session:
            digest = await session.push(Image(job()), Reference.parse("cache:web-k"), lines.append)
    assert digest == PUSHED
    assert calls(tmp_path)[-1][0] == "push"
    assert any("docker save wrote no archive to read" in line for line in lines), lines
