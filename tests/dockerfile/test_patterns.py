"""Real-world Dockerfile patterns through `plan --offline --json`: the needed stages, their
dependencies and waves, and which keys an edit of one context file changes (tests/patterns.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from pipeline.dockerfile.platforms import native_platform
from tests.patterns import AcrossCases, Case, edit, load_across_cases, load_cases

CASES = load_cases()
WITH_CHANGES = [case for case in CASES if case.changes]


def plan(case: Case, project: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    dockerfile = project / case.dockerfile
    args = ["plan", "--offline", "--json", f"--dockerfile={dockerfile}", f"--context={project}"]
    code = main([*args, *case.options()])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document: dict[str, Any] = json.loads(captured.out)
    return document


def needed(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {stage["name"]: stage for stage in document["stages"] if stage["needed"]}


def keys(case: Case, project: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    return {name: stage["key"] for name, stage in needed(plan(case, project, capsys)).items()}


def test_every_pattern_has_cases_and_its_own_context() -> None:
    patterns = {case.pattern for case in CASES}
    assert len(patterns) >= 10
    for case in CASES:
        assert (case.source / case.dockerfile).is_file(), case.id
        edited = case.real_build.edit if case.real_build else None
        if edited is not None:
            assert edited in case.changes, f"{case.id}: the real build's edit has no expected keys"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_the_graph_is_the_one_buildkit_builds(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = plan(case, case.copy_to(tmp_path), capsys)
    stages = needed(document)
    assert {name: stage["depends_on"] for name, stage in stages.items()} == case.stages
    assert document["waves"] == case.waves
    native = str(native_platform())
    for name, fields in case.details.items():
        for field_name, value in fields.items():
            wanted = value.format(build_platform=native) if isinstance(value, str) else value
            assert stages[name][field_name] == wanted, f"{name}.{field_name}"


@pytest.mark.parametrize("case", WITH_CHANGES, ids=lambda case: case.id)
def test_an_edit_changes_exactly_the_keys_of_the_stages_that_read_it(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = case.copy_to(tmp_path)
    before = keys(case, project, capsys)
    changed: dict[str, set[str]] = {}
    for path in case.changes:
        original = (project / path).read_bytes() if (project / path).exists() else None
        edit(project, path)
        after = keys(case, project, capsys)
        changed[path] = {name for name, key in before.items() if after[name] != key}
        if original is None:
            (project / path).unlink()
        else:
            (project / path).write_bytes(original)
    assert changed == {path: set(names) for path, names in case.changes.items()}


@pytest.mark.parametrize("across", load_across_cases(), ids=lambda across: across.id)
def test_keys_shared_between_two_ways_of_building(
    across: AcrossCases, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = (
        keys(case, case.copy_to(tmp_path / case.name), capsys) for case in across.cases
    )
    assert {name for name in across.same if first[name] != second[name]} == set()
    assert {name for name in across.different if first[name] == second[name]} == set()
