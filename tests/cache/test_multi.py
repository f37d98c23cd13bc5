from __future__ import annotations

import functools
from pathlib import Path

import anyio
import pytest

from pipeline.cache.context import BuildContext
from pipeline.cache.ignore import IgnoreRules
from pipeline.cache.multi import MultiPlan, share
from pipeline.cache.plan import Plan, make_plan
from pipeline.dockerfile.platforms import Platform
from tests.conftest import WriteDockerfile, graph_of

AMD64, ARM64, ARMV7 = (Platform.parse(p) for p in ("linux/amd64", "linux/arm64", "linux/arm/v7"))

CROSS = """\
FROM --platform=$BUILDPLATFORM alpine AS tools
RUN make-tools
FROM tools AS build
ARG TARGETARCH
RUN build-for $TARGETARCH
FROM --platform=$BUILDPLATFORM alpine AS docs
ARG TARGETPLATFORM
FROM alpine AS release
COPY --from=tools /t /t
COPY --from=build /out /out
COPY --from=docs /d /d
"""


def plans_of(
    dockerfile: WriteDockerfile, tmp_path: Path, text: str, *platforms: Platform
) -> MultiPlan:
    """Each platform's offline plan, as `plan --offline` makes them, shared."""
    made: dict[Platform, Plan] = {}
    for platform in platforms:
        graph = graph_of(dockerfile(text, platform=str(platform)))
        context = BuildContext(tmp_path, IgnoreRules.load(tmp_path, tmp_path / "Dockerfile"))
        made[platform] = anyio.run(
            functools.partial(
                make_plan,
                graph,
                cache_repo=None,
                build_args={},
                platform=platform,
                context=context,
                client=None,
            )
        )
    return share(made)


def test_a_build_platform_stage_without_target_args_is_planned_once(
    dockerfile: WriteDockerfile, tmp_path: Path
) -> None:
    plans = plans_of(dockerfile, tmp_path, CROSS, AMD64, ARM64, ARMV7)
    assert [item.platform for item in plans.plans] == [AMD64, ARM64, ARMV7]
    first, second, third = plans.plans
    assert first.shared == {}
    assert second.shared == third.shared == {0: AMD64}
    assert first.owned() == (0, 1, 2, 3)
    assert second.owned() == third.owned() == (1, 2, 3)
    assert plans.serves(0, 0) == (AMD64, ARM64, ARMV7)
    assert plans.shown(0, 0) == "all platforms"
    assert plans.shown(1, 1) == "linux/arm64"


def test_a_declared_target_arg_makes_a_stage_per_platform_even_unread(
    dockerfile: WriteDockerfile, tmp_path: Path
) -> None:
    """`docs` declares TARGETPLATFORM: its RUN steps could read it from the environment, so
    its key is per platform, as its image may be."""
    plans = plans_of(dockerfile, tmp_path, CROSS, AMD64, ARM64)
    keys = [item.plan.keys[2].key for item in plans.plans]
    assert keys[0] != keys[1]
    assert 2 not in plans.plans[1].shared


def test_restored_turns_shared_builds_into_restores_everywhere(
    dockerfile: WriteDockerfile, tmp_path: Path
) -> None:
    plans = plans_of(dockerfile, tmp_path, CROSS, AMD64, ARM64)
    key = plans.first.keys[0].key
    after = plans.restored({key: "sha256:" + "a" * 64})
    for item in after.plans:
        assert item.plan.forecasts[0].action == "restore"
        assert item.plan.forecasts[0].digest == "sha256:" + "a" * 64
        assert item.plan.forecasts[1].action == "build"


@pytest.mark.parametrize("platforms", [(AMD64,), (ARM64,)])
def test_one_platform_shares_nothing(
    dockerfile: WriteDockerfile, tmp_path: Path, platforms: tuple[Platform, ...]
) -> None:
    plans = plans_of(dockerfile, tmp_path, CROSS, *platforms)
    assert not plans.several
    assert plans.plans[0].shared == {}
    assert plans.shown(0, 0) == str(platforms[0])
