from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from pipeline.dockerfile.graph import Graph, select
from pipeline.dockerfile.parse import parse_dockerfile
from pipeline.dockerfile.stages import Dockerfile, Platform, build_stages

pytest_plugins = ["tests.registry_server", "tests.docker_env", "tests.fake_dagger"]

FIXTURES = Path(__file__).parent / "fixtures"

_CI_VARIABLES = (
    "CI",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "DAGGER_SESSION_PORT",
    "DAGGER_SESSION_TOKEN",
    "REGISTRY_USER",
    "REGISTRY_PASSWORD",
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the CI they run in, nor write to the real home directory."""
    for name in _CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)


@pytest.fixture
def chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    return tmp_path


WriteDockerfile = Callable[..., Dockerfile]


@pytest.fixture
def dockerfile(tmp_path: Path) -> WriteDockerfile:
    """Write a real Dockerfile and read it back as stages."""

    def write(
        text: str,
        *,
        build_args: Mapping[str, str] | None = None,
        platform: str | None = None,
        target: str | None = None,
    ) -> Dockerfile:
        path = tmp_path / "Dockerfile"
        path.write_text(text)
        return build_stages(
            parse_dockerfile(path),
            build_args=build_args,
            platform=Platform.parse(platform) if platform else None,
            target=target,
        )

    return write


def graph_of(dockerfile: Dockerfile, *targets: str) -> Graph:
    return select(dockerfile, targets)
