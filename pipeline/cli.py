"""Command line: parse flags, wire the pipeline steps together, turn errors into exit codes.

Exit codes: 0 ok, 1 a stage failed, 2 bad input (Dockerfile, config, flags), 3 no usable engine,
70 an internal error (a bug: the traceback goes to a log file), 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from pipeline import __version__
from pipeline.ci import detect
from pipeline.config import (
    Config,
    find_config,
    load_config,
    parse_build_arg,
    parse_publish,
    parse_secret,
)
from pipeline.context import BuildContext, IgnoreRules
from pipeline.credentials import Credentials
from pipeline.errors import ToolError, UsageError
from pipeline.graph import Graph, select
from pipeline.parse import parse_dockerfile
from pipeline.plan import Plan, make_plan
from pipeline.registry import RegistryClient
from pipeline.render import dumps, plan_json, plan_table
from pipeline.settings import Options, Settings, resolve_settings
from pipeline.stages import Dockerfile, build_stages, native_platform

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main", "run"]

EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ToolError as exc:
        print(f"dagger-stages: {exc}" if exc.location is None else str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("dagger-stages: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        return _crash()


def _crash() -> int:
    fd, log = tempfile.mkstemp(prefix="dagger-stages-crash-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        traceback.print_exc(file=handle)
    print(f"dagger-stages: internal error, please report it; details in {log}", file=sys.stderr)
    return EXIT_INTERNAL


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dagger-stages",
        description="Build multi-stage Dockerfiles stage by stage, in parallel, cached per stage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plan = commands.add_parser("plan", help="show the stage graph and what a build would do")
    _add_common(plan)
    plan.add_argument("--json", action="store_true", help="print one JSON object (see docs)")
    plan.add_argument(
        "--offline",
        action="store_true",
        help="ask no registry: images stay unpinned and the cache unknown",
    )
    plan.set_defaults(handler=_plan)
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="config file (default: dagger-stages.yaml)"
    )
    parser.add_argument("--dockerfile", "-f", metavar="FILE", help="default: CONTEXT/Dockerfile")
    parser.add_argument("--context", metavar="DIR", help="build context (default: .)")
    parser.add_argument(
        "--target",
        dest="targets",
        action="append",
        default=[],
        metavar="STAGE",
        help="stage to build; repeatable (default: the last stage)",
    )
    parser.add_argument(
        "--build-arg",
        dest="build_args",
        action="append",
        default=[],
        metavar="K=V",
        help="set a declared ARG; repeatable",
    )
    parser.add_argument("--cache-repo", metavar="REPO", help="registry repository for stage images")
    parser.add_argument("--engine", choices=("dagger", "docker", "auto"), help="executor")
    parser.add_argument(
        "--platform",
        dest="platforms",
        action="append",
        default=[],
        metavar="OS/ARCH",
        help="target platform; repeatable",
    )
    parser.add_argument(
        "--secret",
        dest="secrets",
        action="append",
        default=[],
        metavar="id=ID,env=VAR|src=PATH",
        help="a build secret, buildx syntax; its value is never read into plans or keys",
    )
    parser.add_argument(
        "--publish",
        dest="publish",
        action="append",
        default=[],
        metavar="STAGE=TAG",
        help="publish STAGE under this tag template; repeatable (replaces the config's list)",
    )


def _settings(args: argparse.Namespace) -> Settings:
    cwd = Path.cwd()
    config_path = find_config(args.config, Path("."))
    config = load_config(config_path) if config_path is not None else Config.empty()
    build_args = tuple(
        pair for text in args.build_args if (pair := parse_build_arg(text)) is not None
    )
    options = Options(
        dockerfile=args.dockerfile,
        context=args.context,
        targets=tuple(args.targets),
        build_args=build_args,
        cache_repo=args.cache_repo,
        engine=args.engine,
        platforms=tuple(args.platforms),
        secrets=tuple(parse_secret(text) for text in args.secrets),
        publish=parse_publish(args.publish),
    )
    return resolve_settings(options, config, detect(os.environ, cwd))


def _load(settings: Settings) -> Dockerfile:
    if not Path(settings.context).is_dir():
        raise UsageError("build context is not a directory", path=settings.context)
    target = settings.targets[0] if settings.targets else None
    dockerfile = build_stages(
        parse_dockerfile(settings.dockerfile),
        build_args=settings.build_args,
        platform=settings.platform,
        target=target,
    )
    for warning in dockerfile.warnings:
        print(f"{dockerfile.path}:{warning.line}: warning: {warning.message}", file=sys.stderr)
    return dockerfile


def _registry(settings: Settings) -> RegistryClient:
    insecure = os.environ.get("DAGGER_STAGES_INSECURE_REGISTRIES", "")
    return RegistryClient(
        credentials=Credentials(sources=settings.ci.credentials),
        insecure=[host.strip() for host in insecure.split(",") if host.strip()],
        retries=2,
        backoff=0.25,
    )


async def _make_plan(settings: Settings, graph: Graph, *, offline: bool) -> Plan:
    context = Path(settings.context)
    build_context = BuildContext(context, IgnoreRules.load(context, Path(settings.dockerfile)))
    options = {
        "cache_repo": settings.cache_repo,
        "build_args": settings.build_args,
        "platform": settings.platform or native_platform(),
        "context": build_context,
    }
    if offline:
        return await make_plan(graph, client=None, **options)  # type: ignore[arg-type]
    async with _registry(settings) as client:
        return await make_plan(graph, client=client, **options)  # type: ignore[arg-type]


def _plan(args: argparse.Namespace) -> int:
    settings = _settings(args)
    graph = select(_load(settings), settings.targets)
    plan = anyio.run(functools.partial(_make_plan, settings, graph, offline=args.offline))
    for message in plan.warnings:
        print(f"dagger-stages: warning: {message}", file=sys.stderr)
    if args.json:
        print(dumps(plan_json(plan, settings)))
    else:
        print(plan_table(plan))
    return 0
