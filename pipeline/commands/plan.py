"""From settings to a plan: the one registry client a command uses, the build context, and
`plan_for`, which every command that plans (`plan`, `build`, `prune`) calls the same way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.cache.context import BuildContext
from pipeline.cache.ignore import IgnoreRules
from pipeline.cache.plan import make_plan
from pipeline.dockerfile.stages import native_platform
from pipeline.oci.credentials import Credentials
from pipeline.oci.registry import RegistryClient

if TYPE_CHECKING:
    from pipeline.cache.plan import Plan
    from pipeline.dockerfile.graph import Graph
    from pipeline.settings.resolve import Settings

__all__ = ["branches", "build_context", "plan_for", "registry_client"]


def registry_client(settings: Settings) -> RegistryClient:
    """The registry client of one command: its tokens and connections serve every request."""
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
            branches=branches(settings),
        )

    if offline or client is not None:
        return await make(None if offline else client)
    async with registry_client(settings) as own:
        return await make(own)
