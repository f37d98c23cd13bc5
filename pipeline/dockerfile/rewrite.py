"""The Dockerfile that is actually built: restored stages become their cached images, and
external bases are pinned to the digests the keys were made with.

Every stage keeps its position, so `COPY --from=<index>` still points where it did; parser
directives, global ARGs and comments before the first stage are kept as written. A restored
stage keeps its name and its ARG lines: ARG values are not part of an image, yet BuildKit passes
a stage's ARGs on to stages built `FROM` it, so dropping them would change those children.

`truncate` is the Dockerfile as written with one stage cut short before a step: where that
step fails, building it gives the state just before it, which BuildKit does not keep as an
image (`dagger-stages shell` opens it).

`rerun_every_run` is `build --no-cache` for an engine that has no such switch (Dagger's
`dockerBuild`): every stage declares one more ARG, given a new value each run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.dockerfile.parse import parse_text

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pipeline.dockerfile.stages import Dockerfile, Stage

__all__ = [
    "NO_CACHE_ARG",
    "build_targets",
    "pinned",
    "rerun_every_run",
    "restorable",
    "rewrite",
    "runs_on",
    "truncate",
]

NO_CACHE_ARG = "DAGGER_STAGES_NO_CACHE"


def restorable(stage: Stage) -> bool:
    """A stage that declares ONBUILD triggers cannot be swapped for its image.

    Its image records the triggers, and a `FROM <image>` runs them in the restored stage itself
    instead of in its children, which would build something else.
    """
    return not any(instruction.cmd == "ONBUILD" for instruction in stage.instructions)


def build_targets(dockerfile: Dockerfile) -> dict[int, str]:
    """A target name for every stage; unnamed ones get a name no stage uses, for `--target`.

    `--target` takes only a name, so an unnamed stage gets `dagger-stages-<index>`, spelled
    here and nowhere else, with `-` appended while a declared stage has it. Reports show it as
    `<index>` and tags name it `stage-<index>` (`cache.tags.tag_name`).
    """
    taken = {stage.declared_name for stage in dockerfile.stages}
    names: dict[int, str] = {}
    for stage in dockerfile.stages:
        name = stage.declared_name
        if name is None:
            name = f"dagger-stages-{stage.index}"
            while name in taken:
                name += "-"
        names[stage.index] = name
    return names


def rewrite(
    dockerfile: Dockerfile,
    restored: Mapping[int, str],
    *,
    pins: Mapping[str, str] | None = None,
    name_unnamed: bool = False,
) -> str:
    """`restored` maps a stage index to its pinned image, `<cache_repo>@sha256:…`.

    `pins` maps external base images to the digests their stages' keys were made with: a
    stage built `FROM` one is built from that digest, even if its tag moves meanwhile.
    With `name_unnamed`, unnamed stages get their `build_targets` name so that they can be
    built as targets; BuildKit still addresses them by index too.
    """
    lines = dockerfile.parsed.lines
    stages = dockerfile.stages
    targets = build_targets(dockerfile)
    out = list(lines[: stages[0].line - 1])
    for stage in stages:
        end = stages[stage.index + 1].line - 1 if stage.index + 1 < len(stages) else len(lines)
        named = stage.declared_name is not None or name_unnamed
        name = f" AS {targets[stage.index]}" if named else ""
        if stage.index not in restored:
            head = stage.instructions[0]
            pinned_to = pinned(stage, pins or {})
            if pinned_to is not None or (stage.declared_name is None and name_unnamed):
                platform = head.flag("platform")
                flag = f"--platform={platform} " if platform else ""
                out.append(f"FROM {flag}{pinned_to or head.args[0]}{name}")
                out.extend(lines[head.end_line : end])
            else:
                out.extend(lines[stage.line - 1 : end])
            continue
        platform = runs_on(stage, stages)
        flag = f"--platform={platform} " if platform else ""
        out.append(f"FROM {flag}{restored[stage.index]}{name}")
        for instruction in stage.instructions[1:]:
            if instruction.cmd == "ARG":
                out.extend(lines[instruction.line - 1 : instruction.end_line])
        out.append("")
    return "\n".join(out) + "\n"


def truncate(dockerfile: Dockerfile, index: int, keep: int) -> str:
    """The Dockerfile as written, with stage `index` ending after its first `keep`
    instructions (its `FROM` is the first; `keep` is at least 1).

    Every stage keeps its position, so `COPY --from=<index>` still points where it did;
    only the cut stage changes, so every other stage keeps its cache key.
    """
    lines = dockerfile.parsed.lines
    stages = dockerfile.stages
    stage = stages[index]
    if not 1 <= keep <= len(stage.instructions):
        raise ValueError(f"stage {stage.name} has {len(stage.instructions)} instructions")
    end = stages[index + 1].line - 1 if index + 1 < len(stages) else len(lines)
    cut = stage.instructions[keep].line - 1 if keep < len(stage.instructions) else end
    return "\n".join([*lines[:cut], *lines[end:]]) + "\n"


def rerun_every_run(text: str) -> str:
    """`text` with `ARG DAGGER_STAGES_NO_CACHE` declared first in every stage.

    BuildKit keys a RUN step by the build args in scope, its environment, so a new value of
    that ARG per run makes every RUN step run again, which is what `docker build --no-cache`
    does; COPY and ADD are keyed by content and give the same files either way. An ARG never
    reaches the image's `Env`. Only ONBUILD triggers of a base image, which run before the
    first line of a stage, stay cached. Content keys are made from the Dockerfile as written,
    never from this text.
    """
    parsed = parse_text(text)
    lines = list(parsed.lines)
    ends = [i.end_line for i in parsed.instructions if i.cmd == "FROM"]
    for end in reversed(ends):
        lines.insert(end, f"ARG {NO_CACHE_ARG}")
    return "\n".join(lines) + "\n"


def runs_on(stage: Stage, stages: Sequence[Stage]) -> str | None:
    """The `--platform` a restored stage keeps, as written: the platform it ran on (None:
    the target's).

    A stage FROM a stage runs on its parent's platform (BuildKit ignores its own flag). Without
    the flag, `FROM <image>` is of the target platform, so the children of a restored
    `--platform=$BUILDPLATFORM` stage would run their steps as the target, under emulation.
    """
    while stage.base_stage is not None:
        stage = stages[stage.base_stage]
    return stage.instructions[0].flag("platform")


def pinned(stage: Stage, pins: Mapping[str, str]) -> str | None:
    """`FROM <image>@<digest>`'s reference, for a stage FROM an image the plan pinned."""
    if stage.base_stage is not None or "@" in stage.base or stage.base not in pins:
        return None
    return f"{stage.base}@{pins[stage.base]}"
