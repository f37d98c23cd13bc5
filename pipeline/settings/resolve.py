"""The one `Settings` of a run, merged here from layers of sources.

Layers, lowest first:

1. built-in defaults: the defaults of `Settings`' fields;
2. CI-derived defaults (`ci.detect`): the image repo, the cache repo beside it, credential sources;
3. the config file (`config.load_config`);
4. the environment: `DAGGER_STAGES_DOCKER`, `DAGGER_STAGES_INSECURE_REGISTRIES`,
   `DAGGER_STAGES_ENGINE_REACHES`;
5. flags.

The config file sits above the CI defaults, not below them as the issue behind this module
proposed: runs have always let the config file override what CI derives, and that stays.

Each field carries an `Opt`, as an option does in nox and a field of a target does in buildx
bake: the flag, variable and config key that set it, the one function that validates a text
for it, and its merge rule. A higher layer replaces a lower one's value, except where the rule
merges: build args and publish lists by name, secrets by id. Two values are derived once all
layers are in: without a Dockerfile anywhere, it is `<context>/Dockerfile`; and an image repo
set by the config file or a flag takes the cache with it (`<image repo>/cache`) unless a cache
repo is set explicitly too, where otherwise CI's cache repo stays.

A `Layer` holds validated values only. Each source locates its errors: a flag as
`--cache-repo "…": reason`, a variable as `DAGGER_STAGES_DOCKER "…": reason`, the config
file as `path:line: …`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

from pipeline.dockerfile.platforms import Platform
from pipeline.errors import UsageError
from pipeline.oci.reference import Repository, repository_error
from pipeline.settings.ci import CIContext
from pipeline.settings.secrets import secret_from_text

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from pipeline.oci.credentials import CredentialSource
    from pipeline.settings.secrets import SecretSpec

__all__ = [
    "ENGINES",
    "JOBS",
    "LAYERS",
    "OPTIONS",
    "Engine",
    "Layer",
    "Opt",
    "Settings",
    "TestSpec",
    "build_arg",
    "ci_layer",
    "environment_layer",
    "flag_layer",
    "is_build_arg_name",
    "merge",
    "parse_engine",
    "parse_jobs",
    "parse_platform",
    "parse_platforms",
    "parse_repository",
    "publish_entry",
    "publish_stage",
    "registry_host",
    "registry_hosts",
    "resolve_settings",
]

Engine = Literal["dagger", "docker", "auto"]
ENGINES: tuple[Engine, ...] = get_args(Engine)
Source = Literal["ci", "config", "environment", "flags"]
LAYERS: tuple[Source, ...] = get_args(Source)  # lowest first; built-in defaults lie below
JOBS = 8  # stages built at once unless --jobs says otherwise

# The config file's JSON Schema carries the same patterns.
STAGE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
PLATFORM = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?")
ARG_NAME = re.compile(r"[^\s=]+")


# -- validators: one per kind of value, whichever source it comes from --------------------------


def parse_repository(text: str) -> Repository:
    """A repository such as `ghcr.io/acme/shop/cache`; ValueError says what is wrong and the fix."""
    if text != text.strip():
        raise repository_error("it has spaces around it", text.strip() or None)
    return Repository.parse(text)


def parse_platform(text: str) -> Platform:
    """`os/arch[/variant]`, such as linux/amd64 or linux/arm/v7."""
    if not PLATFORM.fullmatch(text):
        raise ValueError("expected os/arch[/variant], such as linux/amd64 or linux/arm/v7")
    return Platform.parse(text)


def parse_engine(text: str) -> Engine:
    for engine in ENGINES:
        if text == engine:
            return engine
    choices = ", ".join(f'"{engine}"' for engine in ENGINES)
    raise ValueError(f'expected one of {choices}, got "{text}"')


def parse_jobs(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        raise ValueError("expected a whole number, such as 4") from None
    if jobs < 1:
        raise ValueError("must be at least 1")
    return jobs


def is_build_arg_name(name: str) -> bool:
    return ARG_NAME.fullmatch(name) is not None


def build_arg(text: str) -> tuple[str, str | None]:
    """`NAME=VALUE`, or a bare `NAME` (None) that takes its value from the environment."""
    name, sep, value = text.partition("=")
    if not name:
        raise ValueError("the name is empty (expected NAME=VALUE or NAME)")
    if not is_build_arg_name(name):
        raise ValueError(f'"{name}" is not a valid name (expected NAME=VALUE or NAME)')
    return name, value if sep else None


def publish_stage(name: str) -> str:
    """A target named for publishing, lowercased: stage names match case-insensitively."""
    if not STAGE_NAME.fullmatch(name):
        raise ValueError(f'"{name}" is not a stage name')
    return name.lower()


def publish_entry(text: str) -> tuple[str, str]:
    """`STAGE=TAG`, as `--publish` takes it."""
    stage, _, template = text.partition("=")
    if not stage.strip() or not template.strip():
        raise ValueError("expected STAGE=TAG")
    return publish_stage(stage.strip()), template.strip()


def _optional_text(text: str) -> str | None:
    """A path or a command; empty means not given, as a shell's `--docker "$UNSET"` does."""
    return text or None


def _hosts(text: str) -> tuple[str, ...]:
    """A comma-separated list of registry hosts."""
    return tuple(host.strip() for host in text.split(",") if host.strip())


def registry_host(text: str) -> str:
    """`host[:port]` as a reference names its registry, or `*` for every host."""
    if text == "*" or re.fullmatch(r"[A-Za-z0-9.\-]+(:[0-9]+)?|\[[0-9A-Fa-f:]+\](:[0-9]+)?", text):
        return text
    raise ValueError("expected a registry host such as localhost:5000 or registry.lan, or *")


def registry_hosts(text: str) -> tuple[str, ...]:
    """Registry hosts, comma-separated, each checked."""
    return tuple(registry_host(host) for host in _hosts(text))


# -- how a layer's values combine ---------------------------------------------------------------


def _replace(_: object, high: object) -> object:
    return high


def _update(low: Mapping[str, object], high: Mapping[str, object]) -> dict[str, object]:
    """Per name: a higher layer's entry replaces the lower one's, the others stay."""
    return {**low, **high}


def _by_id(low: Sequence[SecretSpec], high: Sequence[SecretSpec]) -> tuple[SecretSpec, ...]:
    return tuple({secret.id: secret for secret in (*low, *high)}.values())


def _tuple(items: Sequence[object], _: Mapping[str, str]) -> tuple[object, ...]:
    return tuple(items)


def _build_args(items: Sequence[tuple[str, str | None]], env: Mapping[str, str]) -> dict[str, str]:
    """Repeated `--build-arg`s, the last of a name winning; a bare name unset is left out."""
    args: dict[str, str] = {}
    for name, value in items:
        found = env.get(name) if value is None else value
        if found is not None:
            args[name] = found
    return args


def parse_platforms(text: str) -> tuple[Platform, ...]:
    """One `--platform` value: a platform, or several comma-separated (buildx's spelling)."""
    return tuple(parse_platform(part) for part in text.split(","))


def _platforms(items: Sequence[tuple[Platform, ...]], _: Mapping[str, str]) -> tuple[Platform, ...]:
    """Every platform given, in order, each once: a repeated one is the same image."""
    return tuple(dict.fromkeys(platform for item in items for platform in item))


def _grouped(items: Sequence[tuple[str, str]], _: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    tags: dict[str, list[str]] = {}
    for stage, template in items:
        tags.setdefault(stage, []).append(template)
    return {stage: tuple(values) for stage, values in tags.items()}


def _secrets(items: Sequence[SecretSpec], _: Mapping[str, str]) -> tuple[SecretSpec, ...]:
    return _by_id((), items)


@dataclass(frozen=True)
class Opt:
    """How one `Settings` field is set: by which flag, variable and config key, validated by
    which function, and merged over lower layers by which rule.

    `parse` takes one text (a flag's, a variable's or a config item's) and raises ValueError
    with a reason the user can act on. A repeatable flag's values become the field's value
    through `collect`, which sees the environment (a bare `--build-arg NAME` reads it).
    """

    flag: str | None = None  # as messages name it; the argparse dest is the field's name
    env: str | None = None
    key: str | None = None
    parse: Callable[[str], Any] | None = None
    collect: Callable[[Sequence[Any], Mapping[str, str]], Any] = _tuple
    merge: Callable[[Any, Any], Any] = _replace

    def from_flag(self, given: object, env: Mapping[str, str]) -> object:
        """argparse's value: True or False for a switch, a list for a repeatable flag."""
        if isinstance(given, bool):
            return given
        if isinstance(given, list):
            return self.collect([self.from_text(str(self.flag), text) for text in given], env)
        return self.from_text(str(self.flag), str(given))

    def from_text(self, where: str, text: str) -> Any:
        return text if self.parse is None else _checked(where, self.parse, text)


def _checked(where: str, parse: Callable[[str], Any], text: str) -> Any:
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(_located(where, text, exc)) from None


def _located(where: str, text: str, reason: object) -> str:
    return f'{where} "{text}": {reason}'


def _meta(**opt: Any) -> dict[str, Opt]:
    return {"opt": Opt(**opt)}


@dataclass(frozen=True)
class TestSpec:
    """Run `command` in the built `stage` and copy `artifacts` (container paths) out.

    The command sees no build secret but those `secrets` grants: it may be a pull request's code.
    """

    __test__ = False  # not a pytest test class

    stage: str
    command: str | tuple[str, ...]
    artifacts: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()  # ids of build secrets mounted at /run/secrets/<id>


@dataclass(frozen=True)
class Settings:
    """Everything a run was asked to do. The config file's keys come in this order."""

    dockerfile: str = field(
        default="Dockerfile",
        metadata=_meta(flag="--dockerfile", key="dockerfile", parse=_optional_text),
    )
    context: str = field(
        default=".", metadata=_meta(flag="--context", key="context", parse=_optional_text)
    )
    targets: tuple[str, ...] = field(default=(), metadata=_meta(flag="--target", key="targets"))
    build_args: Mapping[str, str] = field(
        default_factory=dict,
        metadata=_meta(
            flag="--build-arg",
            key="build_args",
            parse=build_arg,
            collect=_build_args,
            merge=_update,
        ),
    )
    cache_repo: Repository | None = field(
        default=None, metadata=_meta(flag="--cache-repo", key="cache_repo", parse=parse_repository)
    )
    image_repo: Repository | None = field(
        default=None, metadata=_meta(flag="--image-repo", key="image_repo", parse=parse_repository)
    )
    # `auto` (`engines.dagger_rules.engine_is_dagger`): Dagger under `dagger run` or with its CLI
    # on PATH, else Docker, so that a plain `build` on a laptop uses the Docker daemon there.
    engine: Engine = field(
        default="auto", metadata=_meta(flag="--engine", key="engine", parse=parse_engine)
    )
    platforms: tuple[Platform, ...] = field(
        default=(),
        metadata=_meta(
            flag="--platform", key="platforms", parse=parse_platforms, collect=_platforms
        ),
    )
    secrets: tuple[SecretSpec, ...] = field(
        default=(),
        metadata=_meta(
            flag="--secret", key="secrets", parse=secret_from_text, collect=_secrets, merge=_by_id
        ),
    )
    publish: Mapping[str, tuple[str, ...]] = field(
        default_factory=dict,
        metadata=_meta(
            flag="--publish", key="publish", parse=publish_entry, collect=_grouped, merge=_update
        ),
    )
    test: TestSpec | None = field(default=None, metadata=_meta(key="test"))
    jobs: int = field(default=JOBS, metadata=_meta(flag="--jobs", parse=parse_jobs))
    fail_fast: bool = field(default=False, metadata=_meta(flag="--fail-fast"))
    no_cache: bool = field(default=False, metadata=_meta(flag="--no-cache"))
    push_cache: bool = field(default=True, metadata=_meta(flag="--no-push-cache"))
    docker: str | None = field(
        default=None,
        metadata=_meta(flag="--docker", env="DAGGER_STAGES_DOCKER", parse=_optional_text),
    )
    report: str | None = field(default=None, metadata=_meta(flag="--report"))
    junit: str | None = field(default=None, metadata=_meta(flag="--junit"))
    dotenv: str | None = field(default=None, metadata=_meta(flag="--dotenv"))
    push: bool = field(default=False, metadata=_meta(flag="--push"))
    run_tests: bool = field(default=True, metadata=_meta(flag="--no-test"))
    artifacts_dir: str = field(default="artifacts", metadata=_meta(flag="--artifacts-dir"))
    insecure_registries: tuple[str, ...] = field(
        default=(), metadata=_meta(env="DAGGER_STAGES_INSECURE_REGISTRIES", parse=_hosts)
    )
    # Registries on loopback or plain HTTP that the Dagger engine reaches all the same: it
    # shares this machine's network, or its config marks them `http` (engines.dagger_rules).
    engine_reaches: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            flag="--engine-reaches",
            env="DAGGER_STAGES_ENGINE_REACHES",
            key="engine_reaches",
            parse=registry_hosts,
        ),
    )
    credentials: tuple[CredentialSource, ...] = field(default=(), metadata=_meta())
    ci: CIContext = field(default=CIContext(provider="local"), metadata=_meta())
    config_path: str | None = field(default=None, metadata=_meta())

    @property
    def platform(self) -> Platform | None:
        """The first target platform: the one that reads the Dockerfile's FROM lines for
        what every platform shares (its stages and their names)."""
        return self.platforms[0] if self.platforms else None


OPTIONS: Mapping[str, Opt] = {f.name: f.metadata["opt"] for f in fields(Settings)}


@dataclass(frozen=True)
class Layer:
    """What one source says: validated values for some fields, by field name."""

    source: Source
    values: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.values) - set(OPTIONS)
        if unknown:
            raise ValueError(f"not settings: {', '.join(sorted(unknown))}")


def ci_layer(ci: CIContext) -> Layer:
    """The context itself (plans show it), its credential sources, and the image and cache
    repos where CI names them.

    The repos are taken as derived, not validated: one CI names but no registry takes (a
    repository such as `acme/.github`) has always planned, and checking it here would stop
    the runs that set their own repos with a flag or in the config file.
    """
    values: dict[str, object] = {"ci": ci, "credentials": ci.credentials}
    if ci.image_repo is not None:
        values["image_repo"] = ci.image_repo
    if ci.cache_repo is not None:
        values["cache_repo"] = ci.cache_repo
    return Layer("ci", values)


def environment_layer(env: Mapping[str, str]) -> Layer:
    """The fields that variables set; this is the only reader of those variables."""
    values: dict[str, object] = {}
    for name, opt in OPTIONS.items():
        if opt.env is not None and opt.env in env:
            value = opt.from_text(opt.env, env[opt.env])
            if value is not None:
                values[name] = value
    return Layer("environment", values)


def flag_layer(given: Mapping[str, object], env: Mapping[str, str]) -> Layer:
    """The flags given, as argparse's values by field name (its dests are the field names)."""
    values: dict[str, object] = {}
    for name, value in given.items():
        parsed = OPTIONS[name].from_flag(value, env)
        if parsed is not None:
            values[name] = parsed
    return Layer("flags", values)


def merge(layers: Sequence[Layer]) -> Settings:
    """The layers over the built-in defaults, each by its field's rule, in `LAYERS` order."""
    settings = Settings()
    set_by: dict[str, Source] = {}
    for layer in sorted(layers, key=lambda layer: LAYERS.index(layer.source)):
        changes: dict[str, Any] = {
            name: OPTIONS[name].merge(getattr(settings, name), value)
            for name, value in layer.values.items()
        }
        settings = replace(settings, **changes)
        set_by.update(dict.fromkeys(changes, layer.source))
    return _derived(settings, set_by)


def _derived(settings: Settings, set_by: Mapping[str, Source]) -> Settings:
    """The values that follow from others; `set_by` says which layer set each field last."""
    changes: dict[str, Any] = {}
    if "dockerfile" not in set_by and settings.context != ".":
        changes["dockerfile"] = os.path.join(settings.context, "Dockerfile")
    explicit = {name for name, source in set_by.items() if source != "ci"}
    if "image_repo" in explicit and "cache_repo" not in explicit and settings.image_repo:
        changes["cache_repo"] = settings.image_repo.child("cache")
    return replace(settings, **changes)


def resolve_settings(
    flags: Mapping[str, object],
    *,
    config: Layer | None,
    ci: CIContext,
    env: Mapping[str, str],
) -> Settings:
    """Settings from every source; `flags` maps field names to argparse's values."""
    layers = [ci_layer(ci), environment_layer(env), flag_layer(flags, env)]
    return merge([*layers, *([] if config is None else [config])])
