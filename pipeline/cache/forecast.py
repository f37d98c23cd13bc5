"""From cache hits to actions: which needed stages to restore, build or skip.

Pure: the registry probe happens elsewhere and hands in what it found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pipeline.dockerfile.rewrite import restorable
from pipeline.oci.reference import slugify

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pipeline.dockerfile.graph import Graph
    from pipeline.dockerfile.stages import Stage

__all__ = ["Action", "Cache", "Forecast", "cache_tag", "decide", "hint_tag"]

Cache = Literal["hit", "miss", "unknown"]
Action = Literal["restore", "build", "skip"]

KEY_CHARS = 32
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Forecast:
    cache: Cache | None
    action: Action
    digest: str | None = None


def cache_tag(stage: Stage, key: str) -> str:
    """`<stage>-<first 32 hex of the key>`, within the tag grammar's 128 characters."""
    name = stage.declared_name if stage.declared_name is not None else f"stage-{stage.index}"
    name = _TAG_UNSAFE.sub("-", name)[: 127 - KEY_CHARS]
    return f"{name}-{key[:KEY_CHARS]}"


def hint_tag(stage: Stage, branch: str) -> str:
    """`<stage>--<branch>`: moved to each new build of the stage on that branch.

    Only a hint for layer reuse and miss explanations; no correctness depends on it.
    """
    name = stage.declared_name if stage.declared_name is not None else f"stage-{stage.index}"
    return f"{_TAG_UNSAFE.sub('-', name)}--{slugify(branch)}"[:128]


def decide(
    graph: Graph,
    cache: Mapping[int, Cache],
    digests: Mapping[int, str],
    *,
    no_cache: bool = False,
) -> dict[int, Forecast]:
    """Walk down from the targets; a hit is restored and ends the walk along that path.

    `cache` holds what the probe found for each needed stage (nothing without a cache repo),
    `digests` the digest of each hit's image. Stages reached only through restored stages are
    skipped. With `no_cache` every needed stage is built.
    """
    actions: dict[int, Forecast] = {}

    def visit(index: int) -> None:
        if index in actions:
            return
        stage = graph.stages[index]
        state = cache.get(index)
        if state == "hit" and not no_cache and restorable(stage):
            actions[index] = Forecast(state, "restore", digests[index])
            return
        actions[index] = Forecast(state, "build", digests.get(index))
        for dependency in stage.depends_on:
            visit(dependency)

    for target in graph.targets:
        visit(target.index)
    for index in graph.needed - actions.keys():
        actions[index] = Forecast(cache.get(index), "skip", digests.get(index))
    return actions
