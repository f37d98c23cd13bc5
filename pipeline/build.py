"""`build`: plan, rewrite, run the missed stages on an executor, report.

The steps are the pipeline's modules; this one only chooses the executor, prepares what every
stage shares, watches for SIGINT/SIGTERM, and turns results into an exit code.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from pipeline.context import BuildContext, IgnoreRules
from pipeline.credentials import Credentials
from pipeline.engines.base import BuildSpec, RegistryLogin
from pipeline.errors import UsageError
from pipeline.plan import Plan, make_plan
from pipeline.reference import Reference
from pipeline.registry import RegistryClient
from pipeline.report import Masker, make_reporter, report_json, summary
from pipeline.rewrite import build_targets
from pipeline.runner import RunOptions, StageResult, execute, initial_results, jobs_for
from pipeline.stages import native_platform

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pipeline.engines.base import Executor
    from pipeline.graph import Graph
    from pipeline.runner import Reporter
    from pipeline.settings import Settings

__all__ = ["EXIT_INTERRUPTED", "BuildOptions", "plan_for", "registry_client", "run_build"]

EXIT_INTERRUPTED = 130
LOCAL_REPO = "dagger-stages"


@dataclass(frozen=True)
class BuildOptions:
    jobs: int = 8
    fail_fast: bool = False
    no_cache: bool = False
    push_cache: bool = True
    docker: str | None = None
    report: str | None = None


def registry_client(settings: Settings) -> RegistryClient:
    insecure = os.environ.get("DAGGER_STAGES_INSECURE_REGISTRIES", "")
    return RegistryClient(
        credentials=Credentials(sources=settings.ci.credentials),
        insecure=[host.strip() for host in insecure.split(",") if host.strip()],
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
) -> Plan:
    """Keys, cache refs and the forecast; `offline` asks no registry."""

    async def make(client: RegistryClient | None) -> Plan:
        return await make_plan(
            graph,
            cache_repo=settings.cache_repo,
            build_args=settings.build_args,
            platform=settings.platform or native_platform(),
            context=context or build_context(settings),
            client=client,
            no_cache=no_cache,
        )

    if offline:
        return await make(None)
    async with registry_client(settings) as client:
        return await make(client)


def choose_executor(settings: Settings, options: BuildOptions) -> Executor:
    """`auto`: Dagger when a session or its CLI is there, else Docker (checked when opened)."""
    engine = settings.engine
    if engine != "docker":
        from pipeline.engines.dagger_engine import DaggerExecutor, dagger_available

        if engine == "dagger" or dagger_available(os.environ):
            return DaggerExecutor()
    from pipeline.engines.docker_engine import DockerExecutor

    return DockerExecutor(options.docker)


def read_secrets(settings: Settings) -> dict[str, str]:
    """Secret values by id, read once: for the engine, and to mask them in every output."""
    values: dict[str, str] = {}
    for secret in settings.secrets:
        if secret.env is not None:
            if secret.env not in os.environ:
                message = f"secret {secret.id}: environment variable {secret.env} is not set"
                raise UsageError(message)
            values[secret.id] = os.environ[secret.env]
        else:
            try:
                values[secret.id] = Path(str(secret.src)).read_text()
            except OSError as exc:
                message = f"secret {secret.id}: cannot read {secret.src}: {exc.strerror}"
                raise UsageError(message) from None
    return values


async def _logins(settings: Settings, plan: Plan) -> tuple[RegistryLogin, ...]:
    """Credentials for the cache registry from env or CI, for engines that push on their own."""
    if plan.cache_repo is None:
        return ()
    host = Reference.parse(f"{plan.cache_repo}:x").registry
    secret = await Credentials(sources=settings.ci.credentials, docker_config=False).lookup(host)
    if secret is None or secret.identity_token:
        return ()
    return (RegistryLogin(host, secret.username, secret.password),)


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


async def run_build(settings: Settings, graph: Graph, options: BuildOptions) -> int:
    started = time.monotonic()
    secrets = read_secrets(settings)
    masker = Masker(secrets.values())
    context = build_context(settings)
    plan = await plan_for(settings, graph, context=context, no_cache=options.no_cache)
    executor = choose_executor(settings, options)
    for message in plan.warnings:
        print(masker(f"dagger-stages: warning: {message}"), file=sys.stderr)
    reachable = all(f.cache != "unknown" for f in plan.forecasts.values())
    if plan.cache_repo is not None and not reachable:
        message = "the cache registry is unreachable: building every needed stage, pushing no cache"
        print(f"dagger-stages: warning: {message}", file=sys.stderr)
    targets = build_targets(graph.dockerfile)
    spec = BuildSpec(
        context=Path(settings.context),
        dockerfile=plan.rewritten(name_unnamed=True),
        ignore_file=_read(context.ignore.source),
        build_args=settings.build_args,
        secrets=settings.secrets,
        platform=None if settings.platform is None else str(settings.platform),
        logins=await _logins(settings, plan),
    )
    jobs = jobs_for(plan, targets, _tags(plan, targets))
    run_options = RunOptions(
        jobs=options.jobs,
        fail_fast=options.fail_fast,
        push_cache=options.push_cache and reachable and plan.cache_repo is not None,
    )
    reporter = make_reporter(masker)
    collector = _Collector(reporter)
    interrupted = False
    try:
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                nonlocal interrupted
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        interrupted = True
                        group.cancel_scope.cancel()
                        return

            group.start_soon(watch)
            if jobs:
                async with executor.session(spec) as session:
                    await execute(plan, session, jobs, run_options, collector)
            else:
                for result in initial_results(plan).values():
                    collector.update(result)
            group.cancel_scope.cancel()
    finally:
        reporter.close()
    results = dict(sorted(collector.results.items()))
    failed = any(r.status == "failed" for r in results.values())
    print(summary(results, masker), file=sys.stderr)
    if options.report:
        document = report_json(
            results,
            ok=not failed and not interrupted,
            engine=executor.name,
            targets=[stage.name for stage in graph.targets],
            cache_repo=plan.cache_repo,
            seconds=time.monotonic() - started,
            masker=masker,
        )
        _write(options.report, json.dumps(document, indent=2) + "\n")
    if interrupted:
        print("dagger-stages: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 1 if failed else 0


def _read(path: str | None) -> str | None:
    return None if path is None else Path(path).read_text()


def _write(path: str, text: str) -> None:
    Path(path).write_text(text)
