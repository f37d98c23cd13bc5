"""One plan per target platform, with the work they share planned once.

A multi-platform build is a plan per target platform, made the usual way (its own graph, as
FROM lines may read TARGETARCH, its own keys and cache probes). A stage's key already says
where it really runs (`keys._platform`): a stage on `FROM --platform=$BUILDPLATFORM` that reads
no TARGET* ARG has the same key for every target platform, so the same cache tag and the same
image. Such a stage is owned by the first platform that plans it; the later platforms list
it as `shared` and neither show, build nor push it: their builds use its image.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pipeline.cache.forecast import Forecast

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pipeline.cache.plan import Plan
    from pipeline.dockerfile.platforms import Platform

__all__ = ["MultiPlan", "PlatformPlan", "share"]


@dataclass(frozen=True)
class PlatformPlan:
    """One target platform's plan, with the stages it leaves to an earlier platform that plans
    them under the same key, so that a shared stage is built and pushed once."""

    platform: Platform
    plan: Plan
    # needed stages an earlier platform plans with the same key: index -> that platform
    shared: Mapping[int, Platform] = field(default_factory=dict)

    def owned(self) -> tuple[int, ...]:
        """The needed stages this platform plans, builds and reports itself."""
        return tuple(i for i in sorted(self.plan.forecasts) if i not in self.shared)


@dataclass(frozen=True)
class MultiPlan:
    """The plans of a build's target platforms, in the order given; a single-platform build has
    one, so that every command handles both alike."""

    plans: tuple[PlatformPlan, ...]

    @property
    def first(self) -> Plan:
        return self.plans[0].plan

    @property
    def several(self) -> bool:
        return len(self.plans) > 1

    def serves(self, position: int, index: int) -> tuple[Platform, ...]:
        """The target platforms whose builds use this platform's stage: its own, and every
        other one that shares it, in the order given."""
        owner = self.plans[position].platform
        return tuple(
            other.platform
            for other in self.plans
            if other.platform == owner or other.shared.get(index) == owner
        )

    def shown(self, position: int, index: int) -> str:
        """A stage's platforms as rows and results name them: one, or `all platforms`."""
        serves = self.serves(position, index)
        if len(serves) == len(self.plans) > 1:
            return "all platforms"
        return ", ".join(str(platform) for platform in serves)

    def restored(self, built: Mapping[str, str]) -> MultiPlan:
        """Every platform's plan with the stages of `built` (key -> pushed digest) restored
        from those images, as if the cache had held them."""
        plans = []
        for item in self.plans:
            plan = item.plan
            forecasts = dict(plan.forecasts)
            for index, forecast in plan.forecasts.items():
                digest = built.get(plan.keys[index].key)
                if digest is not None and forecast.action == "build":
                    forecasts[index] = Forecast(cache="hit", action="restore", digest=digest)
            plans.append(replace(item, plan=replace(plan, forecasts=forecasts)))
        return MultiPlan(tuple(plans))


def share(plans: Mapping[Platform, Plan]) -> MultiPlan:
    """The plans in order, each needed stage whose key another platform plans too marked as
    shared with its owner: the first platform that does not skip it (its dependents there
    are restored), else the first."""
    owners: dict[str, Platform] = {}
    for platform, plan in plans.items():
        for index, forecast in sorted(plan.forecasts.items()):
            key = plan.keys[index].key
            if key not in owners or (
                forecast.action != "skip" and _action(plans[owners[key]], key) == "skip"
            ):
                owners[key] = platform
    found = []
    for platform, plan in plans.items():
        shared = {
            index: owners[plan.keys[index].key]
            for index in sorted(plan.forecasts)
            if owners[plan.keys[index].key] != platform
        }
        found.append(PlatformPlan(platform, plan, shared))
    return MultiPlan(tuple(found))


def _action(plan: Plan, key: str) -> str:
    return next(f.action for i, f in plan.forecasts.items() if plan.keys[i].key == key)
