"""Warm runs of several copies of the tool, interleaved, against one warm cache: an A/B of
start-up changes that `run.py`'s warm row is too noisy to see on a shared two-core machine.

One fan-in project (`run.FAN_IN`) and a fresh cache repo behind a latency proxy; the first
copy builds it once, then every round runs each copy once (the order reversed every other
round) and checks that it restored everything. Nothing is wiped: a warm run asks the engine
nothing, so the shared BuildKit cache is left alone. Each copy is a tree holding `pipeline/`
(a worktree, or `git archive HEAD pipeline | tar -x -C DIR`), with its bytecode compiled first
as an installed copy's would be.

    python bench/warm_ab.py [--rounds 40] [--delay-ms 0] NAME=TREE[,docker=PATH] ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from latency_proxy import LatencyProxy
from run import DOCKER, FAN_IN, TOOL_ENV, fan_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("copies", nargs="+", metavar="NAME=TREE[,docker=PATH]")
    args = parser.parse_args()
    copies: dict[str, tuple[Path, str]] = {}
    for spec in args.copies:
        name, _, rest = spec.partition("=")
        tree, *options = rest.split(",")
        docker = dict(option.split("=", 1) for option in options).get("docker", DOCKER)
        copies[name] = (Path(tree).resolve(), docker)
    for tree, _ in copies.values():
        compile_all = [sys.executable, "-m", "compileall", "-q", str(tree / "pipeline")]
        subprocess.run(compile_all, env=TOOL_ENV, check=True)
    proxy = LatencyProxy(args.delay_ms / 1000)
    proxy.start()
    try:
        seconds = measure(copies, proxy, args.rounds)
    finally:
        proxy.stop()
    for name, times in seconds.items():
        ordered = sorted(times)
        quartiles = ordered[len(ordered) // 4], ordered[3 * len(ordered) // 4]
        print(
            f"{name:12} median {statistics.median(times) * 1000:6.1f} ms"
            f"  quartiles {quartiles[0] * 1000:.1f}-{quartiles[1] * 1000:.1f}  n={len(times)}"
        )
    names = list(seconds)
    for other in names[1:]:
        paired = [a - b for a, b in zip(seconds[names[0]], seconds[other], strict=True)]
        print(f"{names[0]} - {other}, paired: median {statistics.median(paired) * 1000:.1f} ms")


def measure(
    copies: dict[str, tuple[Path, str]], proxy: LatencyProxy, rounds: int
) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {name: [] for name in copies}
    with tempfile.TemporaryDirectory(prefix="bench-warm-ab-") as tmp:
        project = Path(tmp)
        fan_in(project, f"127.0.0.1:{proxy.port}/busybox:1", FAN_IN)
        repo = f"127.0.0.1:{proxy.port}/bench-warm-ab-{uuid.uuid4().hex[:8]}/cache"
        report = project / "report.json"

        def run(tree: Path, docker: str) -> float:
            command = [sys.executable, str(tree / "pipeline" / "main.py"), "build"]
            command += ["--engine", "docker", "--docker", docker, "--cache-repo", repo]
            command += ["--verbose", "--report", str(report)]
            start = time.perf_counter()
            result = subprocess.run(
                command, cwd=project, env=TOOL_ENV, capture_output=True, text=True, check=False
            )
            elapsed = time.perf_counter() - start
            if result.returncode != 0:
                raise RuntimeError(f"{tree}: exit {result.returncode}\n{result.stderr[-3000:]}")
            return elapsed

        first_tree, _ = next(iter(copies.values()))
        run(first_tree, DOCKER)  # fills the cache
        names = list(copies)
        for number in range(rounds):
            for name in names if number % 2 == 0 else names[::-1]:
                seconds[name].append(run(*copies[name]))
                statuses = {stage["status"] for stage in json.loads(report.read_text())["stages"]}
                if not statuses <= {"cached", "skipped"}:
                    raise RuntimeError(f"{name}: not a warm run: {sorted(statuses)}")
    return seconds


if __name__ == "__main__":
    main()
