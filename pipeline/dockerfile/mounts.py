"""`RUN --mount=…` values, read as BuildKit's parseMount reads them.

BuildKit reads a mount twice. Its parser reads every stage's mounts for `from` alone (a variable
there is refused), and the dependencies follow from that; the rest is checked only while a RUN is
dispatched, after its values are expanded with the stage's ARG and ENV values (BuildKit ≥ 1.3),
and BuildKit dispatches only the stages the target needs. So `mount_source` serves the stage
graph, and `parse_mount` checks a mount as written (for a located warning in any stage) or
expanded (for the keys of a needed stage, where it fails the plan).
"""

from __future__ import annotations

import csv
import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.dockerfile.gostrings import go_quote
from pipeline.errors import did_you_mean

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipeline.dockerfile.parse import Instruction

__all__ = ["Mount", "MountError", "mount_source", "parse_mount", "run_mounts"]

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")
# BuildKit's list, in its order: a did-you-mean between equally close keys picks the first
_KEYS = (
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
)

_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_RAM_SIZE = re.compile(r"^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")  # go-units RAMInBytes


class MountError(ValueError):
    """A malformed mount, worded as BuildKit words it."""


@dataclass(frozen=True)
class Mount:
    """One `RUN --mount`, keeping what later passes ask of it: the secret or SSH id a step
    needs, the stage or context files it reads (key inputs), and what an engine may refuse."""

    type: str = "bind"
    source_stage: str | None = None
    source: str | None = None
    target: str | None = None
    id: str | None = None
    env: str | None = None
    required: bool = False  # for secret and ssh mounts: the build fails without one
    mode: str | None = None  # octal, as written

    @property
    def secret_id(self) -> str | None:
        """BuildKit: the id is `source`, else `id`, else the target's base name."""
        if self.type != "secret":
            return None
        return self.source or self.id or posixpath.basename(self.target or "")

    @property
    def ssh_id(self) -> str | None:
        return (self.id or "default") if self.type == "ssh" else None

    @property
    def reads_context(self) -> bool:
        return self.type == "bind" and not self.source_stage


def parse_mount(text: str, expand: Callable[[str], str] | None = None) -> Mount:
    """A mount checked as BuildKit checks it while dispatching its RUN (parseMount with an
    expander), field by field in order, so a `required` before the `type` is judged as a bind's.

    Without `expand`, values are read as written and a value holding a variable is left
    unchecked: BuildKit validates it only once expanded, with the stage's ARGs and ENVs.
    """
    fields = _fields(text)
    values: dict[str, str] = {}
    unknown: set[str] = set()  # values still holding a variable
    for field in fields:
        key, has_value, value = field.partition("=")
        key = key.lower()
        if not has_value:
            if key == "required":
                _only_for(values, unknown, key, ("secret", "ssh"))
                values["required"] = "true"
            elif key not in ("readonly", "ro", "readwrite", "rw"):
                raise MountError(f"invalid field '{field}' must be a key=value pair")
            continue
        if key == "from":
            _check_from(value)
        elif expand is not None:
            value = expand(value)
        if key not in _KEYS:
            raise MountError(f"unexpected key '{key}' in '{field}'" + did_you_mean(key, _KEYS))
        name = _canonical(key)
        if expand is None and key != "from" and "$" in value:
            unknown.add(name)
        else:
            _check_value(key, value, values, unknown)
        values[name] = value
    return _mount(values, unknown)


def mount_source(text: str) -> tuple[str | None, str | None]:
    """The `from` and `target` of a mount, as BuildKit's parser reads them for every stage before
    dispatching any: only the CSV and a variable in `from` can fail here; the rest waits for
    dispatch (`parse_mount`)."""
    source = target = None
    for field in _fields(text):
        key, has_value, value = field.partition("=")
        key = key.lower()
        if has_value and key == "from":
            _check_from(value)
            source = value
        elif has_value and _canonical(key) == "target":
            target = value
    return source or None, target


def _fields(text: str) -> list[str]:
    try:
        (fields,) = list(csv.reader([text]))
    except (csv.Error, ValueError) as exc:
        raise MountError(f"failed to parse csv mounts: {exc}") from None
    return fields


def _check_from(value: str) -> None:
    dollar = value.find("$")
    if dollar not in (-1, len(value) - 1):
        raise MountError("'from' doesn't support variable expansion, define alias stage instead")


def _check_value(key: str, value: str, values: dict[str, str], unknown: set[str]) -> None:
    """One field's value, worded as BuildKit's parseMount rejects it."""
    if key == "type" and value.lower() not in MOUNT_TYPES:
        message = f"unsupported mount type {go_quote(value)}"
        raise MountError(message + did_you_mean(value, MOUNT_TYPES))
    if key in ("readonly", "ro", "readwrite", "rw") and not _go_bool(value):
        raise MountError(f"invalid value for {key}: {value}")
    if key == "required":
        _only_for(values, unknown, key, ("secret", "ssh"))
        if not _go_bool(value):
            raise MountError(f"invalid value for {key}: {value}")
    if key == "size":
        _only_for(values, unknown, key, ("tmpfs",))
        if not _RAM_SIZE.match(value):
            raise MountError(f"invalid value for {key}: {value}")
    if key == "sharing" and value.lower() not in SHARING_MODES:
        message = f"unsupported sharing value {go_quote(value)}"
        raise MountError(message + did_you_mean(value, SHARING_MODES))
    if key in ("mode", "uid", "gid") and not _go_uint32(value, 8 if key == "mode" else 10):
        raise MountError(f"invalid value {value} for {key}")


def _only_for(values: dict[str, str], unknown: set[str], key: str, types: tuple[str, ...]) -> None:
    kind = values.get("type", "bind").lower()
    if "type" not in unknown and kind not in types:
        raise MountError(f"unexpected key '{key}' for mount type '{kind}'")


def _go_bool(value: str) -> bool:
    return value in _TRUE or value in _FALSE


def _go_uint32(value: str, base: int) -> bool:
    digits = "01234567" if base == 8 else "0123456789"
    return bool(value) and all(c in digits for c in value) and int(value, base) < 2**32


def _canonical(key: str) -> str:
    return {
        "src": "source",
        "dst": "target",
        "destination": "target",
        "ro": "readonly",
        "rw": "readwrite",
    }.get(key, key)


def _mount(values: dict[str, str], unknown: set[str]) -> Mount:
    kind = values.get("type", "bind")
    kind = kind if "type" in unknown else kind.lower()
    mount = Mount(
        type=kind,
        source_stage=values.get("from") or None,
        source=values.get("source"),
        target=values.get("target"),
        id=values.get("id"),
        env=values.get("env"),
        required=values.get("required", "false") in _TRUE,
        mode=values.get("mode"),
    )
    if "type" in unknown:
        return mount
    if kind not in ("secret", "ssh", "cache"):
        for key in ("mode", "uid", "gid"):
            if key in values:
                raise MountError(f'{key} not allowed for "{kind}" type mounts')
    if kind == "secret":
        if mount.source_stage:
            raise MountError("secret mount should not have a from")
        if "sharing" in values:
            raise MountError("secret mount should not define sharing")
        if not (mount.source or mount.target or mount.id):
            raise MountError("invalid secret mount. one of source, target required")
        if mount.source and mount.id:
            raise MountError("both source and id can't be set")
    if "sharing" in values and kind != "cache":
        raise MountError(f"invalid cache sharing set for {kind} mount")
    return mount


def run_mounts(instruction: Instruction) -> tuple[Mount, ...]:
    """A RUN's mounts, as later passes read them: one the stage pass refused is left out, as
    that pass has reported it already (an exit 2 where the stage is needed)."""
    if instruction.cmd != "RUN":
        return ()
    mounts = []
    for text in instruction.flags.get("mount", ()):
        try:
            mounts.append(parse_mount(text))
        except MountError:
            continue
    return tuple(mounts)
