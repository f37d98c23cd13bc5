"""How stage images are tagged: cache tags, hint tags, their inverse, and the local name.

Users' registries already hold tags spelled this way, and a tag spelled differently is a miss,
so every spelling lives here and nowhere else:

- cache tag `<stage>-<first 32 hex of the key>`, an unnamed stage being `stage-<index>`;
- hint tag `<stage>--<branch slug>`, moved to each new build of the stage on a branch;
- local name `dagger-stages/<build target>:<first 32 hex of the key>`, for an image built
  without a cache repo.

Only the tag is spelled here; the repository it goes into is the caller's `Repository`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pipeline.oci.reference import DOCKER_HUB, Reference, Repository, slugify

if TYPE_CHECKING:
    from pipeline.dockerfile.stages import Stage

__all__ = ["KEY_CHARS", "cache_tag", "hint_tag", "local_tag", "stage_of", "tag_name"]

KEY_CHARS = 32
"""How much of a key a tag keeps: 128 bits tell keys apart and leave room for the stage."""

_TAG_MAX = 128
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_CACHE_TAG = re.compile(rf"(.+)-[0-9a-f]{{{KEY_CHARS}}}")
_LOCAL_NAMESPACE = "dagger-stages"


def tag_name(stage: Stage) -> str:
    """The stage as tags name it: its declared name, else `stage-<index>`, in tag characters.

    Not its display name: an unnamed stage shows as `3`, which would read as a version in a tag.
    """
    name = stage.declared_name if stage.declared_name is not None else f"stage-{stage.index}"
    return _TAG_UNSAFE.sub("-", name)


def cache_tag(stage: Stage, key: str) -> str:
    """`<stage>-<first 32 hex of the key>`; a long name is cut so the key always fits in 128."""
    return f"{tag_name(stage)[: _TAG_MAX - 1 - KEY_CHARS]}-{key[:KEY_CHARS]}"


def hint_tag(stage: Stage, branch: str) -> str:
    """`<stage>--<branch slug>`: moved to each new build of the stage on that branch.

    Only a hint for layer reuse and miss explanations; no correctness depends on it, so a
    long tag is simply cut at 128.
    """
    return f"{tag_name(stage)}--{slugify(branch)}"[:_TAG_MAX]


def stage_of(tag: str) -> str | None:
    """The stage of a cache tag (all before the last `-<32 hex>`), None for any other tag.

    `prune` groups tags by it; it gives `tag_name`, cut as `cache_tag` cut it.
    """
    match = _CACHE_TAG.fullmatch(tag)
    return None if match is None else match.group(1)


def local_tag(target: str, key: str) -> Reference:
    """`dagger-stages/<target>:<first 32 hex of the key>`: a built image's name without a cache.

    `target` is the stage's build target (`build_targets`), so unnamed stages get a name too.
    It is not checked against the repository grammar: a stage name such as `app_` is a valid
    target but no repository, and then `docker build -t` says so, as it always has.
    """
    return Repository(DOCKER_HUB, f"{_LOCAL_NAMESPACE}/{target}").tag(key[:KEY_CHARS])
