"""Errors the user sees, each with its exit code.

ToolError                 exit 1, the base: anything we report without a traceback
├── UsageError            exit 2: a bad Dockerfile, config file, flag or target
├── StageFailed           exit 1: a stage's build failed
└── EngineUnavailable     exit 3: no Dagger engine or Docker daemon to build with

Every module raises these (or its own subclass) and `cli.main` prints them once,
as `path:line: reason` when a location is known.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["EngineUnavailable", "StageFailed", "ToolError", "UsageError"]


class ToolError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line

    @property
    def location(self) -> str | None:
        if self.path is None:
            return None
        return self.path if self.line is None else f"{self.path}:{self.line}"

    def __str__(self) -> str:
        where = self.location
        return self.message if where is None else f"{where}: {self.message}"


class UsageError(ToolError):
    exit_code = 2


class StageFailed(ToolError):
    """A stage's build failed; `tail` is the end of its log, for the report."""

    exit_code = 1

    def __init__(self, message: str, *, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail


class EngineUnavailable(ToolError):
    exit_code = 3
