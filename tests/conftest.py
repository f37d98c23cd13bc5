"""What every test shares: the service fixtures (as plugins) and the markers they imply,
isolation from the CI the tests run in, and Dockerfiles written and read back as stages."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from pipeline.dockerfile.graph import Graph, select
from pipeline.dockerfile.parse import parse_dockerfile
from pipeline.dockerfile.platforms import Platform
from pipeline.dockerfile.stages import Dockerfile, build_stages

pytest_plugins = [
    "tests.registry_server",
    "tests.docker_env",
    "tests.fake_dagger",
    "tests.engine_double",
]

FIXTURES = Path(__file__).parent / "fixtures"

# What a fixture needs, as markers: `-m "not docker and not registry"` leaves out every test
# that uses a real service, directly or through another fixture; `dagger` is an engine double
# (`engine_double` builds on the real daemon and registry).
_SERVICE_MARKS = {
    "docker_env": ("docker", "registry"),
    "registry": ("registry",),
    "auth_registry": ("registry",),
    "fake_dagger": ("dagger",),
    "engine_double": ("docker", "registry", "dagger"),
}

_CI_VARIABLES = (
    "CI",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "DAGGER_SESSION_PORT",
    "DAGGER_SESSION_TOKEN",
    "REGISTRY_USER",
    "REGISTRY_PASSWORD",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the services its fixtures need, so no test has to say it twice.

    A parametrize argument can share a fixture's name (`registry` in test_reference), so names
    that are parameters of the test are not fixtures.
    """
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = set(callspec.params) if callspec is not None else set()
        fixtures = set(getattr(item, "fixturenames", ())) - params
        marks = {mark for name in fixtures for mark in _SERVICE_MARKS.get(name, ())}
        for mark in sorted(marks):
            item.add_marker(mark)


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
