"""Why a stage missed: today's key inputs against the label of its last build."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.cache.context import BuildContext
from pipeline.cache.explain import explain, key_label
from pipeline.cache.ignore import IgnoreRules
from pipeline.cache.keys import StageKey, compute_keys
from pipeline.dockerfile.parse import parse_dockerfile
from pipeline.dockerfile.platforms import Platform
from pipeline.dockerfile.stages import build_stages
from tests.conftest import FIXTURES

AMD64 = Platform("linux", "amd64")


def keys(
    root: Path,
    build_args: dict[str, str] | None = None,
    digests: dict[str, str | None] | None = None,
) -> tuple[dict[str, StageKey], BuildContext, dict[str, str]]:
    df = build_stages(parse_dockerfile(root / "Dockerfile"), build_args=build_args)
    context = BuildContext(root, IgnoreRules.load(root, root / "Dockerfile"))
    found = compute_keys(
        df,
        range(len(df.stages)),
        build_args=build_args or {},
        platform=AMD64,
        image_digests=digests or {},
        context=context,
    )
    by_name = {df.stages[i].name: key for i, key in found.items()}
    names = {key.key: name for name, key in by_name.items()}
    return by_name, context, names


@pytest.fixture
def php(tmp_path: Path) -> Path:
    root = tmp_path / "php"
    shutil.copytree(FIXTURES / "php", root)
    return root


def why(root: Path, stage: str, **changes: object) -> list[str]:
    before, context, _ = keys(root)
    label = key_label(before[stage], context)
    after, context, names = keys(root, **changes)  # type: ignore[arg-type]
    return explain(after[stage], label, names, context)


def test_changed_files_are_named(php: Path) -> None:
    before, context, _ = keys(php)
    label = key_label(before["app"], context)
    (php / "src" / "index.php").write_text("<?php echo 2;")
    (php / "src" / "new.php").write_text("<?php")
    after, context, names = keys(php)
    assert explain(after["app"], label, names, context) == [
        "COPY src/ changed: 2 files (src/index.php, src/new.php)"
    ]


def test_a_build_arg(php: Path) -> None:
    assert why(php, "php-extensions-build", build_args={"PHP_VERSION": "8.4"}) == [
        "base php:8.3-apache → php:8.4-apache",
        "build arg PHP_VERSION 8.3 → 8.4",
    ]


def test_a_base_that_moved(php: Path) -> None:
    digest = "sha256:" + "b" * 64
    before, context, _ = keys(php, digests={"composer:2": "sha256:" + "a" * 64})
    label = key_label(before["composer-build"], context)
    after, context, names = keys(php, digests={"composer:2": digest})
    assert explain(after["composer-build"], label, names, context) == [
        f"base composer:2 moved to {digest}"
    ]


def test_a_parent_stage_and_a_copy_from_stage(php: Path) -> None:
    before, context, _ = keys(php)
    label = key_label(before["app"], context)
    (php / "composer.lock").write_text('{"changed": true}')
    after, context, names = keys(php)
    assert explain(after["app"], label, names, context) == [
        "--from=composer-build: stage composer-build changed"
    ]
    label = key_label(before["release"], context)
    assert explain(after["release"], label, names, context) == ["base stage app changed"]


def test_an_instruction(php: Path) -> None:
    before, context, _ = keys(php)
    label = key_label(before["release"], context)
    dockerfile = php / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("APP_ENV=prod", "APP_ENV=staging"))
    after, context, names = keys(php)
    assert explain(after["release"], label, names, context) == [
        "instruction 2 changed: `ENV APP_ENV=prod` → `ENV APP_ENV=staging`"
    ]


def test_nothing_to_compare_with(php: Path) -> None:
    after, context, names = keys(php)
    assert explain(after["app"], None, names, context) == [
        "no earlier build of this stage to compare with"
    ]
    assert explain(after["app"], "{not json", names, context) == [
        "the earlier build's label cannot be read"
    ]


def test_labels_hold_no_secret_values(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM scratch\nRUN --mount=type=secret,id=token,env=TOKEN true\n"
    )
    found, context, _ = keys(tmp_path)
    label = key_label(found["0"], context)
    assert '"secrets":["token"]' in label
