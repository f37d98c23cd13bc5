"""How long a COPY's context digest takes on a large context, cold and memoized.

Generates a context of small files in 10-file directories plus a few 5 MB files, then times
`BuildContext.digest(["."])` on a fresh BuildContext (nothing memoized; the files are in the
page cache, since they were just written) and a second, overlapping `digest` on the same one.
Prints a table and writes bench/results/context_keys.json.

    python bench/context_keys.py [--files N] [--big N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from pipeline.cache.context import BuildContext
from pipeline.cache.ignore import IgnoreRules

TARGET_SECONDS = 1.5
FILES_PER_DIR = 10
BIG_SIZE = 5 * 1024 * 1024
RESULTS = Path(__file__).parent / "results" / "context_keys.json"
DOCKERIGNORE = "\n".join([".git", "**/*.tmp", "node_modules", "!node_modules/keep.js", ""])


def generate(root: Path, files: int, big: int) -> None:
    """Small files of 200-2000 bytes, some executable, and `big` files of 5 MB."""
    (root / ".dockerignore").write_text(DOCKERIGNORE)
    for index in range(files):
        directory = root / "src" / f"d{index // FILES_PER_DIR:05d}"
        if index % FILES_PER_DIR == 0:
            directory.mkdir(parents=True)
        path = directory / f"f{index % FILES_PER_DIR}.txt"
        path.write_bytes(os.urandom(200 + index % 1800))
        if index % 50 == 0:
            path.chmod(0o755)
    assets = root / "assets"
    assets.mkdir()
    for index in range(big):
        (assets / f"big{index}.bin").write_bytes(os.urandom(BIG_SIZE))


def timed(context: BuildContext, sources: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    context.digest(sources)
    seconds = time.perf_counter() - start
    return seconds, sum(entry.kind == "file" for entry in context.select(sources))


def run(root: Path, files: int, big: int) -> dict[str, object]:
    generate(root, files, big)
    context = BuildContext(root, IgnoreRules.load(root, root / "Dockerfile"))
    phases = {
        "cold digest(['.'])": ["."],
        "second digest(['src', 'assets/*.bin'])": ["src", "assets/*.bin"],
    }
    results = []
    for name, sources in phases.items():
        seconds, selected = timed(context, sources)
        results.append(
            {
                "phase": name,
                "seconds": round(seconds, 4),
                "files": selected,
                "files_per_second": round(selected / seconds) if seconds else None,
                "of_target": round(seconds / TARGET_SECONDS, 3),
            }
        )
    return {
        "files": files,
        "big_files": big,
        "big_file_bytes": BIG_SIZE,
        "target_seconds": TARGET_SECONDS,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "phases": results,
    }


def report(result: dict[str, object]) -> str:
    phases = result["phases"]
    assert isinstance(phases, list)
    lines = [f"{'phase':<40} {'seconds':>8} {'files':>7} {'files/s':>9}  vs {TARGET_SECONDS} s"]
    for phase in phases:
        lines.append(
            f"{phase['phase']:<40} {phase['seconds']:>8.3f} {phase['files']:>7}"
            f" {phase['files_per_second']:>9} {phase['of_target']:>6.2f} × target"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000, help="small files (default 20000)")
    parser.add_argument("--big", type=int, default=3, help="5 MB files (default 3)")
    parser.add_argument("--keep", type=Path, help="generate here and keep it (must not exist)")
    args = parser.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        result = run(args.keep, args.files, args.big)
    else:
        with tempfile.TemporaryDirectory(prefix="context-keys-") as tmp:
            result = run(Path(tmp), args.files, args.big)
    print(report(result))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
