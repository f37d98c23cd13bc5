"""BuildKit's plain progress (`--progress=plain`), read for the steps a person would name.

BuildKit numbers each vertex of a build and prints `#7 [app 2/5] RUN composer install` when it
starts, then lines about it (`#7 sha256:…`, `#7 0.412 output`, `#7 transferring…`) and one
that ends it (`#7 DONE 0.3s`, `#7 CACHED`, `#7 ERROR: …`). Of those, a person wants the step:
`[2/5] RUN composer install`. The ids, digests and timings are noise outside `--verbose`.

A `BuildProgress` reads one build's lines in order (ids are per build) and says which step
has just started and what the build is doing now. Any other line (the docker CLI's push
lines, Dagger's) is left alone.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

__all__ = ["BuildProgress", "Step", "shorten"]

_VERTEX = re.compile(r"#(\d+) (.*)")
_STEP = re.compile(r"\[(?:(?P<stage>\S+) )?(?P<position>\d+/\d+)\] (?P<instruction>.+)")
_ENDED = re.compile(r"(DONE \d+(\.\d+)?s|CACHED|ERROR\b.*|CANCELED\b.*)")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Step:
    """A Dockerfile step as BuildKit labels it: `[app 2/5] RUN composer install`."""

    stage: str | None  # None where the Dockerfile has a single stage
    position: str  # "2/5"
    instruction: str  # digests of pinned images left out

    @classmethod
    def parse(cls, name: str) -> Step | None:
        """The step a vertex's name labels; None for BuildKit's own work (`[internal] …`)."""
        match = _STEP.fullmatch(name)
        if match is None:
            return None
        instruction = _DIGEST.sub("", match["instruction"])
        return cls(match["stage"], match["position"], instruction)

    @property
    def is_from(self) -> bool:
        """The base image: implied by the stage starting, and BuildKit labels a base shared
        by several stages with any one of their names."""
        return self.instruction.upper().startswith("FROM ")

    @property
    def label(self) -> str:
        """As it reads in its own stage's row or lines: `[2/5] RUN composer install`."""
        return f"[{self.position}] {self.instruction}"

    def __str__(self) -> str:
        stage = f"{self.stage} " if self.stage else ""
        return f"[{stage}{self.position}] {self.instruction}"


class BuildProgress:
    """One build's progress lines, read in order."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._running: dict[str, str] = {}  # in the order they started

    def feed(self, line: str) -> Step | None:
        """The step this line starts, if it starts one."""
        match = _VERTEX.fullmatch(line.rstrip())
        if match is None:
            return None
        vertex, text = match.groups()
        if vertex not in self._names:
            self._names[vertex] = text
            self._running[vertex] = text
            return Step.parse(text)
        if _ENDED.fullmatch(text):
            self._running.pop(vertex, None)
        return None

    def current(self, stage: str) -> str | None:
        """What the build of `stage` is doing now: its latest step still running (labelled
        without the stage's name where it is that stage's), else BuildKit's own latest work
        (`exporting to image`), without digests; None between vertices."""
        running = list(self._running.values())
        steps = [step for step in map(Step.parse, running) if step is not None]
        if steps:
            step = steps[-1]
            return step.label if step.stage in (None, stage) else str(step)
        return _DIGEST.sub("", running[-1]) if running else None


def shorten(text: str, width: int) -> str:
    """`text` in `width` characters, cut at a word boundary with an ellipsis; a first word
    longer than the width is cut inside it, as there is no boundary to cut at."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    cut = textwrap.shorten(text, width=width, placeholder=" …")
    return cut if cut != "…" else text[: width - 1] + "…"
