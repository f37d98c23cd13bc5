"""Command line: parse flags into `Settings`, run a command, turn errors into exit codes.

Exit codes are the table in `errors`; an unexpected exception is a crash notice and a log file.
Each command's module is imported by its handler, and the config file's reader only when there
is a config file: start-up is most of a warm build's time, and a run needs one command.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import sys
import tempfile
import traceback
from argparse import SUPPRESS
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import __version__
from pipeline.commands.local import DEFAULT_LOAD_TAG, LocalCopies, parse_output
from pipeline.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_PIPE, ToolError
from pipeline.settings.ci import detect
from pipeline.settings.config_file import CONFIG_FILENAME, find_config
from pipeline.settings.resolve import ENGINES, JOBS, OPTIONS, Settings, resolve_settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from _typeshed import SupportsWrite


__all__ = ["main", "run"]


def run() -> None:
    """Console-script entry point.

    The cyclic garbage collector is held off until a command has loaded its modules
    (`_loaded`): loading them makes few cycles, yet passes of the collector ran through it
    and cost a warm build about a tenth of its start-up. `pipeline/main.py` holds it off
    from its first line.

    With its work done and output flushed, the process ends without tearing the interpreter
    down, which takes 50-70 ms at the end of every build. Not after Dagger was used: its SDK
    sends its last telemetry from an exit handler.
    """
    gc.disable()
    try:
        code = main()
    except SystemExit as done:  # --help, --version and argparse's usage errors
        code = done.code if isinstance(done.code, int) else 0 if done.code is None else 2
    except BrokenPipeError:
        code = _pipe_closed()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = _pipe_closed()
    if "dagger" in sys.modules:
        sys.exit(code)
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if argv[:1] == ["shell"] and "--" in argv:
        argv, command = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = parser.parse_args(argv)
    if command:
        args.shell_command = command
    try:
        return int(args.handler(args))
    except ToolError as exc:
        return _report(exc)
    except BrokenPipeError:
        return _pipe_closed()
    except BaseExceptionGroup as group:
        if group.subgroup(BrokenPipeError) is not None:
            return _pipe_closed()
        first = _first_tool_error(group)
        return _crash() if first is None else _report(first)
    except KeyboardInterrupt:
        print("dagger-stages: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        return _crash()


def _loaded() -> None:
    """The collector back on for a command that runs on, from a command line (`run`). What
    start-up made is frozen first, so that no pass of the collector goes through it again."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _pipe_closed() -> int:
    """The reader of our output went away (`plan --json | head`): end quietly, as `cat` or
    `git log` do when SIGPIPE kills them, with the shell's code for that, 141.

    Both streams are pointed at /dev/null first: what is still buffered for the closed pipe
    would otherwise fail again as the interpreter flushes it on the way out.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            continue  # not a real file (a test's capture): nothing is flushed to a pipe
    os.close(devnull)
    return EXIT_PIPE


def _report(exc: ToolError) -> int:
    print(f"dagger-stages: {exc}" if exc.location is None else str(exc), file=sys.stderr)
    return exc.exit_code


def _first_tool_error(group: BaseExceptionGroup[BaseException]) -> ToolError | None:
    """Task groups wrap errors; a group made only of our errors is reported as its first."""
    leaves: list[BaseException] = []

    def collect(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                collect(inner)
        else:
            leaves.append(exc)

    collect(group)
    if leaves and all(isinstance(leaf, ToolError) for leaf in leaves):
        first = leaves[0]
        assert isinstance(first, ToolError)
        return first
    return None


def _crash() -> int:
    fd, log = tempfile.mkstemp(prefix="dagger-stages-crash-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        traceback.print_exc(file=handle)
    print(f"dagger-stages: internal error, please report it; details in {log}", file=sys.stderr)
    return EXIT_INTERNAL


class _Parser(argparse.ArgumentParser):
    """argparse, except that help written to a closed pipe fails as any other output does,
    instead of argparse swallowing the error and exiting 0."""

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        if message:
            (file or sys.stderr).write(message)


def _parser() -> argparse.ArgumentParser:
    """Each command takes only the flags that change what it does, each help with its default.

    A flag that sets a `Settings` field has the field's name as its dest and no default of its
    own (`SUPPRESS`): only the flags given reach the settings' flag layer, so its help says the
    default, read from `Settings` where it is a constant.
    """
    parser = _Parser(
        prog="dagger-stages",
        description="Build multi-stage Dockerfiles stage by stage, in parallel, cached per stage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plan = commands.add_parser("plan", help="show the stage graph and what a build would do")
    _add_inputs(plan, target="stage to plan for")
    _add_image_repo(plan)
    _add_engine(plan)
    _add_secret(plan, build=False)
    plan.add_argument(
        "--format",
        choices=("table", "json", "mermaid"),
        default="table",
        help="table, json (docs/plan-json.md) or a Mermaid flowchart (default: table)",
    )
    plan.add_argument(
        "--json", action="store_true", help="the same as --format json (default: off)"
    )
    plan.add_argument(
        "--offline",
        action="store_true",
        help="ask no registry: images stay unpinned and the cache unknown (default: ask)",
    )
    plan.set_defaults(handler=_plan)

    build = commands.add_parser("build", help="build the needed stages, cached per stage")
    _add_inputs(build, target="stage to build")
    _add_image_repo(build)
    _add_engine(build)
    _add_secret(build, build=True)
    _add_build(build)
    _add_local(build)
    build.set_defaults(handler=_build)

    shell = commands.add_parser(
        "shell",
        help="a shell, or a command, in a stage's image: restored, else built; where the stage"
        " fails, its state just before the failing step",
        usage="%(prog)s [options] STAGE [-- CMD [ARG ...]]",
        epilog="After --, a command to run instead of /bin/sh, e.g. -- ls -l /app.",
    )
    _add_inputs(shell, target=None)  # STAGE is the target
    _add_image_repo(shell)
    _add_engine(shell)
    _add_secret(shell, build=True)
    shell.add_argument(
        "--docker",
        default=SUPPRESS,
        metavar="PATH",
        help="the docker CLI that builds (--engine docker) and runs the shell (default: "
        "$DAGGER_STAGES_DOCKER, else docker on PATH)",
    )
    shell.add_argument("stage", metavar="STAGE", help="the stage whose image to open")
    shell.set_defaults(handler=_shell, shell_command=[])

    prune = commands.add_parser("prune", help="delete old stage images from the cache repo")
    _add_inputs(prune, target="stage whose restored cache images are kept")
    prune.add_argument(
        "--older-than", default="14d", metavar="AGE", help="e.g. 14d, 36h, 2w (default: 14d)"
    )
    prune.add_argument(
        "--keep", type=int, default=3, metavar="N", help="newest tags kept per stage (default: 3)"
    )
    prune.add_argument(
        "--yes", action="store_true", help="delete; without it, a dry run (default: dry run)"
    )
    prune.set_defaults(handler=_prune)
    return parser


def _add_inputs(parser: argparse.ArgumentParser, *, target: str | None) -> None:
    """What the stages and their keys are made of, and where their cache is: every command;
    `--target` where the command takes one (`target`, its help)."""
    parser.add_argument(
        "--config", metavar="FILE", help=f"config file (default: {CONFIG_FILENAME}, if there)"
    )
    parser.add_argument(
        "--dockerfile",
        "-f",
        default=SUPPRESS,
        metavar="FILE",
        help=f"the Dockerfile (default: CONTEXT/{Settings.dockerfile})",
    )
    parser.add_argument(
        "--context",
        default=SUPPRESS,
        metavar="DIR",
        help=f"build context (default: {Settings.context})",
    )
    if target is not None:
        parser.add_argument(
            "--target",
            dest="targets",
            action="append",
            default=SUPPRESS,
            metavar="STAGE",
            help=f"{target}; repeatable (default: the last stage)",
        )
    parser.add_argument(
        "--build-arg",
        dest="build_args",
        action="append",
        default=SUPPRESS,
        metavar="K=V",
        help="set a declared ARG; repeatable (default: the Dockerfile's values)",
    )
    parser.add_argument(
        "--platform",
        dest="platforms",
        action="append",
        default=SUPPRESS,
        metavar="OS/ARCH[,OS/ARCH]",
        help="target platform, repeatable or comma-separated: one image index over them "
        "(default: this machine's)",
    )
    parser.add_argument(
        "--cache-repo",
        default=SUPPRESS,
        metavar="REPO",
        help="registry repository for stage images, host[:port]/path (default: from CI, "
        "<image repo>/cache; none locally)",
    )


def _add_image_repo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-repo",
        default=SUPPRESS,
        metavar="REPO",
        help="where --push publishes bare tags; the cache goes beside it, in <REPO>/cache "
        "(default: from CI; none locally)",
    )


def _add_engine(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        default=SUPPRESS,
        metavar="{" + ",".join(ENGINES) + "}",
        help=f"executor (default: {Settings.engine})",
    )
    parser.add_argument(
        "--engine-reaches",
        default=SUPPRESS,
        metavar="HOST[,HOST]",
        help="loopback or plain-HTTP registries the Dagger engine reaches all the same "
        "(it shares this network, or its config marks them http); * for all (default: none)",
    )


def _add_secret(parser: argparse.ArgumentParser, *, build: bool) -> None:
    """`plan` takes the build's secrets too, so that one set of flags serves both commands."""
    use = (
        "for RUN --mount=type=secret, buildx syntax; repeatable; its value never reaches "
        "keys, logs or images"
        if build
        else "as build takes it; plan reads no value"
    )
    parser.add_argument(
        "--secret",
        dest="secrets",
        action="append",
        default=SUPPRESS,
        metavar="id=ID,env=VAR|src=PATH",
        help=f"a build secret {use} (default: none)",
    )


def _add_build(build: argparse.ArgumentParser) -> None:
    """What only a build does: run, push, publish, test and report."""
    build.add_argument(
        "--jobs", default=SUPPRESS, metavar="N", help=f"stages built at once (default: {JOBS})"
    )
    build.add_argument(
        "--fail-fast",
        action="store_true",
        default=SUPPRESS,
        help="stop everything when a stage fails (default: finish the independent stages)",
    )
    build.add_argument(
        "--no-cache",
        action="store_true",
        default=SUPPRESS,
        help="restore nothing and bypass the engine's own cache too: every needed stage is built"
        " and every RUN step runs again, as with docker build --no-cache; the cache is still"
        " pushed (default: restore what is cached)",
    )
    build.add_argument(
        "--no-push-cache",
        dest="push_cache",
        action="store_false",
        default=SUPPRESS,
        help="push no stage image to the cache repo (default: push each one built)",
    )
    build.add_argument(
        "--docker",
        default=SUPPRESS,
        metavar="PATH",
        help="the docker CLI for --engine docker (default: $DAGGER_STAGES_DOCKER, else docker "
        "on PATH)",
    )
    build.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="every line of every build and push (default: one line per stage event; "
        "a failing stage's whole log)",
    )
    for flag, what in (
        ("--report", "the JSON report"),
        ("--junit", "a JUnit XML, a testcase per stage"),
        ("--dotenv", "digests and published refs as KEY=value lines"),
    ):
        build.add_argument(
            flag, default=SUPPRESS, metavar="FILE", help=f"write {what} here (default: none)"
        )
    build.add_argument(
        "--push",
        action="store_true",
        default=SUPPRESS,
        help="publish the targets (config: publish) (default: publish nothing)",
    )
    build.add_argument(
        "--publish",
        dest="publish",
        action="append",
        default=SUPPRESS,
        metavar="STAGE=TAG",
        help="with --push, publish STAGE under this tag template; repeatable, replaces the "
        "config's list (default: {sha}, the git tag, latest on the default branch)",
    )
    build.add_argument(
        "--artifacts-dir",
        default=SUPPRESS,
        metavar="DIR",
        help=f"where the test stage's artifacts go (default: {Settings.artifacts_dir})",
    )
    build.add_argument(
        "--no-test",
        dest="run_tests",
        action="store_false",
        default=SUPPRESS,
        help="do not run the test stage (default: run it, if the config has one)",
    )


def _add_local(build: argparse.ArgumentParser) -> None:
    """What a build leaves on this machine: images in Docker, files on the host."""
    build.add_argument(
        "--load",
        action="store_true",
        help="put each target's image into the local Docker image store, for docker run"
        " (default: off)",
    )
    build.add_argument(
        "--load-tag",
        default=DEFAULT_LOAD_TAG,
        metavar="TEMPLATE",
        help="the name --load gives, with {project} (the context folder's name) and {target}"
        f" (default: {DEFAULT_LOAD_TAG})",
    )
    build.add_argument(
        "--output",
        dest="outputs",
        action="append",
        default=[],
        metavar="STAGE:PATH=DIR",
        help="copy PATH from STAGE's image into DIR on the host, as buildx --output type=local;"
        " repeatable (default: none)",
    )


def _settings(args: argparse.Namespace) -> Settings:
    """The flags given, by dest (a field's name), over the environment, config file and CI."""
    flags = {name: value for name, value in vars(args).items() if name in OPTIONS}
    config_path = find_config(args.config, Path("."))
    config = None
    if config_path is not None:
        from pipeline.settings.config import load_config

        config = load_config(config_path)
    ci = detect(os.environ, Path.cwd())
    return resolve_settings(flags, config=config, ci=ci, env=os.environ)


def _plan(args: argparse.Namespace) -> int:
    from pipeline.commands.plan import run_plan

    output = "json" if args.json else args.format
    return run_plan(_settings(args), offline=args.offline, output=output)


def _build(args: argparse.Namespace) -> int:
    import anyio

    from pipeline.commands.build import run_build
    from pipeline.commands.plan import load_graph

    outputs = tuple(parse_output(text) for text in args.outputs)
    local = LocalCopies(load_tag=args.load_tag if args.load else None, outputs=outputs)
    settings = _settings(args)
    also = [output.stage for output in outputs]
    graph = load_graph(settings, tests=settings.run_tests, also=also)
    _loaded()
    build = functools.partial(run_build, settings, graph, local, verbose=args.verbose)
    return int(anyio.run(build))


def _shell(args: argparse.Namespace) -> int:
    """Everything after `--` is the command (split off in `main`), options included."""
    from pipeline.commands.shell import shell_command

    _loaded()
    return shell_command(_settings(args), args.stage, args.shell_command)


def _prune(args: argparse.Namespace) -> int:
    from pipeline.commands.prune import parse_age, prune_command

    older_than = parse_age(args.older_than)
    _loaded()
    return prune_command(_settings(args), older_than, args.keep, yes=args.yes)
