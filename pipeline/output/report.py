"""A finished run as one typed value, `RunReport`: its JSON contract, its closing summary, and
its exit code.

`build --report FILE` writes `RunReport.to_json` (docs/report-json.md); the terminal's closing
lines are `summary`, then the run's `warnings`. Both read the same results, so the report, the
summary, JUnit and the exit code cannot disagree about how a run ended.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.engines.results import Status
from pipeline.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from pipeline.engines.results import Published, StageResult, TestOutcome
    from pipeline.oci.reference import Repository

__all__ = ["RunReport", "failed_cache_pushes", "summary"]

_REFUSED = re.compile(r"\b(401|403|unauthori[sz]ed|denied|forbidden|authenticat)", re.IGNORECASE)


@dataclass(frozen=True)
class RunReport:
    """Everything a run leaves behind; `stages` holds every needed stage, in file order.

    `problems` are failures of the run that are no stage's: a publish that failed.
    `warnings` are what went wrong without failing it: every cache push failed.
    """

    engine: str
    targets: tuple[str, ...]
    cache_repo: Repository | None
    seconds: float
    stages: tuple[StageResult, ...]
    why: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    published: tuple[Published, ...] = ()
    test: TestOutcome | None = None
    problems: tuple[str, ...] = ()
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """No stage failed, the tests passed, everything asked was published, no interrupt."""
        failed = any(stage.status is Status.FAILED for stage in self.stages)
        tests_failed = self.test is not None and not self.test.passed
        return not (failed or tests_failed or self.problems or self.interrupted)

    @property
    def warnings(self) -> tuple[str, ...]:
        found = failed_cache_pushes(self.stages, self.cache_repo)
        return () if found is None else (found,)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if self.ok else EXIT_FAILED

    def to_json(self, mask: Callable[[str], str]) -> dict[str, Any]:
        """The `--report` document; text from build logs goes through `mask`."""
        return {
            "ok": self.ok,
            "engine": self.engine,
            "targets": list(self.targets),
            "cache_repo": None if self.cache_repo is None else str(self.cache_repo),
            "seconds": round(self.seconds, 3),
            "stages": [
                {
                    "name": r.name,
                    "platform": r.platform,
                    "status": str(r.status),
                    "key": r.key,
                    "cache_ref": r.cache_ref if r.status.has_image else None,
                    "digest": r.digest,
                    "adopted": r.adopted,
                    "seconds": None if r.seconds is None else round(r.seconds, 3),
                    "error": None if r.error is None else mask(r.error),
                    "reproduce": r.reproduce,
                    "why": list(self.why.get(r.name, ())),
                }
                for r in self.stages
            ],
            "published": [item.to_json() for item in self.published],
            "test": None if self.test is None else self.test.to_json(),
            "problems": [mask(problem) for problem in self.problems],
            "warnings": [mask(warning) for warning in self.warnings],
        }


def failed_cache_pushes(stages: Iterable[StageResult], cache_repo: Repository | None) -> str | None:
    """One plain warning when every cache push of the run failed, with the likely cause.

    It does not fail the run: the images are built and right, only the next run is slower. A
    push failing now and then is each stage's own warning; all of them failing is a setup
    that will never fill the cache, and the team must hear it once, plainly.
    """
    errors = [stage.push_error for stage in stages if stage.status is Status.BUILT]
    if not errors or any(error is None for error in errors) or cache_repo is None:
        return None
    first = str(errors[0])
    host = cache_repo.registry
    if _REFUSED.search(first):
        cause = (
            f"the registry refused the login: give the run credentials with push rights to "
            f"{host} (the CI's registry token, or docker login)"
        )
    else:
        cause = (
            f"check that {host} is reachable from where the engine runs and takes pushes (the "
            "Dagger engine reaches no loopback or plain-HTTP registry unless "
            "DAGGER_STAGES_ENGINE_REACHES says it does), or pass --no-push-cache"
        )
    count = "the cache push" if len(errors) == 1 else f"all {len(errors)} cache pushes"
    return (
        f"the cache was not filled: {count} to {cache_repo} failed, so the next run builds "
        f"the same stages again; {cause} (first error: {first})"
    )


def summary(
    results: Iterable[StageResult], mask: Callable[[str], str], *, tails: bool = True
) -> str:
    """The closing lines: each stage's outcome, and the log tail of each failure, unless
    `tails` is false because the whole log was shown already."""
    ordered = list(results)
    lines = []
    width = max((len(r.name) for r in ordered), default=0)
    for result in ordered:
        lines.append(f"  {result.name.ljust(width)}  {result.describe()}")
    for result in ordered:
        if tails and result.status is Status.FAILED and result.tail:
            lines.append(f"--- {result.name}: last lines of its log ---")
            lines.extend(line for line in result.tail.splitlines() if line.strip())
    return mask("\n".join(lines))
