"""`--load` names and `--output` specs, as the user writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.commands.local import (
    DEFAULT_LOAD_TAG,
    LocalCopies,
    Output,
    load_name,
    parse_output,
    project_name,
)
from pipeline.errors import UsageError


def test_the_project_is_the_context_folder_as_a_repository_name(tmp_path: Path) -> None:
    folder = tmp_path / "My App_2.0 (copy)"
    folder.mkdir()
    assert project_name(folder) == "my-app_2.0-copy"
    odd = tmp_path / "--__"
    odd.mkdir()
    assert project_name(odd) == "project"


def test_the_default_load_tag_is_project_target_dev() -> None:
    assert load_name(DEFAULT_LOAD_TAG, project="shop", target="App") == "shop/app:dev"
    assert load_name("reg.example/{project}-{target}:local", project="p", target="t") == (
        "reg.example/p-t:local"
    )


def test_an_unknown_template_field_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"unknown field \{branch\}"):
        load_name("{project}/{target}:{branch}", project="p", target="t")


def test_an_output_is_stage_path_and_dir() -> None:
    assert parse_output("app:/app/dist=out/dist") == Output("app", "/app/dist", Path("out/dist"))
    assert parse_output("0:/x=/tmp/y=z") == Output("0", "/x", Path("/tmp/y=z"))


@pytest.mark.parametrize("text", ["app", "app:/x", "app:=d", ":/x=d", "app:/x="])
def test_an_incomplete_output_says_the_form(text: str) -> None:
    with pytest.raises(UsageError, match="expected STAGE:PATH=DIR"):
        parse_output(text)


def test_the_path_in_the_image_is_absolute() -> None:
    with pytest.raises(UsageError, match="must be absolute"):
        parse_output("app:dist=out")


def test_nothing_local_is_wanted_by_default() -> None:
    assert not LocalCopies().wanted
    assert LocalCopies(load_tag=DEFAULT_LOAD_TAG).wanted
