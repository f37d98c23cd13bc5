"""`make_plan` against a registry that accepts connections and never answers: the whole probe
has one deadline, and a host dead after one timed-out request costs no more connections."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from pipeline.cache.context import BuildContext
from pipeline.cache.ignore import IgnoreRules
from pipeline.cache.plan import PROBE_DEADLINE, Plan, make_plan
from pipeline.dockerfile.graph import select
from pipeline.dockerfile.parse import parse_text
from pipeline.dockerfile.platforms import native_platform
from pipeline.dockerfile.stages import build_stages
from pipeline.oci.reference import Repository
from pipeline.oci.registry import RegistryClient
from tests.faulty_proxy import silent_registry

if TYPE_CHECKING:
    from pathlib import Path

STAGES = 40
MAX_CONCURRENCY = 16


def chain(base: str) -> str:
    """Forty stages, each on the one before: the target needs them all."""
    lines = [f"FROM {base} AS s0", "RUN echo 0"]
    for n in range(1, STAGES):
        lines += [f"FROM s{n - 1} AS s{n}", f"RUN echo {n}"]
    return "\n".join(lines) + "\n"


def plan_against(
    tmp_path: Path, host: str, *, base: str, timeout: float, retries: int, deadline: float
) -> tuple[Plan, RegistryClient]:
    (tmp_path / "Dockerfile").write_text(chain(base))
    graph = select(build_stages(parse_text(chain(base))), [f"s{STAGES - 1}"])
    context = BuildContext(tmp_path, IgnoreRules.load(tmp_path, tmp_path / "Dockerfile"))
    client = RegistryClient(
        timeout=timeout, retries=retries, backoff=0.01, max_concurrency=MAX_CONCURRENCY
    )

    async def make() -> Plan:
        async with client:
            return await make_plan(
                graph,
                cache_repo=Repository.parse(f"{host}/hang/cache"),
                build_args={},
                platform=native_platform(),
                context=context,
                client=client,
                branches=["main"],
                deadline=deadline,
            )

    return anyio.run(make), client


def assert_builds_everything(plan: Plan) -> None:
    assert len(plan.forecasts) == STAGES
    assert {(f.cache, f.action) for f in plan.forecasts.values()} == {("unknown", "build")}
    assert plan.hints == {}
    assert len(plan.warnings) == 1, plan.warnings


def test_the_dead_mark_bounds_the_connections_of_a_40_stage_plan(tmp_path: Path) -> None:
    retries = 2
    with silent_registry() as silent:
        plan, client = plan_against(
            tmp_path, silent.host, base="scratch", timeout=0.2, retries=retries, deadline=60.0
        )
        connections = silent.connections
    assert_builds_everything(plan)
    assert "cache unknown" in plan.warnings[0]
    assert "did not answer within 0.2 s" in plan.warnings[0]
    # without the mark, all 40 HEADs would each be sent `retries + 1` times (120): here the
    # first wave goes out, one of them retries, and everything else waits for its verdict
    most = MAX_CONCURRENCY + retries
    assert client.stats.requests <= most
    assert connections <= most


def test_the_whole_probe_has_one_deadline(tmp_path: Path) -> None:
    """The timeout is longer than the deadline: only the deadline can end the probe, whose
    default is a constant however many stages there are."""
    assert isinstance(PROBE_DEADLINE, float)
    deadline, timeout = 0.5, 30.0
    with silent_registry() as silent:
        plan, client = plan_against(
            tmp_path,
            silent.host,
            base=f"{silent.host}/base/busybox:1",
            timeout=timeout,
            retries=2,
            deadline=deadline,
        )
    assert_builds_everything(plan)
    assert plan.warnings[0].startswith("cache unknown, the registry did not answer within 0.5 s")
    assert plan.pins == {}
    assert client.stats.requests == 1, "the base image's HEAD, still unanswered at the deadline"


def test_a_deadline_past_while_probing_the_cache_is_one_warning(tmp_path: Path) -> None:
    with silent_registry() as silent:
        plan, client = plan_against(
            tmp_path, silent.host, base="scratch", timeout=30.0, retries=0, deadline=0.3
        )
    assert_builds_everything(plan)
    assert "within 0.3 s" in plan.warnings[0]
    assert client.stats.requests == MAX_CONCURRENCY, "the HEADs in flight at the deadline"
