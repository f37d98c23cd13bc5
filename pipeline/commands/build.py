"""`build`: one run, owned by a `BuildRun`, from the plan to the reports and the exit code.

    on Dagger, what the engine would refuse (exit 2) → plan (while the engine is found, where
    that costs the plan nothing)
    → rewrite → runner on an executor → test stage → publish → RunReport → reports → exit code

With several target platforms, the runner runs once per platform (`commands.platforms`), and
each target is published as one image index over them.

Nothing is asked of a registry or an engine before the Dagger engine's refusals
(`engines.dagger_rules`) are checked. A run whose every cache push failed still exits 0, with
one warning that says why in the summary and the report.

`BuildRun` holds what every step of one run shares (settings, graph, registry client, executor,
reporter, secrets), so the steps take only what differs between them. The steps themselves
live in their packages: planning in `commands.plan` and `cache`, scheduling in
`engines.runner`, publishing in `commands.publish`, serialising in `output`.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from pipeline.cache.explain import always_built
from pipeline.cache.keys import external_images
from pipeline.cache.tags import hint_tag
from pipeline.commands.local import LocalCopies, load_name, project_name
from pipeline.commands.plan import (
    branches,
    build_context,
    dagger_findings,
    plans_for,
    platform_graphs,
    registry_client,
)
from pipeline.commands.platforms import build_tags, run_platforms
from pipeline.commands.publish import publications, publish
from pipeline.dockerfile.graph import resolve_targets
from pipeline.dockerfile.platforms import native_platform
from pipeline.dockerfile.rewrite import build_targets
from pipeline.engines.base import BuildSpec, RegistryLogin, TestRun
from pipeline.engines.dagger_rules import engine_is_dagger, refusal, secret_exposures
from pipeline.engines.results import Status, TestOutcome
from pipeline.engines.runner import Hints, RunOptions, execute, initial_results, jobs_for
from pipeline.errors import StageFailed, UsageError
from pipeline.oci.credentials import Credentials
from pipeline.oci.errors import RegistryError
from pipeline.oci.reference import Reference
from pipeline.output.report import RunReport
from pipeline.output.reproduce import reproduce_command
from pipeline.output.terminal import make_reporter
from pipeline.settings.secrets import resolve_secrets

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

    from anyio.abc import TaskGroup

    from pipeline.cache.multi import MultiPlan
    from pipeline.cache.plan import Plan
    from pipeline.commands.local import Output
    from pipeline.commands.publish import Publication
    from pipeline.dockerfile.graph import Graph
    from pipeline.dockerfile.platforms import Platform
    from pipeline.engines.base import Executor, Image, Session
    from pipeline.engines.results import Published, StageResult
    from pipeline.engines.runner import Reporter
    from pipeline.oci.registry import RegistryClient
    from pipeline.settings.resolve import Settings

__all__ = ["HIDDEN_BEHIND", "BuildRun", "choose_executor", "run_build"]

HIDDEN_BEHIND = 0.04
"""Seconds: a cache registry that has not answered a request this quickly, by this time into the
plan, keeps the plan waiting long enough to hide the engine checks."""


def choose_executor(settings: Settings, client: RegistryClient | None = None) -> Executor:
    """`auto`: Dagger when a session or its CLI is there, else Docker (checked when opened),
    which pushes small images with the run's registry `client`.

    Each executor's module is imported only here, once chosen: `import dagger` costs a second.
    """
    if engine_is_dagger(settings.engine, os.environ):
        from pipeline.engines.dagger_engine import DaggerExecutor

        return DaggerExecutor(docker=settings.docker)
    from pipeline.engines.docker_engine import DockerExecutor

    return DockerExecutor(settings.docker, registry=client)


async def run_build(
    settings: Settings, graph: Graph, local: LocalCopies | None = None, *, verbose: bool = False
) -> int:
    """One registry client serves the whole run: the plan, the hint tags and publishing.

    `verbose`: every line of every build and push, not one line per stage event."""
    async with registry_client(settings) as client:
        run = BuildRun(settings, graph, client, local, verbose=verbose)
        report = await run.run()
    return report.exit_code


class BuildRun:
    """The state of one `build`, from the plan to the report.

    Secret values are read here, once per run, and go to the executor resolved. Results are
    kept as the runner reports them, so that whatever happens (a failure, an interrupt) the
    report has the latest state of every stage.
    """

    def __init__(
        self,
        settings: Settings,
        graph: Graph,
        client: RegistryClient,
        local: LocalCopies | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        self.settings = settings
        self.graph = graph
        self.client = client
        self.local = local or LocalCopies()
        self.outputs = self._outputs()
        self.secrets = resolve_secrets(settings.secrets, os.environ)
        self._credentials = Credentials(sources=settings.credentials, docker_config=False)
        self._found_logins: dict[str, RegistryLogin | None] = {}
        self._looking_up = anyio.Lock()
        self.masker = self.secrets.masker()
        self.executor = choose_executor(settings, client)
        self.test = self._test_run()
        self._refuse_what_the_engine_cannot_build()
        self.context = build_context(settings)
        self.reporter = make_reporter(self.masker, provider=settings.ci.provider, verbose=verbose)
        # by stage index and platform ("" in a single-platform run)
        self.results: dict[tuple[int, str], StageResult] = {}
        self.plan: Plan | None = None  # the first platform's
        self.plans: MultiPlan | None = None
        self.test_outcome: TestOutcome | None = None
        self.published: list[Published] = []
        self.problems: list[str] = []
        self.loaded: list[tuple[str, str]] = []  # (stage, local image name) for `--load`
        self.dead_reported: set[str] = set()  # registries that stopped answering, warned of once
        self.warned: set[str] = set()  # what several platforms' runs found, said once
        self.interrupted = False

    async def run(self) -> RunReport:
        """Plan, build, test, publish; then the summary, the report files and the report."""
        started = time.monotonic()
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch_signals, group.cancel_scope)
                self.plans = await self._plan_while_preparing(group)
                self.plan = self.plans.first
                if self.plans.several:
                    await run_platforms(self, self.plans)
                else:
                    await self._run_plan(self.plan)
                group.cancel_scope.cancel()
        finally:
            self.reporter.close()
            with anyio.CancelScope(shield=True):
                await self.executor.close()
        report = self._report(time.monotonic() - started)
        self.reporter.summary(report.stages)
        for warning in report.warnings:
            print(self.masker(f"dagger-stages: warning: {warning}"), file=sys.stderr)
            if self.settings.ci.provider == "github":
                from pipeline.output.ci_formats import github_warning

                annotation = github_warning(warning, title="dagger-stages", masker=self.masker)
                print(annotation, file=sys.stderr)
        for item in report.published:
            print(f"  published {item.ref}@{item.digest}", file=sys.stderr)
        for stage, name in self.loaded if self.local.announce else ():
            print(f"  loaded {stage} as {name}: docker run -it --rm {name}", file=sys.stderr)
        self._write_reports(report, started)
        if report.interrupted:
            print("dagger-stages: interrupted", file=sys.stderr)
        return report

    # The runner's reporter: results are kept, everything goes on to the terminal.

    def update(self, result: StageResult) -> None:
        """A failed stage is told with the command that reproduces it locally."""
        if result.status is Status.FAILED and result.reproduce is None:
            result = replace(result, reproduce=reproduce_command(self.settings, result.name))
        self.results[result.index, result.platform or ""] = result
        self.reporter.update(result)

    def log(self, stage: str, line: str) -> None:
        self.reporter.log(stage, line)

    def note(self, stage: str, line: str) -> None:
        self.reporter.note(stage, line)

    def warning(self, message: str) -> None:
        self.reporter.warning(message)

    # The steps.

    def _refuse_what_the_engine_cannot_build(self) -> None:
        """Exit 2 before anything is asked or built: each such build would fail on the engine,
        or would forecast restores it cannot pull and push a cache that never fills."""
        if self.executor.name != "dagger":
            return
        published = [publication.ref for publication in self.publications()]
        findings = dagger_findings(self.settings, self.graph, published)
        if findings:
            raise refusal(findings)

    async def _plan_while_preparing(self, run: TaskGroup) -> MultiPlan:
        """The engine is found (`Executor.prepare`) while the plan waits on the registry, when
        that wait hides it; a plan with nothing for an engine to do stops the checks rather
        than wait for them.

        Docker's checks are two CLI processes, about 60 ms of CPU, which a nearby registry's
        answers wait behind on two cores: a warm run at 0 ms took 40 ms longer with them. So
        with a cache that has answered within `HIDDEN_BEHIND`, they start only once the plan
        says that a stage is built, and a run that restores everything never starts them.
        With a farther one (or one not asked by then) they start at that time, and are done
        before the plan is. With no cache, `--no-cache`, a test or a copy to the host, the
        engine is needed anyway: they start with the plan. Once the cache has answered that a
        stage is built, they start at once, while the plan reads that stage's hint.

        Each base image the plan pins, and each hint it finds for a stage it builds, goes to
        the engine at once (`Executor.prefetch`, in `run`, the run's task group), before the
        plan is done.
        """
        graphs = platform_graphs(self.settings, self.graph, tests=self.settings.run_tests)
        waiting = anyio.CancelScope()

        async def prepare_unless_nearby() -> None:
            with waiting:
                await anyio.sleep(HIDDEN_BEHIND)
            if not waiting.cancel_called and not self._cache_nearby():
                await self.executor.prepare()

        async def prefetch(ref: Reference, platform: str | None) -> None:
            await self.executor.prefetch(ref, platform, await self._login(ref.registry))

        def fetch(ref: Reference, platform: str | None) -> None:
            run.start_soon(prefetch, ref, platform)

        def building() -> None:
            run.start_soon(self.executor.prepare)  # the plan need not wait for it

        async with anyio.create_task_group() as group:
            anyway = self._needs_engine_anyway()
            group.start_soon(self.executor.prepare if anyway else prepare_unless_nearby)
            plans = await plans_for(
                self.settings,
                graphs,
                context=self.context,
                no_cache=self.settings.no_cache,
                client=self.client,
                on_image=fetch,
                on_build=building,
            )
            if not self._needs_engine(plans):
                group.cancel_scope.cancel()
            waiting.cancel()  # not started yet: the session starts them, at once
        return plans

    def _cache_nearby(self) -> bool:
        repo = self.settings.cache_repo
        quickest = None if repo is None else self.client.round_trip(repo)
        return quickest is not None and quickest < HIDDEN_BEHIND

    def _needs_engine_anyway(self) -> bool:
        """Whatever the cache holds: every stage is built, or the test or a copy runs."""
        settings = self.settings
        return settings.cache_repo is None or settings.no_cache or self._uses_images()

    def _uses_images(self) -> bool:
        return self.test is not None or self.local.wanted

    def _needs_engine(self, plans: MultiPlan) -> bool:
        return self._uses_images() or any(p.plan.indices("build") for p in plans.plans)

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        """SIGINT or SIGTERM, from planning on: stop everything, then report as interrupted."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                self.interrupted = True
                scope.cancel()
                return

    def push_cache(self, plan: Plan) -> bool:
        """Whether built stages push their cache: asked, and the cache registry answered."""
        reachable = all(f.cache != "unknown" for f in plan.forecasts.values())
        return self.settings.push_cache and reachable and plan.cache_repo is not None

    def tell(self, plan: Plan, reporter: Reporter | None = None) -> None:
        """What the plan found, before anything is built: warnings, and why stages are built."""
        reporter = reporter or self
        push_cache = self.push_cache(plan)
        reachable = all(f.cache != "unknown" for f in plan.forecasts.values())
        if self.executor.name == "dagger":
            for exposure in secret_exposures(plan, push_cache=push_cache):
                reporter.warning(f"{exposure.location}: {exposure.message}")
        unreachable = plan.cache_repo is not None and not reachable
        for message in plan.warnings:
            if not (unreachable and message == plan.cache_warning):
                reporter.warning(message)
        for index, reasons in plan.why.items():
            for reason in reasons:
                reporter.note(plan.stage(index).name, f"missed: {reason}")
        for index, reason in _always_built(plan).items():
            reporter.note(plan.stage(index).name, f"always built: {reason}")
        if unreachable:
            why = f" ({plan.cache_warning})" if plan.cache_warning else ""
            reporter.warning(
                f"the cache registry is unreachable{why}:"
                " building every needed stage, pushing no cache"
            )

    async def _run_plan(self, plan: Plan) -> None:
        pending = self.publications()
        push_cache = self.push_cache(plan)
        self.tell(plan)
        targets = build_targets(self.graph.dockerfile)
        jobs = jobs_for(plan, targets, build_tags(plan, targets))
        if not jobs and self.test is None and not self.local.wanted:
            for result in initial_results(plan).values():
                self.update(result)
            await self._publish(plan, pending, {}, None)
            return
        logins = await self.logins(plan, [p.ref for p in pending])
        spec = self.spec(plan, self.settings.platform or native_platform(), logins)
        run_options = self.run_options(push_cache)
        async with self.executor.session(spec) as session, anyio.create_task_group() as along:
            for message in session.warnings:
                self.warning(message)
            images: dict[int, Image] = {}
            hints = self.hints(plan, jobs, along)
            await execute(plan, session, jobs, run_options, self, images, hints, self.client)
            if self.test is not None:
                index, test = self.test
                result = self.results[index, ""]
                self.test_outcome = await self.run_test(plan, session, images, result, test)
            await self._copy_to_host(plan, session, images)
            await self._publish(plan, pending, images, session)

    def spec(self, plan: Plan, platform: Platform, logins: tuple[RegistryLogin, ...]) -> BuildSpec:
        """What every build of one platform shares; `platform` is the one its keys were made for."""
        return BuildSpec(
            context=Path(self.settings.context),
            dockerfile=plan.rewritten(name_unnamed=True),
            ignore_file=_read(self.context.ignore.source),
            build_args=self.settings.build_args,
            secrets=self.secrets,
            platform=str(platform),
            logins=logins,
            no_cache=self.settings.no_cache,
            push_cache=self.push_cache(plan),
        )

    def run_options(self, push_cache: bool) -> RunOptions:
        return RunOptions(
            jobs=self.settings.jobs,
            fail_fast=self.settings.fail_fast,
            push_cache=push_cache,
            first_writer_wins=not self.settings.no_cache,
        )

    def publications(self) -> list[Publication]:
        if not self.settings.push:
            return []
        asked = resolve_targets(self.graph.dockerfile, self.settings.targets)
        settings = self.settings
        return publications(asked, settings.publish, settings.ci, settings.image_repo)

    async def logins(self, plan: Plan, published: Sequence[Reference]) -> tuple[RegistryLogin, ...]:
        """Credentials from env or CI for every registry the engine talks to on its own.

        That is the cache (pushes, restored stages the builds pull), the published refs, and
        every external image the built stages read: an engine pulls those inside its builds,
        with the logins it was given before, so all of them are handed over up front.
        """
        cache = [plan.cache_repo.registry] if plan.cache_repo else []
        pulled = []
        for image in external_images(self.graph.dockerfile, plan.indices("build")):
            try:
                pulled.append(Reference.parse(image).registry)
            except ValueError:
                continue  # not a reference (the planner has said so); nothing to log in to
        hosts = dict.fromkeys([*cache, *(ref.registry for ref in published), *pulled])
        logins = [await self._login(host) for host in hosts]
        return tuple(login for login in logins if login is not None)

    async def _login(self, host: str) -> RegistryLogin | None:
        """The run's credentials for `host`, from the environment or the CI, not the user's
        Docker config, which the engine reads itself. Looked up once a run: a credential
        helper is a process, and the prefetches of several hints ask at the same time."""
        async with self._looking_up:
            if host not in self._found_logins:
                secret = await self._credentials.lookup(host)
                self._found_logins[host] = (
                    None
                    if secret is None or secret.identity_token
                    else RegistryLogin(host, secret.username, secret.password)
                )
            return self._found_logins[host]

    def hints(self, plan: Plan, jobs: Iterable[int], group: TaskGroup) -> Hints | None:
        """This branch's hint tag of each stage to build, moved in `group`: a group that ends
        after publishing and before the session closes, so nothing of the run waits for a
        hint but its end."""
        if plan.cache_repo is None:
            return None
        tags = {index: self._hint(plan, index) for index in jobs}
        move = functools.partial(self.move_hint, plan)
        return Hints(tags, move, group, self.client.round_trip(plan.cache_repo))

    def _hint(self, plan: Plan, index: int) -> Reference:
        assert plan.cache_repo is not None
        return plan.cache_repo.tag(hint_tag(plan.stage(index), branches(self.settings)[0]))

    async def move_hint(self, plan: Plan, index: int, digest: str) -> None:
        """Point this branch's hint tag at the stage's image; a failure costs only a hint."""
        if plan.cache_repo is None:
            return
        hint = self._hint(plan, index)
        try:
            await self.client.copy_image(plan.pinned(digest), hint)
        except RegistryError as exc:
            host = plan.cache_repo.registry
            if self.client.dead(host) is not exc:
                self.warning(f"{plan.stage(index).name}: hint tag {hint} not moved: {exc.message}")
            elif host not in self.dead_reported:
                self.dead_reported.add(host)
                self.warning(f"hint tags not moved, {exc.message}; it is asked nothing more")

    def _test_run(self) -> tuple[int, TestRun] | None:
        spec = self.settings.test
        if spec is None or not self.settings.run_tests:
            return None
        stage = self.graph.dockerfile.stage_by_name(spec.stage)
        if stage is None or stage.index not in self.graph.needed:
            raise UsageError(
                f'test stage "{spec.stage}" is not built here', path=self.settings.config_path
            )
        unknown = [i for i in spec.secrets if i not in self.secrets.ids]
        if unknown:
            raise UsageError(
                f"test.secrets: {', '.join(unknown)} is not a secret of this run; "
                "declare it under secrets (or --secret) or drop it from test.secrets",
                path=self.settings.config_path,
            )
        artifacts_dir = Path(self.settings.artifacts_dir)
        return stage.index, TestRun(spec.command, spec.artifacts, artifacts_dir, spec.secrets)

    async def run_test(
        self,
        plan: Plan,
        session: Session,
        images: Mapping[int, Image],
        result: StageResult,
        test: TestRun,
    ) -> TestOutcome | None:
        """Run the test command in its stage, built or restored; artifacts come out either way."""
        image = self._image_of(plan, images, result)
        if image is None:
            return None
        name = result.name
        self.note(name, f"running tests: {' '.join(test.argv)}")
        code = await session.run(image, test, lambda line: self.note(name, line))
        if code:
            self.warning(f"tests in {name} failed with exit code {code}")
        return TestOutcome(name, code, str(test.artifacts_dir), tuple(test.artifacts))

    def _image_of(
        self, plan: Plan, images: Mapping[int, Image], result: StageResult | None
    ) -> Image | Reference | None:
        """A stage's image after the run: built here, else restored (or adopted) by digest."""
        if result is None or not result.status.has_image:
            return None
        if result.index in images:
            return images[result.index]
        assert result.digest is not None
        return plan.pinned(result.digest)

    def _outputs(self) -> list[tuple[int, Output]]:
        """`--output`'s stages, each one the run builds or restores: exit 2 before anything."""
        found = []
        for output in self.local.outputs:
            stage = self.graph.dockerfile.stage_by_name(output.stage)
            if stage is None and output.stage.isdigit():
                number = int(output.stage)
                stages = self.graph.dockerfile.stages
                stage = stages[number] if number < len(stages) else None
            if stage is None or stage.index not in self.graph.needed:
                raise UsageError(
                    f'--output {output.stage}:{output.path}: stage "{output.stage}" is not '
                    "built here; add it with --target"
                )
            found.append((stage.index, output))
        return found

    async def _copy_to_host(
        self, plan: Plan, session: Session, images: Mapping[int, Image]
    ) -> None:
        """`--load` each target and copy each `--output`; a stage that failed has nothing to
        give, and one that cannot be copied is a problem of the run (exit 1)."""
        jobs: list[tuple[int, Callable[[Image | Reference], Awaitable[None]]]] = []
        if self.local.load_tag is not None:
            project = project_name(Path(self.settings.context))
            for stage in resolve_targets(self.graph.dockerfile, self.settings.targets):
                name = load_name(self.local.load_tag, project=project, target=stage.name)
                jobs.append((stage.index, functools.partial(self._load, session, stage.name, name)))
        for index, output in self.outputs:
            copy = functools.partial(self._output, session, plan.stage(index).name, output)
            jobs.append((index, copy))
        for index, job in jobs:
            image = self._image_of(plan, images, self.results.get((index, "")))
            if image is not None:
                await job(image)

    async def _load(
        self, session: Session, stage: str, name: str, image: Image | Reference
    ) -> None:
        try:
            await session.load(image, name, lambda line: self.note(stage, line))
        except StageFailed as exc:
            self._local_problem(f"{stage}: not loaded as {name}: {exc.message}")
            return
        self.loaded.append((stage, name))

    async def _output(
        self, session: Session, stage: str, output: Output, image: Image | Reference
    ) -> None:
        log = functools.partial(self.note, stage)
        try:
            await session.copy_out(image, output.path, output.dest, log)
        except StageFailed as exc:
            self._local_problem(
                f"{stage}: {output.path} not copied to {output.dest}: {exc.message}"
            )

    def _local_problem(self, message: str) -> None:
        self.warning(message)
        self.problems.append(message)

    async def _publish(
        self,
        plan: Plan,
        pending: Sequence[Publication],
        images: Mapping[int, Image],
        session: Session | None,
    ) -> None:
        """Publish targets that were built or restored, unless something failed."""
        if not pending:
            return
        failed = any(r.status is Status.FAILED for r in self.results.values())
        if failed or (self.test_outcome is not None and not self.test_outcome.passed):
            self.warning("nothing published: the build or its tests failed")
            return
        results = {index: result for (index, _), result in self.results.items()}
        published, failures = await publish(
            self.client, plan, pending, results, images, session, self.log
        )
        self.published_or_failed(published, failures)

    def published_or_failed(self, published: Sequence[Published], failures: Sequence[str]) -> None:
        for failure in failures:
            self.warning(failure)
        self.published.extend(published)
        self.problems.extend(failures)

    def _report(self, seconds: float) -> RunReport:
        plan = self.plan
        why: dict[str, tuple[str, ...]] = {}
        for position, item in enumerate(() if self.plans is None else self.plans.plans):
            assert self.plans is not None
            shown = functools.partial(_shown, self.plans, position)
            for index, reasons in item.plan.why.items():
                why[shown(index)] = reasons
            for index, reason in _always_built(item.plan).items():
                why[shown(index)] = (f"always built: {reason}",)
        return RunReport(
            engine=self.executor.name,
            targets=tuple(stage.name for stage in self.graph.targets),
            cache_repo=self.settings.cache_repo if plan is None else plan.cache_repo,
            seconds=round(seconds, 3),
            stages=tuple(result for _, result in sorted(self.results.items())),
            why=why,
            published=tuple(self.published),
            test=self.test_outcome,
            problems=tuple(self.problems),
            interrupted=self.interrupted,
        )

    def _write_reports(self, report: RunReport, started: float) -> None:
        """`output.ci_formats` is imported only when one of its files is written: a run that
        writes none (a laptop's) does not pay for it at start-up."""
        options, masker = self.settings, self.masker
        results = dict(enumerate(report.stages))
        if options.report:
            _write(options.report, json.dumps(report.to_json(masker), indent=2) + "\n")
        summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
        plan = self.plan if self.settings.ci.provider == "github" and summary_file else None
        if not (options.junit or options.dotenv or plan is not None):
            return
        from pipeline.output import ci_formats

        if options.junit:
            junit = ci_formats.junit_xml(results, masker=masker, seconds=report.seconds)
            _write(options.junit, junit)
        if options.dotenv:
            published = {p.ref: p.digest for p in report.published}
            _write(options.dotenv, ci_formats.dotenv(published, results))
        if summary_file and plan is not None:
            text = ci_formats.github_summary(
                results, plan, start=started, seconds=report.seconds, masker=masker
            )
            _append(summary_file, text)


def _shown(plans: MultiPlan, position: int, index: int) -> str:
    """A stage as results name it: with its platforms when there are several."""
    name = plans.plans[position].plan.stage(index).name
    return f"{name} ({plans.shown(position, index)})" if plans.several else name


def _always_built(plan: Plan) -> dict[int, str]:
    """Why each volatile stage to build is built whatever the cache holds."""
    names = {stage.index: stage.name for stage in plan.graph.stages}
    return {
        index: always_built(forecast.volatile, index, names)
        for index, forecast in sorted(plan.forecasts.items())
        if forecast.volatile is not None and forecast.action == "build"
    }


def _read(path: str | None) -> str | None:
    return None if path is None else Path(path).read_text()


def _write(path: str, text: str) -> None:
    Path(path).write_text(text)


def _append(path: str, text: str) -> None:
    with Path(path).open("a") as handle:
        handle.write(text)
