from __future__ import annotations

import pytest

from pipeline.cache.forecast import Cache, decide
from pipeline.dockerfile.graph import select
from pipeline.dockerfile.parse import parse_dockerfile, parse_text
from pipeline.dockerfile.rewrite import rerun_every_run, restorable, rewrite, truncate
from pipeline.dockerfile.stages import Dockerfile, build_stages
from tests.conftest import FIXTURES

DIGEST = "sha256:" + "d" * 64
REPO = "registry.example:5000/shop/cache"


@pytest.fixture
def php() -> Dockerfile:
    return build_stages(parse_dockerfile(FIXTURES / "php" / "Dockerfile"))


def index_of(df: Dockerfile, name: str) -> int:
    stage = df.stage_by_name(name)
    assert stage is not None
    return stage.index


def test_rewrite_parses_back_with_restored_stages_external(php: Dockerfile) -> None:
    restored = {index_of(php, "app"): f"{REPO}@{DIGEST}", 0: f"{REPO}@{DIGEST}"}
    text = rewrite(php, restored)
    again = build_stages(parse_text(text))
    assert [(s.name, s.index) for s in again.stages] == [(s.name, s.index) for s in php.stages]
    app = again.stages[index_of(php, "app")]
    assert (app.base, app.base_stage, app.depends_on) == (f"{REPO}@{DIGEST}", None, ())
    assert again.stages[0].base == f"{REPO}@{DIGEST}"
    assert again.stages[index_of(php, "release")].base_stage == index_of(php, "app")
    assert again.stages[1].base == "node:20-alpine"
    assert text.startswith(
        "# syntax=docker/dockerfile:1\nARG PHP_VERSION=8.3\nARG NODE_VERSION=20\n"
    )
    assert "composer install" not in text


def test_rewrite_keeps_unnamed_positions_and_arg_lines() -> None:
    df = build_stages(
        parse_text(
            "# escape=`\n"
            "FROM busybox\n"
            "ARG FLAVOUR=plain\n"
            "RUN echo `\n  $FLAVOUR > /f\n"
            "FROM busybox AS x\n"
            "COPY --from=0 /f /f\n"
        )
    )
    text = rewrite(df, {0: f"{REPO}@{DIGEST}"})
    assert text == (
        "# escape=`\n"
        f"FROM {REPO}@{DIGEST}\n"
        "ARG FLAVOUR=plain\n"
        "\n"
        "FROM busybox AS x\n"
        "COPY --from=0 /f /f\n"
    )
    again = build_stages(parse_text(text))
    assert again.stages[1].depends_on == (0,)


def test_nothing_restored_is_the_original(php: Dockerfile) -> None:
    original = (FIXTURES / "php" / "Dockerfile").read_text()
    assert rewrite(php, {}) == original


def test_onbuild_stages_are_not_restorable() -> None:
    df = build_stages(parse_text("FROM a AS base\nONBUILD RUN x\nFROM base\n"))
    assert not restorable(df.stages[0])
    assert restorable(df.stages[1])


def forecast(df: Dockerfile, targets: list[str], hits: set[str], **kw: bool) -> dict[str, str]:
    graph = select(df, targets)
    cache: dict[int, Cache] = {
        i: "hit" if df.stages[i].name in hits else "miss" for i in graph.needed
    }
    digests = {i: DIGEST for i in graph.needed if df.stages[i].name in hits}
    result = decide(graph, cache, digests, **kw)
    return {df.stages[i].name: f.action for i, f in result.items()}


def test_the_stage_that_dates_the_build_is_never_restored() -> None:
    """BuildKit (dockerfile 1.24+) refuses a SOURCE_DATE_EPOCH stage that is not FROM scratch,
    which a restored stage would be; it evaluates the stage itself, so no build needs it."""
    df = build_stages(
        parse_text(
            "ARG SOURCE_DATE_EPOCH=src\nFROM scratch AS src\nADD https://example.com/s.tar /\n"
            "FROM busybox AS app\nCOPY --from=src /s.tar /\nFROM busybox AS other\n"
        )
    )
    assert forecast(df, ["app"], {"src"}) == {"app": "build", "src": "build"}
    assert forecast(df, ["other"], {"src"}) == {"other": "build", "src": "skip"}


def test_a_hit_target_restores_and_skips_everything_below(php: Dockerfile) -> None:
    assert forecast(php, ["test"], {"test", "app"}) == {
        "test": "restore",
        "dev-back": "skip",
        "app": "skip",
        "composer-build": "skip",
        "npm-build": "skip",
        "php-extensions-build": "skip",
    }


def test_a_dependency_of_a_missed_stage_is_restored(php: Dockerfile) -> None:
    assert forecast(php, ["test"], {"app", "composer-build"}) == {
        "test": "build",
        "dev-back": "build",
        "app": "restore",
        "composer-build": "restore",
        "npm-build": "skip",
        "php-extensions-build": "skip",
    }


def test_no_cache_builds_all(php: Dockerfile) -> None:
    actions = forecast(php, ["release"], {"app", "release"}, no_cache=True)
    assert set(actions.values()) == {"build"}


def test_unknown_cache_builds_all(php: Dockerfile) -> None:
    graph = select(php, ["release"])
    result = decide(graph, dict.fromkeys(graph.needed, "unknown"), {})
    assert {(f.cache, f.action) for f in result.values()} == {("unknown", "build")}


def test_unnamed_stages_can_be_named_for_targets() -> None:
    df = build_stages(
        parse_text(
            "ARG P=linux/amd64\n"
            "FROM --platform=$P \\\n    busybox\n"
            "RUN true\n"
            "FROM busybox AS dagger-stages-1\n"
            "FROM busybox\n"
            "COPY --from=0 /a /a\n"
        )
    )
    text = rewrite(df, {}, name_unnamed=True)
    again = build_stages(parse_text(text))
    assert [s.name for s in again.stages] == [
        "dagger-stages-0",
        "dagger-stages-1",
        "dagger-stages-2",
    ]
    assert again.stages[0].platform == "linux/amd64"
    assert again.stages[2].depends_on == (0,)
    assert "RUN true" in text


def test_external_bases_are_pinned_to_the_digests_of_the_keys() -> None:
    original = (
        "ARG BASE=busybox:1\n"
        "FROM --platform=$BUILDPLATFORM \\\n    $BASE AS tools\n"
        "RUN true\n"
        "FROM tools AS app\n"
        f"FROM alpine@{DIGEST}\n"
        "FROM scratch AS empty\n"
    )
    df = build_stages(parse_text(original))
    pinned = "sha256:" + "e" * 64
    text = rewrite(df, {}, pins={"busybox:1": pinned, f"alpine@{DIGEST}": DIGEST})
    assert text == (
        "ARG BASE=busybox:1\n"
        f"FROM --platform=$BUILDPLATFORM busybox:1@{pinned} AS tools\n"
        "RUN true\n"
        "FROM tools AS app\n"
        f"FROM alpine@{DIGEST}\n"
        "FROM scratch AS empty\n"
    )
    assert build_stages(parse_text(text)).stages[1].base_stage == 0
    assert rewrite(df, {}) == original


def test_rerun_every_run_declares_the_nonce_arg_first_in_every_stage() -> None:
    text = (
        "# syntax=docker/dockerfile:1\nARG BASE=busybox\n"
        "FROM $BASE \\\n  AS a\nRUN date > /d\n"
        "FROM a\nONBUILD RUN true\nRUN echo\n"
    )
    busted = rerun_every_run(text)
    assert busted == (
        "# syntax=docker/dockerfile:1\nARG BASE=busybox\n"
        "FROM $BASE \\\n  AS a\nARG DAGGER_STAGES_NO_CACHE\nRUN date > /d\n"
        "FROM a\nARG DAGGER_STAGES_NO_CACHE\nONBUILD RUN true\nRUN echo\n"
    )
    again = build_stages(parse_text(busted))
    assert [(s.name, s.base) for s in again.stages] == [("a", "busybox"), ("1", "a")]


def test_a_restored_stage_keeps_the_platform_it_ran_on() -> None:
    """Its children must run where they would have, not as the target under emulation."""
    df = build_stages(
        parse_text(
            "FROM --platform=$BUILDPLATFORM golang AS golatest\n"
            "FROM golatest AS gobase\n"
            "RUN go mod download\n"
            "FROM gobase AS build\n"
            "RUN go build\n"
            "FROM alpine AS runtime\n"
            "COPY --from=build /app /app\n"
        )
    )
    restored = dict.fromkeys((0, 1, 3), f"{REPO}@{DIGEST}")
    lines = rewrite(df, restored).splitlines()
    assert [line for line in lines if line.startswith("FROM")] == [
        f"FROM --platform=$BUILDPLATFORM {REPO}@{DIGEST} AS golatest",
        f"FROM --platform=$BUILDPLATFORM {REPO}@{DIGEST} AS gobase",
        "FROM gobase AS build",
        f"FROM {REPO}@{DIGEST} AS runtime",
    ]


TRUNCATED = """\
ARG BASE=busybox
FROM $BASE AS tools
RUN echo one
# the step that fails
RUN echo two \\
    && exit 3
RUN echo three
FROM tools AS app
COPY --from=0 /x /y
"""


def test_truncate_cuts_one_stage_before_a_step_and_keeps_the_others_in_place() -> None:
    df = build_stages(parse_text(TRUNCATED))
    text = truncate(df, 0, 2)
    assert text == (
        "ARG BASE=busybox\nFROM $BASE AS tools\nRUN echo one\n# the step that fails\n"
        "FROM tools AS app\nCOPY --from=0 /x /y\n"
    )
    again = build_stages(parse_text(text))
    assert [s.name for s in again.stages] == ["tools", "app"]
    assert [i.original for i in again.stages[1].instructions] == [
        i.original for i in df.stages[1].instructions
    ]
    assert truncate(df, 0, 1).splitlines()[:3] == [
        "ARG BASE=busybox",
        "FROM $BASE AS tools",
        "FROM tools AS app",
    ]
    assert truncate(df, 1, 2) == TRUNCATED
    with pytest.raises(ValueError, match="has 4 instructions"):
        truncate(df, 0, 0)
