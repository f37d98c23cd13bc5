"""`RUN --mount=…` values, read as BuildKit's parseMount reads them.

The graph pass reads mounts without expanding variables (BuildKit resolves `from` before any
expansion and refuses variables there); the key pass expands the other values with the stage's
ARG and ENV values, as BuildKit ≥ 1.3 does.
"""

from __future__ import annotations

import csv
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import did_you_mean

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipeline.dockerfile.parse import Instruction

__all__ = ["Mount", "MountError", "parse_mount", "run_mounts"]

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_KEYS = [
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "required",
    "size",
    "id",
    "sharing",
    "mode",
    "uid",
    "gid",
    "env",
]

_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool


class MountError(ValueError):
    """A malformed mount, worded as BuildKit words it."""


@dataclass(frozen=True)
class Mount:
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
    try:
        (fields,) = list(csv.reader([text]))
    except (csv.Error, ValueError) as exc:
        raise MountError(f"failed to parse csv mounts: {exc}") from None
    values: dict[str, str] = {}
    for field in fields:
        key, has_value, value = field.partition("=")
        key = key.lower()
        if not has_value:
            if key == "required":
                values["required"] = "true"
            continue
        if key not in _KEYS:
            raise MountError(f"unexpected key '{key}' in '{field}'{did_you_mean(key, _KEYS)}")
        if key == "from":
            dollar = value.find("$")
            if dollar not in (-1, len(value) - 1):
                raise MountError(
                    "'from' doesn't support variable expansion, define alias stage instead"
                )
        elif expand is not None:
            value = expand(value)
        values[_canonical(key)] = value
    return _mount(values)


def _canonical(key: str) -> str:
    return {"src": "source", "dst": "target", "destination": "target"}.get(key, key)


def _mount(values: dict[str, str]) -> Mount:
    kind = values.get("type", "bind").lower()
    if kind not in MOUNT_TYPES:
        suggestion = did_you_mean(kind, MOUNT_TYPES)
        raise MountError(f'unsupported mount type "{values["type"]}"{suggestion}')
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
    if kind == "secret":
        if mount.source_stage:
            raise MountError("secret mount should not have a from")
        if not (mount.source or mount.target or mount.id):
            raise MountError("invalid secret mount. one of source, target required")
        if mount.source and mount.id:
            raise MountError("both source and id can't be set")
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
