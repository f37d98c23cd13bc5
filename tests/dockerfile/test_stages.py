from __future__ import annotations

import pytest

from pipeline.dockerfile.parse import parse_dockerfile
from pipeline.dockerfile.platforms import Platform, native_platform
from pipeline.dockerfile.stages import build_stages
from pipeline.errors import UsageError
from tests.conftest import FIXTURES, WriteDockerfile, graph_of


def bases(df: object) -> list[tuple[str, str, int | None]]:
    return [(s.name, s.base, s.base_stage) for s in df.stages]  # type: ignore[attr-defined]


def test_php_fixture_stages() -> None:
    df = build_stages(parse_dockerfile(FIXTURES / "php" / "Dockerfile"))
    assert [s.name for s in df.stages] == [
        "composer-build",
        "npm-build",
        "php-extensions-build",
        "app",
        "release",
        "dev-back",
        "dev-front",
        "test",
        "8",
    ]
    by = {s.name: s for s in df.stages}
    assert by["npm-build"].base == "node:20-alpine"
    assert by["php-extensions-build"].base == "php:8.3-apache"
    assert by["app"].base_stage == 2
    assert by["app"].depends_on == (0, 1, 2)
    assert by["dev-back"].depends_on == (0, 3)
    assert by["8"].declared_name is None
    assert by["8"].base == "app"
    assert df.parsed.directives.syntax == "docker/dockerfile:1"
    assert by["npm-build"].from_args == frozenset({"NODE_VERSION"})


def test_names_are_lowercased_and_unnamed_stages_take_their_index(
    dockerfile: WriteDockerfile,
) -> None:
    df = dockerfile("FROM alpine AS Builder\nFROM alpine\nFROM builder\n")
    assert bases(df) == [("builder", "alpine", None), ("1", "alpine", None), ("2", "builder", 0)]


@pytest.mark.parametrize("name", ["1abc", "a!b", "_x", "-x"])
def test_invalid_stage_name(dockerfile: WriteDockerfile, name: str) -> None:
    with pytest.raises(UsageError) as info:
        dockerfile(f"FROM alpine\nFROM alpine AS {name}\n")
    assert info.value.line == 2
    assert info.value.message == (
        f'invalid name for build stage: "{name}", '
        "name can't start with a number or contain symbols"
    )


def test_duplicate_name_warns_and_the_later_stage_wins(dockerfile: WriteDockerfile) -> None:
    df = dockerfile(
        "FROM alpine AS dup\n"
        "FROM dup AS child\n"
        "FROM busybox AS dup\n"
        "FROM alpine AS last\n"
        "COPY --from=DUP /x /x\n"
    )
    assert [(w.line, w.message) for w in df.warnings] == [
        (3, 'Duplicate stage name "dup", stage names should be unique')
    ]
    assert df.stages[1].base_stage == 0
    assert df.stages[3].depends_on == (2,)
    assert df.stage_by_name("dup") is df.stages[2]


def test_from_sees_global_args_and_build_args_override_declared_ones(
    dockerfile: WriteDockerfile,
) -> None:
    text = (
        "ARG REGISTRY=docker.io\n"
        "ARG IMAGE=${REGISTRY}/library/php\n"
        "ARG TAG\n"
        "FROM $IMAGE:${TAG:-8.3} AS a\n"
        "ARG STAGE_ONLY=nope\n"
        "ENV ENV_ONLY=nope\n"
        "FROM ${STAGE_ONLY:-x}${ENV_ONLY:-y}${UNDECLARED:-z} AS b\n"
    )
    df = dockerfile(text)
    assert [s.base for s in df.stages] == ["docker.io/library/php:8.3", "xyz"]
    df = dockerfile(text, build_args={"REGISTRY": "ghcr.io", "TAG": "7", "UNDECLARED": "u"})
    assert [s.base for s in df.stages] == ["ghcr.io/library/php:7", "xyz"]
    assert df.stages[0].from_args == frozenset({"IMAGE", "TAG"})


def test_build_arg_beats_default_that_references_earlier_global(
    dockerfile: WriteDockerfile,
) -> None:
    df = dockerfile("ARG A=1\nARG B=${A}0\nFROM img:$B\n", build_args={"A": "2"})
    assert df.stages[0].base == "img:20"


def test_platform_args_default_to_the_native_platform(dockerfile: WriteDockerfile) -> None:
    native = native_platform()
    df = dockerfile("FROM --platform=$BUILDPLATFORM img:$TARGETARCH AS a\n")
    assert df.stages[0].platform == str(native)
    assert df.stages[0].base == f"img:{native.arch}"
    df = dockerfile(
        "FROM --platform=$BUILDPLATFORM img:${TARGETOS}-${TARGETARCH}${TARGETVARIANT}\n",
        platform="linux/arm/v7",
    )
    assert df.stages[0].base == "img:linux-armv7"


def test_targetstage_is_the_target_or_the_last_stage(dockerfile: WriteDockerfile) -> None:
    text = "ARG TARGETSTAGE\nFROM img:$TARGETSTAGE AS one\nFROM img AS two\n"
    assert dockerfile(text).stages[0].base == "img:two"
    assert dockerfile(text, target="one").stages[0].base == "img:one"


def test_escape_directive_applies_to_expansion(dockerfile: WriteDockerfile) -> None:
    df = dockerfile("# escape=`\nARG V=1\nFROM img:`$V-$V\n")
    assert df.stages[0].base == "img:$V-1"


def test_blank_base(dockerfile: WriteDockerfile) -> None:
    with pytest.raises(UsageError) as info:
        dockerfile("ARG EMPTY\nFROM $EMPTY\n")
    assert str(info.value).endswith("Dockerfile:2: base name ($EMPTY) should not be blank")


def test_from_a_later_stage_or_a_differently_cased_name_is_an_image(
    dockerfile: WriteDockerfile,
) -> None:
    df = dockerfile(
        "FROM later AS first\nFROM alpine AS builder\nFROM Builder\nFROM alpine AS later\n"
    )
    assert bases(df) == [
        ("first", "later", None),
        ("builder", "alpine", None),
        ("2", "Builder", None),
        ("later", "alpine", None),
    ]


def test_copy_from_index_name_and_image(dockerfile: WriteDockerfile) -> None:
    df = dockerfile(
        "FROM alpine\n"
        "FROM alpine AS named\n"
        "FROM alpine\n"
        "COPY --from=0 /a /a\n"
        "COPY --from=NAMED /b /b\n"
        "COPY --from=composer:2 /usr/bin/composer /usr/bin/\n"
        "COPY --from= /c /c\n"
    )
    last = df.stages[2]
    assert last.depends_on == (0, 1)
    assert last.images == ("composer:2",)


def test_copy_from_index_out_of_range(dockerfile: WriteDockerfile) -> None:
    with pytest.raises(UsageError) as info:
        dockerfile("FROM alpine\nCOPY --from=5 /a /a\n")
    assert (info.value.line, info.value.message) == (2, "invalid stage index 5")


def test_mount_from_is_by_name_only(dockerfile: WriteDockerfile) -> None:
    df = dockerfile(
        "FROM alpine AS tools\n"
        "FROM alpine\n"
        "RUN --mount=type=bind,from=TOOLS,source=/bin,target=/t \\\n"
        "    --mount=type=cache,target=/c,from=0 \\\n"
        "    --mount=type=secret,id=token \\\n"
        "    --mount=target=/ctx \\\n"
        "    true\n"
    )
    assert df.stages[1].depends_on == (0,)
    assert df.stages[1].images == ("0",)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "COPY --from=$SRC /a /a",
            "variable expansion is not supported for --from, define a new stage with FROM "
            "using ARG from global scope as a workaround",
        ),
        (
            "RUN --mount=from=${SRC},target=/a true",
            "'from' doesn't support variable expansion, define alias stage instead",
        ),
        ("RUN --mount=type=secret,id=a,from=x true", "secret mount should not have a from"),
        ("RUN --mount=type=volume,target=/a true", 'unsupported mount type "volume"'),
        (
            "RUN --mount=type=secrte,id=a true",
            'unsupported mount type "secrte" (did you mean secret?)',
        ),
        (
            "RUN --mount=type=cache,trget=/a true",
            "unexpected key 'trget' in 'trget=/a' (did you mean target?)",
        ),
        ("RUN --mount=type=cache,zzz=/a true", "unexpected key 'zzz' in 'zzz=/a'"),
        ("ADD --from=x a b", "unknown flag: --from"),
        ("COPY --from a b", "missing a value on flag: --from"),
    ],
)
def test_bad_references(dockerfile: WriteDockerfile, line: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        graph_of(dockerfile(f"ARG SRC=x\nFROM alpine AS x\nFROM alpine\n{line}\n"))
    assert (info.value.line, info.value.message) == (4, message)


def test_onbuild_from_adds_edges_to_direct_children_only(dockerfile: WriteDockerfile) -> None:
    df = dockerfile(
        "FROM alpine AS assets\n"
        "FROM alpine AS tools\n"
        "FROM alpine AS base\n"
        "ONBUILD COPY --from=assets /a /a\n"
        "ONBUILD RUN --mount=from=tools,target=/t true\n"
        "FROM base AS child\n"
        "FROM child AS grandchild\n"
    )
    by = {s.name: s for s in df.stages}
    assert by["base"].depends_on == ()
    assert by["child"].depends_on == (0, 1, 2)
    assert [e.onbuild for e in by["child"].edges] == [False, True, True]
    assert by["grandchild"].depends_on == (3,)


def test_references_to_a_later_stage_are_kept_for_dispatch(dockerfile: WriteDockerfile) -> None:
    df = dockerfile(
        "FROM alpine AS a\nCOPY --from=b /x /x\nRUN --mount=from=b,target=/t true\n"
        "FROM alpine AS b\n"
    )
    assert [(e.stage, e.line, e.message) for e in df.stage_errors] == [
        (0, 2, 'cannot copy from stage "b", it needs to be defined before current stage "a"'),
        (
            0,
            3,
            'cannot mount from stage "b" to "/t", stage needs to be defined before current command',
        ),
    ]


def test_onbuild_reference_to_a_later_stage_is_the_childs(dockerfile: WriteDockerfile) -> None:
    df = dockerfile(
        "FROM alpine AS a\nONBUILD COPY --from=c /x /x\nFROM a AS b\nFROM alpine AS c\n"
    )
    assert [(e.stage, e.line) for e in df.stage_errors] == [(1, 2)]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "FROM busybox AS stage0\nCOPY --from=stage0 f Dockerfile /\n",
            2,
            "circular dependency detected on stage: stage0 (stage0 -> stage0)",
        ),
        (
            "FROM busybox AS stage0\nCOPY --from=stage2 f /\n"
            "FROM busybox AS stage1\nCOPY --from=stage0 f /\n"
            "FROM busybox AS stage2\nCOPY --from=stage1 f /\n",
            2,
            "circular dependency detected on stage: stage0 (stage0 -> stage2 -> stage1 -> stage0)",
        ),
        (
            "FROM busybox\nRUN --mount=from=x,target=/x true\nFROM busybox AS x\n"
            "COPY --from=0 a b\n",
            2,
            "circular dependency detected on stage: 0 (0 -> x -> 0)",
        ),
    ],
)
def test_cycles(dockerfile: WriteDockerfile, text: str, line: int, message: str) -> None:
    with pytest.raises(UsageError) as info:
        dockerfile(text)
    assert (info.value.line, info.value.message) == (line, message)


def test_only_args_before_the_first_from(dockerfile: WriteDockerfile) -> None:
    with pytest.raises(UsageError) as info:
        dockerfile("ARG A\nRUN true\nFROM alpine\n")
    assert (info.value.line, info.value.message) == (2, "no build stage in current context")


def test_args_only(dockerfile: WriteDockerfile) -> None:
    with pytest.raises(UsageError, match="dockerfile contains no stages to build"):
        dockerfile("ARG A=1\n")


def test_platform_parse() -> None:
    assert str(Platform.parse("Linux/ARM64")) == "linux/arm64"
    with pytest.raises(ValueError, match="expected os/arch"):
        Platform.parse("amd64")


@pytest.mark.parametrize(
    ("text", "platform"),
    [
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/7", "linux/arm/v7"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux/i386", "linux/386"),
        ("macos/arm64", "darwin/arm64"),
    ],
)
def test_a_platform_is_normalised_as_buildkit_parses_it(text: str, platform: str) -> None:
    assert str(Platform.parse(text)) == platform


def test_the_target_args_a_from_sees_are_the_normalised_platform(
    dockerfile: WriteDockerfile,
) -> None:
    """`FROM build_${TARGETARCH}${TARGETVARIANT}` picks build_armv7 for linux/arm."""
    text = (
        "FROM alpine AS build_armv7\nFROM alpine AS build_arm64\n"
        "FROM build_${TARGETARCH}${TARGETVARIANT}\n"
    )
    assert dockerfile(text, platform="linux/arm").stages[2].base_stage == 0
    assert dockerfile(text, platform="linux/arm64/v8").stages[2].base_stage == 1
