"""Run a plan on an executor: every missed stage at once, each cached the moment it is built.

Engine-agnostic. All missed stages start together (bounded by `jobs`); the engine shares the
work they have in common, so a stage several targets need is built once. A stage's cache image
is pushed as soon as it is built, so a later failure never loses it. A failed stage cancels the
stages that depend on it and lets independent ones finish, or, with `fail_fast`, everything.
Expected failures become results; only bugs escape the task group.

On an engine that keeps a secret mounted on every later RUN of a build
(`Session.isolates_secret_steps`, Dagger 0.21), a build that would run another stage's
secret-mounting RUN waits for that stage instead, and builds on the image it just pushed:
its own steps only, its own secrets only (`_isolated`).

The first writer of a cache tag wins (`_written`): runs on two engines build the same stage
into images that differ (timestamps), so a run about to push a stage whose tag another run
wrote since this run's plan adopts that image instead of moving the tag, and uses its digest
from then on, as if it had restored it. Two runs that both find the tag absent both push, and
the tag ends on the last; each run keeps using the digest it pushed, which the registry keeps
by digest (docs/cache-keys.md, "Two runs, one stage").

Registry work stays off the critical path where it can. The HEAD of a stage's cache tag is
sent when the engine starts exporting its image (`Session.build`'s `exporting`), so its answer
is there when the build returns. Hint tags (`Hints`) are moved in the caller's task group, so
nothing after the builds waits for them; on an engine whose pushes share their uploads, with a
distant registry, the hint tag is pushed beside the cache tag instead of copied after it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from pipeline.cache.explain import LABEL
from pipeline.cache.plan import pinned_base
from pipeline.dockerfile.mounts import Mount, run_mounts
from pipeline.dockerfile.rewrite import restorable, runs_on
from pipeline.engines.base import StageJob
from pipeline.engines.results import StageResult, Status
from pipeline.errors import StageFailed, ToolError
from pipeline.oci.errors import RegistryError
from pipeline.settings.resolve import JOBS

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence

    from anyio.abc import TaskGroup

    from pipeline.cache.plan import Plan
    from pipeline.engines.base import Image, Session
    from pipeline.oci.reference import Reference
    from pipeline.oci.registry import RegistryClient

__all__ = [
    "DISTANT",
    "Hints",
    "Reporter",
    "RunOptions",
    "execute",
    "initial_results",
    "jobs_for",
]


class Reporter(Protocol):
    def update(self, result: StageResult) -> None: ...

    def log(self, stage: str, line: str) -> None:
        """A line of the engine's output for the stage (its build, its push)."""
        ...

    def note(self, stage: str, line: str) -> None:
        """The run's own line about the stage, for every output to show."""
        ...

    def warning(self, message: str) -> None: ...


@dataclass(frozen=True)
class RunOptions:
    """How `execute` runs a plan, as the command's flags say: how many builds at once, whether
    a failure stops the rest, and whether cache images are pushed or adopted."""

    jobs: int = JOBS
    fail_fast: bool = False
    push_cache: bool = True
    # a cache tag another run wrote meanwhile is adopted, not pushed over; `--no-cache` turns
    # it off: such a run uses and pushes its own images, which is how a cache image is replaced
    first_writer_wins: bool = True


# Seconds a round trip to the cache registry costs from which a hint tag is pushed beside the
# cache tag rather than copied after it. Measured on dockerd at 0 ms (the bench's fan-in), the
# concurrent hint push made the cache push about 50 ms slower: what the copy's two round
# trips cost at 25 ms each, after the push.
DISTANT = 0.025


@dataclass(frozen=True)
class Hints:
    """Where the run points the hint tag of each stage it pushes or adopts, and how.

    The work runs in `group`, a task group of the caller's that outlives `execute`, so the
    test, the local copies and publishing never wait for a hint; the caller closes it before
    the report, and before the session (a hint push is the engine's). On an engine whose
    pushes share their uploads, and with a distant registry (`round_trip`, the least a request
    to it took, None if none was sent: `DISTANT`), a stage's hint tag in `tags` is pushed
    beside its cache tag. Else, and whenever the stage ends on another digest than that
    push's (adopted, pushed again, or that push failed), `move` points the hint at the
    stage's digest through the registry, a PUT (after a GET of a manifest the run's client
    has not seen); it says itself what failed, as a failed hint costs no more.
    """

    tags: Mapping[int, Reference]
    move: Callable[[int, str], Coroutine[Any, Any, None]]
    group: TaskGroup
    round_trip: float | None = None

    @property
    def beside(self) -> bool:
        return self.round_trip is None or self.round_trip >= DISTANT


# the instructions that add a layer to a stage's image
LAYER_STEPS = frozenset({"RUN", "COPY", "ADD"})


def jobs_for(
    plan: Plan, build_targets: Mapping[int, str], tags: Mapping[int, Reference]
) -> dict[int, StageJob]:
    """One job per stage to build; `tags` says where each built image goes.

    A build also runs the steps of every stage it needs that is being built too, so it
    imports their hints as well: the engine shares those steps between concurrent builds,
    and whichever build runs them first must have their layer cache. For the same reason it
    gets the secrets of those steps, and only those.
    """
    building = set(plan.indices("build"))
    mounts = {index: _secret_mounts(plan, index) for index in building}
    restored = plan.restored()
    runs = {index: sorted(_needs(plan, index, building)) for index in building}
    return {
        index: StageJob(
            index=index,
            name=plan.stage(index).name,
            target=build_targets[index],
            key=plan.keys[index].key,
            tag=tags[index],
            cache_from=tuple(plan.hints[i] for i in runs[index] if i in plan.hints),
            reads=_reads(plan, runs[index], restored),
            layers=sum(i.cmd in LAYER_STEPS for i in plan.stage(index).instructions),
            labels={LABEL: plan.labels[index]} if index in plan.labels else {},
            secret_mounts=tuple(m for i in runs[index] for m in mounts[i]),
        )
        for index in sorted(building)
    }


def _reads(
    plan: Plan, runs: Sequence[int], restored: Mapping[int, Reference]
) -> tuple[Reference, ...]:
    """The pinned images a build that runs the stages `runs` reads from a registry, of the
    build's platform only: the base of each (`pinned_base`), and each restored stage they
    build on or copy from whose chain of bases has no `--platform` either."""
    reads: dict[Reference, None] = {}
    stages = plan.graph.stages
    for index in runs:
        stage = plan.stage(index)
        if (base := pinned_base(stage, plan.pins)) is not None:
            reads.setdefault(base)
        for dependency in stage.depends_on:
            if dependency in restored and runs_on(plan.stage(dependency), stages) is None:
                reads.setdefault(restored[dependency])
    return tuple(reads)


def _secret_mounts(plan: Plan, index: int) -> tuple[Mount, ...]:
    """The stage's `RUN --mount=type=secret` values, one per step, ONBUILD triggers included.

    Read unexpanded: the ids are checked against the key's, which were expanded, and a
    mount whose id is a variable counts under the key's id at the default path.
    """
    stage = plan.stage(index)
    instructions = list(stage.instructions[1:])
    if stage.base_stage is not None:
        parent = plan.stage(stage.base_stage)
        instructions[:0] = [i.trigger for i in parent.instructions if i.trigger is not None]
    found = [
        mount
        for instruction in instructions
        for mount in run_mounts(instruction)
        if mount.secret_id is not None
    ]
    ids = set(plan.keys[index].inputs.get("secrets", ()))
    known = {m.secret_id for m in found}
    found += [Mount(type="secret", id=i) for i in sorted(ids - known)]
    return tuple(m for m in found if m.secret_id in ids)


def _needs(plan: Plan, index: int, building: set[int]) -> set[int]:
    """The stage and every stage being built that its build runs, through built stages only."""
    found = {index}
    stack = [index]
    while stack:
        for dependency in plan.stage(stack.pop()).depends_on:
            if dependency in building and dependency not in found:
                found.add(dependency)
                stack.append(dependency)
    return found


async def execute(
    plan: Plan,
    session: Session,
    jobs: Mapping[int, StageJob],
    options: RunOptions,
    reporter: Reporter,
    images: dict[int, Image] | None = None,
    hints: Hints | None = None,
    client: RegistryClient | None = None,
    limiter: anyio.CapacityLimiter | None = None,
) -> dict[int, StageResult]:
    """Results for every needed stage, in index order; `images` collects what was built and
    stands for its stage from then on (not a stage whose cache tag it adopted).

    With `client`, each cache push is preceded by one HEAD of its tag (`_read_tag`). A
    `limiter` shared by several runs (one per target platform) bounds their builds together.
    Hint moves (`hints`) may still run when this returns.
    """
    results = initial_results(plan)
    for result in results.values():
        reporter.update(result)
    scopes = {index: anyio.CancelScope() for index in jobs}
    done = {index: anyio.Event() for index in jobs}
    limiter = limiter or anyio.CapacityLimiter(max(1, options.jobs))
    dependents = _dependents(plan, set(jobs))
    clock = time.monotonic
    waits: dict[int, tuple[int, ...]] = {}
    if session.isolates_secret_steps:
        waits = _isolated(plan, set(jobs), options.push_cache, reporter)
    warned: set[int] = set()
    # the hint pushes beside cache pushes, each cancelled with its stage unless that push is done
    along: dict[int, anyio.CancelScope] = {}
    # each build whose steps other builds run too waits for one of those to be running
    covering = _covering(plan, set(jobs)) if session.tells_running and not waits else {}
    underway = {index: anyio.Event() for index in jobs}

    def finish(result: StageResult) -> None:
        results[result.index] = result
        reporter.update(result)

    def cancel(indices: set[int], reason: str) -> None:
        for index in indices:
            if not results[index].status.done:
                scopes[index].cancel()
                finish(replace(results[index], status=Status.CANCELLED, error=reason))

    async def run(index: int) -> None:
        """Build and push in a job slot; the hint move that follows a push holds none."""
        with scopes[index]:
            try:
                job = await on_pushed(index) if waits.get(index) else jobs[index]
                if covering.get(index):
                    await _any(underway[i] for i in covering[index])
                async with limiter:
                    result = await build_and_push(index, job)
                if result.status is Status.FAILED:
                    await settle_failure(index, result)
                    return
                finish(result)
                if hints is not None and index not in along and result.digest:
                    hints.group.start_soon(hints.move, index, result.digest)
            finally:
                if index in along and not cached(index):
                    along[index].cancel()
                underway[index].set()
                done[index].set()  # its digest is known: builds waiting for it need no more

    def cached(index: int) -> bool:
        result = results[index]
        return result.status is Status.BUILT and result.digest is not None

    async def push_hint(index: int, image: Image, hint: Reference) -> None:
        """The stage's hint tag, pushed beside its cache tag; once the stage is done, moved
        through the registry if the stage ended on another digest. Stopped when the cache
        push fails or the stage is cancelled: a hint is to name an image a cache tag names,
        which only a hint push that ends before its cache push fails can miss."""
        job = jobs[index]
        pushed = None
        with along[index]:
            try:
                pushed = await session.push(image, hint, lambda line: None)
            except ToolError as exc:
                reporter.note(job.name, f"hint tag {hint} not pushed: {exc.message}")
        await done[index].wait()
        digest = results[index].digest
        if hints is not None and cached(index) and digest is not None and digest != pushed:
            await hints.move(index, digest)

    async def on_pushed(index: int) -> StageJob:
        """The job once the dependencies it waits for are built and pushed, on their images.

        One that failed or was cancelled has cancelled this job too (the cascade), so the
        wait ends in its cancellation. One built without a pushed digest is built along, as
        without isolation, and said once: its secrets may then leak into later steps.
        """
        job = jobs[index]
        for dependency in waits[index]:
            await done[dependency].wait()
        built: dict[int, Reference] = {}
        for dependency in waits[index]:
            digest = results[dependency].digest
            if digest is not None:
                built[dependency] = plan.pinned(digest)
            elif results[dependency].status is Status.BUILT and dependency not in warned:
                warned.add(dependency)
                waiting = [jobs[i].name for i in sorted(waits) if dependency in waits[i]]
                reporter.warning(_built_along(plan, dependency, waiting, "its cache push failed"))
        if not built:
            return job
        pinned = ", ".join(f"{jobs[i].name} as {ref}" for i, ref in sorted(built.items()))
        reporter.note(job.name, f"builds on {pinned}: their RUN steps mount secrets")
        return _on_images(plan, job, built, set(jobs))

    async def build_and_push(index: int, job: StageJob) -> StageResult:
        """Built with its cache pushed, or failed.

        The HEAD of its cache tag goes out when the engine starts exporting the image, else
        when the build returns, and is answered before the push: a tag another run wrote
        before it was sent is adopted. A failed build needs no answer.
        """
        started = clock()
        finish(replace(results[index], status=Status.RUNNING, started=started))
        ref = plan.refs.get(index)
        adopt = options.push_cache and options.first_writer_wins
        async with anyio.create_task_group() as reads:
            read = None
            if adopt and ref is not None and client is not None:
                read = _TagRead(reads, client, ref, job, reporter)
            try:
                image = await session.build(
                    job,
                    lambda line: reporter.log(job.name, line),
                    None if read is None else read.send,
                    underway[index].set,
                )
            except StageFailed as exc:
                reads.cancel_scope.cancel()
                return replace(
                    results[index],
                    status=Status.FAILED,
                    seconds=clock() - started,
                    error=exc.message,
                    tail=exc.tail,
                )
            if read is not None:
                read.send()
        digest = adopted = None if read is None else read.adopted
        error = None
        if adopted is None and images is not None:
            images[index] = image
        if options.push_cache and ref is not None and adopted is None:
            reporter.note(job.name, f"built in {clock() - started:.1f}s, pushing its cache")
            if hints is not None and hints.beside and session.shares_push_uploads:
                hint = hints.tags.get(index)
                if hint is not None:
                    along[index] = anyio.CancelScope()
                    hints.group.start_soon(push_hint, index, image, hint)
            digest, error = await _push(session, image, ref, job, reporter)
            if error is not None and index in along:
                along[index].cancel()
            if error is not None and adopt and client is not None:
                digest, adopted, error = await _after_failed_push(
                    client, session, image, ref, job, reporter, error
                )
                if adopted is not None and images is not None:
                    images.pop(index, None)
            if error is not None:
                reporter.warning(f"{job.name}: cache push to {ref} failed: {error}")
        return replace(
            results[index],
            status=Status.BUILT,
            seconds=clock() - started,
            digest=digest,
            cache_ref=str(ref) if digest else None,
            push_error=error,
            adopted=adopted is not None,
        )

    async def settle_failure(index: int, failure: StageResult) -> None:
        """A stage whose build also builds a failing dependency fails because of it.

        Both builds run at once, so which reports first is a race: wait for the dependencies
        being built, and call this stage cancelled if one of them failed.
        """
        below = [i for i in jobs if index in dependents[i]]
        for dependency in below:
            await done[dependency].wait()
        culprit = next((i for i in below if results[i].status is Status.FAILED), None)
        if culprit is not None:
            name = results[culprit].name
            finish(replace(failure, status=Status.CANCELLED, error=f"{name} failed", tail=""))
            return
        finish(failure)
        if options.fail_fast:
            cancel(set(jobs), f"{failure.name} failed (--fail-fast)")
        else:
            cancel(dependents[index], f"{failure.name} failed")

    try:
        async with anyio.create_task_group() as group:
            for index in jobs:
                group.start_soon(run, index)
    finally:
        cancel(set(jobs), "interrupted")
    return dict(sorted(results.items()))


def _covering(plan: Plan, building: set[int]) -> dict[int, set[int]]:
    """For each stage to build, the other builds that run its steps too (`_needs`)."""
    covering: dict[int, set[int]] = {index: set() for index in building}
    for index in building:
        for need in _needs(plan, index, building) - {index}:
            covering[need].add(index)
    return covering


async def _any(events: Iterable[anyio.Event]) -> None:
    """Until one of `events` is set."""
    async with anyio.create_task_group() as group:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            group.cancel_scope.cancel()

        for event in events:
            group.start_soon(wait, event)


def _isolated(
    plan: Plan, building: set[int], push_cache: bool, reporter: Reporter
) -> dict[int, tuple[int, ...]]:
    """For each job, the stages being built that it waits for and builds on the images of.

    Those are the stages its build would run (`_needs`) whose own RUN steps mount a secret:
    through `FROM`, the engine would keep those mounts on this build's later steps, and
    through `COPY --from` its build would still be handed their secrets, which any of its
    steps could then be made to read. A job with none of them starts at once, as everywhere.
    Restoring a stage needs its pushed image, so with no cache repo, no cache push, or ONBUILD
    triggers (`restorable`), that stage is built along, and said once here.
    """
    along: dict[int, list[str]] = {}
    waits: dict[int, tuple[int, ...]] = {}
    for index in sorted(building):
        secret = sorted(
            i for i in _needs(plan, index, building) - {index} if _secret_mounts(plan, i)
        )
        waits[index] = tuple(i for i in secret if _restore_blocker(plan, i, push_cache) is None)
        for dependency in secret:
            if dependency not in waits[index]:
                along.setdefault(dependency, []).append(plan.stage(index).name)
    for dependency, names in sorted(along.items()):
        reason = _restore_blocker(plan, dependency, push_cache)
        assert reason is not None
        reporter.warning(_built_along(plan, dependency, names, reason))
    return {index: found for index, found in waits.items() if found}


def _restore_blocker(plan: Plan, index: int, push_cache: bool) -> str | None:
    """Why a stage built in this run cannot be restored from the image it pushes, if so."""
    if plan.keys[index].volatile is not None:
        return "its image, fetched anew from a remote source, is not pushed to the cache"
    if index not in plan.refs:
        return "there is no cache repo"
    if not push_cache:
        return "the cache is not pushed"
    if not restorable(plan.stage(index)):
        return "it declares ONBUILD triggers, so its image cannot stand in for it"
    return None


def _built_along(plan: Plan, index: int, dependents: list[str], reason: str) -> str:
    ids = dict.fromkeys(m.secret_id for m in _secret_mounts(plan, index) if m.secret_id)
    secrets = ", ".join(f'"{i}"' for i in ids)
    return (
        f"{plan.stage(index).name}: built again in the build of {', '.join(dependents)}, as "
        f"{reason}; on this engine their later RUN steps may read its secret {secrets}"
    )


def _on_images(
    plan: Plan, job: StageJob, built: Mapping[int, Reference], building: set[int]
) -> StageJob:
    """The job with `built` restored from their pinned images: its own Dockerfile (its
    unnamed stages named, as `BuildSpec.dockerfile`'s are, for `--target`), and the hints and
    secret mounts of only the steps it still runs."""
    runs = sorted(_needs(plan, job.index, building - built.keys()))
    return replace(
        job,
        dockerfile=plan.rewritten(name_unnamed=True, built=built),
        cache_from=tuple(plan.hints[i] for i in runs if i in plan.hints),
        secret_mounts=tuple(m for i in runs for m in _secret_mounts(plan, i)),
    )


class _TagRead:
    """One HEAD of a stage's cache tag, sent once: when the engine starts exporting the image,
    else when its build returns. `adopted` is its answer once `group` has ended."""

    def __init__(
        self,
        group: TaskGroup,
        client: RegistryClient,
        ref: Reference,
        job: StageJob,
        reporter: Reporter,
    ) -> None:
        self._group = group
        self._client = client
        self._ref = ref
        self._job = job
        self._reporter = reporter
        self._sent = False
        self.adopted: str | None = None

    def send(self) -> None:
        if not self._sent:
            self._sent = True
            self._group.start_soon(self._read)

    async def _read(self) -> None:
        _, self.adopted = await _read_tag(self._client, self._ref, self._job, self._reporter)


async def _read_tag(
    client: RegistryClient, ref: Reference, job: StageJob, reporter: Reporter
) -> tuple[bool, str | None]:
    """Whether the registry answered, and the digest another run pushed under the stage's cache
    tag since this run's plan, if any.

    One HEAD per pushed stage, kept apart from the push, which is the engine's: it overlaps
    the image's export where the engine says when that starts, and the Docker executor's
    uploads of the image's blobs. A tag that cannot be read is pushed to, as before.
    """
    try:
        found = await client.head_manifest(ref)
    except RegistryError as exc:
        reporter.note(job.name, f"cache tag {ref} not checked: {exc.message}")
        return False, None
    if found is None:
        return True, None
    reporter.note(
        job.name, f"cache tag {ref} already written by another run; adopted {found.digest}"
    )
    return True, found.digest


async def _after_failed_push(
    client: RegistryClient,
    session: Session,
    image: Image,
    ref: Reference,
    job: StageJob,
    reporter: Reporter,
    error: str,
) -> tuple[str | None, str | None, str | None]:
    """(digest, adopted digest, error) once a push failed with the registry still answering.

    Two runs pushing one stage upload the same layers at once, and a registry may fail one of
    them (distribution's filesystem storage answers 500): the tag the other run wrote is
    adopted, and with the tag still absent the push is tried once more, its layers now there.
    A registry that does not answer is not asked twice.
    """
    answered, adopted = await _read_tag(client, ref, job, reporter)
    if adopted is not None or not answered:
        return adopted, adopted, None if adopted is not None else error
    reporter.note(job.name, f"cache push failed ({error}); trying once more")
    digest, again = await _push(session, image, ref, job, reporter)
    return digest, None, again


async def _push(
    session: Session, image: Image, ref: Reference, job: StageJob, reporter: Reporter
) -> tuple[str | None, str | None]:
    """The digest pushed, or why not (the caller warns). A failed push loses only the stage's
    cache for next time: the stage is built. The last line of the push's output says why."""
    try:
        return await session.push(image, ref, lambda line: reporter.log(job.name, line)), None
    except ToolError as exc:
        last = exc.tail.strip().splitlines()[-1:] if isinstance(exc, StageFailed) else []
        return None, ": ".join([exc.message, *last])


def initial_results(plan: Plan) -> dict[int, StageResult]:
    """Before anything runs: restored stages are cached, skipped ones skipped, the rest pending."""
    status = {"build": Status.PENDING, "restore": Status.CACHED, "skip": Status.SKIPPED}
    results = {}
    for index, forecast in sorted(plan.forecasts.items()):
        results[index] = StageResult(
            index=index,
            name=plan.stage(index).name,
            status=status[forecast.action],
            key=plan.keys[index].key,
            cache_ref=str(plan.refs[index]) if index in plan.refs else None,
            digest=forecast.digest if forecast.action == "restore" else None,
        )
    return results


def _dependents(plan: Plan, building: set[int]) -> dict[int, set[int]]:
    """For each stage being built, the stages being built that need it, transitively."""
    direct: dict[int, set[int]] = {index: set() for index in building}
    for index in building:
        for dependency in plan.stage(index).depends_on:
            if dependency in direct:
                direct[dependency].add(index)
    found: dict[int, set[int]] = {}
    for index in sorted(building, reverse=True):
        below = set(direct[index])
        for child in direct[index]:
            below |= found[child]
        found[index] = below
    return found
