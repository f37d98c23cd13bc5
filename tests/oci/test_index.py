from __future__ import annotations

import json

from pipeline.dockerfile.platforms import Platform
from pipeline.oci.index import PlatformImage, image_index
from pipeline.oci.registry import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    ManifestInfo,
)

AMD64 = Platform.parse("linux/amd64")
ARMV7 = Platform.parse("linux/arm/v7")


def test_docker_manifests_make_a_docker_manifest_list() -> None:
    images = [
        PlatformImage(AMD64, ManifestInfo("sha256:" + "a" * 64, DOCKER_MANIFEST, 528)),
        PlatformImage(ARMV7, ManifestInfo("sha256:" + "b" * 64, DOCKER_MANIFEST, 529)),
    ]
    body, media_type = image_index(images)
    assert media_type == DOCKER_MANIFEST_LIST
    assert json.loads(body) == {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            {
                "mediaType": DOCKER_MANIFEST,
                "size": 528,
                "digest": "sha256:" + "a" * 64,
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                "mediaType": DOCKER_MANIFEST,
                "size": 529,
                "digest": "sha256:" + "b" * 64,
                "platform": {"architecture": "arm", "os": "linux", "variant": "v7"},
            },
        ],
    }


def test_any_oci_manifest_makes_an_oci_index() -> None:
    images = [
        PlatformImage(AMD64, ManifestInfo("sha256:" + "a" * 64, DOCKER_MANIFEST, 528)),
        PlatformImage(ARMV7, ManifestInfo("sha256:" + "b" * 64, OCI_MANIFEST, 529)),
    ]
    body, media_type = image_index(images)
    assert media_type == OCI_INDEX
    assert json.loads(body)["mediaType"] == OCI_INDEX
