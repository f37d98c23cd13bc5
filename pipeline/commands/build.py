"""`build`: plan, rewrite, run the missed stages on an executor, report.

The steps are the pipeline's modules; this one only chooses the executor, prepares what every
stage shares, watches for SIGINT/SIGTERM, and turns results into an exit code.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from pipeline.cache.context import BuildContext, IgnoreRules
from pipeline.cache.forecast import hint_tag
from pipeline.cache.plan import Plan, make_plan
from pipeline.commands.prune import apply, decide, inventory, render
from pipeline.commands.publish import Publication, publications
from pipeline.dockerfile.graph import resolve_targets
from pipeline.dockerfile.rewrite import build_targets
from pipeline.dockerfile.stages import native_platform
from pipeline.engines.base import BuildSpec, Image, RegistryLogin, TestRun
from pipeline.engines.runner import RunOptions, StageResult, execute, initial_results, jobs_for
from pipeline.errors import StageFailed, ToolError, UsageError
from pipeline.oci.credentials import Credentials
from pipeline.oci.reference import Reference
from pipeline.oci.registry import RegistryClient, RegistryError
from pipeline.output.ci_formats import dotenv, github_summary, junit_xml
from pipeline.output.terminal import make_reporter, report_json, summary
from pipeline.settings.secrets import resolve_secrets

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pipeline.dockerfile.graph import Graph
    from pipeline.engines.base import Executor, Session
    from pipeline.engines.runner import Reporter
    from pipeline.settings.resolve import Settings
    from pipeline.settings.secrets import Masker, Secrets

__all__ = ["EXIT_INTERRUPTED", "plan_for", "registry_client", "run_build"]

EXIT_INTERRUPTED = 130
LOCAL_REPO = "dagger-stages"


def registry_client(settings: Settings) -> RegistryClient:
    return RegistryClient(
        credentials=Credentials(sources=settings.credentials),
        insecure=list(settings.insecure_registries),
        retries=2,
        backoff=0.25,
    )


def build_context(settings: Settings) -> BuildContext:
    context = Path(settings.context)
    return BuildContext(context, IgnoreRules.load(context, Path(settings.dockerfile)))


async def plan_for(
    settings: Settings,
    graph: Graph,
    *,
    context: BuildContext | None = None,
    offline: bool = False,
    no_cache: bool = False,
    client: RegistryClient | None = None,
) -> Plan:
    """Keys, cache refs and the forecast; `offline` asks no registry, `client` is reused."""

    async def make(client: RegistryClient | None) -> Plan:
        return await make_plan(
            graph,
            cache_repo=settings.cache_repo,
            build_args=settings.build_args,
            platform=settings.platform or native_platform(),
            context=context or build_context(settings),
            client=client,
            no_cache=no_cache,
            branches=_branches(settings),
        )

    if offline or client is not None:
        return await make(None if offline else client)
    async with registry_client(settings) as own:
        return await make(own)


def _branches(settings: Settings) -> list[str]:
    """Whose hint tags a missed stage reuses: this branch's, else the default branch's.

    Outside git and CI there is no branch; such builds share the hint `<stage>--local`.
    """
    ci = settings.ci
    return [branch for branch in (ci.branch or "local", ci.default_branch) if branch]


def choose_executor(settings: Settings) -> Executor:
    """`auto`: Dagger when a session or its CLI is there, else Docker (checked when opened)."""
    engine = settings.engine
    if engine != "docker":
        from pipeline.engines.dagger_engine import DaggerExecutor, dagger_available

        if engine == "dagger" or dagger_available(os.environ):
            return DaggerExecutor()
    from pipeline.engines.docker_engine import DockerExecutor

    return DockerExecutor(settings.docker)


async def _logins(
    settings: Settings, plan: Plan, published: Sequence[str]
) -> tuple[RegistryLogin, ...]:
    """Credentials from env or CI for the registries the engine pushes to on its own."""
    refs = [*published, *([f"{plan.cache_repo}:x"] if plan.cache_repo else [])]
    hosts = dict.fromkeys(Reference.parse(ref).registry for ref in refs)
    credentials = Credentials(sources=settings.credentials, docker_config=False)
    logins = []
    for host in hosts:
        secret = await credentials.lookup(host)
        if secret is not None and not secret.identity_token:
            logins.append(RegistryLogin(host, secret.username, secret.password))
    return tuple(logins)


def _tags(plan: Plan, targets: Mapping[int, str]) -> dict[int, str]:
    """Where each built image goes: its cache ref, or a local name when there is no cache repo."""
    return {
        index: plan.refs.get(index) or f"{LOCAL_REPO}/{targets[index]}:{plan.keys[index].key[:32]}"
        for index in plan.indices("build")
    }


class _Collector:
    """Keeps the latest result of every stage while passing everything on to the reporter."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.results: dict[int, StageResult] = {}

    def update(self, result: StageResult) -> None:
        self.results[result.index] = result
        self.reporter.update(result)

    def log(self, stage: str, line: str) -> None:
        self.reporter.log(stage, line)

    def warning(self, message: str) -> None:
        self.reporter.warning(message)


async def run_build(settings: Settings, graph: Graph) -> int:
    """One registry client serves the whole run: the plan, the hint tags and publishing."""
    async with registry_client(settings) as client:
        return await _run_build(settings, graph, client)


async def _run_build(settings: Settings, graph: Graph, client: RegistryClient) -> int:
    started = time.monotonic()
    secrets = resolve_secrets(settings.secrets, os.environ)
    masker = secrets.masker()
    executor = choose_executor(settings)
    test = _test_run(settings, graph)
    context = build_context(settings)
    outcome = _Outcome()
    reporter = make_reporter(masker, provider=settings.ci.provider)
    collector = _Collector(reporter)
    plan: Plan | None = None
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_watch_signals, group.cancel_scope, outcome)
            plan = await _plan_while_preparing(
                executor, settings, graph, context, settings.no_cache, client
            )
            await _run_plan(
                plan, settings, secrets, client, executor, test, collector, outcome, context
            )
            group.cancel_scope.cancel()
    finally:
        reporter.close()
    results = dict(sorted(collector.results.items()))
    failed = any(r.status == "failed" for r in results.values())
    tests_failed = outcome.test is not None and outcome.test["exit_code"] != 0
    print(summary(results, masker), file=sys.stderr)
    for item in outcome.published:
        print(f"  published {item['ref']}@{item['digest']}", file=sys.stderr)
    ok = not (failed or tests_failed or outcome.interrupted or outcome.failures)
    document = report_json(
        results,
        ok=ok,
        engine=executor.name,
        targets=[stage.name for stage in graph.targets],
        cache_repo=settings.cache_repo if plan is None else plan.cache_repo,
        seconds=time.monotonic() - started,
        masker=masker,
    )
    why = {} if plan is None else {plan.stage(i).name: list(r) for i, r in plan.why.items()}
    for stage in document["stages"]:
        stage["why"] = why.get(stage["name"], [])
    document["published"] = outcome.published
    document["test"] = outcome.test
    _write_reports(settings, plan, results, document, started, masker)
    if outcome.interrupted:
        print("dagger-stages: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if ok else 1


async def _plan_while_preparing(
    executor: Executor,
    settings: Settings,
    graph: Graph,
    context: BuildContext,
    no_cache: bool,
    client: RegistryClient,
) -> Plan:
    """The engine is found while the registry answers the plan's questions."""
    async with anyio.create_task_group() as group:
        group.start_soon(executor.prepare)
        plan = await plan_for(settings, graph, context=context, no_cache=no_cache, client=client)
    return plan  # noqa: RET504 (returned once prepare has finished too)


async def _watch_signals(scope: anyio.CancelScope, outcome: _Outcome) -> None:
    """SIGINT or SIGTERM, from planning on: stop everything, then report as interrupted."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            outcome.interrupted = True
            scope.cancel()
            return


async def _run_plan(
    plan: Plan,
    settings: Settings,
    secrets: Secrets,
    client: RegistryClient,
    executor: Executor,
    test: tuple[int, TestRun] | None,
    collector: _Collector,
    outcome: _Outcome,
    context: BuildContext,
) -> None:
    graph = plan.graph
    pending = []
    if settings.push:
        asked = resolve_targets(graph.dockerfile, settings.targets)
        pending = publications(asked, settings.publish, settings.ci, settings.image_repo)
    for message in plan.warnings:
        collector.warning(message)
    for index, reasons in plan.why.items():
        for reason in reasons:
            collector.log(plan.stage(index).name, f"missed: {reason}")
    reachable = all(f.cache != "unknown" for f in plan.forecasts.values())
    if plan.cache_repo is not None and not reachable:
        collector.warning(
            "the cache registry is unreachable: building every needed stage, pushing no cache"
        )
    targets = build_targets(graph.dockerfile)
    spec = BuildSpec(
        context=Path(settings.context),
        dockerfile=plan.rewritten(name_unnamed=True),
        ignore_file=_read(context.ignore.source),
        build_args=settings.build_args,
        secrets=secrets,
        platform=None if settings.platform is None else str(settings.platform),
        logins=await _logins(settings, plan, [p.ref for p in pending]),
    )
    jobs = jobs_for(plan, targets, _tags(plan, targets))
    run_options = RunOptions(
        jobs=settings.jobs,
        fail_fast=settings.fail_fast,
        push_cache=settings.push_cache and reachable and plan.cache_repo is not None,
    )
    if not jobs and test is None:
        for result in initial_results(plan).values():
            collector.update(result)
        await _publish(client, plan, pending, collector, {}, None, outcome)
        return
    async with executor.session(spec) as session:
        images: dict[int, Image] = {}
        moved = functools.partial(_move_hint, client, settings, plan, collector)
        await execute(plan, session, jobs, run_options, collector, images, moved)
        if test is not None:
            outcome.test = await _run_test(plan, session, images, collector, *test)
        await _publish(client, plan, pending, collector, images, session, outcome)


async def _move_hint(
    client: RegistryClient,
    settings: Settings,
    plan: Plan,
    collector: _Collector,
    index: int,
    ref: str,
    digest: str,
) -> None:
    """Point this branch's hint tag at the stage just pushed; a failure costs only a hint."""
    branch = _branches(settings)[0]
    if plan.cache_repo is None:
        return
    hint = Reference.parse(f"{plan.cache_repo}:{hint_tag(plan.stage(index), branch)}")
    try:
        await client.copy_image(Reference.parse(f"{plan.cache_repo}@{digest}"), hint)
    except RegistryError as exc:
        collector.warning(f"{plan.stage(index).name}: hint tag {hint} not moved: {exc.message}")


@dataclass
class _Outcome:
    interrupted: bool = False
    test: dict[str, Any] | None = None
    published: list[dict[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _test_run(settings: Settings, graph: Graph) -> tuple[int, TestRun] | None:
    spec = settings.test
    if spec is None or not settings.run_tests:
        return None
    stage = graph.dockerfile.stage_by_name(spec.stage)
    if stage is None or stage.index not in graph.needed:
        raise UsageError(f'test stage "{spec.stage}" is not built here', path=settings.config_path)
    artifacts_dir = Path(settings.artifacts_dir)
    return stage.index, TestRun(spec.command, spec.artifacts, artifacts_dir)


async def _run_test(
    plan: Plan,
    session: Session,
    images: Mapping[int, Image],
    collector: _Collector,
    index: int,
    test: TestRun,
) -> dict[str, Any] | None:
    """Run the test command in its stage, built or restored; artifacts come out either way."""
    result = collector.results[index]
    if result.status not in ("built", "cached"):
        return None
    image: Image | str = images.get(index, f"{plan.cache_repo}@{result.digest}")
    name = result.name
    collector.log(name, f"running tests: {' '.join(test.argv)}")
    code = await session.run(image, test, lambda line: collector.log(name, line))
    if code:
        collector.warning(f"tests in {name} failed with exit code {code}")
    return {
        "stage": name,
        "exit_code": code,
        "artifacts_dir": str(test.artifacts_dir),
        "artifacts": list(test.artifacts),
    }


async def _publish(
    client: RegistryClient,
    plan: Plan,
    pending: Sequence[Publication],
    collector: _Collector,
    images: Mapping[int, Image],
    session: Session | None,
    outcome: _Outcome,
) -> None:
    """Publish targets that were built or restored, unless something failed.

    A stage already in the cache is copied registry-side (its blobs are mounted, not moved);
    one built without a cache push is pushed by the engine.
    """
    if not pending:
        return
    results = collector.results
    if any(r.status == "failed" for r in results.values()) or (
        outcome.test is not None and outcome.test["exit_code"] != 0
    ):
        collector.warning("nothing published: the build or its tests failed")
        return
    for item in pending:
        result = results[item.stage]
        try:
            if result.digest and result.cache_ref and plan.cache_repo:
                source = Reference.parse(f"{plan.cache_repo}@{result.digest}")
                digest = await client.copy_image(source, Reference.parse(item.ref))
            elif item.stage in images and session is not None:
                log = functools.partial(collector.log, result.name)
                digest = await session.push(images[item.stage], item.ref, log)
            else:
                raise StageFailed(f"{result.name} has no image to publish")
        except ToolError as exc:
            outcome.failures.append(f"publishing {item.ref} failed: {exc.message}")
            collector.warning(outcome.failures[-1])
            continue
        outcome.published.append({"stage": result.name, "ref": item.ref, "digest": digest})


def _write_reports(
    settings: Settings,
    plan: Plan | None,
    results: Mapping[int, StageResult],
    document: dict[str, Any],
    started: float,
    masker: Masker,
) -> None:
    if settings.report:
        _write(settings.report, json.dumps(document, indent=2) + "\n")
    if settings.junit:
        _write(settings.junit, junit_xml(results, masker=masker, seconds=document["seconds"]))
    if settings.dotenv:
        published = {p["ref"]: p["digest"] for p in document["published"]}
        _write(settings.dotenv, dotenv(published, results))
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if settings.ci.provider == "github" and summary_file and plan is not None:
        text = github_summary(
            results, plan, start=started, seconds=document["seconds"], masker=masker
        )
        _append(summary_file, text)


async def run_prune(
    settings: Settings, older_than: timedelta, keep: int, protected: list[str], yes: bool
) -> int:
    assert settings.cache_repo is not None
    repo = Reference.parse(f"{settings.cache_repo}:x")
    async with registry_client(settings) as client:
        tags = await inventory(client, repo)
        decisions = decide(
            tags, older_than=older_than, keep=keep, now=datetime.now(UTC), protected=protected
        )
        if yes:
            await apply(client, repo, decisions)
    print(render(decisions, dry_run=not yes))
    return 0


def _read(path: str | None) -> str | None:
    return None if path is None else Path(path).read_text()


def _write(path: str, text: str) -> None:
    Path(path).write_text(text)


def _append(path: str, text: str) -> None:
    with Path(path).open("a") as handle:
        handle.write(text)
