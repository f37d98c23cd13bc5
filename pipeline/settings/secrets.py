"""Build secrets, from the reference a user writes to the values a run hands its engine.

A `SecretSpec` names where a value is (a variable or a file) and is all that settings, plans
and keys ever hold. `resolve_secrets` reads the values once per run into `Secrets`, which
executors receive and which never shows a value in its repr, its str or an error. `Masker`
hides those values in whatever a run prints or writes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "Masker",
    "SecretSpec",
    "Secrets",
    "resolve_secrets",
    "secret_from_fields",
    "secret_from_text",
]

SECRET_KEYS = ("type", "id", "env", "src")


@dataclass(frozen=True)
class SecretSpec:
    """A build secret by reference: the variable or file it comes from, never its value."""

    id: str
    env: str | None = None
    src: str | None = None


@dataclass(frozen=True)
class Secrets:
    """Secret values by id, read once for a run; only `items` and `masker` give values out."""

    _values: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, values: Mapping[str, str]) -> Secrets:
        return cls(tuple(values.items()))

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(secret_id for secret_id, _ in self._values)

    def items(self) -> tuple[tuple[str, str], ...]:
        """(id, value) pairs, for an engine to mount; a file that is not UTF-8 keeps its bytes
        as surrogate escapes (`value.encode("utf-8", "surrogateescape")` gives them back)."""
        return self._values

    def masker(self) -> Masker:
        return Masker(value for _, value in self._values)

    def __repr__(self) -> str:
        return f"Secrets(ids={self.ids!r})"

    __str__ = __repr__


class Masker:
    """Replaces secret values with `***` in anything printed."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        """Each value is masked whole and line by line, since logs arrive a line at a time."""
        pieces = {piece.strip() for s in secrets for piece in (s, *s.splitlines())}
        self._secrets = sorted({p for p in pieces if len(p) >= 3}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        return f"Masker({len(self._secrets)} values)"


def resolve_secrets(specs: Sequence[SecretSpec], env: Mapping[str, str]) -> Secrets:
    """The values, from their variables in `env` or their files; errors name the id, never a
    value. This is the only place a run reads secret values.

    A file that is not UTF-8 keeps its bytes as surrogate escapes, for engines that can take it.
    """
    values: dict[str, str] = {}
    for secret in specs:
        if secret.env is not None:
            if secret.env not in env:
                message = f"secret {secret.id}: environment variable {secret.env} is not set"
                raise UsageError(message)
            values[secret.id] = env[secret.env]
        else:
            try:
                data = Path(str(secret.src)).read_bytes()
            except OSError as exc:
                message = f"secret {secret.id}: cannot read {secret.src}: {exc.strerror}"
                raise UsageError(message) from None
            values[secret.id] = data.decode("utf-8", "surrogateescape")
    return Secrets.of(values)


def secret_from_text(text: str) -> SecretSpec:
    """buildx syntax: `id=ID,env=VAR` or `id=ID,src=PATH` (`source=` and `type=env|file` too).

    ValueError gives the reason; the caller says where the text came from.
    """
    try:
        fields = next(csv.reader([text]), [])
    except csv.Error as exc:
        raise ValueError(str(exc)) from None
    values: dict[str, str] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        key = "src" if key == "source" else key
        if not sep:
            raise ValueError(f'"{item}" is not a key=value pair')
        if key not in SECRET_KEYS:
            raise ValueError(f'unknown key "{key}" (expected id, env, src or type)')
        if key in values:
            raise ValueError(f'"{key}" is given twice')
        values[key] = value
    kind = values.pop("type", None)
    if kind not in (None, "env", "file"):
        raise ValueError(f'type must be "env" or "file", not "{kind}"')
    if kind == "env" and "env" not in values and "src" in values:
        values["env"] = values.pop("src")
    return _checked(values, kind)


def secret_from_fields(values: Mapping[str, str]) -> SecretSpec:
    """A secret from a mapping's id, env and src (the config file's other form), by the same
    rules as the text form; ValueError gives the reason."""
    return _checked(values, None)


def _checked(values: Mapping[str, str], kind: str | None) -> SecretSpec:
    if not values.get("id"):
        raise ValueError("the id is missing")
    if "env" in values and "src" in values:
        raise ValueError("give env or src, not both")
    if "env" not in values and "src" not in values:
        reason = "needs env (a variable name) or src (a file path) to say where the value is"
        raise ValueError(reason)
    if kind == "file" and "env" in values:
        raise ValueError("type=file takes src, not env")
    for key in ("env", "src"):
        if key in values and not values[key]:
            raise ValueError(f"{key} is empty")
    return SecretSpec(id=values["id"], env=values.get("env"), src=values.get("src"))
