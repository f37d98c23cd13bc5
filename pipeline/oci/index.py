"""An image index (manifest list) over per-platform images, as a registry stores it.

The index names each platform image by digest, media type and size, with its platform; the
registry needs those images in the index's repository before the index is PUT there.
Docker's manifest list is used when every image is a Docker manifest (what dockerd 20.10
pushes), so that a client that reads only Docker types still reads it; else an OCI index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.oci.registry import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipeline.dockerfile.platforms import Platform
    from pipeline.oci.registry import ManifestInfo

__all__ = ["PlatformImage", "image_index"]


@dataclass(frozen=True)
class PlatformImage:
    """One entry of an image index: the platform it is for, and its manifest's descriptor, read
    back from the registry once the image was copied or pushed there."""

    platform: Platform
    manifest: ManifestInfo


def image_index(images: Sequence[PlatformImage]) -> tuple[bytes, str]:
    """The index's bytes and media type."""
    docker = all(image.manifest.media_type == DOCKER_MANIFEST for image in images)
    media_type = DOCKER_MANIFEST_LIST if docker else OCI_INDEX
    manifests = []
    for image in images:
        platform = {"architecture": image.platform.arch, "os": image.platform.os}
        if image.platform.variant:
            platform["variant"] = image.platform.variant
        manifests.append(
            {
                "mediaType": image.manifest.media_type,
                "size": image.manifest.size,
                "digest": image.manifest.digest,
                "platform": platform,
            }
        )
    document = {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}
    return json.dumps(document, indent=2).encode(), media_type
