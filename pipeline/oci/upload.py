"""Pushing an image from its layer files with our own client, where the engine's push is slow.

dockerd's `docker push` spends about twelve round trips on one image: a ping, then for each
layer a HEAD, a mount or a POST, a PATCH and a PUT, then the config the same way, then the
manifest. Here a blob the repository may lack costs one POST, which mounts it if the registry
has it and else opens its upload, then one PUT with its bytes; the layers and the config go
at once, then the manifest: three round trips at most, over kept-alive connections.

Over a distant registry, uploads can be opened while the image is still being built
(`reserve`): a small blob then costs its push one PUT, with no POST before it.

A layer is compressed and uploaded once per run and repository however many images share it,
and not at all when an image the repository holds shows its blob (`learn`: a stage's hint, the
image of its last build). Layers are compressed deterministically (zlib's gzip, level 1, no
name, no time), so one compressed in another run is the same blob, which the mount then finds.
A layer that an image of another repository on the same registry shows (`learn` of a pinned
base image: a mirror of the base next to the cache) is mounted from there, as `docker push`
does: one POST, and neither compressed nor sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from pipeline.errors import StageFailed, ToolError
from pipeline.oci.registry import (
    DOCKER_MANIFEST,
    RegistryError,
    RegistryProtocolError,
    sha256_digest,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from pipeline.oci.reference import Reference
    from pipeline.oci.registry import RegistryClient

__all__ = ["CONFIG", "LAYER", "Blob", "ImageFiles", "Spare", "Uploader"]

LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONFIG = "application/vnd.docker.container.image.v1+json"
_GZIP_LAYERS = frozenset({LAYER, "application/vnd.oci.image.layer.v1.tar+gzip"})
_CHUNK = 1 << 20
# zlib's fastest level, go-containerregistry's default for the layers it compresses (its
# tarball.LayerFromOpener): a 2 MB layer takes 35 ms instead of level 6's 90 ms, for 6 % more
# bytes, which take less than that to send over a link of 1 MB/s or more. The blob is the
# same for the same layer in every run.
_LEVEL = 1
# A blob this small goes to an upload opened ahead without asking whether the registry has it:
# sending it again costs less than the round trip that asking does.
_BLIND = 1 << 20


@dataclass(frozen=True)
class Blob:
    """A blob in a repository, as a manifest's descriptor names it: remembered per diff id, so
    that a layer is compressed and uploaded once however many images of the run share it."""

    digest: str
    size: int
    media_type: str = LAYER

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest}


@dataclass(frozen=True)
class ImageFiles:
    """An image as its engine exported it: the config's exact bytes (the image's ID is their
    digest), and each layer uncompressed, in the order of the config's `rootfs.diff_ids`."""

    config: bytes
    layers: tuple[Path, ...]

    @property
    def diff_ids(self) -> list[str]:
        try:
            diff_ids = json.loads(self.config)["rootfs"]["diff_ids"]
        except (ValueError, KeyError, TypeError):
            diff_ids = None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(self.layers):
            raise StageFailed("the engine exported an image whose config lists other layers")
        return [str(diff_id) for diff_id in diff_ids]


@dataclass
class Spare:
    """Uploads opened ahead in `ref`'s repository for one image's push (`Uploader.reserve`);
    once `closed`, those left unused are cancelled, and so is any opened later."""

    ref: Reference
    locations: list[str] = field(default_factory=list)
    closed: bool = False

    def take(self, ref: Reference, size: int) -> str | None:
        if self.closed or size > _BLIND or ref.name != self.ref.name or not self.locations:
            return None
        return self.locations.pop()


@dataclass
class _Flight:
    """One blob's upload, awaited by every push that needs it meanwhile."""

    done: anyio.Event = field(default_factory=anyio.Event)


class Uploader:
    """The layers each repository has, by diff id, and the uploads of one run's pushes.

    Knowledge comes from two places: the blobs this run uploaded or found (always right), and
    those an image of the repository lists (`learn`), which a registry could have deleted
    since. A manifest refused for a missing blob is pushed once more without the latter.
    """

    def __init__(self, client: RegistryClient) -> None:
        self._client = client
        self._blobs: dict[tuple[str, str], Blob] = {}  # (repository, diff id): found or uploaded
        # (registry, diff id): each repository of that registry with an image that lists the
        # layer, and its blob there
        self._listed: dict[tuple[str, str], dict[str, Blob]] = {}
        self._flights: dict[tuple[str, str], _Flight] = {}
        self._learning: dict[str, anyio.Event] = {}

    def round_trip(self, ref: Reference) -> float | None:
        return self._client.round_trip(ref)

    async def learn(self, ref: Reference) -> None:
        """Note the layers of the image `ref` names as present in its repository, whence a
        push to another repository of its registry may mount them. Quiet: a failure costs
        only uploads that could have been skipped. Callers asking for one image at the same
        time share its two GETs."""
        key = str(ref)
        if (learning := self._learning.get(key)) is not None:
            await learning.wait()
            return
        learning = self._learning[key] = anyio.Event()
        try:
            body, _ = await self._client.get_manifest(ref)
            manifest = json.loads(body)
            config = json.loads(await self._client.get_blob(ref, manifest["config"]["digest"]))
            pairs = list(zip(config["rootfs"]["diff_ids"], manifest["layers"], strict=True))
            for diff_id, layer in pairs:
                if layer.get("mediaType") in _GZIP_LAYERS:
                    blob = Blob(str(layer["digest"]), int(layer["size"]))
                    listed = self._listed.setdefault((ref.registry, str(diff_id)), {})
                    listed.setdefault(ref.repository, blob)
        except (RegistryError, ValueError, KeyError, TypeError, AttributeError):
            return
        finally:
            learning.set()

    async def reserve(self, spare: Spare, count: int) -> None:
        """Open `count` uploads in the spare's repository at once, for blobs whose digests
        are not known yet (the new layers and the config of an image being built). Quiet: an
        upload that could not be opened costs its blob the usual POST."""

        async def one() -> None:
            try:
                location = await self._client.open_upload(spare.ref)
            except RegistryError:
                return
            if spare.closed:
                await self._cancel(spare.ref, location)
            else:
                spare.locations.append(location)

        async with anyio.create_task_group() as group:
            for _ in range(count):
                group.start_soon(one)

    async def close(self, spare: Spare) -> None:
        """Cancel the spare's uploads left unused, so that the registry keeps none of them."""
        spare.closed = True
        left, spare.locations = spare.locations, []
        async with anyio.create_task_group() as group:
            for location in left:
                group.start_soon(self._cancel, spare.ref, location)

    async def _cancel(self, ref: Reference, location: str) -> None:
        with contextlib.suppress(RegistryError):
            await self._client.cancel_upload(ref, location)

    async def push(self, image: ImageFiles, ref: Reference, manifest: bytes | None = None) -> str:
        """Upload what `ref`'s repository lacks of the image, then its manifest under `ref`'s
        tag; returns the manifest's digest. `manifest`: what `upload` of the image to that
        repository returned, so that only the manifest is left to write."""
        try:
            body = manifest or await self.upload(image, ref)
            return await self._client.put_manifest(ref, body, DOCKER_MANIFEST)
        except RegistryProtocolError as exc:
            if "BLOB_UNKNOWN" not in exc.message:
                raise
        body = await self.upload(image, ref, trust_listed=False)
        return await self._client.put_manifest(ref, body, DOCKER_MANIFEST)

    async def upload(
        self,
        image: ImageFiles,
        ref: Reference,
        *,
        trust_listed: bool = True,
        spare: Spare | None = None,
    ) -> bytes:
        """Every blob of the image in `ref`'s repository, all at once; returns the manifest
        that names them. Blobs alone change no tag, so this may go ahead of the decision to
        push (the runner's first-writer HEAD). Small blobs go to `spare`'s uploads while it
        has some."""
        diff_ids = image.diff_ids
        layers: dict[int, Blob] = {}
        config: list[Blob] = []

        async def layer(position: int) -> None:
            layers[position] = await self._layer(
                ref, diff_ids[position], image.layers[position], trust_listed, spare
            )

        async def upload_config() -> None:
            config.append(await self._config(ref, image.config, spare))

        try:
            async with anyio.create_task_group() as group:
                for position in range(len(diff_ids)):
                    group.start_soon(layer, position)
                group.start_soon(upload_config)
        except* ToolError as group:
            raise _first(group) from None  # as a push's error, like any engine's
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config[0].descriptor(),
            "layers": [layers[position].descriptor() for position in range(len(diff_ids))],
        }
        return json.dumps(manifest, indent=3).encode()

    async def _layer(
        self, ref: Reference, diff_id: str, path: Path, trust_listed: bool, spare: Spare | None
    ) -> Blob:
        """The layer's blob in `ref`'s repository: known, being uploaded by another push of
        this run, or compressed and uploaded now."""
        key = (ref.name, diff_id)
        listed = self._listed.get((ref.registry, diff_id), {})
        if trust_listed and key not in self._blobs and (here := listed.get(ref.repository)):
            return here
        elsewhere = [(name, blob) for name, blob in listed.items() if name != ref.repository]

        async def upload() -> Blob:
            opened = None
            if elsewhere:
                # the registry checks a mount: its answer is as sure as an upload's
                repository, blob = elsewhere[0]
                try:
                    opened = await self._client.mount_blob(ref, blob.digest, repository)
                except RegistryError:
                    pass  # then uploaded as any other layer
                else:
                    if opened is None:
                        return blob
            data, digest = await anyio.to_thread.run_sync(_gzip, path, diff_id)
            if opened is None and spare is not None:
                opened = spare.take(ref, len(data))
            await self._client.upload_blob(ref, digest, data, opened)
            return Blob(digest, len(data))

        return await self._once(key, upload)

    async def _config(self, ref: Reference, config: bytes, spare: Spare | None) -> Blob:
        digest = sha256_digest(config)

        async def upload() -> Blob:
            opened = spare.take(ref, len(config)) if spare is not None else None
            await self._client.upload_blob(ref, digest, config, opened)
            return Blob(digest, len(config), CONFIG)

        return await self._once((ref.name, digest), upload)

    async def _once(self, key: tuple[str, str], upload: Callable[[], Awaitable[Blob]]) -> Blob:
        """The blob under `key` once it is in the repository, uploaded by the first push of
        this run that needs it; one whose upload failed is tried again by the next."""
        while (known := self._blobs.get(key)) is None:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = _Flight()
                try:
                    self._blobs[key] = await upload()
                finally:
                    del self._flights[key]
                    flight.done.set()
            else:
                await flight.done.wait()
        return known


def _first(group: BaseExceptionGroup[ToolError]) -> ToolError:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _gzip(path: Path, diff_id: str) -> tuple[bytes, str]:
    """The layer gzip-compressed the same way every time, and the digest of that; checked
    to be the layer its diff id names, as an image pushed with a wrong one would not pull."""
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    uncompressed = hashlib.sha256()
    parts = []
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            uncompressed.update(chunk)
            parts.append(compressor.compress(chunk))
    parts.append(compressor.flush())
    if f"sha256:{uncompressed.hexdigest()}" != diff_id:
        raise StageFailed(f"the engine exported a layer that is not {diff_id}")
    data = b"".join(parts)
    return data, sha256_digest(data)
