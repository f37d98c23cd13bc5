"""What the Dagger engine refuses or cannot reach, found from the stage graph alone."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest

from pipeline.cache.context import BuildContext
from pipeline.cache.ignore import IgnoreRules
from pipeline.cache.plan import Plan, make_plan
from pipeline.cli import main
from pipeline.dockerfile.graph import select
from pipeline.dockerfile.parse import parse_dockerfile
from pipeline.dockerfile.platforms import native_platform
from pipeline.dockerfile.stages import build_stages
from pipeline.engines.dagger_rules import (
    Use,
    check,
    dockerfile_findings,
    engine_is_dagger,
    network_findings,
    refusal,
    secret_exposures,
    unreachable,
)
from pipeline.oci.reference import Reference, Repository
from tests.conftest import WriteDockerfile, graph_of

URL = "https://example.com/tool.tgz"
CHECKSUM = "sha256:" + "a" * 64


def findings(dockerfile: WriteDockerfile, text: str, *targets: str) -> list[tuple[int | None, str]]:
    return [(f.line, f.reason) for f in dockerfile_findings(graph_of(dockerfile(text), *targets))]


@pytest.mark.parametrize(
    "syntax",
    [
        "docker/dockerfile:1",
        "docker/dockerfile:1.7-labs",
        "DOCKER.IO/docker/dockerfile-upstream:master",
        "moby/dockerfile@sha256:" + "b" * 64,
        "index.docker.io/moby/dockerfile",
    ],
)
def test_dockerfile_frontends_are_accepted(dockerfile: WriteDockerfile, syntax: str) -> None:
    assert findings(dockerfile, f"# syntax={syntax}\nFROM busybox\n") == []


@pytest.mark.parametrize(
    "syntax", ["ghcr.io/acme/frontend:1", "docker/dockerfilex", "tonistiigi/dockerfile:1"]
)
def test_other_frontends_are_refused_at_their_line(
    dockerfile: WriteDockerfile, syntax: str
) -> None:
    found = dockerfile_findings(
        graph_of(dockerfile(f"# check=skip=all\n#syntax = {syntax}\nFROM x\n"))
    )
    assert [(f.line, f.fix) for f in found] == [
        (2, "remove the directive if the built-in parser will do, or build with --engine docker")
    ]
    assert f'refuses the frontend "# syntax={syntax}"' in found[0].reason


def test_add_checksum_is_refused_only_in_needed_stages(dockerfile: WriteDockerfile) -> None:
    text = (
        "FROM busybox AS tools\n"
        f"ADD --checksum={CHECKSUM} {URL} /tool.tgz\n"
        "FROM busybox AS app\n"
        "RUN true\n"
    )
    assert findings(dockerfile, text, "app") == []
    assert findings(dockerfile, text, "tools") == [
        (
            2,
            "the Dagger engine cannot build ADD --checksum: its Dockerfile converter does not "
            "enforce checksums",
        )
    ]


def test_a_checksum_in_an_onbuild_trigger_counts_where_it_runs(
    dockerfile: WriteDockerfile,
) -> None:
    text = (
        "FROM busybox AS base\n"
        f"ONBUILD ADD --checksum={CHECKSUM} {URL} /tool.tgz\n"
        "FROM base AS app\n"
        "FROM busybox AS other\n"
    )
    assert [line for line, _ in findings(dockerfile, text, "app")] == [2]
    assert "ONBUILD ADD --checksum" in findings(dockerfile, text, "app")[0][1]
    assert findings(dockerfile, text, "other") == []


@pytest.mark.parametrize(
    ("mount", "refused"),
    [
        ("type=ssh", False),
        ("type=ssh,required=false", False),
        ("type=ssh,required", True),
        ("type=ssh,id=deploy,required=true", True),
        ("type=ssh,mode=0600", False),
        ("type=ssh,mode=0644", True),
        ("type=secret,id=npm,required", False),
    ],
)
def test_ssh_mounts_the_engine_cannot_give(
    dockerfile: WriteDockerfile, mount: str, refused: bool
) -> None:
    found = findings(dockerfile, f"FROM busybox\nRUN --mount={mount} true\n")
    assert bool(found) is refused
    assert all(line == 2 and f"RUN --mount={mount}" in reason for line, reason in found)


def test_loopback_and_plain_http_hosts_are_unreachable_unless_declared() -> None:
    assert unreachable("localhost:5000") == "loopback"
    assert unreachable("127.0.0.1:5000") == "loopback"
    assert unreachable("[::1]:5000") == "loopback"
    assert unreachable("registry.lan:5000", insecure=["registry.lan"]) == "plain HTTP"
    assert unreachable("ghcr.io") is None
    assert unreachable("localhost:5000", reaches=["localhost:5000"]) is None
    assert unreachable("localhost:5000", reaches=["localhost"]) is None
    assert unreachable("localhost:5000", reaches=["localhost:5001"]) == "loopback"
    assert unreachable("registry.lan:5000", insecure=["registry.lan"], reaches=["*"]) is None


def test_one_finding_per_host_naming_what_it_holds() -> None:
    uses = [
        Use("localhost:5000", "the cache repo localhost:5000/shop/cache"),
        Use("localhost:5000", "the base image localhost:5000/base:1", "Dockerfile", 3),
        Use("ghcr.io", "the published image ghcr.io/acme/shop:1"),
        Use("registry.lan", "the published image registry.lan/shop:1"),
    ]
    first, second = network_findings(uses, insecure=["registry.lan"])
    assert (first.path, first.line) == ("Dockerfile", 3)
    assert first.reason == (
        "the Dagger engine cannot reach localhost:5000 (the cache repo "
        "localhost:5000/shop/cache; the base image localhost:5000/base:1 at Dockerfile:3): it "
        "runs in a container of its own, whose loopback is not this machine's"
    )
    assert "DAGGER_STAGES_ENGINE_REACHES=localhost:5000" in first.fix
    assert first.fix.endswith("or build with --engine docker")
    assert second.location is None
    assert "plain HTTP" in second.reason
    assert '{"registries": {"registry.lan": {"http": true}}}' in second.fix
    assert '[registry."registry.lan"] http = true' in second.fix


def test_check_covers_the_cache_repo_published_refs_and_images(
    dockerfile: WriteDockerfile,
) -> None:
    graph = graph_of(
        dockerfile(
            "FROM localhost:5000/base:1 AS base\n"
            "FROM scratch AS app\n"
            "COPY --from=base / /\n"
            f"ADD --checksum={CHECKSUM} {URL} /\n"
        ),
        "app",
    )
    found = check(
        graph,
        cache_repo=Repository.parse("localhost:5000/shop/cache"),
        published=[Reference.parse("registry.lan/shop:1")],
        insecure=["registry.lan"],
    )
    assert [(f.line, f.reason.split(" (")[0]) for f in found] == [
        (
            4,
            "the Dagger engine cannot build ADD --checksum: its Dockerfile converter does not "
            "enforce checksums",
        ),
        (1, "the Dagger engine cannot reach localhost:5000"),
        (None, "the Dagger engine cannot reach registry.lan"),
    ]
    assert check(graph, cache_repo=None, reaches=["*"])[0].line == 4
    error = refusal(found)
    assert (error.path, error.line, error.exit_code) == (graph.dockerfile.path, 4, 2)
    assert str(error).count("\n") == 2
    assert f"\n{graph.dockerfile.path}:1: the Dagger engine cannot reach localhost:5000" in str(
        error
    )


def test_which_engine_is_dagger_needs_no_engine(tmp_path: Path) -> None:
    assert engine_is_dagger("dagger", {}) is True
    assert engine_is_dagger("docker", {"DAGGER_SESSION_PORT": "1"}) is False
    assert engine_is_dagger("auto", {"PATH": str(tmp_path)}) is False
    session = {"DAGGER_SESSION_PORT": "1", "DAGGER_SESSION_TOKEN": "t", "PATH": str(tmp_path)}
    assert engine_is_dagger("auto", session) is True


SECRET_CHAIN = """\
FROM busybox AS deps
RUN echo no secrets yet
RUN --mount=type=secret,id=token cat /run/secrets/token > /dev/null
RUN echo this step can read it
FROM deps AS app
RUN --mount=type=secret,id=token echo mounts it itself
RUN echo inherits it from deps
FROM busybox AS other
RUN echo never near a secret
FROM app AS final
COPY --from=other /etc/passwd /other
"""


def exposures(
    tmp_path: Path,
    text: str,
    restored: frozenset[int] = frozenset(),
    *,
    cache_repo: Repository | None = None,
    push_cache: bool = False,
) -> list[int]:
    """The lines the rule names, planned offline, with `restored` stages hits."""
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    graph = select(build_stages(parse_dockerfile(path)), ())
    context = BuildContext(tmp_path, IgnoreRules(()))

    async def make() -> Plan:
        return await make_plan(
            graph,
            cache_repo=cache_repo,
            build_args={},
            platform=native_platform(),
            context=context,
            client=None,
        )

    plan = anyio.run(make)
    forecasts = {
        index: dataclasses.replace(forecast, action="restore") if index in restored else forecast
        for index, forecast in plan.forecasts.items()
    }
    plan = dataclasses.replace(plan, forecasts=forecasts)
    found = secret_exposures(plan, push_cache=push_cache)
    assert all('secret "token"' in f.reason and "--engine docker" in f.fix for f in found)
    return [f.line for f in found if f.line is not None]


def test_a_later_run_in_the_stage_and_in_stages_built_from_it_can_read_a_secret(
    tmp_path: Path,
) -> None:
    """The engine's converter keeps the mount on every later RUN (util/llbtodagger/exec.go)."""
    assert exposures(tmp_path, SECRET_CHAIN) == [4, 7]


def test_a_restored_stage_brings_no_secret(tmp_path: Path) -> None:
    """Its steps do not run, and its image has no mounts: only app's own later RUN is left."""
    assert exposures(tmp_path, SECRET_CHAIN, restored=frozenset({0})) == [7]
    assert exposures(tmp_path, SECRET_CHAIN, restored=frozenset({0, 1})) == []


PARENT_MOUNTS = SECRET_CHAIN.replace(
    "RUN --mount=type=secret,id=token echo mounts it itself", "RUN echo mounts nothing"
)


def test_a_parent_built_and_pushed_in_the_run_brings_no_secret(tmp_path: Path) -> None:
    """The runner builds app on deps's pushed image: only deps's own later RUN is left."""
    cache = Repository.parse("registry.test/x/cache")
    assert exposures(tmp_path, PARENT_MOUNTS, cache_repo=cache, push_cache=True) == [4]
    assert exposures(tmp_path, PARENT_MOUNTS, cache_repo=cache) == [4, 6, 7]


def test_a_parent_with_onbuild_triggers_is_built_along_and_still_brings_its_secret(
    tmp_path: Path,
) -> None:
    text = PARENT_MOUNTS.replace("RUN echo this step can read it", "ONBUILD RUN true")
    cache = Repository.parse("registry.test/x/cache")
    assert exposures(tmp_path, text, cache_repo=cache, push_cache=True) == [6, 7]


def test_plan_on_dagger_warns_of_each_exposed_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "Dockerfile").write_text(SECRET_CHAIN)
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--offline", "--engine", "dagger"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "can read" in line]
    assert [line.split(":")[1] for line in warnings] == ["4", "7"]
    assert main(["plan", "--offline", "--engine", "docker"]) == 0
    assert "can read" not in capsys.readouterr().err
