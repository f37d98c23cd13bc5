"""From settings to a plan, and the `plan` command.

`load_graph` reads the Dockerfile into the targets' stage graph, `plan_for` makes the plan
(keys, cache refs, forecast) with the one registry client a command uses; every command that
plans (`plan`, `build`, `prune`) calls them the same way. With several target platforms,
`platform_graphs` reads the graph of each and `plans_for` plans them all at once
(`cache.multi`: what they share is planned once). `dagger_findings` says what the
Dagger engine would refuse, when it is the engine: `build` stops on it, `plan` warns of it and
forecasts no restore the engine could not pull. `run_plan` prints what it found.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from pipeline.cache.context import BuildContext
from pipeline.cache.ignore import IgnoreRules
from pipeline.cache.multi import share
from pipeline.cache.plan import make_plan
from pipeline.dockerfile.graph import select
from pipeline.dockerfile.parse import parse_dockerfile
from pipeline.dockerfile.platforms import native_platform
from pipeline.dockerfile.stages import build_stages
from pipeline.engines.dagger_rules import check, engine_is_dagger, secret_exposures, unreachable
from pipeline.engines.emulation import emulation_notes
from pipeline.errors import UsageError
from pipeline.oci.credentials import Credentials
from pipeline.output.plan_view import dumps, plan_json, plan_table

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from pipeline.cache.multi import MultiPlan
    from pipeline.cache.plan import Plan
    from pipeline.dockerfile.graph import Graph
    from pipeline.dockerfile.platforms import Platform
    from pipeline.dockerfile.stages import Dockerfile
    from pipeline.dockerfile.stages import Warning as StageWarning
    from pipeline.engines.dagger_rules import Finding
    from pipeline.oci.reference import Reference
    from pipeline.oci.registry import RegistryClient
    from pipeline.settings.resolve import Settings

__all__ = [
    "branches",
    "build_context",
    "dagger_findings",
    "load_dockerfile",
    "load_graph",
    "plan_for",
    "plans_for",
    "platform_graphs",
    "registry_client",
    "run_plan",
]


def registry_client(settings: Settings) -> RegistryClient:
    """The registry client of one command: its tokens and connections serve every request.
    Loaded here, when a command asks a registry: `plan --offline` never loads httpx."""
    from pipeline.oci.registry import RegistryClient

    return RegistryClient(
        credentials=Credentials(sources=settings.credentials),
        insecure=settings.insecure_registries,
        retries=2,
        backoff=0.25,
    )


def build_context(settings: Settings) -> BuildContext:
    context = Path(settings.context)
    return BuildContext(context, IgnoreRules.load(context, Path(settings.dockerfile)))


def branches(settings: Settings) -> list[str]:
    """Whose hint tags a missed stage reuses: this branch's, else the default branch's.

    Outside git and CI there is no branch; such builds share the hint `<stage>--local`.
    """
    ci = settings.ci
    return [branch for branch in (ci.branch or "local", ci.default_branch) if branch]


async def plan_for(
    settings: Settings,
    graph: Graph,
    *,
    context: BuildContext | None = None,
    offline: bool = False,
    no_cache: bool = False,
    restore: bool = True,
    client: RegistryClient | None = None,
    platform: Platform | None = None,
    on_image: Callable[[Reference, str | None], None] | None = None,
    on_build: Callable[[], None] | None = None,
) -> Plan:
    """Keys, cache refs and the forecast; `offline` asks no registry, `client` is reused.
    `on_image`, `on_build`: as `make_plan`'s.

    `no_cache` (`build --no-cache`) builds everything and asks the cache only whether it
    answers; `restore` False builds everything too, but asks, so that `plan` shows what the
    cache holds.
    `platform` is the target platform, by default the first of the settings."""

    async def make(client: RegistryClient | None) -> Plan:
        return await make_plan(
            graph,
            cache_repo=settings.cache_repo,
            build_args=settings.build_args,
            platform=platform or settings.platform or native_platform(),
            context=context or build_context(settings),
            client=client,
            no_cache=no_cache,
            restore=restore,
            branches=branches(settings),
            on_image=on_image,
            on_build=on_build,
        )

    if offline or client is not None:
        return await make(None if offline else client)
    async with registry_client(settings) as own:
        return await make(own)


async def plans_for(
    settings: Settings,
    graphs: Mapping[Platform, Graph],
    *,
    context: BuildContext | None = None,
    offline: bool = False,
    no_cache: bool = False,
    restore: bool = True,
    client: RegistryClient | None = None,
    on_image: Callable[[Reference, str | None], None] | None = None,
    on_build: Callable[[], None] | None = None,
) -> MultiPlan:
    """One plan per target platform, made at once with one client; shared work marked."""
    context = context or build_context(settings)
    plans: dict[Platform, Plan] = {}

    async def one(platform: Platform, graph: Graph, client: RegistryClient | None) -> None:
        plans[platform] = await plan_for(
            settings,
            graph,
            context=context,
            offline=offline,
            no_cache=no_cache,
            restore=restore,
            client=client,
            platform=platform,
            on_image=on_image,
            on_build=on_build,
        )

    async def every(client: RegistryClient | None) -> MultiPlan:
        async with anyio.create_task_group() as group:
            for platform, graph in graphs.items():
                group.start_soon(one, platform, graph, client)
        return share({platform: plans[platform] for platform in graphs})

    if offline or client is not None:
        return await every(client)
    async with registry_client(settings) as own:
        return await every(own)


def platform_graphs(
    settings: Settings, graph: Graph, *, tests: bool = True
) -> dict[Platform, Graph]:
    """The targets' graph for each target platform, `graph` being the first's: FROM lines
    may read TARGETARCH. The Dockerfile's warnings were told once, for the first."""
    first = settings.platform or native_platform()
    graphs = {first: graph}
    for platform in settings.platforms[1:]:
        graphs[platform] = load_graph(
            dataclasses.replace(settings, platforms=(platform,)), tests=tests, quiet=True
        )
    return graphs


def load_dockerfile(settings: Settings, *, quiet: bool = False) -> Dockerfile:
    """The Dockerfile's stages as BuildKit reads them; its warnings go to stderr."""
    if not Path(settings.context).is_dir():
        raise UsageError(
            "build context is not a directory; give the folder the Dockerfile copies from "
            "with --context DIR (or context: in the config file)",
            path=settings.context,
        )
    _check_dockerfile_exists(settings)
    target = settings.targets[0] if settings.targets else None
    dockerfile = build_stages(
        parse_dockerfile(settings.dockerfile),
        build_args=settings.build_args,
        platform=settings.platform,
        target=target,
    )
    if not quiet:
        _print_warnings(dockerfile.path, dockerfile.warnings)
    return dockerfile


def _check_dockerfile_exists(settings: Settings) -> None:
    """A missing Dockerfile: the folder searched, and the two ways to point at another one."""
    path = Path(settings.dockerfile)
    if path.exists():
        return
    folder = path.parent.resolve()
    if settings.config_path is not None:
        how = f"fix dockerfile: in {settings.config_path}, or give --dockerfile FILE"
    else:
        how = (
            "give its path with --dockerfile FILE, or a config file that names it "
            "(dockerfile:) with --config FILE"
        )
    raise UsageError(
        f"Dockerfile not found: looked for {path.name} in {folder}; {how}",
        path=settings.dockerfile,
    )


def _print_warnings(path: str, warnings: Iterable[StageWarning]) -> None:
    for warning in warnings:
        print(f"{path}:{warning.line}: warning: {warning.message}", file=sys.stderr)


def load_graph(
    settings: Settings, *, tests: bool = True, also: Sequence[str] = (), quiet: bool = False
) -> Graph:
    """The targets' graph, with a configured test stage too: `plan` shows what `build` does.
    `also` are more stages to build or restore without being targets (`--output`'s).

    Errors in stages the targets do not need are warnings, known only once the targets are.
    """
    also = [*also, *([settings.test.stage] if settings.test is not None and tests else [])]
    dockerfile = load_dockerfile(settings, quiet=quiet)
    graph = select(dockerfile, settings.targets, also=also)
    if not quiet:
        _print_warnings(dockerfile.path, graph.dockerfile.warnings[len(dockerfile.warnings) :])
    return graph


def dagger_findings(
    settings: Settings, graph: Graph, published: Iterable[Reference] = ()
) -> tuple[Finding, ...]:
    """What the Dagger engine would refuse in this build; nothing when Docker builds it."""
    if not engine_is_dagger(settings.engine, os.environ):
        return ()
    return check(
        graph,
        cache_repo=settings.cache_repo,
        published=published,
        insecure=settings.insecure_registries,
        reaches=settings.engine_reaches,
    )


def run_plan(settings: Settings, *, offline: bool, output: str) -> int:
    """`plan`: the graph, keys and forecast as a table, JSON (docs/plan-json.md) or Mermaid.

    On Dagger, what the engine would refuse comes first as warnings (`build` stops on them),
    and a cache the engine cannot pull from is forecast as built, never restored. A stage
    that would run RUN steps under an emulator this host lacks is warned of too.
    """
    graph = load_graph(settings)
    findings = dagger_findings(settings, graph)
    for finding in findings:
        where = finding.location or "dagger-stages"
        print(f"{where}: warning: {finding.message}", file=sys.stderr)
    cache = settings.cache_repo
    restore_nothing = (
        cache is not None and bool(findings) and _engine_cannot_reach(settings, cache.registry)
    )
    graphs = platform_graphs(settings, graph)
    plans = anyio.run(
        functools.partial(plans_for, settings, graphs, offline=offline, restore=not restore_nothing)
    )
    plan = plans.first
    for message in dict.fromkeys(m for item in plans.plans for m in item.plan.warnings):
        print(_warning(message), file=sys.stderr)
    notes = emulation_notes(plans, native_platform())
    for note in notes:
        print(_warning(note), file=sys.stderr)
    if engine_is_dagger(settings.engine, os.environ):
        # offline, nothing was asked, so the build is assumed to reach the cache and push
        reachable = offline or all(f.cache != "unknown" for f in plan.forecasts.values())
        push_cache = settings.push_cache and reachable
        for exposure in secret_exposures(plan, push_cache=push_cache):
            print(f"{exposure.location}: warning: {exposure.message}", file=sys.stderr)
    if output == "json":
        print(dumps(plan_json(plans, settings, findings, notes)))
    elif output == "mermaid":
        from pipeline.output.ci_formats import mermaid_graph  # only this output needs it

        print(mermaid_graph(plan), end="")
    else:
        print(plan_table(plans))
    return 0


def _warning(message: str) -> str:
    return f"dagger-stages: warning: {message}"


def _engine_cannot_reach(settings: Settings, host: str) -> bool:
    reason = unreachable(
        host, insecure=settings.insecure_registries, reaches=settings.engine_reaches
    )
    return reason is not None
