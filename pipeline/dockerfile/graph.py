"""The stage graph: which stages a set of targets needs, and in which waves they can run.

Pure functions over `stages.Dockerfile`; no I/O.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.dockerfile.stages import Warning as StageWarning
from pipeline.errors import UsageError, did_you_mean

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from pipeline.dockerfile.stages import Dockerfile, Stage

__all__ = ["Graph", "closure", "resolve_targets", "select"]


@dataclass(frozen=True)
class Graph:
    """The needed stages of a Dockerfile for some targets, grouped into topological waves."""

    dockerfile: Dockerfile
    targets: tuple[Stage, ...]
    needed: frozenset[int]
    waves: tuple[tuple[int, ...], ...]

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self.dockerfile.stages

    def wave_of(self, index: int) -> int | None:
        for number, wave in enumerate(self.waves):
            if index in wave:
                return number
        return None


def resolve_targets(dockerfile: Dockerfile, names: Sequence[str]) -> tuple[Stage, ...]:
    """Named targets, case-insensitively; none means the last stage, as with `docker build`."""
    if not names:
        return (dockerfile.stages[-1],)
    found: dict[int, Stage] = {}
    for name in names:
        stage = dockerfile.stage_by_name(name)
        if stage is None:
            raise UsageError(_unknown_target(dockerfile, name), path=dockerfile.path)
        found.setdefault(stage.index, stage)
    return tuple(found.values())


def _unknown_target(dockerfile: Dockerfile, name: str) -> str:
    named = [s.name for s in dockerfile.stages if s.declared_name is not None]
    there = ", ".join(dict.fromkeys(named)) if named else "none; every stage is unnamed"
    suggestion = did_you_mean(name.lower(), named)
    return f'target stage "{name}" could not be found{suggestion}; the stages are {there}'


def select(
    dockerfile: Dockerfile, target_names: Sequence[str], *, also: Sequence[str] = ()
) -> Graph:
    """The graph for the targets (the last stage if none) plus the stages named in `also`."""
    targets = resolve_targets(dockerfile, target_names)
    if also:
        extra = resolve_targets(dockerfile, also)
        targets = tuple({t.index: t for t in (*targets, *extra)}.values())
    roots = [t.index for t in targets]
    epoch = dockerfile.source_date_epoch
    if epoch is not None and epoch.stage is not None:
        # BuildKit evaluates the stage that dates the build whatever the target
        roots.append(epoch.stage)
    needed = closure(dockerfile.stages, roots)
    _check_stage_case(dockerfile, needed)
    dockerfile = _dispatch_errors(dockerfile, needed)
    return Graph(
        dockerfile=dockerfile,
        targets=targets,
        needed=needed,
        waves=_waves(dockerfile.stages, needed),
    )


def _check_stage_case(dockerfile: Dockerfile, needed: frozenset[int]) -> None:
    """`FROM Builder` names the image `library/Builder`, not the stage `builder`.

    BuildKit looks a FROM up exactly against lowercased stage names, so the miss falls through
    to image-reference parsing, which rejects uppercase; it only dispatches needed stages, so
    only they fail. Caught here so `plan` fails as the build would, offline too.
    """
    for index in sorted(needed):
        stage = dockerfile.stages[index]
        base = stage.base
        if stage.base_stage is not None or base == base.lower():
            continue
        meant = dockerfile.stage_by_name(base)
        if meant is None:
            continue
        if meant.index < stage.index:
            hint = f'did you mean the stage "{meant.name}"? write FROM {meant.name}'
        else:
            hint = (
                f'the stage "{meant.name}" is defined after this one, on line {meant.line}; '
                f"FROM sees only earlier stages, so move it up and write FROM {meant.name}"
            )
        raise UsageError(
            f'failed to parse stage name "{base}": invalid reference format: repository name '
            f"(library/{base}) must be lowercase ({hint})",
            path=dockerfile.path,
            line=stage.line,
        )


def _dispatch_errors(dockerfile: Dockerfile, needed: frozenset[int]) -> Dockerfile:
    """Errors of needed stages fail the plan as they fail the build; BuildKit never dispatches
    the other stages, so theirs are only warnings, added to the Dockerfile's."""
    for error in dockerfile.stage_errors:
        if error.stage in needed:
            raise UsageError(error.message, path=dockerfile.path, line=error.line)
    skipped = tuple(
        StageWarning(
            error.line,
            f"{error.message} (not an error here: stage "
            f'"{dockerfile.stages[error.stage].name}" is not needed by the target)',
        )
        for error in dockerfile.stage_errors
    )
    if not skipped:
        return dockerfile
    return dataclasses.replace(dockerfile, warnings=dockerfile.warnings + skipped)


def closure(stages: Sequence[Stage], roots: Iterable[int]) -> frozenset[int]:
    """The given stages and every stage they depend on, transitively."""
    needed: set[int] = set()
    pending = list(roots)
    while pending:
        index = pending.pop()
        if index not in needed:
            needed.add(index)
            pending.extend(stages[index].depends_on)
    return frozenset(needed)


def _waves(stages: Sequence[Stage], needed: frozenset[int]) -> tuple[tuple[int, ...], ...]:
    """Level 0 has no needed dependency; any other stage sits one above its deepest dependency.

    Needed stages depend only on earlier ones (`select` rejects anything else), so one pass
    in index order sees every dependency's level before the stage itself.
    """
    level: dict[int, int] = {}
    for index in sorted(needed):
        deps = [level[d] for d in stages[index].depends_on if d in needed]
        level[index] = 1 + max(deps) if deps else 0
    waves: list[list[int]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for index in sorted(needed):
        waves[level[index]].append(index)
    return tuple(tuple(wave) for wave in waves)
