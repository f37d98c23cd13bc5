"""The one command that reproduces a failed stage on a laptop: `dagger-stages shell STAGE`
with the run's key inputs spelled as flags.

A CI log says what failed; this says how to get there: the same Dockerfile, context, build
args, platform (the one the keys were made for, so an arm64 laptop builds what an amd64
runner built) and cache repository, so every stage that passed in CI is restored, not
rebuilt. Secrets are named by id and by where the value comes from, never by value; the
developer provides their own. The config file is named too: it holds what the flags do not
(the test stage, publishing) and CI's settings beyond the flags.
"""

from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING

from pipeline.dockerfile.platforms import native_platform

if TYPE_CHECKING:
    from pipeline.settings.resolve import Settings
    from pipeline.settings.secrets import SecretSpec

__all__ = ["reproduce_command"]

PROGRAM = "dagger-stages"


def reproduce_command(settings: Settings, stage: str) -> str:
    """`dagger-stages shell STAGE …`, quoted for a POSIX shell."""
    argv = [PROGRAM, "shell", stage]
    if settings.config_path is not None:
        argv += ["--config", settings.config_path]
    if settings.context != ".":
        argv += ["--context", settings.context]
    default = os.path.normpath(os.path.join(settings.context, "Dockerfile"))
    if os.path.normpath(settings.dockerfile) != default:
        argv += ["--dockerfile", settings.dockerfile]
    for name, value in settings.build_args.items():
        argv += ["--build-arg", f"{name}={value}"]
    argv += ["--platform", str(settings.platform or native_platform())]
    for secret in settings.secrets:
        argv += ["--secret", _secret_flag(secret)]
    if settings.cache_repo is not None:
        argv += ["--cache-repo", str(settings.cache_repo)]
    return shlex.join(argv)


def _secret_flag(secret: SecretSpec) -> str:
    if secret.env is not None:
        return f"id={secret.id},env={secret.env}"
    return f"id={secret.id}" if secret.src is None else f"id={secret.id},src={secret.src}"
