"""A real distribution registry for tests, and a way to push images to it without docker.

`docker-registry serve` (Debian's distribution v2) runs on a free 127.0.0.1 port
with storage in a temp dir and deletes enabled, optionally behind htpasswd. Load
this module as a pytest plugin (`pytest_plugins = ["registry_server"]` in
conftest.py) for the session fixtures `registry` and `auth_registry`.

Without the binary the fixtures skip, unless DAGGER_STAGES_REQUIRE_SERVICES=1
(CI sets it), when they fail: CI must not pass by testing nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

__all__ = [
    "REQUIRE_SERVICES",
    "RegistryServer",
    "auth_registry",
    "free_port",
    "push_image",
    "registry",
    "require_binary",
    "run_registry",
]

REQUIRE_SERVICES = "DAGGER_STAGES_REQUIRE_SERVICES"
REGISTRY_BINARY = "docker-registry"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
TEST_USER = "ci-user"
TEST_PASSWORD = "s3cret-registry-password"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@dataclass(frozen=True)
class RegistryServer:
    host: str
    url: str
    username: str | None = None
    password: str | None = None

    @property
    def auth(self) -> tuple[str, str] | None:
        if self.username is None or self.password is None:
            return None
        return self.username, self.password


def require_binary(name: str) -> str:
    """The program's path; skip the test without it, or fail when services are required."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed (Debian: apt-get install docker-registry apache2-utils)"
    if os.environ.get(REQUIRE_SERVICES) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_SERVICES}=1 requires it")
    pytest.skip(reason)


def free_port() -> int:
    """A port that was free a moment ago; the registry binds it right after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def run_registry(
    directory: Path, *, credentials: tuple[str, str] | None = None
) -> Iterator[RegistryServer]:
    """Run a registry until the block ends; its storage, config and log live in `directory`."""
    binary = require_binary(REGISTRY_BINARY)
    host = f"127.0.0.1:{free_port()}"
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(directory / "storage")},
            "delete": {"enabled": True},
        },
        "http": {"addr": host, "secret": "dagger-stages-tests"},
    }
    if credentials is not None:
        config["auth"] = {
            "htpasswd": {"realm": "dagger-stages", "path": str(_htpasswd(directory, *credentials))}
        }
    config_path = directory / "config.yml"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    log_path = directory / "registry.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "serve", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://{host}"
        _wait_until_ready(url, process, log_path)
        username, password = credentials or (None, None)
        yield RegistryServer(host, url, username, password)
    finally:
        _stop(process)


def _htpasswd(directory: Path, user: str, password: str) -> Path:
    binary = require_binary("htpasswd")
    result = subprocess.run(
        [binary, "-Bbn", user, password],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
        timeout=STOP_TIMEOUT,
    )
    path = directory / "htpasswd"
    path.write_bytes(result.stdout)
    return path


def _wait_until_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll /v2/ until it answers (200, or 401 behind auth); fail with the log if it dies."""
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = log_path.read_text(errors="replace")
                pytest.fail(f"docker-registry exited with {process.returncode}:\n{log}")
            try:
                if client.get(f"{url}/v2/").status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    pytest.fail(f"docker-registry did not answer on {url} within {START_TIMEOUT:g} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """An open registry for the whole session; tests use their own repositories."""
    with run_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry behind htpasswd Basic auth with TEST_USER and TEST_PASSWORD."""
    with run_registry(
        tmp_path_factory.mktemp("auth-registry"), credentials=(TEST_USER, TEST_PASSWORD)
    ) as server:
        yield server


def push_image(
    base_url: str,
    repository: str,
    tag: str,
    *,
    config: Mapping[str, object],
    layers: Sequence[bytes] = (),
    auth: tuple[str, str] | None = None,
) -> str:
    """Upload the blobs and a Docker v2 schema 2 manifest through the API; returns its digest."""
    config_blob = json.dumps(config, sort_keys=True).encode()
    with httpx.Client(base_url=base_url, auth=auth, timeout=10.0, trust_env=False) as client:
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": _upload(client, repository, config_blob, DOCKER_CONFIG),
            "layers": [_upload(client, repository, layer, DOCKER_LAYER) for layer in layers],
        }
        body = json.dumps(manifest, indent=3).encode()
        response = client.put(
            f"/v2/{repository}/manifests/{tag}",
            content=body,
            headers={"Content-Type": DOCKER_MANIFEST},
        )
        response.raise_for_status()
        return response.headers.get("Docker-Content-Digest") or sha256_digest(body)


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _upload(
    client: httpx.Client, repository: str, blob: bytes, media_type: str
) -> dict[str, object]:
    """A monolithic upload: POST opens the session, PUT with `digest=` sends it all."""
    digest = sha256_digest(blob)
    started = client.post(f"/v2/{repository}/blobs/uploads/")
    started.raise_for_status()
    location = urljoin(str(started.url), started.headers["Location"])
    separator = "&" if "?" in location else "?"
    finished = client.put(
        f"{location}{separator}digest={digest}",
        content=blob,
        headers={"Content-Type": "application/octet-stream"},
    )
    finished.raise_for_status()
    return {"mediaType": media_type, "size": len(blob), "digest": digest}
