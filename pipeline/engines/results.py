"""What a run produced, as typed values: each stage's status and result, the test run, and
what was published.

The runner makes `StageResult`s; the terminal, the JSON report, JUnit, the step summary and
the exit code all read these same values, so a status is spelled and grouped in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Published", "StageResult", "Status", "TestOutcome"]


class Status(StrEnum):
    """A stage's state. The values are the report's words (docs/report-json.md)."""

    PENDING = "pending"
    RUNNING = "running"
    BUILT = "built"
    CACHED = "cached"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        """The stage will not change state again in this run."""
        return self not in (Status.PENDING, Status.RUNNING)

    @property
    def ok(self) -> bool:
        """Ended well: built, restored, or not needed after all."""
        return self in (Status.BUILT, Status.CACHED, Status.SKIPPED)

    @property
    def has_image(self) -> bool:
        """Its image exists after the run: built here or restored from the cache."""
        return self in (Status.BUILT, Status.CACHED)


@dataclass(frozen=True)
class StageResult:
    """How a stage ended in this run and where its image is, made by the runner alone so that
    the terminal, the reports and the exit code all read the same values."""

    index: int
    name: str
    status: Status
    key: str | None
    cache_ref: str | None
    digest: str | None = None
    seconds: float | None = None
    error: str | None = None
    tail: str = ""
    started: float | None = None
    push_error: str | None = None  # why its cache push failed, for a stage built all the same
    # built, but another run had written its cache tag meanwhile: `digest` is that run's image,
    # which stands for the stage from then on (first writer wins); this run's was not pushed
    adopted: bool = False
    # a failed stage: the command that reproduces it locally (`output.reproduce`)
    reproduce: str | None = None
    # the target platform of a multi-platform run's stage, or "all platforms" for one they
    # share; `name` then carries it too, as logs and reports show it
    platform: str | None = None

    def __post_init__(self) -> None:
        """A status given as its word (tests, old callers) becomes the enum member."""
        object.__setattr__(self, "status", Status(self.status))

    def describe(self) -> str:
        """One line on how the stage ended, for logs, summaries and reports."""
        seconds = f" in {self.seconds:.1f}s" if self.seconds is not None else ""
        if self.status is Status.CACHED:
            return f"cached: restored from {self.cache_ref}"
        if self.status is Status.BUILT and self.adopted:
            return (
                f"built{seconds}, cache tag {self.cache_ref} already written by another run;"
                f" adopted {self.digest}"
            )
        if self.status is Status.BUILT:
            pushed = f", cache pushed to {self.cache_ref}" if self.digest else ""
            return f"built{seconds}{pushed}"
        if self.status is Status.FAILED and self.reproduce:
            return f"{self.status}{seconds}: {self.error}; reproduce locally: {self.reproduce}"
        if self.status in (Status.FAILED, Status.CANCELLED):
            return f"{self.status}{seconds}: {self.error}"
        return str(self.status)


@dataclass(frozen=True)
class TestOutcome:
    """The test stage's command, run in its built or restored image."""

    __test__ = False  # not a pytest test class

    stage: str
    exit_code: int
    artifacts_dir: str
    artifacts: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "exit_code": self.exit_code,
            "artifacts_dir": self.artifacts_dir,
            "artifacts": list(self.artifacts),
        }


@dataclass(frozen=True)
class Published:
    """A target pushed under one of its publish refs."""

    stage: str
    ref: str
    digest: str

    def to_json(self) -> dict[str, str]:
        return {"stage": self.stage, "ref": self.ref, "digest": self.digest}
