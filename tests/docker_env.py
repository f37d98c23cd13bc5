"""The real Docker daemon, registry and base image the end-to-end tests build with.

`scripts/services` installs and starts them (CI runs it). Without them these tests skip, unless
DAGGER_STAGES_REQUIRE_SERVICES=1, where they fail: in CI a missing service is a failure.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REGISTRY = "localhost:5000"
BASE = f"{REGISTRY}/busybox:1"
REQUIRED = os.environ.get("DAGGER_STAGES_REQUIRE_SERVICES") == "1"


@dataclass(frozen=True)
class DockerEnv:
    docker: str
    registry: str
    base: str

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.docker, *args], capture_output=True, text=True, check=check, timeout=300
        )

    def build_args(self, *args: str) -> list[str]:
        """`build` with this daemon's Docker CLI, then `args`: how every end-to-end build starts."""
        return ["build", "--engine", "docker", "--docker", self.docker, *args]

    def cache_repo(self) -> str:
        """A repository of its own for each test, so tests never see each other's cache."""
        return f"{self.registry}/e2e-{uuid.uuid4().hex[:12]}/cache"

    def tags(self, repository: str) -> list[str]:
        name = repository.split("/", 1)[1]
        response = httpx.get(f"http://{self.registry}/v2/{name}/tags/list", timeout=10)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return sorted(response.json().get("tags") or [])

    def image_config(self, ref: str) -> dict[str, Any]:
        """The pushed image's config blob (env, labels, history), read from the registry."""
        repository, _, tag = ref.rpartition(":")
        name = repository.split("/", 1)[1]
        accept = "application/vnd.docker.distribution.manifest.v2+json"
        base = f"http://{self.registry}/v2/{name}"
        manifest = httpx.get(f"{base}/manifests/{tag}", headers={"Accept": accept}, timeout=10)
        manifest.raise_for_status()
        digest = manifest.json()["config"]["digest"]
        config: dict[str, Any] = httpx.get(f"{base}/blobs/{digest}", timeout=10).json()
        return config

    def build_clean(self, *args: str, cwd: Path | None = None) -> None:
        """`docker build --no-cache <args>` with BuildKit: the reference a cached build's image
        must equal. Uses no cache of any kind, so no other test's images matter."""
        command = [self.docker, "build", "-q", "--no-cache", *args]
        result = subprocess.run(
            command,
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr

    def remove_images(self, cache_repo: str, *images: str) -> None:
        """`images` and this test's images under `cache_repo`, never another test's."""
        listed = self.run("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        ours = [image for image in listed if image.startswith(f"{cache_repo}:")]
        if ours or images:
            self.run("rmi", "-f", *images, *ours, check=False)

    def export(self, image: str) -> bytes:
        """An image's filesystem as one tar (`docker export` of a container never started)."""
        container = f"image-files-{uuid.uuid4().hex[:12]}"
        self.run("create", "--name", container, image, "none")
        try:
            return subprocess.run(
                [self.docker, "export", container], capture_output=True, timeout=120, check=True
            ).stdout
        finally:
            self.run("rm", "-f", container, check=False)

    def image_files(self, image: str) -> dict[str, tuple[object, ...]]:
        """Every path of an image's filesystem, from `docker export`: its type, mode, owner,
        link target and content digest. Times are left out: any two builds differ in them."""
        listing: dict[str, tuple[object, ...]] = {}
        with tarfile.open(fileobj=io.BytesIO(self.export(image))) as archive:
            for member in archive:
                content = archive.extractfile(member) if member.isfile() else None
                digest = hashlib.sha256(content.read()).hexdigest() if content else ""
                listing[member.name] = (
                    member.type,
                    member.mode,
                    member.uid,
                    member.gid,
                    member.linkname,
                    digest,
                )
        return listing

    def wipe_engine_cache(self, cache_repo: str) -> None:
        """What a fresh CI runner has: no BuildKit cache, and none of this test's images.

        Only images under the test's own cache repo go: the daemon may be building for other
        test runs at the same time, and removing their images between their build and their
        push (or their hint pull and their build) made those runs fail. The build cache has no
        owner to prune by, so the prune waits for every other test on this machine's daemon:
        pruned between a hint's pull and the build that reuses it, the pulled layers are lost
        and the step runs again (seen with two test runs at once).
        """
        assert _exclusive, "mark the test @pytest.mark.wipes_engine_cache"
        self.run("builder", "prune", "-af")
        self.remove_images(cache_repo)


_LOCK = Path(tempfile.gettempdir()) / "dagger-stages-engine-cache.lock"
_exclusive = False


@pytest.fixture(autouse=True)
def _engine_cache_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests on the daemon share its build cache; one that empties it holds it alone.

    A file lock, so that it holds across test runs on one machine (CI runs one; helpers and
    people run several). A test that uses no daemon takes no lock.
    """
    global _exclusive
    if not {"docker_env", "engine_double"} & set(request.fixturenames):
        yield
        return
    exclusive = request.node.get_closest_marker("wipes_engine_cache") is not None
    with _LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        _exclusive = exclusive
        try:
            yield
        finally:
            _exclusive = False
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unavailable(reason: str) -> None:
    message = f"Docker end-to-end services missing: {reason} (run scripts/services as root)"
    if REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_env() -> DockerEnv:
    docker = os.environ.get("DAGGER_STAGES_DOCKER", "/usr/bin/docker")
    if not Path(docker).exists():
        _unavailable(f"no docker CLI at {docker}")
    env = DockerEnv(docker=docker, registry=REGISTRY, base=BASE)
    if env.run("version", check=False).returncode != 0:
        _unavailable("the Docker daemon does not answer")
    try:
        httpx.get(f"http://{REGISTRY}/v2/busybox/manifests/1", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        _unavailable(f"no base image {BASE} ({exc})")
    return env


def read_report(path: Path) -> dict[str, dict[str, Any]]:
    document = json.loads(path.read_text())
    return {stage["name"]: stage for stage in document["stages"]}
