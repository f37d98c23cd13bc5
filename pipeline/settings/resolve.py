"""One set of settings from four sources: CLI flags, then config file, then CI, then defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.dockerfile.stages import Platform
from pipeline.errors import UsageError
from pipeline.oci.reference import Repository

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from pipeline.settings.ci import CIContext
    from pipeline.settings.config import Config, Engine, SecretSpec, TestSpec

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
    cache_repo: Repository | None
    image_repo: Repository | None
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
    cache_repo = _repository("--cache-repo", options.cache_repo)
    image_repo = _repository("--image-repo", options.image_repo)
    cache_repo = cache_repo or _repository("cache_repo", config.cache_repo, config.path)
    image_repo = image_repo or _repository("image_repo", config.image_repo, config.path)
    default_dockerfile = "Dockerfile" if context == "." else os.path.join(context, "Dockerfile")
    return Settings(
        dockerfile=options.dockerfile or config.dockerfile or default_dockerfile,
        context=context,
        targets=options.targets or config.targets,
        build_args={**dict(config.build_args), **dict(options.build_args)},
        cache_repo=cache_repo or _cache_default(image_repo, ci),
        image_repo=image_repo or ci.image_repo,
        engine=options.engine or config.engine or "dagger",
        platforms=tuple(_platform(text, config) for text in options.platforms or config.platforms),
        secrets=tuple({s.id: s for s in (*config.secrets, *options.secrets)}.values()),
        publish={**dict(config.publish), **dict(options.publish)},
        ci=ci,
        config_path=None if config.path is None else str(config.path),
        test=config.test,
    )


def _repository(flag: str, text: str | None, path: Path | None = None) -> Repository | None:
    """A repository, such as `ghcr.io/acme/shop/cache`: no tag, no digest, no scheme."""
    if text is None:
        return None
    try:
        return Repository.parse(text)
    except ValueError as exc:
        raise UsageError(f'{flag} "{text}": {exc}', path=path) from None


def _cache_default(image_repo: Repository | None, ci: CIContext) -> Repository | None:
    """The cache lives beside the images: an overridden image repo takes the cache with it."""
    return image_repo.child("cache") if image_repo else ci.cache_repo


def _platform(text: str, config: Config) -> Platform:
    try:
        return Platform.parse(text)
    except ValueError as exc:
        raise UsageError(str(exc), path=config.path) from None
