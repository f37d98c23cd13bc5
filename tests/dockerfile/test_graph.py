from __future__ import annotations

import pytest

from pipeline.dockerfile.graph import select
from pipeline.dockerfile.parse import parse_dockerfile
from pipeline.dockerfile.stages import Dockerfile, build_stages
from pipeline.errors import UsageError
from tests.conftest import FIXTURES, WriteDockerfile


@pytest.fixture
def php() -> Dockerfile:
    return build_stages(parse_dockerfile(FIXTURES / "php" / "Dockerfile"))


def named_waves(df: Dockerfile, *targets: str) -> list[list[str]]:
    graph = select(df, targets)
    return [[df.stages[i].name for i in wave] for wave in graph.waves]


def test_test_target_needs_only_its_closure(php: Dockerfile) -> None:
    graph = select(php, ["test"])
    assert sorted(php.stages[i].name for i in graph.needed) == sorted(
        ["composer-build", "npm-build", "php-extensions-build", "app", "dev-back", "test"]
    )
    assert named_waves(php, "test") == [
        ["composer-build", "npm-build", "php-extensions-build"],
        ["app"],
        ["dev-back"],
        ["test"],
    ]


def test_default_target_is_the_last_stage_even_unnamed(php: Dockerfile) -> None:
    graph = select(php, [])
    assert [t.name for t in graph.targets] == ["8"]
    assert named_waves(php) == [
        ["composer-build", "npm-build", "php-extensions-build"],
        ["app"],
        ["8"],
    ]


def test_several_targets_share_their_dependencies(php: Dockerfile) -> None:
    assert named_waves(php, "release", "dev-front") == [
        ["composer-build", "npm-build", "php-extensions-build"],
        ["app", "dev-front"],
        ["release"],
    ]


def test_targets_are_case_insensitive_and_deduplicated(php: Dockerfile) -> None:
    graph = select(php, ["TEST", "test"])
    assert [t.name for t in graph.targets] == ["test"]


def test_unknown_target_suggests_the_closest_and_lists_the_stages(php: Dockerfile) -> None:
    """BuildKit's words, with its suggestion, and the stages there are."""
    with pytest.raises(UsageError) as info:
        select(php, ["tset"])
    assert info.value.message == (
        'target stage "tset" could not be found (did you mean test?); the stages are '
        "composer-build, npm-build, php-extensions-build, app, release, dev-back, dev-front, test"
    )
    with pytest.raises(UsageError) as info:
        select(php, ["zzz"])
    assert "did you mean" not in info.value.message


def test_wave_is_one_above_the_deepest_needed_dependency(dockerfile: WriteDockerfile) -> None:
    df = dockerfile(
        "FROM alpine AS a\n"
        "FROM a AS b\n"
        "FROM alpine AS c\n"
        "COPY --from=a /x /x\n"
        "COPY --from=b /x /x\n"
        "FROM alpine AS d\n"
    )
    assert named_waves(df, "c", "d") == [["a", "d"], ["b"], ["c"]]
    graph = select(df, ["c"])
    assert graph.wave_of(3) is None


def test_from_a_stage_name_in_uppercase_is_an_image_buildkit_rejects(
    dockerfile: WriteDockerfile,
) -> None:
    df = dockerfile("FROM alpine AS builder\nFROM Builder AS app\nFROM alpine AS other\n")
    assert df.stages[1].base_stage is None
    with pytest.raises(UsageError) as info:
        select(df, ["app"])
    assert info.value.line == 2
    assert info.value.message.startswith(
        'failed to parse stage name "Builder": invalid reference format: '
        "repository name (library/Builder) must be lowercase"
    )
    assert 'did you mean the stage "builder"? write FROM builder' in info.value.message
    assert select(df, ["other"]).needed == frozenset({2})


def test_from_a_later_stage_name_in_uppercase_says_to_move_it(
    dockerfile: WriteDockerfile,
) -> None:
    df = dockerfile("FROM Builder AS app\nFROM alpine AS builder\n")
    with pytest.raises(UsageError) as info:
        select(df, ["app"])
    assert info.value.line == 1
    assert "defined after this one, on line 2" in info.value.message


def test_later_stage_reference_is_an_error_only_in_a_needed_stage(
    dockerfile: WriteDockerfile,
) -> None:
    df = dockerfile(
        "FROM alpine AS dup\nFROM alpine AS dup\n"
        "FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\nFROM a AS c\n"
    )
    graph = select(df, ["b"])
    assert graph.needed == frozenset({3})
    assert [(w.line, w.message) for w in graph.dockerfile.warnings] == [
        (2, 'Duplicate stage name "dup", stage names should be unique'),
        (
            4,
            'cannot copy from stage "b", it needs to be defined before current stage "a" '
            '(not an error here: stage "a" is not needed by the target)',
        ),
    ]
    for target in ("a", "c"):
        with pytest.raises(UsageError) as info:
            select(df, [target])
        assert info.value.line == 4
        assert info.value.message.startswith('cannot copy from stage "b"')
    with pytest.raises(UsageError):
        select(df, ["b"], also=["a"])
