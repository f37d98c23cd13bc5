"""Cache keys: one immutable digest per stage over everything that decides its image.

docs/cache-keys.md describes the inputs. A key covers the stage's own normalised instructions,
the ARG values in effect, its base (the parent stage's key, or the image digest), the keys of
stages and digests of images it reads with `--from`, the context files it copies or binds, its
platform, and the ids (never the values) of its secrets and SSH sockets. Because a parent's key
is an input of its children's keys, a change ripples down exactly to the stages that depend on it.

A stage that ADDs a remote source fetched anew (`pipeline.dockerfile.remote`: a URL without
`--checksum`, a git branch or tag) has a key that cannot say what its image holds, and neither
do the keys of the stages built on it: `StageKey.volatile` says so, and why.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.cache.ignore import ContextError
from pipeline.dockerfile.copies import copy_error
from pipeline.dockerfile.graph import closure
from pipeline.dockerfile.lex import ExpansionError, expand
from pipeline.dockerfile.mounts import MountError, parse_mount
from pipeline.dockerfile.remote import remote_source
from pipeline.dockerfile.stages import arg_declarations
from pipeline.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from pipeline.cache.context import BuildContext
    from pipeline.dockerfile.parse import Instruction, ParsedDockerfile
    from pipeline.dockerfile.platforms import Platform
    from pipeline.dockerfile.stages import Dockerfile, Stage

__all__ = [
    "KEY_VERSION",
    "StageKey",
    "Volatile",
    "compute_keys",
    "external_images",
    "normalized_text",
]

KEY_VERSION = 1
# An octal `--chmod` as written; one with variables or symbols keeps the source modes keyed.
_OCTAL_CHMOD = re.compile(r"[0-7]{1,4}")


@dataclass(frozen=True)
class Volatile:
    """Why a stage's image cannot be known before it is built: a remote source fetched anew.

    `stage` is the stage whose ADD (at `line`) reads `source`; for a stage built on that one,
    through `FROM`, `--from` or a mount, it is that other stage.
    """

    source: str
    reason: str
    stage: int
    line: int


@dataclass(frozen=True)
class StageKey:
    """A stage's cache key and the inputs it digests, kept because its cache image carries them
    as a label, from which a later miss is explained input by input (`explain`)."""

    index: int
    key: str
    inputs: Mapping[str, Any] = field(repr=False)
    volatile: Volatile | None = None

    @property
    def unpinned(self) -> tuple[str, ...]:
        """External images whose digest could not be resolved, so the key trusts their tag."""
        return tuple(self.inputs.get("unpinned", ()))


def external_images(dockerfile: Dockerfile, stages: Iterable[int]) -> tuple[str, ...]:
    """Every image the given stages read (bases and `--from` images), to resolve to digests."""
    images: dict[str, None] = {}
    for index in sorted(stages):
        stage = dockerfile.stages[index]
        for edge in stage.edges:
            if edge.stage is None and edge.ref != "scratch":
                images.setdefault(edge.ref)
    return tuple(images)


def compute_keys(
    dockerfile: Dockerfile,
    stages: Iterable[int],
    *,
    build_args: Mapping[str, str],
    platform: Platform,
    image_digests: Mapping[str, str | None],
    context: BuildContext,
) -> dict[int, StageKey]:
    """Keys of the given stages and of every stage they depend on, in file order."""
    builder = _KeyBuilder(dockerfile, build_args, platform, image_digests, context)
    for index in sorted(closure(dockerfile.stages, stages)):
        builder.add(dockerfile.stages[index])
    return builder.keys


class _KeyBuilder:
    def __init__(
        self,
        dockerfile: Dockerfile,
        build_args: Mapping[str, str],
        platform: Platform,
        image_digests: Mapping[str, str | None],
        context: BuildContext,
    ) -> None:
        self.dockerfile = dockerfile
        self.parsed = dockerfile.parsed
        self.build_args = build_args
        self.platform = platform
        self.image_digests = image_digests
        self.context = context
        self.keys: dict[int, StageKey] = {}
        self.envs: dict[int, dict[str, str]] = {}
        self.platforms: dict[int, str] = {}

    def add(self, stage: Stage) -> None:
        inputs = _StageInputs(self, stage)
        document = inputs.document()
        text = _canonical(document)
        digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
        self.keys[stage.index] = StageKey(stage.index, digest, document, inputs.volatile())
        self.envs[stage.index] = inputs.env
        self.platforms[stage.index] = document["platform"]

    def image(self, ref: str) -> dict[str, Any]:
        digest = self.image_digests.get(ref)
        return {"ref": ref, "digest": digest} if digest else {"ref": ref, "unpinned": True}

    def fail(self, message: str, line: int) -> UsageError:
        return UsageError(message, path=self.dockerfile.path, line=line)

    def expand(self, word: str, env: Mapping[str, str], line: int) -> str:
        try:
            return expand(word, env, escape=self.parsed.directives.escape).value
        except ExpansionError as exc:
            raise self.fail(str(exc), line) from None


class _StageInputs:
    """Walks one stage's instructions, as BuildKit dispatches them, collecting key inputs."""

    def __init__(self, builder: _KeyBuilder, stage: Stage) -> None:
        self.builder = builder
        self.stage = stage
        parent = stage.base_stage
        self.env: dict[str, str] = dict(builder.envs[parent]) if parent is not None else {}
        self.args: list[tuple[str, str | None]] = []
        self.stages: dict[str, str] = {}
        self.images: dict[str, dict[str, Any]] = {}
        self.context: list[dict[str, Any]] = []
        self.urls: list[dict[str, str | None]] = []
        self.secrets: set[str] = set()
        self.ssh: set[str] = set()
        self.moving: Volatile | None = None
        self.read_stages: list[int] = []

    def volatile(self) -> Volatile | None:
        """Its own first remote source fetched anew, else the first stage it reads that has one."""
        if self.moving is not None:
            return self.moving
        parents = [self.stage.base_stage] if self.stage.base_stage is not None else []
        for index in [*parents, *self.read_stages]:
            inherited = self.builder.keys[index].volatile
            if inherited is not None:
                return inherited
        return None

    def document(self) -> dict[str, Any]:
        builder, stage = self.builder, self.stage
        texts = [normalized_text(builder.parsed, i) for i in stage.instructions[1:]]
        for position, instruction in enumerate(self._instructions()):
            self._visit(position, instruction)
        base = (
            {"stage": builder.keys[stage.base_stage].key}
            if stage.base_stage is not None
            else builder.image(stage.base)
            if stage.base != "scratch"
            else {"ref": "scratch"}
        )
        unpinned = sorted(
            ref
            for ref in [stage.base if stage.base_stage is None else "", *self.images]
            if ref and ref != "scratch" and not builder.image_digests.get(ref)
        )
        document: dict[str, Any] = {
            "version": KEY_VERSION,
            "platform": self._platform(),
            "base": base,
            "from_args": {n: builder.dockerfile.meta_args.get(n) for n in sorted(stage.from_args)},
            "instructions": texts,
            "args": self.args,
            "stages": self.stages,
            "images": self.images,
            "context": self.context,
            "urls": self.urls,
            "secrets": sorted(self.secrets),
            "ssh": sorted(self.ssh),
            "unpinned": unpinned,
        }
        epoch = builder.dockerfile.source_date_epoch
        if epoch is not None:
            # it stamps the image's files and history; set only, so other keys stay as they were
            document["source_date_epoch"] = {
                "value": epoch.value,
                "source": epoch.source,
                "checksum": epoch.checksum,
            }
        return document

    def _platform(self) -> str:
        """Where the stage runs. A stage FROM a stage runs where its parent does, whatever its
        own --platform says (BuildKit's dispatchState.init), so a stage below a
        `FROM --platform=$BUILDPLATFORM` one has one key for every target platform."""
        stage, builder = self.stage, self.builder
        if stage.base_stage is not None:
            return builder.platforms[stage.base_stage]
        return stage.platform or str(builder.platform)

    def _instructions(self) -> list[Instruction]:
        """ONBUILD triggers of a same-file base run first in this stage, then its own body."""
        triggers: list[Instruction] = []
        if self.stage.base_stage is not None:
            parent = self.builder.dockerfile.stages[self.stage.base_stage]
            triggers = [i.trigger for i in parent.instructions if i.trigger is not None]
        return [*triggers, *self.stage.instructions[1:]]

    def _visit(self, position: int, instruction: Instruction) -> None:
        if instruction.cmd == "ARG":
            self._arg(instruction)
        elif instruction.cmd == "ENV":
            self._env(instruction)
        elif instruction.cmd in ("COPY", "ADD"):
            self._copy(position, instruction)
        elif instruction.cmd == "RUN":
            self._run(position, instruction)

    def _arg(self, instruction: Instruction) -> None:
        builder = self.builder
        for declared in arg_declarations(instruction):
            name = declared.name
            value: str | None
            if name in builder.build_args:
                value = builder.build_args[name]
            elif declared.default is not None:
                value = builder.expand(declared.default, self.env, instruction.line)
            else:
                value = builder.dockerfile.meta_args.get(name)
            self.args.append((name, value))
            if value is not None:
                self.env[name] = value

    def _env(self, instruction: Instruction) -> None:
        pairs = instruction.args
        before = dict(self.env)
        for name, value in zip(pairs[::2], pairs[1::2], strict=False):
            self.env[name] = self.builder.expand(value, before, instruction.line)

    def _copy(self, position: int, instruction: Instruction) -> None:
        reason = copy_error(
            instruction, lambda word: self.builder.expand(word, self.env, instruction.line)
        )
        if reason is not None:
            raise self.builder.fail(reason, instruction.line)
        source = instruction.flag("from")
        if source:
            self._reference(source, instruction)
            return
        builder = self.builder
        local: list[str] = []
        for raw in instruction.args[:-1]:
            if raw.startswith("<<"):
                continue
            value = builder.expand(raw, self.env, instruction.line)
            checksum = instruction.flag("checksum")
            remote = remote_source(value, checksum) if instruction.cmd == "ADD" else None
            if remote is None:
                local.append(value)
                continue
            self.urls.append({"url": value, "checksum": checksum})
            if remote.moving is not None and self.moving is None:
                self.moving = Volatile(value, remote.moving, self.stage.index, instruction.line)
        if not local:
            return
        excludes = instruction.flags.get("exclude", ())
        parents = instruction.cmd == "COPY" and instruction.flag("parents") == "true"
        try:
            chmod = _OCTAL_CHMOD.fullmatch(instruction.flag("chmod") or "") is not None
            digest = builder.context.digest(local, excludes=excludes, chmod=chmod, parents=parents)
        except ContextError as exc:
            raise builder.fail(f"{instruction.cmd}: {exc}", instruction.line) from None
        entry = {"at": position, "sources": local, "excludes": list(excludes), "digest": digest}
        if parents:
            entry["parents"] = True
        self.context.append(entry)

    def _run(self, position: int, instruction: Instruction) -> None:
        builder = self.builder
        for text in instruction.flags.get("mount", ()):
            try:
                mount = parse_mount(
                    text, lambda word: builder.expand(word, self.env, instruction.line)
                )
            except MountError as exc:
                raise builder.fail(str(exc), instruction.line) from None
            if mount.secret_id is not None:
                self.secrets.add(mount.secret_id)
            elif mount.ssh_id is not None:
                self.ssh.add(mount.ssh_id)
            elif mount.source_stage and mount.type in ("bind", "cache"):
                self._reference(mount.source_stage, instruction)
            elif mount.reads_context:
                try:
                    digest = builder.context.bind_digest(mount.source or "")
                except ContextError as exc:
                    raise builder.fail(f"RUN --mount: {exc}", instruction.line) from None
                self.context.append({"at": position, "bind": mount.source or "", "digest": digest})

    def _reference(self, ref: str, instruction: Instruction) -> None:
        """A `--from`: the key of the stage it names, or the digest of the image."""
        index = next(
            (
                edge.stage
                for edge in self.stage.edges
                if edge.kind != "base" and edge.ref == ref and edge.line == instruction.line
            ),
            None,
        )
        if index is None:
            self.images[ref] = self.builder.image(ref)
        else:
            self.stages[ref] = self.builder.keys[index].key
            self.read_stages.append(index)


def _canonical(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def normalized_text(parsed: ParsedDockerfile, instruction: Instruction) -> str:
    """The instruction as written, minus comments, blank lines and continuation indentation.

    Whitespace around a line continuation is folded to one space, except inside quotes, where
    it is part of the command's meaning. Heredoc bodies are content and kept as they are.
    """
    if instruction.heredocs or not parsed.lines:
        return instruction.original
    escape = parsed.directives.escape
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    text = ""
    for number, line in enumerate(parsed.lines[instruction.line - 1 : instruction.end_line]):
        if number and (not line.strip() or line.lstrip().startswith("#")):
            continue
        match = continuation.search(line)
        piece = line[: match.start()] if match else line
        if not text:
            text = piece.lstrip()
        elif _in_quotes(text, escape):
            text += piece
        else:
            text = text.rstrip() + " " + piece.lstrip()
    keyword, _, rest = text.strip().partition(" ")
    return f"{keyword.upper()} {rest.strip()}" if rest else keyword.upper()


def _in_quotes(text: str, escape: str) -> bool:
    quote = None
    skip = False
    for char in text:
        if skip:
            skip = False
        elif char == escape and quote != "'":
            skip = True
        elif quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
    return quote is not None
