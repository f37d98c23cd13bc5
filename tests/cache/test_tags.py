"""Tag spellings: users' registries hold these tags, so each one is pinned to the character."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.cache.tags import KEY_CHARS, cache_tag, hint_tag, local_tag, stage_of, tag_name
from pipeline.dockerfile.parse import parse_text
from pipeline.dockerfile.rewrite import build_targets
from pipeline.dockerfile.stages import Stage, build_stages
from pipeline.oci.reference import Reference, validate_tag

KEY = "0123456789abcdef" * 4
HALF = "0123456789abcdef" * 2


def first_stage(text: str) -> Stage:
    return build_stages(parse_text(text)).stages[0]


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("FROM a AS app", "app-" + HALF),
        ("FROM a", "stage-0-" + HALF),
        ("FROM a AS " + "x" * 120, "x" * 95 + "-" + HALF),
    ],
)
def test_cache_tag(text: str, tag: str) -> None:
    result = cache_tag(first_stage(text), KEY)
    assert result == tag
    assert len(result) <= 128


@pytest.mark.parametrize(
    ("name", "branch", "tag"),
    [
        ("FROM a AS app", "feature/Login", "app--feature-login"),
        ("FROM a AS app", "Feature/Login_V2", "app--feature-login_v2"),
        ("FROM a AS app", "--x..", "app--x"),
        ("FROM a AS app", "ü", "app--unknown"),
        ("FROM a", "main", "stage-0--main"),
        ("FROM a AS " + "x" * 120, "main", ("x" * 120 + "--main")[:128]),
    ],
)
def test_hint_tag(name: str, branch: str, tag: str) -> None:
    assert hint_tag(first_stage(name), branch) == tag


@pytest.mark.parametrize(
    ("text", "stage"),
    [
        (f"app-{HALF}", "app"),
        (f"my-app-{HALF}", "my-app"),
        (f"stage-3-{HALF}", "stage-3"),
        (f"a.b_c-{HALF}", "a.b_c"),
        (f"app-{HALF}-{HALF}", f"app-{HALF}"),
        ("latest", None),
        (f"app-{HALF[:-1]}", None),
        (f"app-{HALF}0", None),
        (f"app-{HALF.upper()}", None),
        (f"-{HALF}", None),
        (HALF, None),
        (f"sha256-{HALF}{HALF}", None),
        (f"sha256-{HALF}{HALF}.sig", None),
        ("app--main", None),
    ],
)
def test_stage_of(text: str, stage: str | None) -> None:
    assert stage_of(text) == stage


def test_an_unnamed_stage_is_spelled_once_for_each_purpose() -> None:
    dockerfile = build_stages(parse_text("FROM a AS app\nFROM a\nFROM a\nFROM a\n"))
    unnamed = dockerfile.stages[3]
    assert unnamed.name == "3"
    assert tag_name(unnamed) == "stage-3"
    assert cache_tag(unnamed, KEY) == f"stage-3-{HALF}"
    assert hint_tag(unnamed, "main") == "stage-3--main"
    target = build_targets(dockerfile)[3]
    assert target == "dagger-stages-3"
    assert str(local_tag(target, KEY)) == f"dagger-stages/dagger-stages-3:{HALF}"


def test_local_tag_is_a_docker_hub_name_with_the_key() -> None:
    ref = local_tag("app", KEY)
    assert ref == Reference("docker.io", "dagger-stages/app", HALF)
    assert str(ref) == f"dagger-stages/app:{HALF}"
    assert Reference.parse(str(ref)) == ref


def test_tags_stay_within_the_tag_grammar_and_its_128_characters() -> None:
    stage = first_stage("FROM a AS " + "a" * 200)
    tag = cache_tag(stage, KEY)
    assert len(tag) == 128
    assert tag.endswith("-" + KEY[:KEY_CHARS])
    assert validate_tag(tag) == tag
    hint = hint_tag(stage, "feature/" + "b" * 200)
    assert len(hint) == 128
    assert validate_tag(hint) == hint


@given(
    name=st.from_regex(r"[a-z][a-z0-9_.-]{0,150}", fullmatch=True) | st.none(),
    index=st.integers(0, 3),
    key=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
)
def test_stage_of_undoes_cache_tag(name: str | None, index: int, key: str) -> None:
    text = "FROM a\n" * index + ("FROM a\n" if name is None else f"FROM a AS {name}\n")
    stage = build_stages(parse_text(text)).stages[index]
    tag = cache_tag(stage, key)
    assert validate_tag(tag) == tag
    assert stage_of(tag) == tag_name(stage)[: 127 - KEY_CHARS]
