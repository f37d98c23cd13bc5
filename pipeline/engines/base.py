"""The small protocol every executor speaks; executors know nothing of CI or of the cache.

The orchestrator opens one session per run with everything the stages share, then asks it to
build stages (several at once) and to push built images. Images are named by `Reference`
values; an executor spells them as text only for its CLI or SDK. An executor raises
`errors.StageFailed` for a stage that failed and `errors.EngineUnavailable` (exit 3) when it
cannot build at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from pipeline.dockerfile.mounts import Mount
    from pipeline.oci.reference import Reference
    from pipeline.settings.secrets import Secrets

__all__ = [
    "BuildSpec",
    "Executor",
    "Image",
    "RegistryLogin",
    "Session",
    "StageJob",
    "TestRun",
]


@dataclass(frozen=True)
class RegistryLogin:
    """Credentials an executor hands to its engine before its first build, for every registry
    the run pulls from or pushes to; the password is a secret."""

    host: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class BuildSpec:
    """What every stage of one run shares."""

    context: Path
    dockerfile: str  # the rewritten Dockerfile's text
    ignore_file: str | None  # the effective .dockerignore text, kept beside the Dockerfile
    build_args: Mapping[str, str]
    secrets: Secrets  # resolved once for the run; executors never read them from elsewhere
    platform: str | None  # the platform the keys were made for; None: the client's own
    logins: tuple[RegistryLogin, ...] = ()
    # `build --no-cache`: every step runs again, as with `docker build --no-cache`
    no_cache: bool = False
    # built images are pushed to their cache refs (`StageJob.tag`): the engine may start
    # uploading their blobs before the runner's push, never without this
    push_cache: bool = False


@dataclass(frozen=True)
class StageJob:
    """One stage for an executor to build, with what is its own rather than the run's
    (`BuildSpec`): its target, where its image goes, and what the engine may prepare ahead."""

    index: int
    name: str  # as reports show it
    target: str  # the name to pass as the build target (unnamed stages get one in the rewrite)
    key: str
    tag: Reference  # where the built image goes: its cache ref, or without a cache a local name
    cache_from: tuple[Reference, ...] = ()  # images whose inline layer cache the build may reuse
    # the registry images the build reads, each pinned by digest and of the build's platform:
    # the bases of the stages it runs, and the restored stages they build on or copy from. An
    # engine may fetch them ahead, so that the build need not resolve them through the registry
    reads: tuple[Reference, ...] = ()
    # how many layers the stage's own steps may add (its RUN, COPY and ADD): an engine may
    # prepare that many uploads, and one for the config, while it builds
    layers: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)  # put on the stage's image
    # the secret mounts of the RUN steps this build runs (its stage and the stages built along),
    # one per step
    secret_mounts: tuple[Mount, ...] = ()
    # this build's own Dockerfile text, instead of `BuildSpec.dockerfile`: the runner gives one
    # to a build whose dependencies it restored from the images they just pushed
    dockerfile: str | None = None

    @property
    def secret_ids(self) -> tuple[str, ...]:
        """The secrets this build needs: an engine given more would let other steps read them."""
        return tuple(dict.fromkeys(m.secret_id for m in self.secret_mounts if m.secret_id))


@dataclass(frozen=True)
class TestRun:
    """The test stage's command: a string runs under `/bin/sh -c`, a list runs as it is."""

    __test__ = False  # not a pytest test class

    command: str | tuple[str, ...]
    artifacts: tuple[str, ...]  # absolute paths in the container
    artifacts_dir: Path
    # the only secrets the command sees, at /run/secrets/<id>: it may be a pull request's code
    secrets: tuple[str, ...] = ()

    @property
    def argv(self) -> list[str]:
        if isinstance(self.command, str):
            return ["/bin/sh", "-c", self.command]
        return list(self.command)


@dataclass(frozen=True)
class Image:
    """A built stage, as the executor needs it to push or run it later."""

    job: StageJob
    handle: object = field(default=None, repr=False)


class Session(Protocol):
    # what the engine could not do as the spec asked (e.g. a login it cannot take), said once
    warnings: tuple[str, ...]
    # The engine keeps a secret mounted on every later RUN of a build, in stages built FROM
    # the one that mounted it too (Dagger 0.21's converter). The runner then builds a stage
    # on the pushed images of the dependencies whose RUNs mount secrets, instead of
    # re-running their steps in its build.
    isolates_secret_steps: bool
    # Concurrent pushes of one image to one repository share its layer uploads (dockerd's
    # upload manager, or the Docker executor's own): a second tag pushed beside the cache tag
    # costs a manifest PUT within the push, where copying it through the registry costs a PUT
    # after it (and a GET first, of a manifest the run's client has not seen).
    shares_push_uploads: bool
    # The engine calls a build's `running` once it has begun the build's steps. The runner
    # then starts a build whose steps another build runs too (a stage the target builds on)
    # only once that one is running: several clients setting up at once slow the one the
    # run waits for, and the later build shares the steps under way.
    tells_running: bool

    async def build(
        self,
        job: StageJob,
        log: Callable[[str], None],
        exporting: Callable[[], None] | None = None,
        running: Callable[[], None] | None = None,
    ) -> Image:
        """Build the stage's image; `exporting` is called once, when the engine starts
        exporting it (its steps have run), so the runner can ask the registry about its cache
        tag meanwhile. An engine that cannot tell never calls it. `running` is called once,
        when the engine begins the build's steps, where `tells_running`."""
        ...

    async def push(self, image: Image, ref: Reference, log: Callable[[str], None]) -> str:
        """Push the image under `ref`; returns the pushed manifest's digest."""
        ...

    async def run(self, image: Image | Reference, test: TestRun, log: Callable[[str], None]) -> int:
        """Run `test.command` in the image (built here, or a pinned ref to pull) and copy
        `test.artifacts` out to `test.artifacts_dir`, also when the command fails; returns the
        command's exit code. A missing artifact is logged, not an error."""
        ...

    async def load(self, image: Image | Reference, name: str, log: Callable[[str], None]) -> None:
        """Put the image (built here, or a pinned ref to pull) into the local Docker image
        store as `name`, for `docker run`; raises `StageFailed` when it cannot."""
        ...

    async def copy_out(
        self, image: Image | Reference, path: str, dest: Path, log: Callable[[str], None]
    ) -> None:
        """Copy `path` of the image to the host: a directory's contents into `dest`, a file to
        `dest/<its name>`, as `--output type=local` does; raises `StageFailed` when it cannot."""
        ...


class Executor(Protocol):
    name: str

    async def prepare(self) -> None:
        """Find the engine while the plan is being made, if that is cheap; never raises.

        A problem it finds is raised when a session opens, so a run that builds nothing
        needs no engine.
        """
        ...

    async def prefetch(
        self, ref: Reference, platform: str | None = None, login: RegistryLogin | None = None
    ) -> None:
        """Start fetching, before any session opens, a hint the plan found for a stage it
        builds (`platform` None), or a pinned base image of that platform that a build may
        read, where the engine fetches such images before building; never raises. A build
        given that hint or reading that image waits for it rather than fetching it again.
        `login`: the run's credentials for `ref`'s registry, if it has any."""
        ...

    async def close(self) -> None:
        """The end of the run: what the executor kept for it (logins) goes."""
        ...

    def session(self, spec: BuildSpec) -> AbstractAsyncContextManager[Session]: ...
