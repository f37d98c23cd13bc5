"""The command a failed stage's log line and JUnit message give to reproduce it locally."""

from __future__ import annotations

import shlex
from dataclasses import replace

from pipeline.dockerfile.platforms import native_platform
from pipeline.oci.reference import Repository
from pipeline.output.reproduce import reproduce_command
from pipeline.settings.ci import CIContext
from pipeline.settings.resolve import Layer, Settings, resolve_settings

GITHUB = CIContext(provider="github", cache_repo=Repository.parse("ghcr.io/acme/shop/cache"))


def settings(flags: dict[str, object], config: dict[str, object] | None = None) -> Settings:
    layer = None if config is None else Layer("config", config)
    return resolve_settings(flags, config=layer, ci=GITHUB, env={"TOKEN": "s3cr3t"})


def test_the_command_has_the_runs_key_inputs_and_secret_ids_never_values() -> None:
    command = reproduce_command(
        settings(
            {
                "build_args": ["PHP=8.3", "NOTE=two words"],
                "platforms": ["linux/arm64"],
                "secrets": ["id=token,env=TOKEN", "id=npmrc,src=/home/me/.npmrc"],
                "context": "app",
            }
        ),
        "test",
    )
    assert shlex.split(command) == [
        "dagger-stages", "shell", "test", "--context", "app",
        "--build-arg", "PHP=8.3", "--build-arg", "NOTE=two words",
        "--platform", "linux/arm64",
        "--secret", "id=token,env=TOKEN", "--secret", "id=npmrc,src=/home/me/.npmrc",
        "--cache-repo", "ghcr.io/acme/shop/cache",
    ]  # fmt: skip
    assert "s3cr3t" not in command


def test_the_platform_is_always_said_and_defaults_stay_unsaid() -> None:
    command = reproduce_command(settings({}), "app")
    assert command == (
        f"dagger-stages shell app --platform {native_platform()} "
        "--cache-repo ghcr.io/acme/shop/cache"
    )


def test_a_dockerfile_elsewhere_and_the_config_file_are_named() -> None:
    chosen = settings({"dockerfile": "build/Dockerfile.ci"}, config={})
    chosen = replace(chosen, config_path="ci/dagger-stages.yaml")
    words = shlex.split(reproduce_command(chosen, "app"))
    assert words[3:7] == [
        "--config",
        "ci/dagger-stages.yaml",
        "--dockerfile",
        "build/Dockerfile.ci",
    ]
