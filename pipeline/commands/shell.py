"""`shell`: an interactive shell, or one command, in a stage's image, as CI would build it.

    build the stage (restored when its key hits, else built with only what it needs)
    → its image into the local Docker store under a private name (`build --load`)
    → `docker run -it` it → the shell's exit code; the private name goes at the end

The build is `build --target STAGE` with the run's own build args, platform, secrets and
cache: what CI ran, on this machine. The shell itself gets no secret, as the test stage gets
none it was not granted: a secret is a build input, never part of an image.

Where the stage, or a stage it needs, fails, the shell opens the failing stage's state just
before the failing step, its last good layer. BuildKit keeps no image of a stage's
intermediate steps, so that state is built again: the Dockerfile cut short before a step
(`rewrite.truncate`), halving the steps each time until the last prefix that builds is found.
Those builds reuse the engine's cache of the steps that ran, push no cache, and change no
other stage's key.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from pipeline.commands.build import BuildRun
from pipeline.commands.local import LocalCopies, load_name, project_name
from pipeline.commands.plan import load_graph, registry_client
from pipeline.dockerfile.rewrite import truncate
from pipeline.engines.results import Status
from pipeline.errors import EXIT_FAILED, EXIT_INTERRUPTED, EngineUnavailable, location

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipeline.dockerfile.graph import Graph
    from pipeline.dockerfile.stages import Stage
    from pipeline.output.report import RunReport
    from pipeline.settings.resolve import Settings

__all__ = ["LastGood", "last_good", "shell_command"]

SHELL = ("/bin/sh",)


@dataclass(frozen=True)
class LastGood:
    """The state a failed stage is opened in: built up to (not including) `failing`, its
    instruction number (`FROM` is 0)."""

    stage: Stage
    failing: int
    where: str  # `Dockerfile:line` of the failing step

    @property
    def step(self) -> str:
        return self.stage.instructions[self.failing].original.strip()


def shell_command(settings: Settings, stage: str, command: Sequence[str]) -> int:
    """Build (or restore) `stage`, then run `command`, or a shell, in its image."""
    docker = settings.docker or shutil.which("docker")
    if docker is None:
        raise EngineUnavailable("shell runs the image with the docker CLI; none is on PATH")
    settings = replace(
        settings,
        targets=(stage,),
        run_tests=False,
        push=False,
        report=None,
        junit=None,
        dotenv=None,
    )
    template = f"dagger-stages-shell/{{project}}-{{target}}:{uuid.uuid4().hex[:12]}"
    name = load_name(template, project=project_name(Path(settings.context)), target=stage)
    graph = load_graph(settings, tests=False)
    try:
        report = anyio.run(_build, settings, graph, name)
        if report.interrupted:
            return EXIT_INTERRUPTED
        failed = next((s for s in report.stages if s.status is Status.FAILED), None)
        if failed is None and not report.ok:
            return report.exit_code
        if failed is not None:
            found = last_good(settings, graph, failed.index, name)
            if found is None:
                print(
                    f"dagger-stages: {failed.name} fails at its FROM: there is no state to open",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            print(
                f"dagger-stages: {failed.name} failed at {found.where} ({found.step}); this "
                f"shell opens {failed.name} just before that step, its last good layer",
                file=sys.stderr,
            )
        return _run(docker, name, settings, command)
    finally:
        subprocess.run([docker, "rmi", name], capture_output=True, check=False)


async def _build(settings: Settings, graph: Graph, name: str) -> RunReport:
    """A `build` of the graph's targets that loads them as `name`."""
    async with registry_client(settings) as client:
        run = BuildRun(settings, graph, client, LocalCopies(load_tag=name, announce=False))
        return await run.run()


def last_good(settings: Settings, graph: Graph, index: int, name: str) -> LastGood | None:
    """Load as `name` the failed stage cut short before its failing step, found by halving:
    a prefix of `lo` instructions builds, one of `hi` fails. None when only its `FROM` is
    left and that fails too."""
    stage = graph.dockerfile.stages[index]
    lo, hi = 0, len(stage.instructions)
    original = Path(settings.dockerfile)
    with tempfile.TemporaryDirectory(prefix="dagger-stages-shell-") as scratch:
        path = Path(scratch) / original.name
        ignore = original.with_name(f"{original.name}.dockerignore")
        if ignore.is_file():
            shutil.copyfile(ignore, path.with_name(ignore.name))
        while hi - lo > 1:
            keep = (lo + hi) // 2
            path.write_text(truncate(graph.dockerfile, index, keep))
            probe = replace(settings, dockerfile=str(path), targets=(stage.name,), push_cache=False)
            print(
                f"dagger-stages: {stage.name}: building its first {keep} of"
                f" {len(stage.instructions)} steps, to find the one that fails",
                file=sys.stderr,
            )
            report = anyio.run(_build, probe, load_graph(probe, tests=False), name)
            if report.interrupted:
                raise KeyboardInterrupt
            built = any(s.index == index and s.status.has_image for s in report.stages)
            lo, hi = (keep, hi) if built else (lo, keep)
    if lo == 0:
        return None
    failing = stage.instructions[lo]
    return LastGood(stage, lo, location(str(original), failing.line) or "")


def _run(docker: str, name: str, settings: Settings, command: Sequence[str]) -> int:
    """`docker run` the image: with a terminal when this process has one, as `docker run -it`."""
    argv = [docker, "run", "--rm", "-i"]
    if sys.stdin.isatty():
        argv.append("-t")
    if settings.platform is not None:
        argv += ["--platform", str(settings.platform)]
    argv += [name, *(command or SHELL)]
    return subprocess.run(argv, check=False).returncode
