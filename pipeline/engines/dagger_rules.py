"""What the Dagger engine (0.21) refuses to build or cannot reach, found before any build.

`build` on the Dagger executor stops with exit 2 on any finding, before it asks a registry or
starts an engine, and `plan` prints the same findings as warnings. The rules come from the
engine's source (dagger/dagger v0.21.8; /work/shared/dagger/ENGINE-NOTES.md):

- `dockerBuild` refuses a `# syntax=` frontend other than docker/dockerfile or moby/dockerfile
  (core/container.go, isKnownDockerfileSyntaxFrontend), and parses with its built-in parser even
  for those.
- Its LLB converter refuses `ADD --checksum` (util/llbtodagger/source.go: "http checksum
  enforcement is unsupported"), an SSH mount that is required, since dockerBuild is given no
  SSH agent, and an SSH mount of a mode other than 0600 (util/llbtodagger/exec.go). It also
  refuses ulimits, extra hosts, a hostname and a cgroup parent (exec.go, convertExec), but no
  Dockerfile can ask for those: they come only from build options (`--ulimit`, `--add-host`)
  that this tool never passes.
- The engine runs in a container of its own (engine/client/drivers/docker.go), so this
  machine's loopback is not its loopback, and it speaks plain HTTP only to its own localhost
  or to registries its config marks `http` (engine/config/config.go, RegistryConfig). A user
  whose engine does reach such a registry (it shares the host network, or its engine.json
  says so) lists it in `engine_reaches`.

One more rule is a warning, not a refusal, since the build is right but leaks: the converter
keeps a secret mounted on every RUN after the one that asked for it, in that stage and in the
stages built `FROM` it in the same build (util/llbtodagger/exec.go), so `secret_exposures` names
each RUN that can read a secret it never asked for. The runner builds a stage on the pushed
image of a parent whose RUNs mount secrets (`Session.isolates_secret_steps`), which leaves only
the later RUNs of the stage that mounts one, unless the cache is not pushed.

Nothing here imports `dagger`: `plan` runs these rules too.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.dockerfile.mounts import MountError, parse_mount, run_mounts
from pipeline.dockerfile.rewrite import restorable
from pipeline.errors import UsageError, location
from pipeline.oci.reference import Reference, host_listed, is_insecure_host, is_loopback_host

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator, Mapping

    from pipeline.cache.plan import Plan
    from pipeline.dockerfile.graph import Graph
    from pipeline.dockerfile.parse import Instruction
    from pipeline.oci.reference import Repository

__all__ = [
    "CLI_VARIABLE",
    "REACHES_VARIABLE",
    "SESSION_VARIABLES",
    "Finding",
    "Use",
    "check",
    "dagger_available",
    "dockerfile_findings",
    "engine_is_dagger",
    "find_cli",
    "has_session",
    "network_findings",
    "refusal",
    "secret_exposures",
    "unreachable",
]

REACHES_VARIABLE = "DAGGER_STAGES_ENGINE_REACHES"
DOCKER_ENGINE = "build with --engine docker"
_KNOWN_FRONTENDS = tuple(
    f"{registry}{owner}/dockerfile{flavour}"
    for registry in ("", "docker.io/", "index.docker.io/")
    for owner in ("docker", "moby")
    for flavour in ("", "-upstream")
)
_SYNTAX_LINE = re.compile(r"^#\s*syntax\s*=", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    """One thing the engine would refuse: what, where, and what to do instead."""

    reason: str
    fix: str
    path: str | None = None
    line: int | None = None

    @property
    def location(self) -> str | None:
        return location(self.path, self.line)

    @property
    def message(self) -> str:
        return f"{self.reason}; {self.fix}"

    def __str__(self) -> str:
        where = self.location
        return self.message if where is None else f"{where}: {self.message}"


@dataclass(frozen=True)
class Use:
    """A registry the engine would pull from or push to, and what for (`the cache repo …`)."""

    host: str
    what: str
    path: str | None = None
    line: int | None = None


SESSION_VARIABLES = ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN")
CLI_VARIABLE = "_EXPERIMENTAL_DAGGER_CLI_BIN"  # the SDK's own override of the CLI it runs


def engine_is_dagger(engine: str, env: Mapping[str, str]) -> bool:
    """`auto` is Dagger when a session or its CLI is there; asks nothing of an engine, and
    loads not even the Dagger executor's module, which every `plan` would pay for."""
    if engine != "auto":
        return engine == "dagger"
    return dagger_available(env)


def dagger_available(env: Mapping[str, str]) -> bool:
    """Whether a Dagger engine can be reached without downloading anything."""
    return has_session(env) or find_cli(env) is not None


def has_session(env: Mapping[str, str]) -> bool:
    """`dagger run` set up a session for us to join."""
    return all(env.get(name) for name in SESSION_VARIABLES)


def find_cli(env: Mapping[str, str]) -> str | None:
    """The Dagger CLI the SDK would run to start a session."""
    return env.get(CLI_VARIABLE) or shutil.which("dagger", path=env.get("PATH"))


def check(
    graph: Graph,
    *,
    cache_repo: Repository | None,
    published: Iterable[Reference] = (),
    insecure: Collection[str] = (),
    reaches: Collection[str] = (),
) -> tuple[Finding, ...]:
    """Every finding for a build of `graph` on Dagger, the Dockerfile's first."""
    uses = [*_image_uses(graph)]
    if cache_repo is not None:
        uses.insert(0, Use(cache_repo.registry, f"the cache repo {cache_repo}"))
    uses.extend(Use(ref.registry, f"the published image {ref}") for ref in published)
    found = network_findings(uses, insecure=insecure, reaches=reaches)
    return dockerfile_findings(graph) + found


def refusal(findings: tuple[Finding, ...]) -> UsageError:
    """Exit 2 at the first finding, the others listed after it, each with its location."""
    first, *others = findings
    lines = [first.message, *(str(other) for other in others)]
    return UsageError("\n".join(lines), path=first.path, line=first.line)


# -- the Dockerfile ------------------------------------------------------------------------------


def dockerfile_findings(graph: Graph) -> tuple[Finding, ...]:
    """What the engine refuses in the stages the targets need (ONBUILD triggers where they run)."""
    dockerfile = graph.dockerfile
    path = dockerfile.path
    found: dict[tuple[int, str], Finding] = {}
    syntax = dockerfile.parsed.directives.syntax
    if syntax is not None and not _known_frontend(syntax):
        line = next(
            (n for n, text in enumerate(dockerfile.parsed.lines, 1) if _SYNTAX_LINE.match(text)),
            None,
        )
        reason = (
            f'the Dagger engine refuses the frontend "# syntax={syntax}": its dockerBuild takes '
            "only docker/dockerfile and moby/dockerfile, and parses with its built-in parser "
            "even then"
        )
        fix = f"remove the directive if the built-in parser will do, or {DOCKER_ENGINE}"
        found[(line or 0, reason)] = Finding(reason, fix, path, line)
    stages = graph.stages
    bases = {stages[i].base_stage for i in graph.needed} - {None}
    for index in sorted(graph.needed):
        for instruction in stages[index].instructions:
            for reason in _refused(instruction):
                found.setdefault((instruction.line, reason), _found(reason, path, instruction))
    for index in sorted(i for i in bases if i is not None):
        for instruction in stages[index].instructions:
            if instruction.trigger is not None:
                for reason in _refused(instruction.trigger):
                    key = (instruction.line, reason)
                    found.setdefault(key, _found(f"ONBUILD {reason}", path, instruction))
    return tuple(found[key] for key in sorted(found))


def _found(reason: str, path: str, instruction: Instruction) -> Finding:
    return Finding(
        f"the Dagger engine cannot build {reason}", DOCKER_ENGINE, path, instruction.line
    )


def _known_frontend(syntax: str) -> bool:
    ref = syntax.strip().lower()
    return any(
        ref == known or ref.startswith((f"{known}:", f"{known}@")) for known in _KNOWN_FRONTENDS
    )


def _refused(instruction: Instruction) -> Iterator[str]:
    """Why the engine's converter would refuse this instruction, if it would."""
    if instruction.cmd == "ADD" and instruction.flag("checksum"):
        yield "ADD --checksum: its Dockerfile converter does not enforce checksums"
    if instruction.cmd != "RUN":
        return
    for text in instruction.flags.get("mount", ()):
        try:
            mount = parse_mount(text)
        except MountError:
            continue  # the stage graph has reported it already
        if mount.type != "ssh":
            continue
        if mount.required:
            yield (
                f"RUN --mount={text}: a required SSH mount, and dockerBuild is given no SSH agent"
            )
        if not _default_ssh_mode(mount.mode):
            yield f"RUN --mount={text}: an SSH mount of mode {mount.mode}; it takes only 0600"


def _default_ssh_mode(mode: str | None) -> bool:
    if mode is None:
        return True
    try:
        return int(mode, 8) in (0, 0o600)
    except ValueError:
        return True  # a variable, or BuildKit's own error to report


# -- the network ---------------------------------------------------------------------------------


def unreachable(
    host: str, *, insecure: Collection[str] = (), reaches: Collection[str] = ()
) -> str | None:
    """Why the engine cannot reach `host`, or None when it can (or the user says it can)."""
    if "*" in reaches or host_listed(host, reaches):
        return None
    if is_loopback_host(host):
        return "loopback"
    if is_insecure_host(host, insecure):
        return "plain HTTP"
    return None


def network_findings(
    uses: Iterable[Use], *, insecure: Collection[str] = (), reaches: Collection[str] = ()
) -> tuple[Finding, ...]:
    """One finding per registry the engine cannot reach, naming everything it holds for us."""
    by_host: dict[str, list[Use]] = {}
    for use in uses:
        if unreachable(use.host, insecure=insecure, reaches=reaches) is not None:
            by_host.setdefault(use.host, []).append(use)
    findings = []
    for host, used in by_host.items():
        kind = unreachable(host, insecure=insecure, reaches=reaches)
        whats = "; ".join(dict.fromkeys(_described(use) for use in used))
        where = next((use for use in used if use.path is not None), None)
        if kind == "loopback":
            reason = (
                f"the Dagger engine cannot reach {host} ({whats}): it runs in a container of "
                "its own, whose loopback is not this machine's"
            )
            fix = (
                "use a registry the engine reaches by a name or address that is not loopback, "
                f"or run the engine on this machine's network and set {REACHES_VARIABLE}={host}, "
                f"or {DOCKER_ENGINE}"
            )
        else:
            reason = (
                f"the Dagger engine cannot reach {host} ({whats}): it is plain HTTP "
                "(DAGGER_STAGES_INSECURE_REGISTRIES), and the engine speaks HTTPS to it"
            )
            fix = (
                f"serve {host} over HTTPS, or mark it plain HTTP in the engine's config "
                f'(engine.json: {{"registries": {{"{host}": {{"http": true}}}}}}; engine.toml: '
                f'[registry."{host}"] http = true) and set {REACHES_VARIABLE}={host}, '
                f"or {DOCKER_ENGINE}"
            )
        findings.append(
            Finding(
                reason,
                fix,
                None if where is None else where.path,
                None if where is None else where.line,
            )
        )
    return tuple(findings)


def _described(use: Use) -> str:
    return use.what if use.path is None else f"{use.what} at {use.path}:{use.line}"


def _image_uses(graph: Graph) -> Iterator[Use]:
    """The images the engine pulls itself inside dockerBuild: FROM, COPY --from, mounts."""
    path = graph.dockerfile.path
    for index in sorted(graph.needed):
        for edge in graph.stages[index].edges:
            if edge.stage is not None or edge.ref.lower() == "scratch":
                continue
            try:
                ref = Reference.parse(edge.ref)
            except ValueError:
                continue  # the plan warns of it, and it would fail on any engine
            kind = "the base image" if edge.kind == "base" else "the image"
            yield Use(ref.registry, f"{kind} {edge.ref}", path, edge.line)


# -- secrets on later steps ----------------------------------------------------------------------


def secret_exposures(plan: Plan, *, push_cache: bool = False) -> tuple[Finding, ...]:
    """Each RUN of a stage being built that the engine lets read a secret it does not mount.

    A secret mounted by a RUN stays on every later RUN of that stage, and of each stage built
    `FROM` it in the same build. A restored parent brings none, as its image has no mounts,
    and with `push_cache` (the run pushes its stages to the cache repo) neither does a
    parent built in the run: the runner builds its children on the image it pushed. A parent
    with ONBUILD triggers cannot stand in for itself so, and still does. A push that fails
    during the run is said then, by the runner.
    """
    building = set(plan.indices("build"))
    isolated = {
        i
        for i in building
        if push_cache and plan.cache_repo is not None and restorable(plan.stage(i))
    }
    path = str(plan.graph.dockerfile.path)
    active_at_end: dict[int, dict[str, int]] = {}
    found: list[Finding] = []

    def walk(index: int) -> dict[str, int]:
        if index in active_at_end:
            return active_at_end[index]
        stage = plan.stage(index)
        base = stage.base_stage
        inherits = base is not None and base in building and base not in isolated
        active = dict(walk(base)) if inherits and base is not None else {}
        for instruction in stage.instructions[1:]:
            if instruction.cmd != "RUN":
                continue
            mounted = _secret_ids(instruction)
            for secret, line in sorted(active.items()):
                if secret not in mounted:
                    found.append(_exposure(path, instruction, secret, line))
            active.update(dict.fromkeys(sorted(mounted - active.keys()), instruction.line))
        active_at_end[index] = active
        return active

    for index in sorted(building):
        walk(index)
    return tuple(sorted(set(found), key=lambda f: (f.line or 0, f.reason)))


def _secret_ids(instruction: Instruction) -> set[str]:
    return {m.secret_id for m in run_mounts(instruction) if m.secret_id is not None}


def _exposure(path: str, instruction: Instruction, secret: str, line: int) -> Finding:
    reason = (
        f'on the Dagger engine this RUN can read secret "{secret}", mounted at line {line}: '
        "the engine keeps a secret on every later step of a build, and what the step writes "
        "goes into the image"
    )
    fix = (
        "on Dagger, mount it only in the last RUN of a stage that nothing is built FROM, "
        "or build with --engine docker"
    )
    return Finding(reason, fix, path, instruction.line)
