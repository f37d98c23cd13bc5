"""Multi-platform `build` for real: dockerd 20.10 builds linux/amd64 and linux/arm64, and the
registry holds the per-platform stage caches and one image index per target.

No arm64 image can be pulled here, so the base is made by hand with the registry API: an image
index over the local busybox (amd64) and an arm64 entry, a config that says arm64 over the same
busybox layer. Its binaries cannot run on amd64 without QEMU, and need not: the arm64 stages
only COPY (docs/multi-platform.md says why no foreign RUN step is tested here).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest

from tests.cli import run_cli
from tests.docker_env import DockerEnv
from tests.engine_double import EngineDouble

pytestmark = [pytest.mark.docker, pytest.mark.registry]

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

# tools runs on the build platform and reads no TARGET* ARG: one image for both platforms;
# build reads TARGETARCH, on the build platform too (its RUN runs natively); release is of
# the target platform and only copies.
DOCKERFILE = """\
ARG BASE
FROM --platform=$BUILDPLATFORM ${BASE} AS tools
RUN echo tools > /tools.txt
FROM tools AS build
ARG TARGETARCH
RUN echo "built for $TARGETARCH" > /out.txt
FROM ${BASE} AS release
COPY --from=tools /tools.txt /tools.txt
COPY --from=build /out.txt /out.txt
"""


def _put_blob(base: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = httpx.post(f"{base}/blobs/uploads/", timeout=10)
    started.raise_for_status()
    location = httpx.URL(base).join(started.headers["Location"])
    done = httpx.put(location.copy_merge_params({"digest": digest}), content=data, timeout=10)
    done.raise_for_status()
    return digest


def _put_manifest(base: str, reference: str, body: bytes, media_type: str) -> str:
    response = httpx.put(
        f"{base}/manifests/{reference}",
        content=body,
        headers={"Content-Type": media_type},
        timeout=10,
    )
    response.raise_for_status()
    return "sha256:" + hashlib.sha256(body).hexdigest()


@pytest.fixture(scope="module")
def two_platform_base(docker_env: DockerEnv) -> str:
    """`<registry>/platforms-<id>/busybox:1`, an index over amd64 and a hand-made arm64."""
    source = f"http://{docker_env.registry}/v2/busybox"
    name = f"platforms-{uuid.uuid4().hex[:12]}/busybox"
    base = f"http://{docker_env.registry}/v2/{name}"
    got = httpx.get(f"{source}/manifests/1", headers={"Accept": DOCKER_MANIFEST}, timeout=10)
    got.raise_for_status()
    manifest = got.json()
    config = httpx.get(f"{source}/blobs/{manifest['config']['digest']}", timeout=10).json()
    for layer in manifest["layers"]:
        mounted = httpx.post(
            f"{base}/blobs/uploads/?mount={layer['digest']}&from=busybox", timeout=10
        )
        assert mounted.status_code == 201, mounted.text
    entries = []
    for arch in ("amd64", "arm64"):
        config_body = json.dumps({**config, "architecture": arch}).encode()
        config_digest = _put_blob(base, config_body)
        body = json.dumps(
            {
                **manifest,
                "config": {**manifest["config"], "digest": config_digest, "size": len(config_body)},
            }
        ).encode()
        digest = _put_manifest(base, f"{arch}", body, DOCKER_MANIFEST)
        entries.append(
            {
                "mediaType": DOCKER_MANIFEST,
                "size": len(body),
                "digest": digest,
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
    index = {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": entries}
    _put_manifest(base, "1", json.dumps(index).encode(), DOCKER_LIST)
    return f"{docker_env.registry}/{name}:1"


def _report(path: Path) -> list[dict[str, object]]:
    stages: list[dict[str, object]] = json.loads(path.read_text())["stages"]
    return stages


def _engine(
    name: str, docker_env: DockerEnv, request: pytest.FixtureRequest
) -> tuple[list[str], EngineDouble | None]:
    """How `build` starts on each executor; Dagger's on the engine double, sharing the host's
    network (as in tests/engines/test_dagger_e2e.py)."""
    if name == "docker":
        return docker_env.build_args(), None
    engine: EngineDouble = request.getfixturevalue("engine_double")
    engine.host_network = True
    request.getfixturevalue("monkeypatch").setenv("DAGGER_STAGES_ENGINE_REACHES", "*")
    return ["build", "--engine", "dagger"], engine


@pytest.mark.parametrize("executor", ["docker", pytest.param("dagger", marks=pytest.mark.dagger)])
def test_cross_compilation_for_two_platforms(
    tmp_path: Path,
    docker_env: DockerEnv,
    two_platform_base: str,
    executor: str,
    request: pytest.FixtureRequest,
) -> None:
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    cache_repo = docker_env.cache_repo()
    image = cache_repo.rsplit("/", 1)[0] + "/app"
    start, engine = _engine(executor, docker_env, request)
    command = [
        *start,
        "--platform",
        "linux/amd64,linux/arm64",
        "--cache-repo",
        cache_repo,
        "--build-arg",
        f"BASE={two_platform_base}",
        "--push",
        "--publish",
        f"release={image}:v1",
        "--report",
        str(tmp_path / "report.json"),
        "--junit",
        str(tmp_path / "junit.xml"),
    ]
    cold = run_cli(*command, cwd=tmp_path)
    assert cold.returncode == 0, cold.stderr
    stages = _report(tmp_path / "report.json")
    assert [(s["name"], s["platform"], s["status"]) for s in stages] == [
        ("tools (all platforms)", "all platforms", "built"),
        ("build (linux/amd64)", "linux/amd64", "built"),
        ("build (linux/arm64)", "linux/arm64", "built"),
        ("release (linux/amd64)", "linux/amd64", "built"),
        ("release (linux/arm64)", "linux/arm64", "built"),
    ]
    cases = ElementTree.parse(tmp_path / "junit.xml").getroot().iter("testcase")
    assert [case.get("name") for case in cases] == [s["name"] for s in stages]
    if engine is not None:
        builds = sorted((record.target, record.platform) for record in engine.builds)
        assert builds == [
            ("build", "linux/amd64"),
            ("build", "linux/arm64"),
            ("release", "linux/amd64"),
            ("release", "linux/arm64"),
            ("tools", "linux/amd64"),
        ]
    tags = [tag for tag in docker_env.tags(cache_repo) if "--" not in tag]
    assert [tag.split("-", 1)[0] for tag in tags] == [
        "build",
        "build",
        "release",
        "release",
        "tools",
    ]

    name = image.split("/", 1)[1]
    registry = f"http://{docker_env.registry}/v2/{name}"
    got = httpx.get(f"{registry}/manifests/v1", headers={"Accept": DOCKER_LIST}, timeout=10)
    got.raise_for_status()
    index = got.json()
    assert index["mediaType"] == DOCKER_LIST
    platforms = [entry["platform"]["architecture"] for entry in index["manifests"]]
    assert platforms == ["amd64", "arm64"]
    for entry in index["manifests"]:
        child = httpx.get(
            f"{registry}/manifests/{entry['digest']}",
            headers={"Accept": DOCKER_MANIFEST},
            timeout=10,
        ).json()
        config = httpx.get(f"{registry}/blobs/{child['config']['digest']}", timeout=10).json()
        assert config["architecture"] == entry["platform"]["architecture"]

    warm = run_cli(*command, cwd=tmp_path)
    assert warm.returncode == 0, warm.stderr
    statuses = {s["name"]: s["status"] for s in _report(tmp_path / "report.json")}
    assert "built" not in statuses.values(), statuses
    assert statuses["release (linux/amd64)"] == statuses["release (linux/arm64)"] == "cached"
