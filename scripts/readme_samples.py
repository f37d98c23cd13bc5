"""The sample outputs in README.md and docs/*.md, checked against the real commands or rewritten
from them, so that the documentation cannot drift from what the tool prints.

A sample is the fenced block right after a marker line:

    <!-- sample: dagger-stages plan --config examples/php-app/dagger-stages.yaml --offline -->
    <!-- sample: quickstart 3/4 -->
    <!-- sample: quickstart 4/4 summary -->
    <!-- sample: quickstart 4/4 events -->
    <!-- sample: dagger-stages plan --json --offline --config examples/quickstart/… (fields) -->
    <!-- sample: quickstart --report (fields) -->

`dagger-stages ARGS` runs here, from the repository's root, outside any CI, with stderr merged
into stdout as a terminal shows them. `quickstart SECTION [summary]` is the output of the
section of `scripts/quickstart` whose title starts with SECTION (`== 3/4 …`), which needs the
Docker daemon and a registry; `summary` keeps only the lines that are not one stage's log
(`[stage] …`), which BuildKit's cache makes differ from one machine to the next, and `events`
only the stage events of that log (`[stage] started`, `… pushed to …`), without its steps.
`quickstart --report` is the JSON report of its last build. A JSON sample abridged by hand ends
in `(fields)`: it must show every field name the command prints, and `--write` leaves it to a
person.

Two honest runs differ in times, keys and digests, the quickstart's cache repository, its base
image (public where Docker Hub answers, else local), the branch in hint tags, column widths and
the order in which concurrent stages print, so these are masked before comparing
(`normalise`); anything else that differs is drift.

    python scripts/readme_samples.py                  # check the samples that need no service
    python scripts/readme_samples.py --quickstart-output OUT --quickstart-report JSON   # and
                                                      # the quickstart's, from a run of it
    python scripts/readme_samples.py --write          # rewrite all (runs scripts/quickstart)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", "docs/*.md")
MARKER = re.compile(r"<!-- sample: (?P<command>.+?) -->")
FENCE = "```"
REWRITE = "python scripts/readme_samples.py --write"
# What CI or a session sets that would change a command's output.
_FOREIGN = re.compile(r"CI|GITHUB_.*|GITLAB_.*|CI_.*|DAGGER_.*|REGISTRY_.*")

_MASKS = (
    (re.compile(r"run-\d{8}-\d{6}-\d+"), "run-ID"),
    (re.compile(r"(?<![\w.-])(localhost:5000/busybox:1|busybox:1\.36)(?![\w.:-])"), "BASE"),
    (re.compile(r"[0-9a-f]{12,}"), "HEX"),
    (re.compile(r"\b\d+(\.\d+)?s\b"), "Ns"),
    (re.compile(r"^([\w.-]+)--[\w.-]+$"), r"\1--BRANCH"),
)


@dataclass(frozen=True)
class Sample:
    """A fenced block and the command whose output it shows; `body` is what the file holds."""

    path: Path
    line: int  # 1-based line of the marker
    command: str
    start: int  # index of the block's first line, after the opening fence
    end: int  # index of the closing fence
    body: str

    @property
    def is_quickstart(self) -> bool:
        return self.command.split()[0] == "quickstart"

    @property
    def fields_only(self) -> bool:
        return self.command.endswith(" (fields)")

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def documents() -> list[Path]:
    return sorted({path for pattern in DOCUMENTS for path in ROOT.glob(pattern)})


def samples(path: Path) -> list[Sample]:
    lines = path.read_text().splitlines()
    found: list[Sample] = []
    for index, text in enumerate(lines):
        match = MARKER.fullmatch(text.strip())
        if match is None:
            continue
        opening = index + 1
        if opening >= len(lines) or not lines[opening].startswith(FENCE):
            raise SystemExit(f"{path}:{index + 1}: a sample marker must precede a fenced block")
        end = lines.index(FENCE, opening + 1)
        body = "\n".join(lines[opening + 1 : end])
        found.append(Sample(path, index + 1, match["command"], opening + 1, end, body))
    return found


def run_command(command: str) -> str:
    """A `dagger-stages` command's output, as a user outside CI sees it on a terminal."""
    words = command.removesuffix(" (fields)").split()
    if words[0] != "dagger-stages":
        raise SystemExit(f"unknown sample command: {command}")
    env = {name: value for name, value in os.environ.items() if not _FOREIGN.fullmatch(name)}
    env["PYTHONUNBUFFERED"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *words[1:]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    return done.stdout.rstrip("\n")


def quickstart_section(output: str, command: str) -> str:
    """The lines under the section whose title starts with the command's SECTION."""
    words = command.split()[1:]
    mode = words[-1] if words[-1] in ("summary", "events") else None
    title = " ".join(words[:-1] if mode else words)
    sections = re.split(r"^== ", output, flags=re.MULTILINE)
    for section in sections:
        if section.startswith(title):
            lines = section.splitlines()[1:]
            if mode == "summary":
                lines = [line for line in lines if not line.startswith("[")]
            elif mode == "events":
                lines = [line for line in lines if _is_event(line)]
            return "\n".join(lines).strip("\n")
    raise SystemExit(f"scripts/quickstart printed no section {title!r}")


def _is_event(line: str) -> bool:
    """`[stage] started`, not `[stage] [2/4] COPY …`: a step line is BuildKit's, and its cache
    decides whether it shows."""
    stage, _, rest = line.partition("] ")
    return stage.startswith("[") and bool(rest) and not rest.startswith("[")


@dataclass(frozen=True)
class Quickstart:
    """What a run of scripts/quickstart printed, and the report of its last build."""

    output: str
    report: str

    def sample(self, command: str) -> str:
        if command.split()[1] == "--report":
            return self.report
        return quickstart_section(self.output, command)


def run_quickstart() -> Quickstart:
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        done = subprocess.run(
            ["bash", "scripts/quickstart", "--python", sys.executable],
            cwd=ROOT,
            env={**os.environ, "QUICKSTART_REPORT": str(report), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"scripts/quickstart failed ({done.returncode}):\n{done.stdout}")
        return Quickstart(done.stdout, report.read_text())


def normalise(text: str, *, ordered: bool) -> list[str]:
    """What two honest runs share: masked, whitespace collapsed, blank lines out; sorted unless
    the command prints in a fixed order."""
    lines: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        for pattern, replacement in _MASKS:
            line = pattern.sub(replacement, line)
        if line:
            lines.append(line)
    return lines if ordered else sorted(lines)


def field_names(value: object) -> set[str]:
    if isinstance(value, dict):
        return {str(name) for name in value} | {n for v in value.values() for n in field_names(v)}
    if isinstance(value, list):
        return {name for item in value for name in field_names(item)}
    return set()


def missing_fields(sample: Sample, actual: str) -> list[str]:
    """The field names the command prints that the abridged sample does not show."""
    shown = set(re.findall(r'"(\w+)":', sample.body))
    return sorted(field_names(json.loads(actual)) - shown)


def stale(sample: Sample, actual: str) -> bool:
    if sample.fields_only:
        return bool(missing_fields(sample, actual))
    ordered = not sample.is_quickstart
    return normalise(sample.body, ordered=ordered) != normalise(actual, ordered=ordered)


def actual_output(sample: Sample, quickstart: Quickstart | None) -> str | None:
    if not sample.is_quickstart:
        return run_command(sample.command)
    return (
        None if quickstart is None else quickstart.sample(sample.command.removesuffix(" (fields)"))
    )


def write(path: Path, outputs: dict[Sample, str]) -> None:
    lines = path.read_text().splitlines()
    for sample in sorted(outputs, key=lambda s: s.start, reverse=True):
        lines[sample.start : sample.end] = outputs[sample].splitlines()
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite every sample")
    parser.add_argument(
        "--quickstart-output",
        type=Path,
        metavar="FILE",
        help="scripts/quickstart's output, to check (or write) its samples without running it",
    )
    parser.add_argument(
        "--quickstart-report",
        type=Path,
        metavar="FILE",
        help="the report of that run's last build (QUICKSTART_REPORT)",
    )
    args = parser.parse_args(argv)
    quickstart = None
    if args.quickstart_output is not None and args.quickstart_report is not None:
        quickstart = Quickstart(
            args.quickstart_output.read_text(), args.quickstart_report.read_text()
        )
    found = {path: samples(path) for path in documents()}
    wanted = any(sample.is_quickstart for these in found.values() for sample in these)
    if args.write and quickstart is None and wanted:
        quickstart = run_quickstart()
    problems: list[str] = []
    for path, these in found.items():
        outputs: dict[Sample, str] = {}
        for sample in these:
            actual = actual_output(sample, quickstart)
            if actual is None:
                continue
            if not stale(sample, actual):
                continue
            if sample.fields_only:
                missing = ", ".join(missing_fields(sample, actual))
                problems.append(f"{sample.where()}: add {missing} to the sample, by hand")
                continue
            outputs[sample] = actual
            problems.append(f"{sample.where()}: the sample of `{sample.command}` is stale")
        if args.write and outputs:
            write(path, outputs)
    by_hand = [problem for problem in problems if problem.endswith("by hand")]
    if args.write:
        for problem in problems:
            if problem not in by_hand:
                print(f"rewritten: {problem.removesuffix(' is stale')}")
    else:
        by_hand = problems
    if by_hand:
        print("\n".join(by_hand), file=sys.stderr)
        if not args.write:
            print(f"Regenerate them with: {REWRITE}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
