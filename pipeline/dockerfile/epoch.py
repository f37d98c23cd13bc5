"""`SOURCE_DATE_EPOCH`, resolved as BuildKit (dockerfile ≥ 1.24) resolves it before any stage.

A build arg, or a global ARG's default, may give a Unix timestamp, `context` (the build
context's own date), or the name of a stage whose one remote ADD dates the build. BuildKit
evaluates that stage whatever the target, so its rules fail every plan, and anything else is
`invalid SOURCE_DATE_EPOCH`. The epoch stamps every image, so the keys take it in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.dockerfile.copies import GitSourceError, digest_error, git_source, http_source
from pipeline.dockerfile.lex import ExpansionError, expand
from pipeline.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from pipeline.dockerfile.parse import Instruction

__all__ = ["SourceDateEpoch", "resolve_epoch"]

NAME = "SOURCE_DATE_EPOCH"
_TIMESTAMP = re.compile(r"[-+]?\d{1,19}")


@dataclass(frozen=True)
class SourceDateEpoch:
    """The build's `SOURCE_DATE_EPOCH` and, when a stage dates it, that stage and its ADD: every
    key takes it in, and that stage is needed whatever the target, as BuildKit evaluates it."""

    value: str  # as given: a timestamp, `context`, or a stage's name
    stage: int | None = None  # the source-only stage that dates the build
    source: str | None = None  # that stage's ADD source, expanded
    checksum: str | None = None


def resolve_epoch(
    bodies: Sequence[Sequence[Instruction]],
    meta: Mapping[str, str],
    build_args: Mapping[str, str],
    *,
    path: str,
    escape: str,
    line: int | None,
) -> SourceDateEpoch | None:
    """The epoch the build args or the global ARGs give, checked; None when none is given."""
    value = build_args[NAME] if NAME in build_args else meta.get(NAME, "")
    if not value:
        return None
    if value == "context" or (_TIMESTAMP.fullmatch(value) and -(2**63) <= int(value) < 2**63):
        return SourceDateEpoch(value)
    env = {k: v for k, v in meta.items() if k != NAME}
    for index, body in enumerate(bodies):
        head = body[0]
        if len(head.args) == 3 and head.args[2].lower() == value.lower():
            try:
                return _stage_source(index, body, env, build_args, escape, value)
            except (ValueError, GitSourceError) as exc:
                raise UsageError(str(exc), path=path, line=head.line) from None
    raise UsageError(
        f"invalid SOURCE_DATE_EPOCH: {value} (a Unix timestamp, `context`, or the name of a "
        "stage with one remote ADD)",
        path=path,
        line=None if NAME in build_args else line,
    )


def _stage_source(
    index: int,
    body: Sequence[Instruction],
    env: Mapping[str, str],
    build_args: Mapping[str, str],
    escape: str,
    value: str,
) -> SourceDateEpoch:
    """sourceDateEpochStageSource: FROM scratch, ARGs, and exactly one ADD of a URL or Git."""

    def word(text: str, scope: Mapping[str, str]) -> str:
        try:
            return expand(text, scope, escape=escape).value
        except ExpansionError as exc:
            raise ValueError(str(exc)) from None

    if word(body[0].args[0], env) != "scratch":
        raise ValueError(f"{NAME} stage must use FROM scratch")
    scope = dict(env)
    found: SourceDateEpoch | None = None
    for instruction in body[1:]:
        if instruction.cmd == "ARG":
            for text in instruction.args:
                name, has_default, default = text.partition("=")
                if name in build_args:
                    scope[name] = build_args[name]
                elif has_default:
                    scope[name] = word(default, scope)
        elif instruction.cmd == "ADD":
            if found is not None:
                raise ValueError(f"{NAME} stage must contain exactly one remote ADD")
            found = _add_source(instruction, lambda text: word(text, scope), index, value)
        else:
            raise ValueError(
                f"{NAME} stage does not meet source-only requirements: "
                f"unsupported {instruction.cmd.lower()} instruction"
            )
    if found is None:
        raise ValueError(f"{NAME} stage must contain exactly one remote ADD")
    return found


def _add_source(
    instruction: Instruction, word: Callable[[str], str], index: int, value: str
) -> SourceDateEpoch:
    if instruction.heredocs or len(instruction.args) != 2:
        raise ValueError(f"{NAME} stage must contain exactly one remote ADD source")
    source = word(instruction.args[0])
    checksum = word(instruction.flag("checksum") or "") or None
    if http_source(source):
        reason = digest_error(checksum) if checksum else None
        if reason is not None:
            raise ValueError(reason)
    elif git_source(source) is None:
        raise ValueError(f"{NAME} stage source must be a single HTTP(S) or Git ADD")
    return SourceDateEpoch(value, stage=index, source=source, checksum=checksum)
