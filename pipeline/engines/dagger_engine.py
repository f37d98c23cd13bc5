"""The Dagger executor: each stage is a `dockerBuild` of the context for its target, in one session.

It connects to the session `dagger run` puts in the environment (DAGGER_SESSION_PORT and
DAGGER_SESSION_TOKEN) or, without one, lets the SDK start a session with the `dagger` CLI on
PATH; it never lets the SDK download a CLI. Before the first build it registers every registry
login in the session, because the engine pulls `FROM` images inside `dockerBuild` with the
logins registered so far. The context is uploaded without what its ignore rules exclude; the
rewritten Dockerfile and its ignore rules go into it at a private path that the rules hide
from `COPY`, and so does a job's own Dockerfile, at a path of its own with its own copy of the
rules, since the engine reads `<dockerfile>.dockerignore` first. Every build is for the
platform the cache keys were made for, never the engine's. `dockerBuild` has no `noCache`, so
`build --no-cache` declares an ARG in every stage and gives it a new value each run
(`rewrite.rerun_every_run`): every RUN step runs again, as the engine's own cache-busting idiom.

The engine keeps a secret mounted on every later RUN of a build (`isolates_secret_steps`), so
the runner builds a stage on the pushed images of its dependencies whose RUNs mount secrets.

Build secrets are set in the engine under their ids, because Dockerfile secret mounts match
secrets by name; each build gets only the secrets its RUN steps mount, and the container it
returns is stripped of them (the engine leaves them mounted). The test stage runs as a
`withExec` on the built container, or on a restored stage pulled by its pinned ref, with no
secret but those granted and a fresh cache buster so that the engine never replays an old
result; its artifacts are exported to the host from what the command left.

`dagger` is imported only once a session opens: importing it costs about a second.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import tempfile
import uuid
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TextIO

import anyio

from pipeline.cache.ignore import IgnoreRules
from pipeline.dockerfile.platforms import native_platform
from pipeline.dockerfile.rewrite import NO_CACHE_ARG, rerun_every_run
from pipeline.engines.base import Image
from pipeline.engines.dagger_rules import CLI_VARIABLE, find_cli, has_session
from pipeline.errors import EngineUnavailable, StageFailed, UsageError

if TYPE_CHECKING:
    import subprocess
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping

    import dagger

    from pipeline.engines.base import BuildSpec, RegistryLogin, StageJob, TestRun
    from pipeline.oci.reference import Reference

__all__ = ["DaggerExecutor", "DaggerSession", "upload_excludes"]

PRIVATE_DIR = ".dagger-stages"
DOCKERFILE = f"{PRIVATE_DIR}/Dockerfile"
DOCKERIGNORE = f"{DOCKERFILE}.dockerignore"
TAIL_LINES = 20
HOW_TO_GET_ONE = (
    "run under a Dagger session (`dagger run python pipeline/main.py build …`), "
    "install the Dagger CLI v0.21.x, or use --engine docker"
)
RUN_ID_VARIABLE = "DAGGER_STAGES_RUN_ID"  # Dagger's cache-buster idiom: a new value, a new run
# `docker load` names what it loaded: a tag it was saved with, else the image id
_LOADED = re.compile(r"^Loaded image(?: ID)?: (\S+)$", re.MULTILINE)
_PUBLISHED_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")
# core/exec_error.go: the message is the error chain, ending in the exit code
_EXIT_CODE_SUFFIX = re.compile(r":?\s*exit code: -?\d+\s*$")
# engine/engineutil/ref.go: ExecError output keeps its last 100 KiB behind this marker
_OMITTED = re.compile(r"^\[omitting (\d+) bytes\]\.\.\.")


class DaggerExecutor:
    """Builds with Dagger; engine logs (when the SDK starts the session) go to `log_output`."""

    name = "dagger"

    def __init__(self, *, log_output: TextIO | None = None, docker: str | None = None) -> None:
        self._log_output = log_output
        self._docker = docker  # the docker CLI that `load` hands images to

    async def prefetch(
        self, ref: Reference, platform: str | None = None, login: RegistryLogin | None = None
    ) -> None:
        """The engine imports no hint (Dagger 0.21 has no registry cache import), and pulls
        what its builds read itself."""

    async def close(self) -> None:
        """Each session's engine connection closes with it."""

    async def prepare(self) -> None:
        """Nothing early: importing the SDK is a second of CPU that would slow the plan down,
        and a run that builds nothing needs no engine."""

    @contextlib.asynccontextmanager
    async def session(self, spec: BuildSpec) -> AsyncIterator[DaggerSession]:
        cli = _cli_to_start(os.environ)
        for name, value in spec.secrets.items():
            if any("\udc80" <= char <= "\udcff" for char in value):
                raise UsageError(
                    f"secret {name}: the file is not UTF-8 text, and Dagger takes text secrets; "
                    "encode it (base64) or use --engine docker"
                )

        import dagger

        config = dagger.Config(log_output=self._log_output)
        async with contextlib.AsyncExitStack() as stack:
            with _engine_errors(), _sdk_cli(cli):
                try:
                    await stack.enter_async_context(dagger.connection(config))
                except BaseException:
                    await _forget_connection()
                    raise
            session = DaggerSession(spec, docker=self._docker)
            await session.register_logins()
            yield session


def _cli_to_start(env: Mapping[str, str]) -> str | None:
    """The CLI the SDK must start a session with: None under `dagger run`, exit 3 without one."""
    if has_session(env):
        return None
    cli = find_cli(env)
    if cli is None:
        raise EngineUnavailable(
            "no Dagger engine: no `dagger run` session in the environment and no dagger CLI "
            f"on PATH; {HOW_TO_GET_ONE}"
        )
    return cli


@contextlib.contextmanager
def _sdk_cli(cli: str | None) -> Iterator[None]:
    """Point the SDK at the CLI on PATH while it connects, so it never downloads its own."""
    if cli is None or os.environ.get(CLI_VARIABLE):
        yield
        return
    os.environ[CLI_VARIABLE] = cli
    try:
        yield
    finally:
        os.environ.pop(CLI_VARIABLE, None)


async def _forget_connection() -> None:
    """Reset the SDK's shared connection after a failed connect, which it leaves half-open.

    Without this, every later `dagger.connection()` in the process reuses the broken one.
    """
    import dagger

    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        await dagger.close()


@contextlib.contextmanager
def _engine_errors(doing: str = "connecting") -> Iterator[None]:
    """Failures to reach or keep the engine are exit 3, not a stage's failure.

    A query whose engine went away mid-session does not end in the SDK's `TransportError`:
    its GraphQL client retries the query (5 attempts, about 15 s) and then raises tenacity's
    `RetryError` around the last transport error.
    """
    import dagger
    import tenacity

    try:
        yield
    except (dagger.ProvisionError, dagger.ClientConnectionError, dagger.TransportError) as exc:
        detail = _first_line(str(exc))
        raise EngineUnavailable(f"no Dagger engine ({doing}): {detail}; {HOW_TO_GET_ONE}") from exc
    except tenacity.RetryError as exc:
        attempt = exc.last_attempt
        detail = f"{_first_line(str(attempt.exception()))} ({attempt.attempt_number} attempts)"
        raise EngineUnavailable(f"no Dagger engine ({doing}): {detail}; {HOW_TO_GET_ONE}") from exc


@contextlib.contextmanager
def _stage_errors(name: str, doing: str, log: Callable[[str], None]) -> Iterator[None]:
    """The engine's errors for one stage as `StageFailed`, with the end of its output."""
    import dagger

    with _engine_errors(f"{doing} of {name}"):
        try:
            yield
        except dagger.ExecError as exc:
            output = [*exc.stdout.splitlines(), *exc.stderr.splitlines()]
            for line in output:
                log(line)
            tail = _tail(exc.stderr) or _tail(exc.stdout)
            raise StageFailed(f"{name}: {doing} failed: {exec_failure(exc)}", tail=tail) from exc
        except dagger.QueryError as exc:
            message = str(exc)
            for line in message.splitlines():
                log(line)
            raise StageFailed(
                f"{name}: {doing} failed: {_first_line(message)}", tail=_tail(message)
            ) from exc


def exec_failure(exc: dagger.ExecError) -> str:
    """The engine's message, its exit code said once, and whether its output was cut short."""
    message = _EXIT_CODE_SUFFIX.sub("", _first_line(exc.message)) or "the command failed"
    omitted = sum(
        int(m.group(1)) for text in (exc.stdout, exc.stderr) if (m := _OMITTED.match(text))
    )
    truncated = (
        f"; the engine kept only the last 100 KiB of its output ({omitted} bytes omitted)"
        if omitted
        else ""
    )
    return f"{message} (exit code {exc.exit_code}){truncated}"


def _tail(text: str) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-TAIL_LINES:])


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else "no details"


def upload_excludes(ignore_file: str | None) -> list[str]:
    """The ignore rules as `host().directory(exclude:)` patterns, `!` re-includes kept.

    The engine applies the ignore file only after the upload, so without these every ignored
    file (node_modules, .git) would be synced on every run. The rules are read as BuildKit
    reads them (comments dropped, paths cleaned); the engine's filter is the same matcher.
    """
    if not ignore_file:
        return []
    rules = IgnoreRules.parse(ignore_file)
    return [("!" if p.exclusion else "") + p.text for p in rules.patterns]


def ignore_rules(ignore_file: str | None) -> str:
    """The effective ignore rules plus one that hides our private folder from the build."""
    rules = ignore_file or ""
    if rules and not rules.endswith("\n"):
        rules += "\n"
    return f"{rules}{PRIVATE_DIR}\n"


class DaggerSession:
    """One engine connection; builds share the context directory, the secrets and the logins."""

    # util/llbtodagger/exec.go keeps each RUN's secret mount on every later RUN of the build
    isolates_secret_steps = True
    # nothing says two publishes of one container share their uploads: hints are copied
    shares_push_uploads = False
    tells_running = False

    def __init__(self, spec: BuildSpec, *, docker: str | None = None) -> None:
        from dagger import dag

        self._spec = spec
        self._docker = docker
        self._platform = spec.platform or str(native_platform())
        # dockerBuild has no noCache: a new value of an ARG every stage declares reruns its RUNs
        self._build_args = dict(spec.build_args)
        if spec.no_cache:
            self._build_args[NO_CACHE_ARG] = uuid.uuid4().hex
        self._context = (
            dag.host()
            .directory(str(spec.context.absolute()), exclude=upload_excludes(spec.ignore_file))
            .with_new_file(DOCKERFILE, self._dockerfile_text(spec.dockerfile))
            .with_new_file(DOCKERIGNORE, ignore_rules(spec.ignore_file))
        )
        self._secrets = {name: dag.set_secret(name, value) for name, value in spec.secrets.items()}
        usable = [login for login in spec.logins if _takes_login(login.host)]
        self.warnings = tuple(
            _refused_login(login) for login in spec.logins if not _takes_login(login.host)
        )
        self._logins = [
            (login.host, login.username, dag.set_secret(_login_name(login.host), login.password))
            for login in usable
        ]

    async def register_logins(self) -> None:
        """Register every login in the session before any build pulls.

        `withRegistryAuth` adds its credential to the session's store when it is evaluated
        (core/schema/container.go, a per-session input); builds pull `FROM` and `COPY --from`
        images with that store and, failing it, the CLI host's docker config. Evaluating one
        container that carries them all makes them take effect now.
        """
        if not self._logins:
            return
        import dagger
        from dagger import dag

        with _engine_errors("registering registry logins"):
            try:
                await self._with_logins(dag.container()).sync()
            except dagger.QueryError as exc:
                hosts = ", ".join(host for host, _, _ in self._logins)
                raise EngineUnavailable(
                    f"the Dagger engine refused the registry logins for {hosts}: "
                    f"{_first_line(str(exc))}"
                ) from exc

    def _dockerfile_text(self, text: str) -> str:
        return rerun_every_run(text) if self._spec.no_cache else text

    def _docker_build(self, job: StageJob) -> dagger.Container:
        import dagger

        spec = self._spec
        secrets = {i: self._secrets[i] for i in job.secret_ids if i in self._secrets}
        context, dockerfile = self._context, DOCKERFILE
        if job.dockerfile is not None:
            dockerfile = f"{PRIVATE_DIR}/{job.index}/Dockerfile"
            text = self._dockerfile_text(job.dockerfile)
            context = context.with_new_file(dockerfile, text).with_new_file(
                f"{dockerfile}.dockerignore", ignore_rules(spec.ignore_file)
            )
        container = context.docker_build(
            dockerfile=dockerfile,
            target=job.target,
            build_args=[dagger.BuildArg(name=k, value=v) for k, v in self._build_args.items()],
            secrets=list(secrets.values()),
            platform=dagger.Platform(self._platform),
        )
        container = _without_secrets(container, job, secrets)
        for name, value in job.labels.items():
            container = container.with_label(name, value)
        return container

    async def build(
        self,
        job: StageJob,
        log: Callable[[str], None],
        exporting: Callable[[], None] | None = None,
        running: Callable[[], None] | None = None,
    ) -> Image:
        """The SDK says when the build ends, not when it exports or runs its first step:
        neither `exporting` nor `running` is called."""
        log(f"dagger: docker build --target {job.target}")
        with _stage_errors(job.name, "build", log):
            container = await self._docker_build(job).sync()
        return Image(job, handle=container)

    async def push(self, image: Image, ref: Reference, log: Callable[[str], None]) -> str:
        container = self._with_logins(_built(image))
        with _stage_errors(image.job.name, f"push to {ref}", log):
            address = await container.publish(str(ref))
        match = _PUBLISHED_DIGEST.search(address)
        if match is None:
            raise StageFailed(f"{image.job.name}: Dagger published {address!r} without a digest")
        log(f"dagger: published {address}")
        return match.group(1)

    async def run(self, image: Image | Reference, test: TestRun, log: Callable[[str], None]) -> int:
        """Run the test command in a stage built here or pulled by ref, then export the artifacts.

        The command may fail (`expect: ANY`): its exit code is the result and the artifacts
        come from the container it left. A command that cannot run at all, or dies of a
        signal, leaves no container: that is `StageFailed`. A fresh run id before the command
        makes its inputs new, so a warm or shared engine runs it instead of replaying a result
        it cached (a failing exit included).
        """
        import dagger

        name, container = self._test_container(image)
        for secret_id in test.secrets:
            container = container.with_mounted_secret(
                f"/run/secrets/{secret_id}", self._secrets[secret_id]
            )
        container = container.with_env_variable(RUN_ID_VARIABLE, uuid.uuid4().hex)
        log(f"dagger: run {shlex.join(test.argv)} in {name}")
        with _stage_errors(name, "test run", log):
            ran = await container.with_exec(test.argv, expect=dagger.ReturnType.ANY).sync()
            code = await ran.exit_code()
            output = await ran.combined_output()
        for line in output.splitlines():
            log(line)
        log(f"dagger: the test command exited with code {code}")
        await _export_artifacts(ran, test, log)
        return code

    async def load(self, image: Image | Reference, name: str, log: Callable[[str], None]) -> None:
        """The engine writes the image as a tarball on this host, and `docker load` reads it:
        an image built in the engine is never in the local store otherwise. Docker's media
        types, which a daemon without OCI image support (before 25) also loads."""
        import dagger

        label, container = self._test_container(image)
        docker = self._docker or shutil.which("docker") or "docker"
        with tempfile.TemporaryDirectory(prefix="dagger-stages-load-") as scratch:
            tarball = os.path.join(scratch, "image.tar")
            with _stage_errors(label, "export", log):
                await container.export(tarball, media_types=dagger.ImageMediaTypes.DockerMediaTypes)
            loaded = await _docker_cli([docker, "load", "-i", tarball])
            found = _LOADED.findall(loaded.stdout.decode(errors="replace"))
            if loaded.returncode != 0 or not found:
                why = loaded.stderr.decode(errors="replace").strip() or "no image loaded"
                raise StageFailed(f"{label}: docker load: {_first_line(why)}")
        tagged = await _docker_cli([docker, "tag", found[-1], name])
        if tagged.returncode != 0:
            why = _first_line(tagged.stderr.decode(errors="replace"))
            raise StageFailed(f"{label}: docker tag {name}: {why}")
        log(f"loaded as {name}")

    async def copy_out(
        self, image: Image | Reference, path: str, dest: Path, log: Callable[[str], None]
    ) -> None:
        """`directory(path).export` puts a directory's contents into `dest`; a file goes to
        `dest/<its name>`."""
        label, container = self._test_container(image)
        into = str(await anyio.Path(dest).absolute())
        target = f"{into}/{PurePosixPath(path).name}"
        with _stage_errors(label, f"copy of {path}", log):
            found = await _export(container, path, into, target)
        if not found:
            raise StageFailed(f"{label}: {path} not found in the image")
        log(f"copied {path} -> {dest}")

    def _test_container(self, image: Image | Reference) -> tuple[str, dagger.Container]:
        """A built stage as it is (stripped of its secrets), or a ref pulled for the platform."""
        import dagger
        from dagger import dag

        if isinstance(image, Image):
            return image.job.name, _built(image)
        container = dag.container(platform=dagger.Platform(self._platform))
        return str(image), self._with_logins(container).from_(str(image))

    def _with_logins(self, container: dagger.Container) -> dagger.Container:
        for host, username, secret in self._logins:
            container = container.with_registry_auth(host, username, secret)
        return container


def _without_secrets(
    container: dagger.Container, job: StageJob, passed: Mapping[str, dagger.Secret]
) -> dagger.Container:
    """The built container without the secrets the engine leaves in it.

    `dockerBuild` returns every secret it was given mounted at /run/secrets/<id>
    (core/container.go, DockerBuild), and the converter keeps each RUN's secret mount and
    secret variable (util/llbtodagger/exec.go): a `withExec` on it, or a later build step,
    could read them. `withoutMount` drops one secret mount per call, so it is called once per
    step that mounted one there, plus once for the build's own.
    """
    targets: Counter[str] = Counter(f"/run/secrets/{secret_id}" for secret_id in passed)
    for mount in job.secret_mounts:
        if mount.secret_id in passed:
            targets[mount.target or f"/run/secrets/{mount.secret_id}"] += 1
    for target, count in sorted(targets.items()):
        for _ in range(count):
            container = container.without_mount(target)
    names = {m.env for m in job.secret_mounts if m.env and m.secret_id in passed}
    for name in sorted(names):
        container = container.without_secret_variable(name)
    return container


def _takes_login(host: str) -> bool:
    """auth/registry.go (parseAuthAddress) files a host with neither a dot, a port nor
    "localhost" in it under docker.io: its password would go to Docker Hub."""
    return "." in host or ":" in host or "localhost" in host


def _refused_login(login: RegistryLogin) -> str:
    return (
        f"registry {login.host}: not logged in with Dagger, which takes a login only for a host "
        "with a dot or a port (it would file this one under docker.io); pulls and pushes there "
        "go without credentials. Name the registry with its port (e.g. "
        f"{login.host}:443/…) or use --engine docker"
    )


def _built(image: Image) -> dagger.Container:
    import dagger

    if not isinstance(image.handle, dagger.Container):
        raise TypeError(f"not an image built by Dagger: {image.job.name}")
    return image.handle


async def _export_artifacts(
    container: dagger.Container, test: TestRun, log: Callable[[str], None]
) -> None:
    """Each artifact to `artifacts_dir/<basename>`; a missing or failing one is only logged."""
    import dagger

    await anyio.Path(test.artifacts_dir).mkdir(parents=True, exist_ok=True)
    for path in test.artifacts:
        target = test.artifacts_dir / PurePosixPath(path).name
        with _engine_errors(f"export of {path}"):
            try:
                found = await _export(container, path, str(target.absolute()))
            except dagger.QueryError as exc:
                log(f"artifact {path} not copied: {_first_line(str(exc))}")
                continue
        log(f"artifact {path} -> {target}" if found else f"artifact {path} not found")


async def _export(
    container: dagger.Container, path: str, target: str, file_target: str | None = None
) -> bool:
    """Export a directory to `target`, or a file (symlinks followed) to `file_target` (by
    default `target` too); False if there is none."""
    from dagger import ExistsType

    if await container.exists(path, expected_type=ExistsType.DIRECTORY_TYPE):
        await container.directory(path).export(target)
    elif await container.exists(path, expected_type=ExistsType.REGULAR_TYPE):
        await container.file(path).export(file_target or target)
    else:
        return False
    return True


async def _docker_cli(command: list[str]) -> subprocess.CompletedProcess[bytes]:
    try:
        return await anyio.run_process(command, check=False)
    except OSError as exc:
        raise StageFailed(f"{command[0]}: cannot run the docker CLI: {exc.strerror}") from exc


def _login_name(host: str) -> str:
    """A secret name no Dockerfile secret id is likely to take."""
    return f"dagger-stages.registry-password.{host}"
