"""Where one build's time goes: its log lines and every registry request, on one clock.

Runs one `dagger-stages build` of a bench scenario through the latency proxy and prints each
line the tool wrote (with `--verbose`, BuildKit's too) and each request any client sent to the
registry, in order, as seconds since the process started. What bench/run.py reports as one
number, this shows as a sequence, to find what sits on the critical path.

    python bench/timeline.py cold [--delay-ms 100]
    python bench/timeline.py intermediate [--delay-ms 100]   # the second commit, after a wipe
    python bench/timeline.py warm [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from latency_proxy import LatencyProxy
from run import (
    DOCKER,
    FAN_IN,
    ROOT,
    TOOL_ENV,
    Bench,
    commit,
    fan_in,
    fresh_repo,
    intermediate,
    nonce,
)


def timed_build(proxy: LatencyProxy, project: Path, repo: str, *extra: str) -> list[str]:
    """One build, its stderr lines and the proxy's requests merged, as printable lines."""
    command = [sys.executable, str(ROOT / "pipeline" / "main.py"), "build", "--engine"]
    command += ["docker", "--docker", DOCKER, "--cache-repo", f"{repo}/cache", "--verbose"]
    seen = len(proxy.requests)
    start = time.monotonic()
    process = subprocess.Popen(
        [*command, *extra], cwd=project, env=TOOL_ENV, stderr=subprocess.PIPE, text=True
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append((time.monotonic(), line.rstrip("\n")))

    reader = threading.Thread(target=read)
    reader.start()
    code = process.wait()
    end = time.monotonic()
    reader.join()
    events = [(at, f"  {line}") for at, line in lines]
    events += [(at, f"→ {kind}: {line}") for at, kind, line in proxy.requests[seen:] if at <= end]
    events.sort()
    printed = [f"{at - start:7.3f} {text}" for at, text in events]
    return [*printed, f"{end - start:7.3f} exit {code}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["cold", "warm", "intermediate"])
    parser.add_argument("--delay-ms", type=float, default=100.0)
    # any other argument goes to the measured build, e.g. --report FILE
    args, extra = parser.parse_known_args(argv)
    proxy = LatencyProxy(args.delay_ms / 1000)
    proxy.start()
    bench = Bench()
    base = f"127.0.0.1:{proxy.port}/busybox:1"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            project = Path(tmp)
            repo = fresh_repo(proxy, "timeline")
            if args.scenario == "intermediate":
                intermediate(project, base, nonce())
            else:
                fan_in(project, base, FAN_IN)
            bench.wipe()
            if args.scenario != "cold":
                timed_build(proxy, project, repo)
                bench.wipe()
            if args.scenario == "intermediate":
                (project / "input.txt").write_text("input v2\n")
                commit(project, "change")
            print("\n".join(timed_build(proxy, project, repo, *extra)))
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
