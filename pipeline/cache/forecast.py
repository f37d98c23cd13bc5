"""From cache hits to actions: which needed stages to restore, build or skip.

Pure: the registry probe happens elsewhere and hands in what it found. A volatile stage (one
whose key cannot say what its image holds, `keys.Volatile`) is always built, hit or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pipeline.dockerfile.rewrite import restorable

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pipeline.cache.keys import Volatile
    from pipeline.dockerfile.graph import Graph

__all__ = ["Action", "Cache", "Forecast", "decide"]

Cache = Literal["hit", "miss", "unknown"]
Action = Literal["restore", "build", "skip"]


@dataclass(frozen=True)
class Forecast:
    """What the cache holds of a needed stage and what the run will do with it, decided before
    anything is built so that `plan` shows what `build` does."""

    cache: Cache | None  # None: not asked (no cache repo, a volatile stage, build --no-cache)
    action: Action
    digest: str | None = None
    volatile: Volatile | None = None  # why it is built whatever the cache holds


def decide(
    graph: Graph,
    cache: Mapping[int, Cache],
    digests: Mapping[int, str],
    *,
    no_cache: bool = False,
    volatile: Mapping[int, Volatile] | None = None,
) -> dict[int, Forecast]:
    """Walk down from the targets; a hit is restored and ends the walk along that path.

    `cache` holds what the probe found for each needed stage (nothing without a cache repo),
    `digests` the digest of each hit's image. Stages reached only through restored stages are
    skipped. With `no_cache` every needed stage is built, and so is every `volatile` one.
    """
    actions: dict[int, Forecast] = {}
    volatile = volatile or {}
    epoch = graph.dockerfile.source_date_epoch
    # the stage that dates the build must stay FROM scratch for BuildKit to evaluate it
    dating = epoch.stage if epoch is not None else None

    def visit(index: int) -> None:
        if index in actions:
            return
        stage = graph.stages[index]
        state = cache.get(index)
        moving = volatile.get(index)
        if (
            state == "hit"
            and not no_cache
            and moving is None
            and restorable(stage)
            and index != dating
        ):
            actions[index] = Forecast(state, "restore", digests[index])
            return
        actions[index] = Forecast(state, "build", digests.get(index), moving)
        for dependency in stage.depends_on:
            visit(dependency)

    for target in graph.targets:
        visit(target.index)
    for index in graph.needed - actions.keys():
        actions[index] = Forecast(cache.get(index), "skip", digests.get(index), volatile.get(index))
    return actions
