"""Instructions → stages with their dependencies, following BuildKit's dockerfile2llb.

Every FROM opens a stage. FROM sees only the global ARGs (those before the first FROM) and the
built-in platform ARGs. A stage depends on an earlier stage through `FROM <name>`, `COPY --from`,
`RUN --mount=…,from=`, and the `--from` of ONBUILD triggers inherited from a same-file base stage.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pipeline.dockerfile.copies import copy_error
from pipeline.dockerfile.epoch import SourceDateEpoch, resolve_epoch
from pipeline.dockerfile.lex import ExpansionError, expand
from pipeline.dockerfile.mounts import MountError, mount_source, parse_mount
from pipeline.dockerfile.platforms import Platform, native_platform, platform_error
from pipeline.errors import UsageError, did_you_mean

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pipeline.dockerfile.parse import Instruction, ParsedDockerfile

__all__ = [
    "ArgDecl",
    "Dockerfile",
    "Edge",
    "Stage",
    "StageError",
    "Warning",
    "build_stages",
]

_VALID_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")

EdgeKind = Literal["base", "copy", "mount"]


@dataclass(frozen=True)
class ArgDecl:
    """An ARG as declared, its default unexpanded: a global one is resolved with the build args
    into what FROM lines see, a stage's own in that stage's scope when its key is made."""

    name: str
    default: str | None
    line: int


@dataclass(frozen=True)
class Edge:
    """One reference from a stage to another stage or to an external image."""

    kind: EdgeKind
    ref: str
    line: int
    stage: int | None = None
    mount_target: str | None = None
    onbuild: bool = False


@dataclass(frozen=True)
class Stage:
    """One stage as BuildKit resolves it before any build: its FROM expanded with the global
    ARGs, and an edge for each stage or image it reads, for the graph, keys and rewrite."""

    index: int
    declared_name: str | None
    line: int
    base: str
    base_stage: int | None
    platform: str | None
    instructions: tuple[Instruction, ...]
    edges: tuple[Edge, ...]
    from_args: frozenset[str] = field(default=frozenset())

    @property
    def name(self) -> str:
        """Unnamed stages are known by their index, the only way BuildKit can address them."""
        return self.declared_name if self.declared_name is not None else str(self.index)

    @property
    def depends_on(self) -> tuple[int, ...]:
        return tuple(sorted({e.stage for e in self.edges if e.stage is not None}))

    @property
    def images(self) -> tuple[str, ...]:
        """External images this stage reads with COPY --from or a mount, in order of use."""
        seen = dict.fromkeys(e.ref for e in self.edges if e.kind != "base" and e.stage is None)
        return tuple(seen)


@dataclass(frozen=True)
class Warning:
    """Something that fails no build of this file yet is worth telling, such as an error in a
    stage the target does not need: printed at its line, and the plan goes on."""

    line: int
    message: str


@dataclass(frozen=True)
class StageError:
    """An error BuildKit raises only while dispatching the stage, so only if the target needs it.

    Reported by `graph.select`: an error for a needed stage, a warning for any other.
    """

    stage: int
    line: int
    message: str


@dataclass(frozen=True)
class Dockerfile:
    """A Dockerfile's stages as BuildKit resolves them for one set of build args and target
    platform; what fails only for some targets waits in `stage_errors` for `graph.select`."""

    path: str
    parsed: ParsedDockerfile
    global_args: tuple[ArgDecl, ...]
    meta_args: Mapping[str, str]
    stages: tuple[Stage, ...]
    warnings: tuple[Warning, ...]
    stage_errors: tuple[StageError, ...] = ()
    source_date_epoch: SourceDateEpoch | None = None

    def stage_by_name(self, name: str) -> Stage | None:
        """BuildKit's findStateByName: case-insensitive, the last stage of that name wins."""
        wanted = name.lower()
        found = None
        for stage in self.stages:
            if stage.declared_name == wanted:
                found = stage
        return found


@dataclass(frozen=True)
class _RawStage:
    """A stage's FROM, expanded, before references between stages are resolved: a `--from` may
    name any stage, so every stage's name must be known first."""

    index: int
    name: str | None
    line: int
    base: str
    platform: str | None
    from_args: frozenset[str]
    instructions: tuple[Instruction, ...]


def build_stages(
    parsed: ParsedDockerfile,
    *,
    build_args: Mapping[str, str] | None = None,
    platform: Platform | None = None,
    target: str | None = None,
) -> Dockerfile:
    path = parsed.path
    build_args = build_args or {}
    global_args, bodies = _split_stages(parsed)
    if not bodies:
        raise UsageError("dockerfile contains no stages to build", path=path)
    meta = _meta_args(parsed, global_args, bodies, build_args, platform, target)
    epoch = resolve_epoch(
        bodies,
        meta,
        build_args,
        path=path,
        escape=parsed.directives.escape,
        line=next((a.line for a in reversed(global_args) if a.name == "SOURCE_DATE_EPOCH"), None),
    )
    raw = [_raw_stage(index, body, meta, parsed) for index, body in enumerate(bodies)]
    resolved = tuple(_resolve(stage, raw, path) for stage in raw)
    with_triggers = [_with_onbuild(stage, resolved, raw, path) for stage in resolved]
    stages = tuple(stage for stage, _ in with_triggers)
    warnings = _duplicate_names(raw) + _unrun_triggers(stages)
    dockerfile = Dockerfile(
        path=path,
        parsed=parsed,
        global_args=global_args,
        meta_args=meta,
        stages=stages,
        warnings=warnings,
        source_date_epoch=epoch,
    )
    _check_circular(dockerfile)
    trigger_errors = tuple(error for _, errors in with_triggers for error in errors)
    errors = trigger_errors + _order_errors(dockerfile) + _dispatch_errors(dockerfile)
    return dataclasses.replace(dockerfile, stage_errors=errors)


def _split_stages(
    parsed: ParsedDockerfile,
) -> tuple[tuple[ArgDecl, ...], list[list[Instruction]]]:
    global_args: list[ArgDecl] = []
    bodies: list[list[Instruction]] = []
    for instruction in parsed.instructions:
        if instruction.cmd == "FROM":
            bodies.append([instruction])
        elif bodies:
            bodies[-1].append(instruction)
        elif instruction.cmd == "ARG":
            global_args.extend(arg_declarations(instruction))
        else:
            raise UsageError(
                "no build stage in current context", path=parsed.path, line=instruction.line
            )
    return tuple(global_args), bodies


def arg_declarations(instruction: Instruction) -> list[ArgDecl]:
    declared = []
    for text in instruction.args:
        name, has_default, default = text.partition("=")
        declared.append(ArgDecl(name, default if has_default else None, instruction.line))
    return declared


def _meta_args(
    parsed: ParsedDockerfile,
    global_args: Sequence[ArgDecl],
    bodies: Sequence[Sequence[Instruction]],
    build_args: Mapping[str, str],
    platform: Platform | None,
    target: str | None,
) -> dict[str, str]:
    """BuildKit's defaultArgs then buildMetaArgs: the only variables a FROM line can see."""
    build = native_platform()
    meta = {**build.args("BUILD"), **(platform or build).args("TARGET")}
    last_from = bodies[-1][0].args
    meta["TARGETSTAGE"] = target or (last_from[2].lower() if len(last_from) == 3 else "default")
    for arg in global_args:
        if arg.name in build_args:
            meta[arg.name] = build_args[arg.name]
        elif arg.default is not None:
            meta[arg.name] = _expand(arg.default, meta, parsed, arg.line).value
    return meta


def _expand(word: str, env: Mapping[str, str], parsed: ParsedDockerfile, line: int) -> _Expanded:
    try:
        result = expand(word, env, escape=parsed.directives.escape)
    except ExpansionError as exc:
        raise UsageError(str(exc), path=parsed.path, line=line) from None
    return _Expanded(result.value, frozenset(result.used), frozenset(result.unset))


@dataclass(frozen=True)
class _Expanded:
    """An expanded word and the variables it read: the `used` ones of a FROM go into the key
    (`from_args`), the `unset` ones name the global ARG a bad `--platform` may have meant."""

    value: str
    used: frozenset[str]
    unset: frozenset[str] = frozenset()


def _raw_stage(
    index: int, body: Sequence[Instruction], meta: Mapping[str, str], parsed: ParsedDockerfile
) -> _RawStage:
    head = body[0]
    name = None
    if len(head.args) == 3:
        name = head.args[2].lower()
        if not _VALID_STAGE_NAME.match(name):
            raise UsageError(
                f'invalid name for build stage: "{head.args[2]}", '
                "name can't start with a number or contain symbols",
                path=parsed.path,
                line=head.line,
            )
    base = _expand(head.args[0], meta, parsed, head.line)
    if not base.value:
        raise UsageError(
            f"base name ({head.args[0]}) should not be blank", path=parsed.path, line=head.line
        )
    platform_flag = head.flag("platform")
    platform = _expand(platform_flag, meta, parsed, head.line) if platform_flag else None
    if platform_flag and platform is not None:
        _check_platform(platform_flag, platform, meta, parsed.path, head.line)
    return _RawStage(
        index=index,
        name=name,
        line=head.line,
        base=base.value,
        platform=platform.value if platform else None,
        from_args=base.used | (platform.used if platform else frozenset()),
        instructions=tuple(body),
    )


def _check_platform(
    written: str, platform: _Expanded, meta: Mapping[str, str], path: str, line: int
) -> None:
    """BuildKit expands a FROM's --platform for every stage and fails on a value that is empty
    or that containerd cannot parse, naming the global ARG an unset variable may have meant."""
    if platform.value:
        reason = platform_error(platform.value)
        if reason is None:
            return
        message = f"failed to parse platform {written}: {reason}"
    else:
        message = f"empty platform value from expression {written}"
    hints = (did_you_mean(name, meta) for name in sorted(platform.unset))
    raise UsageError(message + next((h for h in hints if h), ""), path=path, line=line)


def _duplicate_names(stages: Sequence[_RawStage]) -> tuple[Warning, ...]:
    seen: set[str] = set()
    warnings = []
    for stage in stages:
        if stage.name is None:
            continue
        if stage.name in seen:
            message = f'Duplicate stage name "{stage.name}", stage names should be unique'
            warnings.append(Warning(stage.line, message))
        seen.add(stage.name)
    return tuple(warnings)


def _resolve(stage: _RawStage, stages: Sequence[_RawStage], path: str) -> Stage:
    base_stage = _find_base(stage, stages)
    base = stages[base_stage].name if base_stage is not None else None
    edges = [Edge("base", stage.base, stage.line, base_stage)]
    for instruction in stage.instructions[1:]:
        edges.extend(instruction_edges(instruction, stages, path))
    return Stage(
        index=stage.index,
        declared_name=stage.name,
        line=stage.line,
        base=base or stage.base,
        base_stage=base_stage,
        platform=stage.platform,
        instructions=stage.instructions,
        edges=tuple(edges),
        from_args=stage.from_args,
    )


def _find_base(stage: _RawStage, stages: Sequence[_RawStage]) -> int | None:
    """Only earlier stages match, by the exact expanded text (BuildKit does not lowercase it)."""
    found = None
    for earlier in stages[: stage.index]:
        if earlier.name is not None and earlier.name == stage.base:
            found = earlier.index
    return found


def instruction_edges(
    instruction: Instruction, stages: Sequence[_RawStage], path: str, *, onbuild: bool = False
) -> list[Edge]:
    if instruction.cmd == "COPY":
        source = instruction.flag("from")
        if not source:
            return []
        if "$" in source:
            raise UsageError(
                "variable expansion is not supported for --from, define a new stage with FROM "
                "using ARG from global scope as a workaround",
                path=path,
                line=instruction.line,
            )
        index = _copy_source(source, stages, path, instruction.line)
        return [Edge("copy", source, instruction.line, index, onbuild=onbuild)]
    if instruction.cmd == "RUN":
        edges = []
        for text in instruction.flags.get("mount", ()):
            try:
                source, target = mount_source(text)
            except MountError as exc:
                raise UsageError(str(exc), path=path, line=instruction.line) from None
            if source:
                # any type: BuildKit makes the dependency before it knows the (maybe variable) type
                edges.append(
                    Edge(
                        "mount",
                        source,
                        instruction.line,
                        _stage_named(source, stages),
                        mount_target=target,
                        onbuild=onbuild,
                    )
                )
        return edges
    return []


def _copy_source(source: str, stages: Sequence[_RawStage], path: str, line: int) -> int | None:
    try:
        number = int(source, 10)
    except ValueError:
        return _stage_named(source, stages)
    if not 0 <= number < len(stages):
        raise UsageError(f"invalid stage index {number}", path=path, line=line)
    return number


def _stage_named(name: str, stages: Sequence[_RawStage]) -> int | None:
    wanted = name.lower()
    found = None
    for stage in stages:
        if stage.name == wanted:
            found = stage.index
    return found


def _with_onbuild(
    stage: Stage, stages: Sequence[Stage], raw: Sequence[_RawStage], path: str
) -> tuple[Stage, list[StageError]]:
    """ONBUILD triggers of a same-file base stage run in its direct children (BuildKit ≥ 1.11).

    BuildKit reads a trigger only there, so a trigger it cannot read, or whose reference it
    refuses, is an error of the child's, raised only if the target needs the child.
    """
    if stage.base_stage is None:
        return stage, []
    extra: list[Edge] = []
    errors: list[StageError] = []
    for instruction in stages[stage.base_stage].instructions:
        if instruction.trigger_error is not None:
            errors.append(StageError(stage.index, instruction.line, instruction.trigger_error))
        if instruction.trigger is None:
            continue
        try:
            extra += instruction_edges(instruction.trigger, raw, path, onbuild=True)
        except UsageError as exc:
            errors.append(StageError(stage.index, instruction.line, exc.message))
    return dataclasses.replace(stage, edges=stage.edges + tuple(extra)), errors


def _unrun_triggers(stages: Sequence[Stage]) -> tuple[Warning, ...]:
    """A broken trigger of a stage no stage here is built FROM fails no build of this file,
    only builds FROM its image elsewhere: worth a warning."""
    inherited = {stage.base_stage for stage in stages}
    return tuple(
        Warning(
            instruction.line,
            f"{instruction.trigger_error} (not an error here: the ONBUILD trigger runs only in "
            f'a build FROM stage "{stage.name}", and none in this file is)',
        )
        for stage in stages
        if stage.index not in inherited
        for instruction in stage.instructions
        if instruction.trigger_error is not None
    )


def _check_circular(dockerfile: Dockerfile) -> None:
    """validateCircularDependency: a DFS over COPY/mount edges from each stage in file order."""
    stages = dockerfile.stages
    visited: set[int] = set()

    def visit(index: int, trail: list[Edge], on_path: set[int]) -> list[Edge] | None:
        if index in visited:
            return None
        visited.add(index)
        on_path.add(index)
        for edge in stages[index].edges:
            if edge.stage is None or edge.kind == "base":
                continue
            path = [*trail, edge]
            if edge.stage in on_path:
                return path
            found = visit(edge.stage, path, on_path)
            if found is not None:
                return found
        on_path.discard(index)
        return None

    for stage in stages:
        cycle = visit(stage.index, [], set())
        if cycle is not None:
            names = " -> ".join(
                [stage.name, *(stages[e.stage].name for e in cycle if e.stage is not None)]
            )
            raise UsageError(
                f"circular dependency detected on stage: {stage.name} ({names})",
                path=dockerfile.path,
                line=cycle[0].line,
            )


def _order_errors(dockerfile: Dockerfile) -> tuple[StageError, ...]:
    """References to a later stage: BuildKit (≥ 1.7) finds them while dispatching, in file order,
    and it dispatches only the stages the target needs."""
    errors = []
    for stage in dockerfile.stages:
        for edge in stage.edges:
            if edge.stage is None or edge.stage < stage.index or edge.kind == "base":
                continue
            other = dockerfile.stages[edge.stage].name
            if edge.kind == "copy":
                message = (
                    f'cannot copy from stage "{other}", '
                    f'it needs to be defined before current stage "{stage.name}"'
                )
            else:
                message = (
                    f'cannot mount from stage "{other}" to "{edge.mount_target}", '
                    "stage needs to be defined before current command"
                )
            errors.append(StageError(stage.index, edge.line, message))
    return tuple(errors)


def _dispatch_errors(dockerfile: Dockerfile) -> tuple[StageError, ...]:
    """What BuildKit would refuse, as written, in a RUN's mounts or a COPY or ADD. It checks these
    only while dispatching the instruction, so the error is the stage's that runs it: an ONBUILD
    trigger's is its child's. A value with a variable is checked once expanded, by the key pass
    of a needed stage."""
    errors = []
    for stage in dockerfile.stages:
        for instruction in _runs(stage, dockerfile.stages):
            for message in _refusals(instruction):
                errors.append(StageError(stage.index, instruction.line, message))
    return tuple(errors)


def _refusals(instruction: Instruction) -> list[str]:
    if instruction.cmd in ("COPY", "ADD"):
        reason = copy_error(instruction)
        return [] if reason is None else [reason]
    if instruction.cmd != "RUN":
        return []
    found = []
    for text in instruction.flags.get("mount", ()):
        try:
            parse_mount(text)
        except MountError as exc:
            found.append(str(exc))
    return found


def _runs(stage: Stage, stages: Sequence[Stage]) -> list[Instruction]:
    """What the stage dispatches: its same-file base's ONBUILD triggers, then its own body."""
    triggers: list[Instruction] = []
    if stage.base_stage is not None:
        parent = stages[stage.base_stage]
        triggers = [i.trigger for i in parent.instructions if i.trigger is not None]
    return [*triggers, *stage.instructions[1:]]
