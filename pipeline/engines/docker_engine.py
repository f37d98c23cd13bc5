"""The Docker executor: the local BuildKit through the docker CLI, for hosts without Dagger.

`docker buildx build` where buildx exists, else `DOCKER_BUILDKIT=1 docker build` for a CLI
older than 23 whose built-in BuildKit still works. A newer CLI without buildx refuses BuildKit,
which is an exit 3 naming the binary and the fix. Each stage is built with `--target`, the
rewritten Dockerfile and `BUILDKIT_INLINE_CACHE=1`, so its image carries its layer cache.
Build secrets arrive resolved; each is written to a 0600 file in the session's private
directory, which goes when the session ends, and passed to buildx by that path.

A built image is pushed by `docker push`, about twelve round trips, or, over a registry far
enough for that to cost more than saving the image, from `docker save` by the run's own
registry client (`oci.upload`), three (`uploads_faster`).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import anyio

from pipeline.dockerfile.platforms import Platform, native_platform
from pipeline.engines.base import Image
from pipeline.errors import EngineUnavailable, StageFailed, ToolError
from pipeline.oci.errors import RegistryAuthError
from pipeline.oci.registry import sha256_digest

if TYPE_CHECKING:
    import tarfile
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence

    from pipeline.engines.base import BuildSpec, RegistryLogin, StageJob, TestRun
    from pipeline.oci.reference import Reference
    from pipeline.oci.registry import RegistryClient
    from pipeline.oci.upload import ImageFiles, Spare, Uploader
    from pipeline.settings.secrets import Secrets

__all__ = ["DockerCLI", "DockerExecutor", "DockerSession", "find_docker"]

TAIL_LINES = 30
_PUSH_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")
# BuildKit's plain progress when the build's last vertex, the image export, starts
_EXPORTING = re.compile(r"#\d+ exporting to ")
# and when a step after a stage's FROM starts: `#7 [app 2/4] COPY src/ /app/src/`
_STEP = re.compile(r"#\d+ \[[^\]]* (?!1/)\d+/\d+\] ")
_FIX = (
    "install it (Debian: docker-buildx), or choose a CLI that can build with --docker PATH "
    "or DAGGER_STAGES_DOCKER"
)
# `docker save` writes the whole image, base layers too, to a temporary directory before it
# streams it: about 100 MB/s on the bench machine (dockerd 20.10, 200 MB in 2.2 s), after
# about 50 ms for it and `docker image inspect` whatever the size.
SAVE_BYTES_PER_SECOND = 100e6
SAVE_SECONDS = 0.05
# The round trips that pushing a saved image with our client (`Uploader`: three) spares over
# `docker push` (about twelve).
ROUND_TRIPS_SPARED = 9
# Seconds a round trip to a registry costs from which the images a build reads are pulled
# beside its hints: BuildKit resolves an image it does not find locally through the
# registry inside the build, about four round trips before its first step, and the build
# waits for its hints' pulls anyway. Next to the registry that is a few milliseconds, less
# than a `docker pull` process costs two cores; at +100 ms a round trip the intermediate
# commit of bench/run.py took 2.02 s instead of 2.34 s (bench/timeline.py).
PULL_BESIDE = 0.01
# Seconds an ending session waits for the registry to cancel the uploads it opened for images
# it never pushed.
CLOSE_SECONDS = 2.0


def uploads_faster(size: int, round_trip: float | None) -> bool:
    """Whether saving an image of `size` bytes and pushing it with our client beats `docker
    push` over a registry whose round trip takes `round_trip` seconds (None: not measured).

    Next to the registry (a round trip of 1-2 ms) `docker push` wins: a 2 MB image took it
    30-170 ms, and the save and our push 220-270 ms. From about 6 ms a round trip, ours does.
    """
    saving = SAVE_SECONDS + size / SAVE_BYTES_PER_SECOND
    return saving < ROUND_TRIPS_SPARED * (round_trip or 0.0)


@dataclass(frozen=True)
class DockerCLI:
    """The docker CLI `find_docker` checked, and how it builds: with buildx or its built-in
    BuildKit, and in dockerd's own builder or not, which decides whether pulls help a build."""

    path: str
    version: str
    buildx: bool
    daemon_builder: bool = True  # builds in dockerd's own BuildKit, which sees its images

    def build_command(self) -> list[str]:
        return [self.path, "buildx", "build", "--load"] if self.buildx else [self.path, "build"]

    def pull_command(self, ref: Reference, platform: str | None = None) -> list[str]:
        command = [self.path, "pull", "--quiet"]
        if platform:
            command += ["--platform", platform]
        return [*command, str(ref)]


async def _run(
    command: Sequence[str], env: Mapping[str, str], stdin: bytes | None = None
) -> tuple[int, str]:
    try:
        result = await anyio.run_process(
            list(command), input=stdin, env=dict(env), check=False, stderr=subprocess.STDOUT
        )
    except OSError as exc:
        return 127, exc.strerror or str(exc)
    return result.returncode, result.stdout.decode(errors="replace")


async def find_docker(explicit: str | None, env: Mapping[str, str]) -> DockerCLI:
    """The docker CLI to build with (`explicit`, from --docker or DAGGER_STAGES_DOCKER, else
    the one on PATH), checked to build with BuildKit and to reach its daemon.

    Two calls at once: `docker version` prints the client's version, and exits non-zero
    when the daemon does not answer; `docker buildx inspect` says whether buildx is there,
    and which driver its builder has.
    """
    path = explicit or shutil.which("docker", path=env.get("PATH"))
    if path is None:
        raise EngineUnavailable("no docker CLI on PATH; install Docker, or use --engine dagger")
    answers: dict[str, tuple[int, str]] = {}

    async def ask(*args: str) -> None:
        answers[args[0]] = await _run([path, *args], env)

    async with anyio.create_task_group() as group:
        group.start_soon(ask, "version", "--format", "{{.Client.Version}}")
        group.start_soon(ask, "buildx", "inspect")
    code, output = answers["version"]
    lines = output.strip().splitlines()
    version = lines[0] if lines else "unknown"
    if code == 127:
        raise EngineUnavailable(f"{path}: cannot run the docker CLI: {version}")
    buildx, builder = answers["buildx"]
    driver = re.search(r"^Driver:\s*(\S+)", builder, re.MULTILINE)
    cli = DockerCLI(path, version, buildx == 0, driver is None or driver.group(1) == "docker")
    if not cli.buildx and _major(version) >= 23:
        others = await _builders_on_path(path, env)
        hint = f" ({', '.join(others)} can)" if others else ""
        raise EngineUnavailable(
            f"{path} (docker {version}) refuses to build with BuildKit without the buildx "
            f"plugin; {_FIX}{hint}"
        )
    if code != 0:
        host = env.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise EngineUnavailable(
            f"{path}: cannot reach the Docker daemon at {host}: {_last_line(output)}"
        )
    return cli


async def _builders_on_path(refused: str, env: Mapping[str, str]) -> list[str]:
    """Other docker CLIs on PATH old enough to build with their built-in BuildKit."""
    found = []
    for candidate in _docker_binaries(refused, env.get("PATH", "")):
        _, version = await _run([candidate, "version", "--format", "{{.Client.Version}}"], env)
        if version.strip() and _major(version) < 23:
            found.append(candidate)
    return found


def _docker_binaries(refused: str, path: str) -> list[str]:
    seen = {os.path.realpath(refused)}
    found = []
    for folder in path.split(os.pathsep):
        candidate = os.path.join(folder, "docker")
        real = os.path.realpath(candidate)
        if real not in seen and os.access(candidate, os.X_OK):
            seen.add(real)
            found.append(candidate)
    return found


def _major(version: str) -> int:
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else 0


def _far(registry: RegistryClient | Uploader | None, ref: Reference) -> bool:
    """Whether an image a build reads is worth pulling ahead of the build (`PULL_BESIDE`)."""
    round_trip = None if registry is None else registry.round_trip(ref)
    return round_trip is not None and round_trip >= PULL_BESIDE


_PLATFORM = "{{.Os}}/{{.Architecture}}{{if .Variant}}/{{.Variant}}{{end}}"


async def _pull_read(
    cli: DockerCLI, env: Mapping[str, str], ref: Reference, platform: str | None
) -> bool:
    """`docker pull` an image a build reads, pinned by digest, of `platform` (None: this
    machine's), unless the image store holds it already: BuildKit then reads it from there,
    and a pull would only ask the registry again what the plan pinned (two round trips).
    The look comes first rather than beside the pull: a run that builds nothing (its pulls
    stopped as it ends) then starts one process, not two, while it waits for the cache."""
    if ref.digest is not None and await _in_store(cli, env, ref, platform):
        return True
    code, _ = await _run(cli.pull_command(ref, platform), env)
    return code == 0


async def _in_store(
    cli: DockerCLI, env: Mapping[str, str], ref: Reference, platform: str | None
) -> bool:
    """Whether the image store holds the image `ref` pins, of `platform`. A name and digest
    find only an image pulled by them; the platform is checked too, since one pulled from
    the same index for another platform carries the same name and digest."""
    command = [cli.path, "image", "inspect", "--format", _PLATFORM, str(ref)]
    code, output = await _run(command, env)
    if code != 0:
        return False
    try:
        held = Platform.parse(output.strip())
        return held == (Platform.parse(platform) if platform else native_platform())
    except ValueError:
        return False


def _unique() -> str:
    """12 random hex digits for a container's name (the `uuid` module costs every run's
    start-up more than this needs)."""
    return os.urandom(6).hex()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no answer"


class DockerExecutor:
    name = "docker"

    def __init__(
        self,
        docker: str | None = None,
        env: Mapping[str, str] | None = None,
        registry: RegistryClient | None = None,
    ) -> None:
        """`registry`: the run's client, with which a small image is pushed from `docker save`
        instead of by `docker push` (`uploads_faster`); without it, `docker push` always."""
        self._docker = docker
        self._env = dict(os.environ if env is None else env)
        self._registry = registry
        self._found: DockerCLI | EngineUnavailable | None = None
        self._finding: anyio.Event | None = None
        self._prefetched: dict[Reference, _Pull] = {}
        self._logins = _Logins(self._env)

    async def prepare(self) -> None:
        """The CLI checks are subprocesses: they run on other cores while the plan is made.
        Callers at the same time share one check; if the caller making it is cancelled, one
        of the others makes it again."""
        while self._found is None:
            if (finding := self._finding) is not None:
                await finding.wait()
                continue
            finding = self._finding = anyio.Event()
            try:
                self._found = await find_docker(self._docker, self._env)
            except EngineUnavailable as exc:
                self._found = exc
            finally:
                self._finding = None
                finding.set()

    async def prefetch(
        self, ref: Reference, platform: str | None = None, login: RegistryLogin | None = None
    ) -> None:
        """`docker pull` while the plan is still being made, of a hint (`platform` None) or
        of a base image of that platform, the latter only from a registry far enough for
        BuildKit's own resolve of it to cost (`PULL_BESIDE`). A session's build waits for
        it instead of pulling (`DockerSession._pull_once`), and pulls a hint again if it
        failed. With `login`, the run's credentials for `ref`'s registry, the pull goes
        through the run's private Docker config, logged in to that registry first: the
        user's own config may have no credentials for it (a CI's token in the environment)."""
        if ref in self._prefetched or (platform is not None and not _far(self._registry, ref)):
            return
        pull = self._prefetched[ref] = _Pull(anyio.Event())
        try:
            await self.prepare()
            cli = self._found
            if isinstance(cli, DockerCLI) and cli.daemon_builder:
                env = self._env
                if login is not None:
                    try:
                        env = {**env, "DOCKER_CONFIG": await self._logins.config(cli, [login])}
                    except EngineUnavailable:
                        return  # the session logs in again, and says why it failed
                if platform is not None:
                    pull.ok = await _pull_read(cli, env, ref, platform)
                else:  # a hint: a tag, which the store cannot vouch for
                    code, _ = await _run(cli.pull_command(ref), env)
                    pull.ok = code == 0
        finally:
            pull.done.set()

    async def close(self) -> None:
        """The run's private Docker config goes: it holds the registry logins."""
        self._logins.close()

    @contextlib.asynccontextmanager
    async def session(self, spec: BuildSpec) -> AsyncIterator[DockerSession]:
        await self.prepare()
        if isinstance(self._found, EngineUnavailable):
            raise self._found
        assert self._found is not None
        cli = self._found
        private = Path(tempfile.mkdtemp(prefix="dagger-stages-"))
        try:
            env = {**self._env, "DOCKER_BUILDKIT": "1"}
            if spec.logins:
                env["DOCKER_CONFIG"] = await self._logins.config(cli, spec.logins)
            uploader = _uploader(self._registry)
            session = DockerSession(cli, spec, private, env, uploader, self._prefetched)
            try:
                yield session
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_SECONDS):
                    await session.close_spares()
        finally:
            shutil.rmtree(private, ignore_errors=True)


class _Logins:
    """The run's private copy of the user's Docker config, logged in to each registry once
    for the run's prefetches and sessions alike; theirs is never touched. Made at the first
    login, and removed by `close` with the credentials it holds."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._config: Path | None = None
        self._done: set[RegistryLogin] = set()
        self._locks: dict[str, anyio.Lock] = {}

    async def config(self, cli: DockerCLI, logins: Sequence[RegistryLogin]) -> str:
        """The config's directory, once logged in to each of `logins`. Callers at the same
        time share one login to a host; a failed one is an EngineUnavailable, and the next
        caller tries again."""
        if self._config is None:
            private = Path(tempfile.mkdtemp(prefix="dagger-stages-logins-"))
            self._config = _private_config(private, self._env)
        config = self._config
        for login in logins:
            async with self._locks.setdefault(login.host, anyio.Lock()):
                if login not in self._done:
                    await _login(cli, login, config, self._env)
                    self._done.add(login)
        return str(config)

    def close(self) -> None:
        if self._config is not None:
            shutil.rmtree(self._config.parent, ignore_errors=True)
            self._config = None
            self._done.clear()


async def _login(
    cli: DockerCLI, login: RegistryLogin, config: Path, env: Mapping[str, str]
) -> None:
    command = [cli.path, "--config", str(config), "login", "-u", login.username]
    code, output = await _run(
        [*command, "--password-stdin", login.host], env, stdin=login.password.encode()
    )
    if code != 0:
        raise EngineUnavailable(f"docker login to {login.host} failed: {_last_line(output)}")


def _build_error(tail: str, code: int) -> str:
    """BuildKit's own last word on the failure, else the exit code."""
    for line in reversed(tail.splitlines()):
        text = line.strip()
        if text.startswith(("ERROR:", "error:", "failed to", "executor failed")):
            return text.removeprefix("ERROR: ").removeprefix("error: ")
    return f"docker build exited with {code}"


def _private_config(private: Path, env: Mapping[str, str]) -> Path:
    config = private / "docker-config"
    config.mkdir(mode=0o700)
    source = Path(env.get("DOCKER_CONFIG") or Path(env.get("HOME", "~")).expanduser() / ".docker")
    if (source / "config.json").is_file():
        shutil.copyfile(source / "config.json", config / "config.json")
    return config


@dataclass
class _Pull:
    """One `docker pull`, awaited by every build that needs its image meanwhile: dockerd is
    slow to pull one image twice at once."""

    done: anyio.Event
    ok: bool = False


@dataclass
class _Save:
    """One image's `docker save`, made when its build ends and shared by its pushes (a cache
    tag and a hint tag); its files go with the last push at a time. `files` is None for an
    image that `docker push` pushes faster. Its blobs go to the cache repository before the
    build returns, while the runner's HEAD of the cache tag is out: only the manifest PUT
    waits for that answer."""

    scratch: Path
    done: anyio.Event
    files: ImageFiles | None = None
    manifest: bytes | None = None  # its blobs uploaded to the cache repository ahead of the push
    users: int = 0
    spare: Spare | None = None  # uploads opened while it built, closed with its first push


class DockerSession:
    warnings: tuple[str, ...] = ()
    # BuildKit mounts a secret only on the RUN that asks for it
    isolates_secret_steps = False
    # pushes of one image to one repository share each layer's upload: dockerd's
    # (distribution/xfer), and ours (`Uploader`, and `_Save` for the image's files)
    shares_push_uploads = True
    # BuildKit's plain progress names each step as it starts (`_STEP`)
    tells_running = True

    def __init__(
        self,
        cli: DockerCLI,
        spec: BuildSpec,
        private: Path,
        env: dict[str, str],
        uploader: Uploader | None = None,
        prefetched: Mapping[Reference, _Pull] | None = None,
    ):
        self._cli = cli
        self._prefetched = prefetched or {}
        self._spec = spec
        self._env = env
        self._private = private
        self._uploader = uploader
        self._saves: dict[str, _Save] = {}
        self._dockerfile = self._write_dockerfile("Dockerfile", spec.dockerfile)
        self._secret_files = _secret_files(spec.secrets, private)
        self._secrets = [
            flag
            for secret_id, path in self._secret_files.items()
            for flag in ("--secret", f"id={secret_id},src={path}")
        ]
        self._pulls: dict[Reference, _Pull] = {}
        self._spares: list[Spare] = []

    def _write_dockerfile(self, name: str, text: str) -> Path:
        """A Dockerfile in the private dir, with the context's ignore rules beside it, where
        BuildKit looks for them first."""
        path = self._private / name
        path.write_text(text)
        if self._spec.ignore_file is not None:
            path.with_name(f"{name}.dockerignore").write_text(self._spec.ignore_file)
        return path

    def _build_command(self, job: StageJob) -> list[str]:
        spec = self._spec
        dockerfile = self._dockerfile
        if job.dockerfile is not None:
            dockerfile = self._write_dockerfile(f"Dockerfile.{job.index}", job.dockerfile)
        command = [*self._cli.build_command(), "--progress=plain", "-f", str(dockerfile)]
        command += ["--target", job.target, "-t", str(job.tag)]
        command += ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
        if spec.no_cache:
            command.append("--no-cache")
        for ref in job.cache_from:
            command += ["--cache-from", str(ref)]
        for name, value in job.labels.items():
            command += ["--label", f"{name}={value}"]
        for name, value in spec.build_args.items():
            command += ["--build-arg", f"{name}={value}"]
        command += self._secrets
        if spec.platform:
            command += ["--platform", spec.platform]
        return [*command, str(spec.context)]

    async def build(
        self,
        job: StageJob,
        log: Callable[[str], None],
        exporting: Callable[[], None] | None = None,
        running: Callable[[], None] | None = None,
    ) -> Image:
        spare = self._spare(job)
        uploader = self._uploader
        async with anyio.create_task_group() as ahead:
            if spare is not None and uploader is not None:
                # uploads for the image's new layers and config, opened while it builds
                ahead.start_soon(uploader.reserve, spare, job.layers + 1)
            async with anyio.create_task_group() as learning:
                if uploader is not None:
                    # what the hints and the images the build reads show of the layers a push
                    # may share or mount; learnt while the stage builds, never waited for
                    for ref in dict.fromkeys([*job.cache_from, *job.reads]):
                        learning.start_soon(uploader.learn, ref)
                if self._cli.daemon_builder and job.cache_from:
                    beside = tuple(ref for ref in job.reads if _far(uploader, ref))
                    job = replace(job, cache_from=await self._pull(job.cache_from, log, beside))
                elif self._cli.daemon_builder:
                    # images it reads that the executor pulls already: BuildKit would resolve
                    # them through the registry meanwhile
                    for ref in job.reads:
                        if (early := self._prefetched.get(ref)) is not None:
                            await early.done.wait()
                watched = _watched(log, exporting, running)
                code, tail = await _stream(self._build_command(job), self._env, watched)
                learning.cancel_scope.cancel()
            if code != 0 and spare is not None and uploader is not None:
                ahead.start_soon(uploader.close, spare)
        if code != 0:
            raise StageFailed(_build_error(tail, code), tail=tail)
        image = Image(job, handle=job.tag)
        if self._uploader is not None and self._spec.push_cache:
            # while the runner asks the registry about the cache tag, the image to push is
            # saved and its blobs uploaded
            await self._saved(image, job.tag, log, spare)
        return image

    def _spare(self, job: StageJob) -> Spare | None:
        """Uploads to open while the stage builds, where its image will be pushed by our
        client (`uploads_faster`, whatever the image's size) to a registry that answered."""
        if self._uploader is None or not self._spec.push_cache:
            return None
        if not uploads_faster(0, self._uploader.round_trip(job.tag)):
            return None
        from pipeline.oci.upload import Spare

        spare = Spare(job.tag)
        self._spares.append(spare)
        return spare

    async def _pull(
        self,
        refs: Sequence[Reference],
        log: Callable[[str], None],
        beside: Sequence[Reference] = (),
    ) -> tuple[Reference, ...]:
        """Pull the cache images first: dockerd's BuildKit imports a remote inline cache
        lazily, and the image it then builds lacks the layers of the steps it reused, so
        every second build would miss (moby/buildkit#1981). From a local image it does not.
        An image that cannot be pulled is left out: dockerd would ignore every cache source.

        `beside`: images the build reads, pulled at the same time and quietly; BuildKit finds
        those pulled in time in the image store, and resolves the others itself.
        """
        pulled: dict[Reference, bool] = {}

        async def pull(ref: Reference) -> None:
            pulled[ref] = await self._pull_once(ref, log)

        async with anyio.create_task_group() as group:
            for ref in refs:
                group.start_soon(pull, ref)
            for ref in beside:
                group.start_soon(self._pull_once, ref, None)
        return tuple(ref for ref in refs if pulled[ref])

    async def _pull_once(self, ref: Reference, log: Callable[[str], None] | None) -> bool:
        """Builds that share an image wait for one pull: dockerd is slow to pull one image
        twice at the same time (0.2 s alone, up to 0.8 s side by side). Without `log`, an
        image the build reads, of the build's platform; else a hint, whose failure is said,
        and which the executor may have pulled already (`DockerExecutor.prefetch`)."""
        early = self._prefetched.get(ref)
        if early is not None:
            await early.done.wait()
            if early.ok:
                return True
        pull = self._pulls.get(ref)
        if pull is not None:
            await pull.done.wait()
            return pull.ok
        pull = self._pulls[ref] = _Pull(anyio.Event())
        try:
            if log is None:
                pull.ok = await _pull_read(self._cli, self._env, ref, self._spec.platform)
                return pull.ok
            code, output = await _run(self._cli.pull_command(ref), self._env)
            pull.ok = code == 0
        finally:
            pull.done.set()
        if not pull.ok:
            log(f"cache image {ref} not pulled, building without it: {_last_line(output)}")
        return pull.ok

    async def push(self, image: Image, ref: Reference, log: Callable[[str], None]) -> str:
        """With our client where that is faster (`uploads_faster`), else by `docker push`.
        The uploads opened for the image and left unused are cancelled meanwhile."""
        if self._uploader is None:
            return await self._docker_push(image, ref, log)
        save = await self._saved(image, ref, log)
        if save.spare is None or save.spare.closed:
            return await self._push_saved(image, ref, log, save)
        pushed: list[str] = []
        failed: list[ToolError] = []

        async def pushing() -> None:
            try:
                pushed.append(await self._push_saved(image, ref, log, save))
            except ToolError as exc:
                failed.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(pushing)
            group.start_soon(self._uploader.close, save.spare)
        if failed:
            raise failed[0]
        return pushed[0]

    async def close_spares(self) -> None:
        """Cancel the uploads opened for images that were never pushed (a cache tag another
        run wrote first is adopted instead), as the session ends."""
        if self._uploader is None:
            return
        async with anyio.create_task_group() as group:
            for spare in self._spares:
                if not spare.closed:
                    group.start_soon(self._uploader.close, spare)

    async def _push_saved(
        self, image: Image, ref: Reference, log: Callable[[str], None], save: _Save
    ) -> str:
        assert self._uploader is not None
        save.users += 1
        try:
            if save.files is None:
                return await self._docker_push(image, ref, log)
            tag = image.job.tag
            same = (ref.registry, ref.repository) == (tag.registry, tag.repository)
            manifest = save.manifest if same else None
            try:
                digest = await self._uploader.push(save.files, ref, manifest)
            except RegistryAuthError as exc:  # dockerd may hold a login this client lacks
                log(f"{exc.message}; pushing with docker push")
                return await self._docker_push(image, ref, log)
        finally:
            save.users -= 1
            if save.users == 0 and self._saves.get(str(image.job.tag)) is save:
                del self._saves[str(image.job.tag)]
                shutil.rmtree(save.scratch, ignore_errors=True)
        log(f"{ref}: digest: {digest}, pushed from docker save")
        return digest

    async def _saved(
        self,
        image: Image,
        ref: Reference,
        log: Callable[[str], None],
        spare: Spare | None = None,
    ) -> _Save:
        """The image's files for its pushes to `ref`'s registry, saved once (`_Save`); none
        where `docker push` is faster. `spare`: uploads opened for its blobs while it built."""
        assert self._uploader is not None
        key = str(image.job.tag)
        save = self._saves.get(key)
        if save is not None:
            await save.done.wait()
            return save
        scratch = Path(tempfile.mkdtemp(dir=self._private, prefix="save-"))
        save = self._saves[key] = _Save(scratch, anyio.Event(), spare=spare)
        try:
            try:
                save.files = await self._save_small(image, ref, scratch)
            except StageFailed as exc:
                log(f"{exc.message}; pushing with docker push")
            if save.files is not None and ref == image.job.tag and self._spec.push_cache:
                try:
                    save.manifest = await self._uploader.upload(save.files, ref, spare=spare)
                except ToolError as exc:  # the push tries again, and says why it fails
                    log(f"layers not uploaded ahead of the push: {exc.message}")
        finally:
            save.done.set()
        return save

    async def _save_small(self, image: Image, ref: Reference, scratch: Path) -> ImageFiles | None:
        """The image's files from `docker save`, where pushing them with our client beats
        `docker push` (`uploads_faster`); else None. The save starts at once: the `docker
        image inspect` that tells the image's size runs beside it and stops it if the image
        is too big, so a small image's push waits for one CLI call instead of two in a row."""
        assert self._uploader is not None
        round_trip = self._uploader.round_trip(ref)
        if not uploads_faster(0, round_trip):
            return None  # whatever its size: asking it costs a CLI call
        saved: list[ImageFiles] = []
        failed: list[StageFailed] = []

        async def check(scope: anyio.CancelScope) -> None:
            if not await self._fits(image, round_trip):
                scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(check, group.cancel_scope)
            try:
                saved.append(await self._save(image, scratch))
            except StageFailed as exc:
                failed.append(exc)
                group.cancel_scope.cancel()
        if failed:
            raise failed[0]
        return saved[0] if saved else None

    async def _fits(self, image: Image, round_trip: float | None) -> bool:
        inspect = [self._cli.path, "image", "inspect", "--format", "{{.Size}}", str(image.job.tag)]
        code, output = await _run(inspect, self._env)
        size = output.strip()
        if code != 0 or not size.isdigit():
            return False
        return uploads_faster(int(size), round_trip)

    async def _save(self, image: Image, scratch: Path) -> ImageFiles:
        """The image's config and layer files, from `docker save` into `scratch`."""
        archive = scratch / "image.tar"
        command = [self._cli.path, "save", "-o", str(archive), str(image.job.tag)]
        code, output = await _run(command, self._env)
        if code != 0:
            raise StageFailed(f"docker save {image.job.tag}: {_last_line(output)}")
        return await anyio.to_thread.run_sync(_unpack, archive, scratch)

    async def _docker_push(self, image: Image, ref: Reference, log: Callable[[str], None]) -> str:
        if ref != image.job.tag:
            tag = [self._cli.path, "tag", str(image.job.tag), str(ref)]
            code, output = await _run(tag, self._env)
            if code != 0:
                raise StageFailed(f"docker tag {ref}: {_last_line(output)}")
        lines: list[str] = []

        def keep(line: str) -> None:
            lines.append(line)
            log(line)

        code, tail = await _stream([self._cli.path, "push", str(ref)], self._env, keep)
        digests = [m.group(1) for line in lines if (m := _PUSH_DIGEST.search(line))]
        if code != 0 or not digests:
            message = f"docker push {ref} exited with {code}: {_last_line(tail)}"
            raise StageFailed(message, tail=tail)
        return digests[-1]

    async def run(self, image: Image | Reference, test: TestRun, log: Callable[[str], None]) -> int:
        """`docker run` the image, then `docker cp` each artifact out, pass or fail."""
        name = f"dagger-stages-test-{_unique()}"
        reference = str(image.job.tag if isinstance(image, Image) else image)
        command = [self._cli.path, "run", "--name", name]
        if self._spec.platform:
            command += ["--platform", self._spec.platform]
        for secret_id in test.secrets:
            source = self._secret_files[secret_id]
            command += ["--mount", f"type=bind,src={source},dst=/run/secrets/{secret_id},readonly"]
        try:
            code, tail = await _stream([*command, reference, *test.argv], self._env, log)
            if code == 125:
                raise StageFailed(f"could not run the tests: {_last_line(tail)}", tail=tail)
            await self._copy_artifacts(name, test, log)
        finally:
            await _run([self._cli.path, "rm", "-f", name], self._env)
        return code

    async def load(self, image: Image | Reference, name: str, log: Callable[[str], None]) -> None:
        """The image is already in this daemon when built here: tag it. A restored one is
        pulled by its digest first."""
        source = await self._local(image, log)
        code, output = await _run([self._cli.path, "tag", source, name], self._env)
        if code != 0:
            raise StageFailed(f"docker tag {name}: {_last_line(output)}")
        log(f"loaded as {name}")

    async def copy_out(
        self, image: Image | Reference, path: str, dest: Path, log: Callable[[str], None]
    ) -> None:
        """`docker create` + `docker cp` into a scratch folder beside `dest`, then moved in:
        `docker cp` alone cannot tell a directory's contents from a file before it copies."""
        source = await self._local(image, log)
        name = f"dagger-stages-output-{_unique()}"
        create = [self._cli.path, "create", "--name", name, source, "true"]
        code, output = await _run(create, self._env)
        if code != 0:
            raise StageFailed(f"docker create from {source}: {_last_line(output)}")
        await anyio.Path(dest).mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=dest, prefix=".dagger-stages-"))
        try:
            copied = scratch / "out"
            command = [self._cli.path, "cp", "-L", f"{name}:{path}", str(copied)]
            code, output = await _run(command, self._env)
            if code != 0:
                raise StageFailed(f"{path} not copied: {_last_line(output)}")
            await anyio.to_thread.run_sync(_move_into, copied, dest, PurePosixPath(path).name)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            await _run([self._cli.path, "rm", "-f", name], self._env)
        log(f"copied {path} -> {dest}")

    async def _local(self, image: Image | Reference, log: Callable[[str], None]) -> str:
        """The image's name in this daemon: a built one has its tag; a ref is pulled first."""
        if isinstance(image, Image):
            return str(image.job.tag)
        code, output = await _run(self._cli.pull_command(image, self._spec.platform), self._env)
        if code != 0:
            raise StageFailed(f"docker pull {image}: {_last_line(output)}")
        log(f"pulled {image}")
        return str(image)

    async def _copy_artifacts(
        self, container: str, test: TestRun, log: Callable[[str], None]
    ) -> None:
        await anyio.Path(test.artifacts_dir).mkdir(parents=True, exist_ok=True)
        for path in test.artifacts:
            target = test.artifacts_dir / PurePosixPath(path).name
            code, output = await _run(
                [self._cli.path, "cp", f"{container}:{path}", str(target)], self._env
            )
            if code != 0:
                log(f"artifact {path} not copied: {_last_line(output)}")
            else:
                log(f"artifact {path} -> {target}")


def _watched(
    log: Callable[[str], None],
    exporting: Callable[[], None] | None,
    running: Callable[[], None] | None,
) -> Callable[[str], None]:
    """`log`, calling `running` once at the first line of a step that is not a `FROM`, and
    `exporting` once at the first line of the image export."""
    waiting = {name: call for name, call in (("run", running), ("export", exporting)) if call}

    def watch(line: str) -> None:
        log(line)
        if "run" in waiting and _STEP.match(line):
            waiting.pop("run")()
        if "export" in waiting and _EXPORTING.match(line):
            waiting.pop("export")()

    return watch


def _uploader(registry: RegistryClient | None) -> Uploader | None:
    """Our own pushes (`oci.upload`, and `tarfile` for `docker save`'s archives) are loaded
    by a session, the first time a run builds: a run that restores every stage never pushes,
    and its start-up is most of its time."""
    if registry is None:
        return None
    from pipeline.oci.upload import Uploader

    return Uploader(registry)


def _unpack(archive: Path, scratch: Path) -> ImageFiles:
    """A `docker save` archive's one image: its config's bytes, and its layer tarballs
    extracted into `scratch` in the config's order (`manifest.json` names them), each checked
    to be the uncompressed layer its diff id names. An archive of another shape (a containerd
    image store saves compressed blobs), or none it can read, is a StageFailed, which
    `docker push` then replaces."""
    import tarfile

    try:
        with tarfile.open(archive) as tar:
            return _image_files(tar, scratch)
    except (OSError, tarfile.TarError) as exc:
        raise StageFailed(f"docker save wrote no archive to read: {exc}") from None


def _image_files(tar: tarfile.TarFile, scratch: Path) -> ImageFiles:
    from pipeline.oci.upload import ImageFiles

    manifest = _member(tar, "manifest.json")
    try:
        (entry,) = json.loads(manifest)
        config_name, layer_names = str(entry["Config"]), [str(n) for n in entry["Layers"]]
    except (ValueError, KeyError, TypeError):
        raise StageFailed("docker save wrote an archive without one image") from None
    files = ImageFiles(
        _member(tar, config_name),
        tuple(scratch / f"layer-{position}.tar" for position in range(len(layer_names))),
    )
    for name, path, diff_id in zip(layer_names, files.layers, files.diff_ids, strict=True):
        data = _member(tar, name)
        if sha256_digest(data) != diff_id:
            raise StageFailed(f"docker save wrote {name}, which is not layer {diff_id}")
        path.write_bytes(data)
    return files


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        member = tar.extractfile(name)
    except KeyError:
        member = None
    if member is None:
        raise StageFailed(f"docker save wrote an archive without {name}")
    return member.read()


def _move_into(copied: Path, dest: Path, name: str) -> None:
    """A copied directory's entries into `dest`, a copied file as `dest/name`, replacing
    what is there by those names."""
    moves = [(entry, dest / entry.name) for entry in copied.iterdir()] if copied.is_dir() else []
    if not copied.is_dir():
        moves = [(copied, dest / name)]
    for source, target in moves:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        source.replace(target)


def _secret_files(secrets: Secrets, private: Path) -> dict[str, Path]:
    """Each value in a 0600 file of its own in the private dir, for `--secret id=…,src=…` and
    for the test command's granted secrets; a file secret's bytes arrive as they were read,
    whether or not they are UTF-8."""
    files: dict[str, Path] = {}
    for number, (secret_id, value) in enumerate(secrets.items()):
        path = private / f"secret-{number}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(value.encode("utf-8", "surrogateescape"))
        files[secret_id] = path
    return files


async def _stream(
    command: Sequence[str], env: Mapping[str, str], log: Callable[[str], None]
) -> tuple[int, str]:
    """Run to the end, passing each output line on; stopped (SIGTERM, then SIGKILL) if cancelled."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    process = await anyio.open_process(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        buffer = b""
        async for chunk in process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                tail.append(line)
                log(line)
        if buffer:
            tail.append(buffer.decode(errors="replace"))
            log(tail[-1])
        code = await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await process.aclose()
    return code, "\n".join(tail)
