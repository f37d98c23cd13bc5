"""The Dockerfile that is actually built: restored stages become their cached images.

Every stage keeps its position, so `COPY --from=<index>` still points where it did; parser
directives, global ARGs and comments before the first stage are kept as written. A restored
stage keeps its name and its ARG lines: ARG values are not part of an image, yet BuildKit passes
a stage's ARGs on to stages built `FROM` it, so dropping them would change those children.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pipeline.stages import Dockerfile, Stage

__all__ = ["restorable", "rewrite"]


def restorable(stage: Stage) -> bool:
    """A stage that declares ONBUILD triggers cannot be swapped for its image.

    Its image records the triggers, and a `FROM <image>` runs them in the restored stage itself
    instead of in its children, which would build something else.
    """
    return not any(instruction.cmd == "ONBUILD" for instruction in stage.instructions)


def rewrite(dockerfile: Dockerfile, restored: Mapping[int, str]) -> str:
    """`restored` maps a stage index to its pinned image, `<cache_repo>@sha256:…`."""
    lines = dockerfile.parsed.lines
    stages = dockerfile.stages
    out = list(lines[: stages[0].line - 1])
    for stage in stages:
        end = stages[stage.index + 1].line - 1 if stage.index + 1 < len(stages) else len(lines)
        if stage.index not in restored:
            out.extend(lines[stage.line - 1 : end])
            continue
        name = f" AS {stage.declared_name}" if stage.declared_name is not None else ""
        out.append(f"FROM {restored[stage.index]}{name}")
        for instruction in stage.instructions[1:]:
            if instruction.cmd == "ARG":
                out.extend(lines[instruction.line - 1 : instruction.end_line])
        out.append("")
    return "\n".join(out) + "\n"
