"""Errors the user sees, each with its exit code, and the table of exit codes.

    0    EXIT_OK            every needed stage built or restored
    1    EXIT_FAILED        a stage, the tests or a publish failed
    2    EXIT_USAGE         bad input: Dockerfile, config file, flags, target, a secret
    3    EXIT_ENGINE        no usable engine
    70   EXIT_INTERNAL      a bug: the traceback goes to a log file
    130  EXIT_INTERRUPTED   SIGINT or SIGTERM
    141  EXIT_PIPE          the reader of our output went away (`plan --json | head`), as a
                            process killed by SIGPIPE reports to its shell: quietly

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
    from collections.abc import Iterable
    from pathlib import Path

__all__ = [
    "EXIT_ENGINE",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_USAGE",
    "EngineUnavailable",
    "StageFailed",
    "ToolError",
    "UsageError",
    "did_you_mean",
    "location",
    "suggest",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENGINE = 3
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141  # 128 + SIGPIPE


class ToolError(Exception):
    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line

    @property
    def location(self) -> str | None:
        return location(self.path, self.line)

    def __str__(self) -> str:
        where = self.location
        return self.message if where is None else f"{where}: {self.message}"


def location(path: str | None, line: int | None) -> str | None:
    """`path:line`, `path`, or None: how every message names where its cause is."""
    if path is None:
        return None
    return path if line is None else f"{path}:{line}"


def did_you_mean(value: str, options: Iterable[str], *, case_sensitive: bool = True) -> str:
    """` (did you mean X?)` for the option closest to a mistyped value, or nothing: the words
    BuildKit adds to its own errors for targets, instructions, mount keys and mount types."""
    match = suggest(value, tuple(dict.fromkeys(options)), case_sensitive=case_sensitive)
    return f" (did you mean {match}?)" if match is not None else ""


def suggest(value: str, options: tuple[str, ...], *, case_sensitive: bool) -> str | None:
    """util/suggest.Search: the closest option under Levenshtein distance 3, in the value's case."""
    probe = value if case_sensitive else value.lower()
    best, best_distance = None, 3
    for option in options:
        candidate = option if case_sensitive else option.lower()
        if candidate == probe:
            return None
        distance = _levenshtein(probe, candidate)
        if distance < best_distance:
            best, best_distance = candidate, distance
    if best is None or case_sensitive:
        return best
    return best.upper() if value == value.upper() else best.lower()


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


class UsageError(ToolError):
    exit_code = EXIT_USAGE


class StageFailed(ToolError):
    """A stage's build failed; `tail` is the end of its log, for the report."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail


class EngineUnavailable(ToolError):
    exit_code = EXIT_ENGINE
