"""One set of settings from four sources: CLI flags, then config file, then CI, then defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.dockerfile.stages import Platform
from pipeline.errors import UsageError
from pipeline.oci.reference import Reference

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pipeline.settings.ci import CIContext
    from pipeline.settings.config import Config, Engine, TestSpec
    from pipeline.settings.secrets import SecretSpec

__all__ = ["Options", "Settings", "resolve_settings"]


@dataclass(frozen=True)
class Options:
    """What the command line said; None or empty where it said nothing."""

    dockerfile: str | None = None
    context: str | None = None
    targets: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    cache_repo: str | None = None
    image_repo: str | None = None
    engine: Engine | None = None
    platforms: tuple[str, ...] = ()
    secrets: tuple[SecretSpec, ...] = ()
    publish: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Settings:
    dockerfile: str
    context: str
    targets: tuple[str, ...]
    build_args: Mapping[str, str]
    cache_repo: str | None
    image_repo: str | None
    engine: Engine
    platforms: tuple[Platform, ...]
    secrets: tuple[SecretSpec, ...]
    publish: Mapping[str, tuple[str, ...]]
    ci: CIContext
    config_path: str | None = None
    test: TestSpec | None = None

    @property
    def platform(self) -> Platform | None:
        return self.platforms[0] if self.platforms else None


def resolve_settings(options: Options, config: Config, ci: CIContext) -> Settings:
    context = options.context or config.context or "."
    _check_repository("--cache-repo", options.cache_repo)
    _check_repository("--image-repo", options.image_repo)
    image_repo = options.image_repo or config.image_repo
    default_dockerfile = "Dockerfile" if context == "." else os.path.join(context, "Dockerfile")
    return Settings(
        dockerfile=options.dockerfile or config.dockerfile or default_dockerfile,
        context=context,
        targets=options.targets or config.targets,
        build_args={**dict(config.build_args), **dict(options.build_args)},
        cache_repo=options.cache_repo or config.cache_repo or _cache_default(image_repo, ci),
        image_repo=image_repo or ci.image_repo,
        engine=options.engine or config.engine or "dagger",
        platforms=tuple(_platform(text, config) for text in options.platforms or config.platforms),
        secrets=tuple({s.id: s for s in (*config.secrets, *options.secrets)}.values()),
        publish={**dict(config.publish), **dict(options.publish)},
        ci=ci,
        config_path=None if config.path is None else str(config.path),
        test=config.test,
    )


def _check_repository(flag: str, text: str | None) -> None:
    """A repository, such as `ghcr.io/acme/shop/cache`: no tag, no digest, no scheme."""
    if text is None:
        return
    try:
        reference = Reference.parse(f"{text}:x")
    except ValueError as exc:
        raise UsageError(f'{flag} "{text}": {exc}') from None
    if reference.tag != "x" or reference.digest is not None:
        raise UsageError(f'{flag} "{text}": give a repository, without a tag or digest')


def _cache_default(image_repo: str | None, ci: CIContext) -> str | None:
    """The cache lives beside the images: an overridden image repo takes the cache with it."""
    return f"{image_repo}/cache" if image_repo else ci.cache_repo


def _platform(text: str, config: Config) -> Platform:
    try:
        return Platform.parse(text)
    except ValueError as exc:
        raise UsageError(str(exc), path=config.path) from None
