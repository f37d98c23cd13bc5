"""`build` for several target platforms: a runner per platform, one image index per target.

Each platform has its own session (`docker build --platform`, Dagger's `dockerBuild(platform:)`)
and its own run of the runner, all at once under one job limit. The stages the platforms
share (`cache.multi`) are built first, once, by the platform that owns them; once their
cache is pushed, every platform's plan restores them from that image, so no platform runs
their steps again. A shared stage that could not be pushed (no cache repo, a failed push) is
built along in each build that needs it, where the engine's own cache shares its steps.

Results are reported once per stage and platform, named `stage (linux/arm64)`, or
`stage (all platforms)` for a shared one. The test stage runs on the first platform.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

import anyio

from pipeline.cache.tags import local_tag
from pipeline.commands.publish import publish_index
from pipeline.dockerfile.rewrite import build_targets
from pipeline.engines.results import Status
from pipeline.engines.runner import execute, initial_results, jobs_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from anyio.abc import TaskGroup

    from pipeline.cache.multi import MultiPlan, PlatformPlan
    from pipeline.cache.plan import Plan
    from pipeline.commands.publish import Publication
    from pipeline.dockerfile.graph import Graph
    from pipeline.dockerfile.platforms import Platform
    from pipeline.engines.base import (
        BuildSpec,
        Executor,
        Image,
        RegistryLogin,
        Session,
        StageJob,
        TestRun,
    )
    from pipeline.engines.results import Published, StageResult, TestOutcome
    from pipeline.engines.runner import Hints, Reporter, RunOptions
    from pipeline.oci.reference import Reference
    from pipeline.oci.registry import RegistryClient
    from pipeline.settings.resolve import Settings

__all__ = ["BuildRun", "PlatformReporter", "build_tags", "run_platforms"]


class BuildRun(Protocol):
    """What of `commands.build.BuildRun` a multi-platform run uses: the steps a platform's
    run shares with a single-platform one."""

    settings: Settings
    graph: Graph
    client: RegistryClient
    executor: Executor
    results: dict[tuple[int, str], StageResult]
    test: tuple[int, TestRun] | None
    test_outcome: TestOutcome | None
    warned: set[str]

    def update(self, result: StageResult) -> None: ...

    def log(self, stage: str, line: str) -> None: ...

    def note(self, stage: str, line: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def publications(self) -> list[Publication]: ...

    def tell(self, plan: Plan, reporter: Reporter | None = None) -> None: ...

    def push_cache(self, plan: Plan) -> bool: ...

    async def logins(
        self, plan: Plan, published: Sequence[Reference]
    ) -> tuple[RegistryLogin, ...]: ...

    def spec(
        self, plan: Plan, platform: Platform, logins: tuple[RegistryLogin, ...]
    ) -> BuildSpec: ...

    def run_options(self, push_cache: bool) -> RunOptions: ...

    def hints(self, plan: Plan, jobs: Iterable[int], group: TaskGroup) -> Hints | None: ...

    async def run_test(
        self,
        plan: Plan,
        session: Session,
        images: Mapping[int, Image],
        result: StageResult,
        test: TestRun,
    ) -> TestOutcome | None: ...

    def published_or_failed(
        self, published: Sequence[Published], failures: Sequence[str]
    ) -> None: ...


class PlatformReporter:
    """One platform's runner as the run sees it: its results and logs named with their
    platforms, and only those of the stages `keep` lets through (a stage another platform
    owns, or one already built by the shared phase, is reported there)."""

    def __init__(
        self, run: BuildRun, plans: MultiPlan, position: int, keep: Callable[[int], bool]
    ) -> None:
        self._run = run
        self._plans = plans
        self._position = position
        self._keep = keep
        self._plan = plans.plans[position].plan
        self.results: dict[int, StageResult] = {}
        self._seen: set[str] = set()

    def _name(self, index: int) -> str:
        return f"{self._plan.stage(index).name} ({self._plans.shown(self._position, index)})"

    def update(self, result: StageResult) -> None:
        if not self._keep(result.index):
            return
        self.results[result.index] = result
        shown = self._plans.shown(self._position, result.index)
        self._run.update(replace(result, name=self._name(result.index), platform=shown))

    def log(self, stage: str, line: str) -> None:
        self._named(stage, line, self._run.log)

    def note(self, stage: str, line: str) -> None:
        self._named(stage, line, self._run.note)

    def _named(self, stage: str, line: str, say: Callable[[str, str], None]) -> None:
        found = [s.index for s in self._plan.graph.stages if s.name == stage]
        kept = [index for index in found if self._keep(index)]
        if kept:
            say(self._name(kept[0]), line)
        elif not found:
            say(stage, line)

    def warning(self, message: str) -> None:
        """Said once, however many platforms find it."""
        if message not in self._run.warned:
            self._run.warned.add(message)
            self._run.warning(message)


async def run_platforms(run: BuildRun, plans: MultiPlan) -> None:
    """Build every platform, test on the first, then publish each target as one index.

    A run that builds and tests nothing opens no session: it needs no engine."""
    pending = run.publications()
    targets = build_targets(run.graph.dockerfile)
    for position, item in enumerate(plans.plans):
        run.tell(item.plan, PlatformReporter(run, plans, position, _owned(item)))
    building = any(item.plan.indices("build") for item in plans.plans)
    images: list[dict[int, Image]] = [{} for _ in plans.plans]
    async with AsyncExitStack() as stack:
        sessions: list[Session] = []
        after = plans
        if building or run.test is not None:
            logins = await run.logins(plans.first, [p.ref for p in pending])
            for item in plans.plans:
                spec = run.spec(item.plan, item.platform, logins)
                session = await stack.enter_async_context(run.executor.session(spec))
                for message in session.warnings:
                    run.warning(message)
                sessions.append(session)
            # the hint moves: they end before the sessions close, and nothing else waits for them
            along = await stack.enter_async_context(anyio.create_task_group())
            after = await _build(run, plans, sessions, targets, images, along)
        else:
            for position, item in enumerate(plans.plans):
                reporter = PlatformReporter(run, plans, position, _owned(item))
                for result in initial_results(item.plan).values():
                    reporter.update(result)
        results = [_results(run, plans, position) for position in range(len(plans.plans))]
        tested = None if run.test is None else results[0].get(run.test[0])
        if run.test is not None and tested is not None:
            run.test_outcome = await run.run_test(
                after.first, sessions[0], images[0], tested, run.test[1]
            )
        if not pending:
            return
        failed = any(r.status is Status.FAILED for r in run.results.values())
        if failed or (run.test_outcome is not None and not run.test_outcome.passed):
            run.warning("nothing published: the build or its tests failed")
            return
        published, failures = await publish_index(
            run.client, after, pending, results, images, sessions, run.log
        )
        run.published_or_failed(published, failures)


async def _build(
    run: BuildRun,
    plans: MultiPlan,
    sessions: list[Session],
    targets: Mapping[int, str],
    images: list[dict[int, Image]],
    along: TaskGroup,
) -> MultiPlan:
    """The shared stages, then every platform at once; the plans as they were run."""
    limiter = anyio.CapacityLimiter(max(1, run.settings.jobs))
    built = await _shared_phase(run, plans, sessions, targets, limiter)
    pushed = {key: digest for key, (digest, _) in built.items() if digest}
    after = plans.restored(pushed)
    done = {index for _, index in built.values()}

    async def one(position: int) -> None:
        item = after.plans[position]
        owned = _owned(item)
        reporter = PlatformReporter(run, plans, position, lambda i: owned(i) and i not in done)
        jobs = _jobs(item, targets, exclude=item.shared.keys() | done)
        if pushed:
            text = item.plan.rewritten(name_unnamed=True)
            jobs = {index: replace(job, dockerfile=text) for index, job in jobs.items()}
        options = run.run_options(run.push_cache(item.plan))
        # hint tags are named by stage and branch only: the first platform's images move them
        hints = run.hints(item.plan, jobs, along) if position == 0 else None
        await execute(
            item.plan,
            sessions[position],
            jobs,
            options,
            reporter,
            images[position],
            hints,
            run.client,
            limiter=limiter,
        )

    async with anyio.create_task_group() as group:
        for position in range(len(plans.plans)):
            group.start_soon(one, position)
    return after


def _owned(item: PlatformPlan) -> Callable[[int], bool]:
    return lambda index: index not in item.shared


def _jobs(
    item: PlatformPlan,
    targets: Mapping[int, str],
    *,
    exclude: set[int] | frozenset[int] = frozenset(),
) -> dict[int, StageJob]:
    plan = item.plan
    jobs = jobs_for(plan, targets, build_tags(plan, targets))
    return {index: job for index, job in jobs.items() if index not in exclude}


def build_tags(plan: Plan, targets: Mapping[int, str]) -> dict[int, Reference]:
    """Where each built image goes: its cache ref, or a local name when there is no cache repo."""
    return {
        index: plan.refs.get(index) or local_tag(targets[index], plan.keys[index].key)
        for index in plan.indices("build")
    }


async def _shared_phase(
    run: BuildRun,
    plans: MultiPlan,
    sessions: list[Session],
    targets: Mapping[int, str],
    limiter: anyio.CapacityLimiter,
) -> dict[str, tuple[str | None, int]]:
    """Build the shared stages to build, each once by its owner; by key, the digest pushed
    (None: not pushed) and the stage's index."""
    built: dict[str, tuple[str | None, int]] = {}

    async def one(position: int, indices: set[int]) -> None:
        item = plans.plans[position]
        jobs = _jobs(item, targets)
        jobs = {index: job for index, job in jobs.items() if index in indices}
        reporter = PlatformReporter(run, plans, position, lambda i: i in indices)
        options = run.run_options(run.push_cache(item.plan))
        results = await execute(
            item.plan,
            sessions[position],
            jobs,
            options,
            reporter,
            None,
            None,
            run.client,
            limiter=limiter,
        )
        for index in indices:
            result = results[index]
            if result.status is Status.BUILT:
                built[item.plan.keys[index].key] = (result.digest, index)

    owners: dict[int, set[int]] = {}
    for position, item in enumerate(plans.plans):
        for index in item.owned():
            if index in item.plan.indices("build") and len(plans.serves(position, index)) > 1:
                owners.setdefault(position, set()).add(index)
    async with anyio.create_task_group() as group:
        for position, indices in owners.items():
            group.start_soon(one, position, indices)
    return built


def _results(run: BuildRun, plans: MultiPlan, position: int) -> dict[int, StageResult]:
    """Each needed stage's latest result for this platform, a shared one's from its owner."""
    item = plans.plans[position]
    found: dict[int, StageResult] = {}
    for index in item.plan.forecasts:
        shown = plans.shown(position, index)
        owner = item.shared.get(index)
        if owner is not None:
            owner_position = next(n for n, p in enumerate(plans.plans) if p.platform == owner)
            shown = plans.shown(owner_position, index)
        result = run.results.get((index, shown))
        if result is not None:
            found[index] = result
    return found
