"""Which images `build --push` publishes, from tag templates and where the build runs.

`publish: {<target>: [templates]}` names them. A template is a tag, or a whole reference
(`registry/repo:tag`); it may use {sha}, {short_sha}, {branch} (slugified), {tag}, {run_id},
{default_branch} and {stage}. A bare tag goes to the CI's image repository (`ghcr.io/<owner>/
<repo>`, `$CI_REGISTRY_IMAGE`), or `<that>/<stage>` when several targets are published. A
template whose placeholder has no value here (say {tag} on a branch build) is left out.
Without templates, a target is published as {sha}, plus {tag} on a tag build and `latest` on
the default branch.

`publish` pushes them once the build passed: registry-side for images already in the cache.
`publish_index` publishes a multi-platform build's target as one image index over its
platform images, registry-side too: each image already in the cache is mounted into the
target's repository by digest (no bytes through the runner), one built without a cache push is
pushed there by its platform's engine, then the index is PUT over them.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.engines.results import Published
from pipeline.errors import StageFailed, ToolError, UsageError
from pipeline.oci.index import PlatformImage, image_index
from pipeline.oci.reference import Reference, slugify

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from pipeline.cache.multi import MultiPlan
    from pipeline.cache.plan import Plan
    from pipeline.dockerfile.stages import Stage
    from pipeline.engines.base import Image, Session
    from pipeline.engines.results import StageResult
    from pipeline.oci.reference import Repository
    from pipeline.oci.registry import RegistryClient
    from pipeline.settings.ci import CIContext

__all__ = [
    "Publication",
    "default_templates",
    "publications",
    "publish",
    "publish_index",
    "slugify",
]

FIELDS = ("sha", "short_sha", "branch", "tag", "run_id", "default_branch", "stage")


@dataclass(frozen=True)
class Publication:
    """A target and one ref to publish it under, its template already expanded: worked out
    before the build, so that a bad template fails first and the engine's checks see the refs."""

    stage: int
    ref: Reference


def default_templates(ci: CIContext) -> tuple[str, ...]:
    on_default = ci.branch is not None and ci.branch == ci.default_branch and ci.tag is None
    return ("{sha}", "{tag}", *(("latest",) if on_default else ()))


def publications(
    targets: Sequence[Stage],
    templates: Mapping[str, Sequence[str]],
    ci: CIContext,
    image_repo: Repository | None = None,
) -> list[Publication]:
    """`image_repo` overrides the CI's image repository for bare tags."""
    found: list[Publication] = []
    image_repo = image_repo or ci.image_repo
    for stage in targets:
        for template in templates.get(stage.name, default_templates(ci)):
            ref = _expand(template, ci, stage, image_repo, per_stage=len(targets) > 1)
            if ref is not None and all(p.ref != ref for p in found):
                found.append(Publication(stage.index, ref))
    return found


def _expand(
    template: str, ci: CIContext, stage: Stage, image_repo: Repository | None, *, per_stage: bool
) -> Reference | None:
    """The reference a template names here, None when one of its placeholders has no value.

    A bare tag goes to `image_repo`, or to `<image_repo>/<stage>` with `per_stage`; that
    repository is made only then, so a stage name that cannot be one fails only a bare tag.
    """
    values = {
        "sha": ci.sha,
        "short_sha": ci.short_sha,
        "branch": None if ci.branch is None else slugify(ci.branch),
        "tag": ci.tag,
        "run_id": ci.run_id,
        "default_branch": None if ci.default_branch is None else slugify(ci.default_branch),
        "stage": stage.name,
    }
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(template) if field]
    except ValueError as exc:
        raise UsageError(f'publish template "{template}": {exc}') from None
    unknown = [name for name in names if name not in FIELDS]
    if unknown:
        known = ", ".join("{" + f + "}" for f in FIELDS)
        raise UsageError(f'publish template "{template}": unknown {{{unknown[0]}}}; use {known}')
    if any(values[name] is None for name in names):
        return None
    text = template.format(**values)
    if "/" in text:
        try:
            return Reference.parse(text)
        except ValueError as exc:
            raise UsageError(f'publish template "{template}" gives "{text}": {exc}') from None
    if image_repo is None:
        raise UsageError(
            f'publish template "{template}" is a bare tag, but there is no image '
            "repository here; write a whole reference such as registry.example/app:{sha}"
        )
    try:
        repo = image_repo.child(stage.name) if per_stage else image_repo
        return repo.tag(text)
    except ValueError as exc:
        shown = f"{image_repo}/{stage.name}" if per_stage else str(image_repo)
        raise UsageError(f'publish template "{template}" gives "{shown}:{text}": {exc}') from None


async def publish(
    client: RegistryClient,
    plan: Plan,
    pending: Sequence[Publication],
    results: Mapping[int, StageResult],
    images: Mapping[int, Image],
    session: Session | None,
    log: Callable[[str, str], None],
) -> tuple[list[Published], list[str]]:
    """Publish each target that was built or restored; what was published, and what failed.

    A stage already in the cache is copied registry-side (its blobs are mounted, not moved);
    one built without a cache push is pushed by the engine. A failure skips that ref only;
    the refs a registry that stopped answering refused share one failure, as they share
    its one error.
    """
    published: list[Published] = []
    failures: list[str] = []
    unanswered: dict[ToolError, list[str]] = {}  # a dead registry's one error, and its refs
    for item in pending:
        result = results[item.stage]
        try:
            if result.digest and result.cache_ref and plan.cache_repo:
                digest = await client.copy_image(plan.pinned(result.digest), item.ref)
            elif item.stage in images and session is not None:
                digest = await session.push(
                    images[item.stage], item.ref, functools.partial(log, result.name)
                )
            else:
                raise StageFailed(f"{result.name} has no image to publish")
        except ToolError as exc:
            if exc is client.dead(item.ref.registry):
                unanswered.setdefault(exc, []).append(str(item.ref))
            else:
                failures.append(f"publishing {item.ref} failed: {exc.message}")
            continue
        published.append(Published(result.name, str(item.ref), digest))
    for error, refs in unanswered.items():
        failures.append(f"publishing {', '.join(refs)} failed: {error.message}")
    return published, failures


async def publish_index(
    client: RegistryClient,
    plans: MultiPlan,
    pending: Sequence[Publication],
    results: Sequence[Mapping[int, StageResult]],
    images: Sequence[Mapping[int, Image]],
    sessions: Sequence[Session],
    log: Callable[[str, str], None],
) -> tuple[list[Published], list[str]]:
    """Publish each target as one index over its platform images (`results[n]`, `images[n]`
    and `sessions[n]` are the n-th platform's); what was published, and what failed."""
    published: list[Published] = []
    failures: list[str] = []
    for item in pending:
        platform_images = []
        name = plans.first.stage(item.stage).name
        try:
            for position, entry in enumerate(plans.plans):
                result = results[position].get(item.stage)
                if result is None or not result.status.has_image:
                    raise StageFailed(f"{name} has no image for {entry.platform}")
                if result.digest and result.cache_ref and entry.plan.cache_repo:
                    target = item.ref.with_digest(result.digest)
                    digest = await client.copy_image(entry.plan.pinned(result.digest), target)
                elif item.stage in images[position] and sessions:
                    digest = await sessions[position].push(
                        images[position][item.stage], item.ref, functools.partial(log, result.name)
                    )
                else:
                    raise StageFailed(f"{result.name} has no image to publish")
                manifest = await client.head_manifest(item.ref.with_digest(digest))
                if manifest is None:
                    raise StageFailed(f"{item.ref.with_digest(digest)} is not in the registry")
                platform_images.append(PlatformImage(entry.platform, manifest))
            body, media_type = image_index(platform_images)
            digest = await client.put_manifest(item.ref, body, media_type)
        except ToolError as exc:
            failures.append(f"publishing {item.ref} failed: {exc.message}")
            continue
        published.append(Published(name, str(item.ref), digest))
    return published, failures
