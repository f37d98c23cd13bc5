"""The run's report: its JSON contract, closing summary and exit code, from typed results."""

from __future__ import annotations

import json

import pytest

from pipeline.engines.results import Published, StageResult, Status, TestOutcome
from pipeline.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from pipeline.oci.reference import Repository
from pipeline.output.report import RunReport, failed_cache_pushes, summary
from pipeline.settings.secrets import Masker
from tests.output.test_terminal import SECRET, results


def report(**changes: object) -> RunReport:
    fields: dict[str, object] = {
        "engine": "docker",
        "targets": ("final",),
        "cache_repo": Repository.parse("r/c"),
        "seconds": 3.14159,
        "stages": tuple(results().values()),
    }
    fields.update(changes)
    return RunReport(**fields)  # type: ignore[arg-type]


def test_summary_shows_each_stage_and_the_failure_tail_masked() -> None:
    text = summary(results().values(), Masker([SECRET]))
    assert text.splitlines()[:4] == [
        "  deps   cached: restored from r/c:deps-k0",
        "  app    built in 2.3s, cache pushed to r/c:app-k1",
        "  test   failed in 1.0s: echo *** failed",
        "  final  cancelled: test failed",
    ]
    assert text.splitlines()[4:] == ["--- test: last lines of its log ---", "x", "***"]


def test_report_json_contract() -> None:
    document = report(why={"app": ("COPY src/ changed",)}).to_json(Masker([SECRET]))
    assert SECRET not in json.dumps(document)
    assert list(document) == [
        "ok",
        "engine",
        "targets",
        "cache_repo",
        "seconds",
        "stages",
        "published",
        "test",
        "problems",
        "warnings",
    ]
    assert document["ok"] is False
    assert document["seconds"] == 3.142
    assert document["cache_repo"] == "r/c"
    assert document["stages"][1] == {
        "name": "app",
        "platform": None,
        "status": "built",
        "key": "k1",
        "cache_ref": "r/c:app-k1",
        "digest": "sha256:" + "b" * 64,
        "adopted": False,
        "seconds": 2.345,
        "error": None,
        "reproduce": None,
        "why": ["COPY src/ changed"],
    }
    assert [s["status"] for s in document["stages"]] == ["cached", "built", "failed", "cancelled"]
    assert document["stages"][3]["why"] == []


def test_statuses_are_one_enum_spelled_as_the_report_spells_them() -> None:
    assert [str(status) for status in Status] == [
        "pending",
        "running",
        "built",
        "cached",
        "skipped",
        "failed",
        "cancelled",
    ]
    assert StageResult(0, "a", "built", None, None).status is Status.BUILT  # type: ignore[arg-type]
    assert [s for s in Status if s.ok] == [Status.BUILT, Status.CACHED, Status.SKIPPED]
    assert [s for s in Status if s.has_image] == [Status.BUILT, Status.CACHED]
    assert [s for s in Status if not s.done] == [Status.PENDING, Status.RUNNING]
    with pytest.raises(ValueError, match="'done'"):
        StageResult(0, "a", "done", None, None)  # type: ignore[arg-type]


def good() -> tuple[StageResult, ...]:
    return (StageResult(0, "app", Status.BUILT, "k", "r/c:app-k", "sha256:" + "c" * 64, 1.0),)


@pytest.mark.parametrize(
    ("changes", "ok", "code"),
    [
        ({}, True, EXIT_OK),
        ({"stages": tuple(results().values())}, False, EXIT_FAILED),
        ({"test": TestOutcome("app", 3, "artifacts", ())}, False, EXIT_FAILED),
        ({"test": TestOutcome("app", 0, "artifacts", ("/out",))}, True, EXIT_OK),
        ({"problems": ("publishing x failed: 500",)}, False, EXIT_FAILED),
        ({"interrupted": True}, False, EXIT_INTERRUPTED),
    ],
)
def test_ok_and_the_exit_code_come_from_the_results(
    changes: dict[str, object], ok: bool, code: int
) -> None:
    run = report(**{"stages": good(), **changes})
    assert run.ok is ok
    assert run.exit_code == code
    assert run.to_json(Masker())["ok"] is ok


def test_published_and_test_in_the_report() -> None:
    item = Published("app", "ghcr.io/o/app:1", "sha256:" + "d" * 64)
    test = TestOutcome("app", 0, "artifacts", ("/out/junit.xml",))
    document = report(stages=good(), published=(item,), test=test).to_json(Masker())
    assert document["published"] == [
        {"stage": "app", "ref": "ghcr.io/o/app:1", "digest": "sha256:" + "d" * 64}
    ]
    assert document["test"] == {
        "stage": "app",
        "exit_code": 0,
        "artifacts_dir": "artifacts",
        "artifacts": ["/out/junit.xml"],
    }


def test_a_stage_that_adopted_another_runs_cache_image_says_so() -> None:
    digest = "sha256:" + "f" * 64
    adopted = StageResult(1, "app", Status.BUILT, "k1", "r/c:app-k1", digest, 2.0, adopted=True)
    assert adopted.describe() == (
        f"built in 2.0s, cache tag r/c:app-k1 already written by another run; adopted {digest}"
    )
    stage = report(stages=(adopted,)).to_json(Masker())["stages"][0]
    assert (stage["adopted"], stage["digest"], stage["cache_ref"]) == (True, digest, "r/c:app-k1")


def pushed(name: str, error: str | None) -> StageResult:
    digest = None if error else "sha256:" + "e" * 64
    return StageResult(0, name, Status.BUILT, "k", None, digest, 1.0, push_error=error)


def test_a_run_whose_every_cache_push_failed_warns_once_and_still_exits_0() -> None:
    stages = (
        pushed("app", "docker push r/c:app-k exited with 1: unauthorized: authentication required"),
        pushed("web", "docker push r/c:web-k exited with 1: unauthorized: authentication required"),
        StageResult(2, "base", Status.CACHED, "k", "r/c:base-k", "sha256:" + "f" * 64),
    )
    run = report(stages=stages)
    (warning,) = run.warnings
    assert warning.startswith("the cache was not filled: all 2 cache pushes to r/c failed")
    assert "the registry refused the login: give the run credentials with push rights" in warning
    assert warning.endswith(
        "(first error: docker push r/c:app-k exited with 1: unauthorized: authentication required)"
    )
    assert (run.ok, run.exit_code) == (True, EXIT_OK)
    assert run.to_json(Masker())["warnings"] == [warning]


def test_cache_push_warning_only_when_every_push_failed() -> None:
    repo = Repository.parse("localhost:5000/c")
    refused = failed_cache_pushes([pushed("app", "connection refused")], repo)
    assert refused is not None
    assert refused.startswith("the cache was not filled: the cache push to localhost:5000/c ")
    assert "check that localhost:5000 is reachable from where the engine runs" in refused
    assert "DAGGER_STAGES_ENGINE_REACHES" in refused
    assert failed_cache_pushes([pushed("app", "x"), pushed("web", None)], repo) is None
    assert failed_cache_pushes([pushed("app", None)], repo) is None
    assert failed_cache_pushes([], repo) is None
    assert failed_cache_pushes([pushed("app", "x")], None) is None
    no_push = StageResult(0, "app", Status.BUILT, "k", None, None, 1.0)  # --no-push-cache
    assert failed_cache_pushes([no_push], repo) is None
