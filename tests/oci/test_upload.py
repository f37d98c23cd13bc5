"""Pushing an image from its layer files (`Uploader`), against a real registry."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path

import httpx
import pytest

from pipeline.errors import StageFailed
from pipeline.oci.reference import Reference
from pipeline.oci.registry import RegistryClient
from pipeline.oci.upload import ImageFiles, Spare, Uploader
from tests.registry_server import RegistryServer, push_image, sha256_digest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def layer(tmp_path: Path, name: str, content: bytes) -> Path:
    """An uncompressed layer tarball with one file, as `docker save` writes them."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    path = tmp_path / f"{uuid.uuid4().hex}.tar"
    path.write_bytes(data.getvalue())
    return path


def image(*layers: Path, label: str = "x") -> ImageFiles:
    diff_ids = [sha256_digest(path.read_bytes()) for path in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"label": label}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    return ImageFiles(json.dumps(config).encode(), tuple(layers))


def repository(server: RegistryServer, tag: str) -> Reference:
    return Reference.parse(f"{server.host}/tests/u{uuid.uuid4().hex[:12]}:{tag}")


def read(server: RegistryServer, ref: Reference, reference: str) -> dict[str, object]:
    response = httpx.get(
        f"{server.url}/v2/{ref.repository}/manifests/{reference}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    response.raise_for_status()
    document: dict[str, object] = response.json()
    return document


def hint_of_another_tool(server: RegistryServer, tmp_path: Path) -> tuple[Path, bytes, Reference]:
    """A layer, its blob as another tool compressed it, and the hint image `:hint` that has it."""
    base = layer(tmp_path, "base", b"base" * 1000)
    theirs = gzip.compress(base.read_bytes(), mtime=1)  # not our compression
    ref = repository(server, "hint")
    config = {"rootfs": {"type": "layers", "diff_ids": [sha256_digest(base.read_bytes())]}}
    push_image(server.url, ref.repository, "hint", config=config, layers=[theirs])
    return base, theirs, ref


def read_blob(server: RegistryServer, ref: Reference, digest: str) -> bytes:
    return httpx.get(f"{server.url}/v2/{ref.repository}/blobs/{digest}").content


def delete_blob(server: RegistryServer, ref: Reference, digest: str) -> None:
    """Unlink a blob from the repository, as a registry's clean-up would."""
    gone = httpx.delete(f"{server.url}/v2/{ref.repository}/blobs/{digest}")
    assert gone.status_code == 202


def upload_status(server: RegistryServer, location: str, *, cancel: bool = False) -> int:
    """What the registry answers about an upload: 204 while it is open, 404 once it is gone."""
    url = str(httpx.URL(server.url).join(location))
    return (httpx.delete(url) if cancel else httpx.get(url)).status_code


def uploads(client: RegistryClient) -> int:
    return client.stats.requests


@pytest.mark.anyio
async def test_an_image_is_pushed_and_reads_back_as_it_was(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """The manifest names the exact config, and each layer gzip-compressed, in order."""
    files = image(layer(tmp_path, "a", b"base" * 1000), layer(tmp_path, "b", b"top"))
    ref = repository(registry, "one")
    async with RegistryClient(insecure=[registry.host]) as client:
        digest = await Uploader(client).push(files, ref)
    manifest = read(registry, ref, "one")
    assert sha256_digest(json.dumps(manifest, indent=3).encode()) == digest
    assert manifest["config"] == {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "size": len(files.config),
        "digest": sha256_digest(files.config),
    }
    for path, entry in zip(files.layers, manifest["layers"], strict=True):  # type: ignore[call-overload]
        blob = read_blob(registry, ref, entry["digest"])
        assert gzip.decompress(blob) == path.read_bytes()
        assert entry["size"] == len(blob)


@pytest.mark.anyio
async def test_a_layer_is_uploaded_once_per_run_and_found_again_in_the_next(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """Two images sharing a layer upload it once; a later run compresses it to the same
    blob, which the upload's mount finds: one POST, no PUT."""
    shared = layer(tmp_path, "shared", b"shared" * 5000)
    ref = repository(registry, "first")
    async with RegistryClient(insecure=[registry.host]) as client:
        uploader = Uploader(client)
        await uploader.push(image(shared, layer(tmp_path, "one", b"1")), ref)
        before = uploads(client)
        await uploader.push(image(shared, layer(tmp_path, "two", b"2")), ref.with_tag("second"))
        # the new layer and the config: a POST and a PUT each; then the manifest
        assert uploads(client) - before == 5
    async with RegistryClient(insecure=[registry.host]) as client:
        await Uploader(client).push(image(shared, label="y"), ref.with_tag("third"))
        # the shared layer: one POST that mounts it; the new config: POST, PUT; the manifest
        assert uploads(client) == 4
    first, third = read(registry, ref, "first"), read(registry, ref, "third")
    assert first["layers"][0] == third["layers"][0]  # type: ignore[index]


@pytest.mark.anyio
async def test_layers_an_image_of_the_repository_lists_are_not_uploaded(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """`learn` reads a hint's manifest and config: its layers are named by their blobs, even
    ones another tool compressed differently."""
    base, theirs, ref = hint_of_another_tool(registry, tmp_path)
    async with RegistryClient(insecure=[registry.host]) as client:
        uploader = Uploader(client)
        await uploader.learn(ref)
        await uploader.push(image(base, layer(tmp_path, "top", b"top")), ref.with_tag("new"))
    assert read(registry, ref, "new")["layers"][0]["digest"] == sha256_digest(theirs)  # type: ignore[index]


@pytest.mark.anyio
async def test_a_listed_blob_the_registry_lost_is_uploaded_after_all(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """A manifest refused for a blob an image listed (deleted since) is pushed once more,
    uploading every layer this run has not uploaded itself."""
    base, theirs, ref = hint_of_another_tool(registry, tmp_path)
    async with RegistryClient(insecure=[registry.host]) as client:
        uploader = Uploader(client)
        await uploader.learn(ref)
        delete_blob(registry, ref, sha256_digest(theirs))
        await uploader.push(image(base), ref.with_tag("new"))
    entry = read(registry, ref, "new")["layers"][0]  # type: ignore[index]
    assert entry["digest"] != sha256_digest(theirs)


@pytest.mark.anyio
async def test_a_layer_that_is_not_its_diff_id_is_refused(
    registry: RegistryServer, tmp_path: Path
) -> None:
    path = layer(tmp_path, "a", b"a")
    config = {
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(b'b').hexdigest()}"]}
    }
    files = ImageFiles(json.dumps(config).encode(), (path,))
    async with RegistryClient(insecure=[registry.host]) as client:
        with pytest.raises(StageFailed, match="exported a layer that is not"):
            await Uploader(client).push(files, repository(registry, "bad"))


@pytest.mark.anyio
async def test_small_blobs_go_to_uploads_opened_ahead_and_the_rest_are_cancelled(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """Uploads opened while an image builds (`reserve`) take its small blobs with one PUT
    each, no POST; those left unused are cancelled, so the registry keeps none of them."""
    files = image(layer(tmp_path, "a", b"base" * 1000), layer(tmp_path, "b", b"top"))
    ref = repository(registry, "one")
    async with RegistryClient(insecure=[registry.host]) as client:
        uploader = Uploader(client)
        spare = Spare(ref)
        await uploader.reserve(spare, 4)
        assert len(spare.locations) == 4
        before = uploads(client)
        manifest = await uploader.upload(files, ref, spare=spare)
        assert uploads(client) - before == 3  # two layers and the config: a PUT each
        left = list(spare.locations)
        assert len(left) == 1
        await uploader.close(spare)
        assert spare.locations == []
        await uploader.push(files, ref, manifest)
        await uploader.reserve(spare, 1)  # opened after the close: cancelled at once
    assert spare.locations == []
    assert read(registry, ref, "one")["layers"] == json.loads(manifest)["layers"]
    assert upload_status(registry, left[0]) == 404


@pytest.mark.anyio
async def test_a_blob_whose_upload_opened_ahead_is_gone_is_put_anew(
    registry: RegistryServer, tmp_path: Path
) -> None:
    files = image(layer(tmp_path, "a", b"a"))
    ref = repository(registry, "one")
    async with RegistryClient(insecure=[registry.host]) as client:
        uploader = Uploader(client)
        spare = Spare(ref)
        await uploader.reserve(spare, 2)
        for location in spare.locations:
            assert upload_status(registry, location, cancel=True) == 204
        digest = await uploader.push(files, ref, await uploader.upload(files, ref, spare=spare))
    assert read(registry, ref, "one")["config"]["digest"] == sha256_digest(files.config)  # type: ignore[index]
    assert digest.startswith("sha256:")


@pytest.mark.anyio
async def test_a_layer_another_repository_of_the_registry_shows_is_mounted_from_there(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """A base image mirrored next to the cache (`learn` of it): its layer goes into the cache
    repository by one POST that mounts it, neither compressed nor sent, as `docker push`
    mounts it; the manifest names the base's own blob."""
    base, theirs, mirror = hint_of_another_tool(registry, tmp_path)
    ref = repository(registry, "stage")
    async with RegistryClient(insecure=[registry.host]) as client:
        uploader = Uploader(client)
        await uploader.learn(mirror)
        before = client.stats.requests
        await uploader.push(image(base, layer(tmp_path, "top", b"top")), ref)
        # the base layer: one POST that mounts it; the new layer and the config: a POST and
        # a PUT each; then the manifest
        assert client.stats.requests - before == 6
    entry = read(registry, ref, "stage")["layers"][0]  # type: ignore[index]
    assert entry["digest"] == sha256_digest(theirs)
    assert read_blob(registry, ref, entry["digest"]) == theirs


@pytest.mark.anyio
async def test_a_layer_the_other_repository_lost_is_uploaded_through_the_mount_s_upload(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """A mount the registry cannot make opens an upload, which takes the layer at once."""
    base, theirs, mirror = hint_of_another_tool(registry, tmp_path)
    ref = repository(registry, "stage")
    async with RegistryClient(insecure=[registry.host]) as client:
        uploader = Uploader(client)
        await uploader.learn(mirror)
        delete_blob(registry, mirror, sha256_digest(theirs))
        before = client.stats.requests
        await uploader.push(image(base), ref)
        # the base layer: the POST that failed to mount it, then a PUT; the config: a POST
        # and a PUT; then the manifest
        assert client.stats.requests - before == 5
    entry = read(registry, ref, "stage")["layers"][0]  # type: ignore[index]
    assert entry["digest"] != sha256_digest(theirs)
    assert gzip.decompress(read_blob(registry, ref, entry["digest"])) == base.read_bytes()
