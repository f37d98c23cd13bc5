"""Command line: parse flags into `Settings`, run a command, turn errors into exit codes.

Exit codes are the table in `errors`; an unexpected exception is a crash notice and a log file.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import traceback
from argparse import SUPPRESS
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from pipeline import __version__
from pipeline.commands.build import run_build
from pipeline.commands.plan import load_graph, run_plan
from pipeline.commands.prune import parse_age, prune_command
from pipeline.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, ToolError
from pipeline.settings.ci import detect
from pipeline.settings.config import find_config, load_config
from pipeline.settings.resolve import ENGINES, JOBS, OPTIONS, Settings, resolve_settings

if TYPE_CHECKING:
    from collections.abc import Sequence


__all__ = ["main", "run"]


def run() -> None:
    """Console-script entry point.

    With its work done and output flushed, the process ends without tearing the interpreter
    down, which takes 50-70 ms at the end of every build. Not after Dagger was used: its SDK
    sends its last telemetry from an exit handler.
    """
    code = main()
    if "dagger" in sys.modules:
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ToolError as exc:
        return _report(exc)
    except BaseExceptionGroup as group:
        first = _first_tool_error(group)
        return _crash() if first is None else _report(first)
    except KeyboardInterrupt:
        print("dagger-stages: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        return _crash()


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


class _DefaultsShown(argparse.HelpFormatter):
    """Every flag's help ends with its default. Settings' flags have none of their own (only
    the flags given reach the flag layer), so theirs is the `Settings` field's default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or "default" in text or action.help == SUPPRESS:
            return action.help
        if action.nargs == 0:
            return f"{text} (default: off)" if action.dest != "help" else action.help
        value = _SETTING_DEFAULTS.get(action.dest, action.default)
        shown = "none" if value in (None, SUPPRESS) or value in ((), {}) else str(value)
        return f"{text} (default: {shown})"


_SETTING_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(Settings) if f.default is not dataclasses.MISSING
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dagger-stages",
        description="Build multi-stage Dockerfiles stage by stage, in parallel, cached per stage.",
        formatter_class=_DefaultsShown,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plan = commands.add_parser(
        "plan",
        formatter_class=_DefaultsShown,
        help="show the stage graph and what a build would do",
    )
    _add_common(plan)
    plan.add_argument(
        "--format",
        choices=("table", "json", "mermaid"),
        default="table",
        help="table (default), json (docs/plan-json.md) or a Mermaid flowchart",
    )
    plan.add_argument("--json", action="store_true", help="the same as --format json")
    plan.add_argument(
        "--offline",
        action="store_true",
        help="ask no registry: images stay unpinned and the cache unknown",
    )
    plan.set_defaults(handler=_plan)

    build = commands.add_parser(
        "build", formatter_class=_DefaultsShown, help="build the needed stages, cached per stage"
    )
    _add_common(build)
    build.add_argument(
        "--jobs", default=SUPPRESS, metavar="N", help=f"stages built at once (default: {JOBS})"
    )
    build.add_argument(
        "--fail-fast",
        action="store_true",
        default=SUPPRESS,
        help="stop everything when a stage fails",
    )
    build.add_argument(
        "--no-cache",
        action="store_true",
        default=SUPPRESS,
        help="restore nothing and bypass the engine's own cache too: every needed stage is built"
        " and every RUN step runs again, as with docker build --no-cache (the cache is still"
        " pushed)",
    )
    build.add_argument(
        "--no-push-cache",
        dest="push_cache",
        action="store_false",
        default=SUPPRESS,
        help="push no stage image to the cache repo",
    )
    build.add_argument(
        "--docker",
        default=SUPPRESS,
        metavar="PATH",
        help="the docker CLI for --engine docker (default: $DAGGER_STAGES_DOCKER, else docker)",
    )
    build.add_argument(
        "--report", default=SUPPRESS, metavar="FILE", help="write the JSON report here"
    )
    build.add_argument(
        "--junit",
        default=SUPPRESS,
        metavar="FILE",
        help="write a JUnit XML, a testcase per stage",
    )
    build.add_argument(
        "--dotenv",
        default=SUPPRESS,
        metavar="FILE",
        help="write digests and published refs as KEY=value lines",
    )
    build.add_argument(
        "--push",
        action="store_true",
        default=SUPPRESS,
        help="publish the targets (config: publish)",
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
        help="do not run the test stage",
    )
    build.set_defaults(handler=_build)

    prune = commands.add_parser(
        "prune", formatter_class=_DefaultsShown, help="delete old stage images from the cache repo"
    )
    _add_common(prune)
    prune.add_argument(
        "--older-than", default="14d", metavar="AGE", help="e.g. 14d, 36h, 2w (default: 14d)"
    )
    prune.add_argument(
        "--keep", type=int, default=3, metavar="N", help="newest tags kept per stage (default 3)"
    )
    prune.add_argument("--yes", action="store_true", help="delete; without it, a dry run")
    prune.set_defaults(handler=_prune)
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    """Flags every command takes. A flag that sets a `Settings` field has the field's name as
    its dest and no default of its own: only the flags given reach the settings' flag layer."""
    parser.add_argument(
        "--config", metavar="FILE", help="config file (default: dagger-stages.yaml)"
    )
    parser.add_argument(
        "--dockerfile", "-f", default=SUPPRESS, metavar="FILE", help="default: CONTEXT/Dockerfile"
    )
    parser.add_argument(
        "--context", default=SUPPRESS, metavar="DIR", help="build context (default: .)"
    )
    parser.add_argument(
        "--target",
        dest="targets",
        action="append",
        default=SUPPRESS,
        metavar="STAGE",
        help="stage to build; repeatable (default: the last stage)",
    )
    parser.add_argument(
        "--build-arg",
        dest="build_args",
        action="append",
        default=SUPPRESS,
        metavar="K=V",
        help="set a declared ARG; repeatable",
    )
    parser.add_argument(
        "--cache-repo",
        default=SUPPRESS,
        metavar="REPO",
        help="registry repository for stage images (default: from CI, else none)",
    )
    parser.add_argument(
        "--image-repo",
        default=SUPPRESS,
        metavar="REPO",
        help="where --push publishes bare tags (default: from CI)",
    )
    parser.add_argument(
        "--engine",
        default=SUPPRESS,
        metavar="{" + ",".join(ENGINES) + "}",
        help="what builds: auto is Dagger under `dagger run` or with its CLI on PATH, else Docker",
    )
    parser.add_argument(
        "--engine-reaches",
        default=SUPPRESS,
        metavar="HOST[,HOST]",
        help="loopback or plain-HTTP registries the Dagger engine reaches all the same "
        "(it shares this network, or its config marks them http); * for all",
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
        "--secret",
        dest="secrets",
        action="append",
        default=SUPPRESS,
        metavar="id=ID,env=VAR|src=PATH",
        help="a build secret, buildx syntax; its value is never read into plans or keys",
    )
    parser.add_argument(
        "--publish",
        dest="publish",
        action="append",
        default=SUPPRESS,
        metavar="STAGE=TAG",
        help="publish STAGE under this tag template; repeatable (replaces the config's list)",
    )


def _settings(args: argparse.Namespace) -> Settings:
    """The flags given, by dest (a field's name), over the environment, config file and CI."""
    flags = {name: value for name, value in vars(args).items() if name in OPTIONS}
    config_path = find_config(args.config, Path("."))
    config = None if config_path is None else load_config(config_path)
    ci = detect(os.environ, Path.cwd())
    return resolve_settings(flags, config=config, ci=ci, env=os.environ)


def _plan(args: argparse.Namespace) -> int:
    output = "json" if args.json else args.format
    return run_plan(_settings(args), offline=args.offline, output=output)


def _build(args: argparse.Namespace) -> int:
    settings = _settings(args)
    graph = load_graph(settings, tests=settings.run_tests)
    return int(anyio.run(run_build, settings, graph))


def _prune(args: argparse.Namespace) -> int:
    older_than = parse_age(args.older_than)
    return prune_command(_settings(args), older_than, args.keep, yes=args.yes)
