"""Dockerfile text → validated instructions, as BuildKit's parser and `instructions` package do.

The line-level parsing (continuations, JSON forms, heredocs, the escape directive) is BuildKit's
own Go parser through the `dockerfile` package. This module adds what that parser leaves to
`instructions.Parse`: parser directives, known keywords with BuildKit's "did you mean" hint,
per-instruction flags and argument counts, and ONBUILD triggers re-parsed as instructions.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dockerfile as _buildkit

from pipeline.errors import UsageError, did_you_mean

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Directives", "Instruction", "ParsedDockerfile", "parse_dockerfile", "parse_text"]

INSTRUCTIONS = (
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)

_BOOL, _STRING, _STRINGS = "bool", "string", "strings"

FLAGS: Mapping[str, Mapping[str, str]] = {
    "FROM": {"platform": _STRING},
    "COPY": {
        "chown": _STRING,
        "from": _STRING,
        "chmod": _STRING,
        "link": _BOOL,
        "exclude": _STRINGS,
        "parents": _BOOL,
    },
    "ADD": {
        "chown": _STRING,
        "chmod": _STRING,
        "link": _BOOL,
        "keep-git-dir": _BOOL,
        "checksum": _STRING,
        "unpack": _BOOL,
        "exclude": _STRINGS,
    },
    "RUN": {"mount": _STRINGS, "network": _STRING, "security": _STRING, "device": _STRINGS},
    "HEALTHCHECK": {
        "interval": _STRING,
        "timeout": _STRING,
        "start-period": _STRING,
        "start-interval": _STRING,
        "retries": _STRING,
    },
}

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_DIRECTIVE_KEYS = ("syntax", "escape", "check")
_GO_DURATION = re.compile(r"^[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)$")
_ONBUILD_PREFIX = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NANOSECONDS = {
    "ns": 1,
    "us": 1e3,
    "µs": 1e3,
    "μs": 1e3,
    "ms": 1e6,
    "s": 1e9,
    "m": 6e10,
    "h": 3.6e12,
}
_HEREDOC = re.compile(r"^\d*<<-?\s*[^<]+$")  # BuildKit's parser.ParseHeredoc


@dataclass(frozen=True)
class Directives:
    """The parser directives at the top of the file: `escape` decides how every later word is
    split and expanded, and `syntax` names the frontend an engine must accept."""

    syntax: str | None = None
    escape: str = "\\"
    check: str | None = None


@dataclass(frozen=True)
class Instruction:
    """One instruction: keyword upper-cased, flags by name, arguments as BuildKit split them."""

    cmd: str
    args: tuple[str, ...]
    flags: Mapping[str, tuple[str, ...]]
    line: int
    end_line: int
    original: str
    json: bool = False
    trigger: Instruction | None = None
    heredocs: tuple[str, ...] = ()
    # why an ONBUILD trigger cannot be read: BuildKit says so only where the trigger runs
    trigger_error: str | None = None

    def flag(self, name: str) -> str | None:
        values = self.flags.get(name)
        return values[-1] if values else None


@dataclass(frozen=True)
class ParsedDockerfile:
    """A Dockerfile as parsed, before stages: its instructions, and its text line by line,
    since the keys normalise an instruction from its lines and the rewrites splice by them."""

    path: str
    directives: Directives
    instructions: tuple[Instruction, ...]
    lines: tuple[str, ...] = ()


def parse_dockerfile(path: str | Path) -> ParsedDockerfile:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError("Dockerfile not found", path=path) from None
    except OSError as exc:
        raise UsageError(f"cannot read Dockerfile: {exc.strerror}", path=path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"not UTF-8 text (byte {exc.start})", path=path) from None
    return parse_text(text, path=str(path))


def parse_text(text: str, *, path: str = "Dockerfile") -> ParsedDockerfile:
    text = text.removeprefix("\ufeff")
    if not text:
        raise UsageError("the Dockerfile cannot be empty", path=path)
    directives = _read_directives(text, path)
    try:
        nodes = _buildkit.parse_string(text)
    except _buildkit.GoParseError as exc:
        line = _error_line(text, str(exc))
        raise UsageError(f"dockerfile parse error: {exc}", path=path, line=line) from None
    lines = tuple(text.splitlines())
    instructions = tuple(_instruction(node, path, directives.escape, lines) for node in nodes)
    return ParsedDockerfile(
        path=path,
        directives=directives,
        instructions=instructions,
        lines=lines,
    )


def _error_line(text: str, message: str, limit: int = 5000) -> int | None:
    """The Go parser's errors carry no line: the first prefix of the file failing the same way
    holds it. Only run on the error path."""
    lines = text.splitlines(keepends=True)
    for count in range(1, min(len(lines), limit) + 1):
        try:
            _buildkit.parse_string("".join(lines[:count]))
        except _buildkit.GoParseError as exc:
            if str(exc) == message:
                return count
    return None


def _read_directives(text: str, path: str) -> Directives:
    """Directives count only at the very top; the first other line ends them, as in BuildKit."""
    found: dict[str, tuple[str, int]] = {}
    lines = text.splitlines()
    start = 1 if lines and lines[0].startswith("#!") else 0
    for number, line in enumerate(lines[start:], start=start + 1):
        match = _DIRECTIVE.match(line.strip())
        if match is None or match.group(1).lower() not in _DIRECTIVE_KEYS:
            break
        key, value = match.group(1).lower(), match.group(2)
        if key in found:
            raise UsageError(f"only one {key} parser directive can be used", path=path, line=number)
        found[key] = (value, number)
    escape = found.get("escape", ("\\", 0))
    if escape[0] not in ("\\", "`"):
        raise UsageError(
            f"invalid escape token '{escape[0]}' does not match ` or \\", path=path, line=escape[1]
        )
    return Directives(
        syntax=found.get("syntax", (None, 0))[0],
        escape=escape[0],
        check=found.get("check", (None, 0))[0],
    )


def _instruction(
    node: _buildkit.Command, path: str, escape: str, lines: tuple[str, ...] = ()
) -> Instruction:
    cmd = (node.cmd or "").upper()
    line = node.start_line
    if not cmd:
        raise UsageError(
            f"dockerfile parse error: cannot read {node.original!r}", path=path, line=line
        )
    if cmd not in INSTRUCTIONS:
        raise UsageError(_unknown_instruction(node.cmd), path=path, line=line)
    if node.heredocs and cmd not in ("RUN", "COPY", "ADD"):
        raise UsageError(f"{cmd} cannot accept a heredoc", path=path, line=line)
    trigger, trigger_error = (
        _onbuild_trigger(node, path, escape, lines) if cmd == "ONBUILD" else (None, None)
    )
    args = tuple(node.value)
    flags = _parse_flags(cmd, node.flags, path, line)
    _check_arguments(cmd, args, path, line)
    if cmd == "SHELL" and not node.json:
        raise UsageError("SHELL requires the arguments to be in JSON form", path=path, line=line)
    if cmd == "HEALTHCHECK":
        _check_healthcheck(args, flags, path, line, json=node.json)
    if cmd in ("COPY", "ADD") and _HEREDOC.match(args[-1]):
        raise UsageError(f"{cmd} cannot accept a heredoc as a destination", path=path, line=line)
    instruction = Instruction(
        cmd=cmd,
        args=args,
        flags=flags,
        line=line,
        end_line=node.end_line,
        original=node.original,
        json=node.json,
        trigger=trigger,
        heredocs=tuple(heredoc.content for heredoc in node.heredocs),
        trigger_error=trigger_error,
    )
    if trigger is not None and trigger.heredocs:
        # the parser leaves an ONBUILD's heredoc bodies out of `original`; keys hash the text
        written = "\n".join(lines[node.start_line - 1 : node.end_line])
        return dataclasses.replace(instruction, original=written, heredocs=trigger.heredocs)
    return instruction


def _onbuild_trigger(
    node: _buildkit.Command, path: str, escape: str, lines: tuple[str, ...]
) -> tuple[Instruction | None, str | None]:
    """BuildKit re-parses an ONBUILD expression as a Dockerfile of its own (initOnBuildTriggers).

    The expression is re-read from the lines as written, not from `original`, because the parser
    leaves heredoc bodies out of an ONBUILD's `original`, and BuildKit's parseOnBuild keeps them
    (testOnBuildHeredoc). Its parser checks only the trigger's keyword; what else is wrong with
    the trigger comes back as the error, as BuildKit finds it only in a stage the trigger runs in.
    """
    written = lines[node.start_line - 1 : node.end_line] if lines else (node.original,)
    source = _ONBUILD_PREFIX.sub("", "\n".join(written), count=1)
    body = _ONBUILD_PREFIX.sub("", node.original, count=1)
    if not body.strip():
        raise UsageError("ONBUILD requires at least one argument", path=path, line=node.start_line)
    keyword = body.split(None, 1)[0].upper()
    if keyword == "ONBUILD":
        message = "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
        raise UsageError(message, path=path, line=node.start_line)
    if keyword in ("MAINTAINER", "FROM"):
        message = f"{keyword} isn't allowed as an ONBUILD trigger"
        raise UsageError(message, path=path, line=node.start_line)
    try:
        (inner,) = _buildkit.parse_string(f"# escape={escape}\n{source}")
        trigger = _instruction(inner, path, escape)
    except (_buildkit.GoParseError, ValueError) as exc:
        return None, f"ONBUILD: {exc}"
    except UsageError as exc:
        return None, exc.message
    if trigger.heredocs:
        trigger = dataclasses.replace(trigger, original=source)
    return dataclasses.replace(trigger, line=node.start_line, end_line=node.end_line), None


def _unknown_instruction(keyword: str) -> str:
    hint = did_you_mean(keyword, INSTRUCTIONS, case_sensitive=False)
    return f"unknown instruction: {keyword}{hint}"


def _parse_flags(
    cmd: str, raw: tuple[str, ...], path: str, line: int
) -> Mapping[str, tuple[str, ...]]:
    """BuildKit's BFlags.Parse: known flags only, values required for strings, no repeats."""
    known = FLAGS.get(cmd, {})
    parsed: dict[str, list[str]] = {}
    for text in raw:
        if text == "--":
            break
        if not text.startswith("--"):
            raise UsageError(f"arg should start with -- : {text}", path=path, line=line)
        flag_name, has_value, value = text.partition("=")
        name = flag_name[2:]
        kind = known.get(name)
        if kind is None:
            hint = did_you_mean(name, known)
            raise UsageError(f"unknown flag: {flag_name}{hint}", path=path, line=line)
        if name in parsed and kind != _STRINGS:
            raise UsageError(f"duplicate flag specified: {flag_name}", path=path, line=line)
        if kind == _BOOL:
            if has_value and not value:
                raise UsageError(f"missing a value on flag: {flag_name}", path=path, line=line)
            if value.lower() not in ("true", "false", ""):
                raise UsageError(
                    f"expecting boolean value for flag {flag_name}, not: {value}",
                    path=path,
                    line=line,
                )
            value = "false" if value.lower() == "false" else "true"
        elif not has_value:
            raise UsageError(f"missing a value on flag: {flag_name}", path=path, line=line)
        parsed.setdefault(name, []).append(value)
    return {name: tuple(values) for name, values in parsed.items()}


def _check_arguments(cmd: str, args: tuple[str, ...], path: str, line: int) -> None:
    if cmd == "FROM":
        if not (len(args) == 1 or (len(args) == 3 and args[1].lower() == "as")):
            raise UsageError("FROM requires either one or three arguments", path=path, line=line)
    elif cmd in ("COPY", "ADD") and len(args) < 2:
        raise UsageError(
            f"{cmd} requires at least two arguments, but only one was provided. "
            "Destination could not be determined",
            path=path,
            line=line,
        )
    elif cmd in ("MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL") and len(args) != 1:
        raise UsageError(f"{cmd} requires exactly one argument", path=path, line=line)
    elif cmd in ("ARG", "ENV", "LABEL", "RUN", "EXPOSE", "VOLUME", "HEALTHCHECK") and not any(args):
        raise UsageError(f"{cmd} requires at least one argument", path=path, line=line)
    elif cmd == "ARG" and any(arg.startswith("=") for arg in args):
        raise UsageError("ARG names can not be blank", path=path, line=line)
    elif cmd in ("ENV", "LABEL") and not all(args[::2]):
        raise UsageError(f"{cmd} names can not be blank", path=path, line=line)


def _check_healthcheck(
    args: tuple[str, ...], flags: Mapping[str, tuple[str, ...]], path: str, line: int, *, json: bool
) -> None:
    """instructions.parseHealthcheck: NONE or CMD with a command, intervals of 0 or ≥ 1 ms."""
    kind = args[0].upper()
    if kind == "NONE":
        if len(args) > 1:
            raise UsageError("HEALTHCHECK NONE takes no arguments", path=path, line=line)
        return
    if kind != "CMD":
        raise UsageError(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)', path=path, line=line)
    if len(args) == 1 or not (json or any(args[1:])):
        raise UsageError("Missing command after HEALTHCHECK CMD", path=path, line=line)
    for name in ("interval", "timeout", "start-period", "start-interval"):
        value = flags.get(name, ("",))[-1]
        if not value:
            continue
        if not _GO_DURATION.match(value):
            raise UsageError(f'time: invalid duration "{value}"', path=path, line=line)
        nanoseconds = sum(
            float(number) * _NANOSECONDS[unit] for number, unit in _DURATION_PART.findall(value)
        )
        if nanoseconds and (value.startswith("-") or nanoseconds < 1e6):
            raise UsageError(f'Interval "{name}" cannot be less than 1ms', path=path, line=line)
    retries = flags.get("retries", ("",))[-1]
    if retries and not re.fullmatch(r"[-+]?\d+", retries):
        message = f'strconv.ParseInt: parsing "{retries}": invalid syntax'
        raise UsageError(f"{message} (--retries takes a whole number)", path=path, line=line)
    if retries and int(retries) < 0:
        raise UsageError(f"--retries cannot be negative ({int(retries)})", path=path, line=line)
