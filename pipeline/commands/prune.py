"""`prune`: which cached stage images to drop from the cache repo, and dropping them.

    inventory (registry) -> decide (pure) -> render (pure) -> apply (registry, with --yes)

`prune_command` is the command: the plan's restored refs are protected, then `run_prune` takes
those four steps with one registry client.

A cache tag is `<stage>-<first 32 hex of its key>` (`tags.cache_tag`). Other tags in the
repository are listed, and never deleted. Per stage, the `keep` newest tags stay whatever
their age; of the rest, those older than `--older-than` go. A tag the current plan restores
stays, and so does a tag whose age is unknown.

The distribution API deletes manifests, by digest, and a deleted manifest takes every tag
pointing at it along. So a digest is deleted only when every tag pointing at it is to go:
one kept tag keeps all the tags that share its digest.

Runs write while prune lists, so just before deleting, the tags are looked at again
(`_unchanged`): a digest goes only if every tag to go still points at it and no other tag
has come to point at it since the listing. A cache tag that moved was rewritten by a run
(two runs raced on it, or a `--no-cache` run replaced it), and the image it moved away from
may be what another run pinned, so that digest stays. Only digests seen behind a tag are ever
deleted: an untagged manifest (such as the one a raced tag moved away from) is left to the
registry's own garbage collection, which must not run while builds push (docs/cache-keys.md,
"Two runs, one stage").
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from pipeline.cache.tags import stage_of
from pipeline.commands.plan import load_graph, plans_for, platform_graphs, registry_client
from pipeline.errors import UsageError
from pipeline.oci.errors import RegistryError, RegistryNotFound, RegistryUnsupported
from pipeline.oci.reference import Reference, validate_digest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence

    from pipeline.cache.plan import Plan
    from pipeline.oci.reference import Repository
    from pipeline.oci.registry import RegistryClient
    from pipeline.settings.resolve import Settings

__all__ = [
    "CacheTag",
    "PruneDecision",
    "apply",
    "decide",
    "inventory",
    "parse_age",
    "parse_created",
    "prune_command",
    "render",
    "restored_refs",
    "run_prune",
]

logger = logging.getLogger(__name__)

INVENTORY_CONCURRENCY = 8
DELETE_CONCURRENCY = 4
MAX_PLATFORMS = 16
"""How many platform manifests of one index are read to find its creation time."""

_T = TypeVar("_T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_AGE_RE = re.compile(r"([0-9]+)([mhdw])")
_AGE_UNITS = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
}
_ATTESTATION = "attestation-manifest"
_RESTORED = "kept: the current plan restores it"
_CHANGED = "kept: its digest's tags changed since the listing"


@dataclass(frozen=True)
class CacheTag:
    """A tag of the cache repo, the digest it points to and when its image was created.

    `stage` is "" for a tag that is not a cache tag; `created` is None when unknown.
    """

    tag: str
    stage: str
    digest: str
    created: datetime | None

    @property
    def is_cache(self) -> bool:
        return bool(self.stage)


@dataclass(frozen=True)
class PruneDecision:
    tag: CacheTag
    delete: bool
    reason: str


def parse_age(text: str, *, flag: str = "--older-than") -> timedelta:
    """`14d`, `36h`, `90m`, `2w`, `0d`: a whole number and a unit; UsageError otherwise."""
    match = _AGE_RE.fullmatch(text.strip())
    if match is None:
        raise UsageError(
            f"{flag}: {text!r} is not an age; give a whole number and a unit, "
            "m (minutes), h (hours), d (days) or w (weeks), such as 14d"
        )
    number, unit = match.groups()
    try:
        return int(number) * _AGE_UNITS[unit]
    except OverflowError:
        raise UsageError(f"{flag}: {text!r} is longer than any age we can count") from None


def parse_created(value: object) -> datetime | None:
    """An image config's `created` (RFC 3339) in UTC; None if absent, unreadable or meaningless.

    Reproducible builds write the Unix epoch (SOURCE_DATE_EPOCH=0) and some tools Go's zero
    time: neither says when the image was made, so both count as unknown.
    """
    if not isinstance(value, str):
        return None
    try:
        moment = _utc(datetime.fromisoformat(value.strip()))
    except ValueError:
        return None
    return moment if moment > _EPOCH else None


def restored_refs(plan: Plan) -> list[Reference]:
    """What `decide(protected=...)` needs from a plan: the refs it restores, tag and digest."""
    refs: list[Reference] = []
    restored = plan.restored()
    for index in plan.indices("restore"):
        if index in plan.refs:
            refs.append(plan.refs[index])
        refs.append(restored[index])
    return refs


async def inventory(
    client: RegistryClient, repo: Repository, *, concurrency: int = INVENTORY_CONCURRENCY
) -> list[CacheTag]:
    """Every tag of `repo`, sorted, with its digest and its image's creation time.

    One HEAD per tag, then one manifest GET and one config GET per distinct digest. An index
    (manifest list) is listed under its own digest and created when its newest platform
    image was; attestation manifests do not count. A tag that vanishes meanwhile is left out.
    """
    tags = sorted(await client.list_tags(repo))
    digests: dict[str, str] = {}

    async def head(tag: str) -> None:
        info = await client.head_manifest(Reference(repo.registry, repo.path, tag))
        if info is None:
            logger.debug("%s:%s went away while listing", repo.name, tag)
        else:
            digests[tag] = info.digest

    await _each(tags, head, concurrency)
    created: dict[str, datetime | None] = {}

    async def age(digest: str) -> None:
        created[digest] = await _image_created(client, _pinned(repo, digest))

    await _each(sorted(set(digests.values())), age, concurrency)
    return [
        CacheTag(tag, stage_of(tag) or "", digests[tag], created[digests[tag]])
        for tag in tags
        if tag in digests
    ]


def decide(
    tags: Sequence[CacheTag],
    *,
    older_than: timedelta,
    keep: int,
    now: datetime,
    protected: Collection[Reference | str],
) -> list[PruneDecision]:
    """Which tags go, and why; pure.

    `protected` holds the plan's refs (`restored_refs`), or tag names or references as text
    (`repo:tag`, `repo@sha256:…`): a protected tag or digest is never deleted. A tag of unknown
    age stays and takes no place among the `keep` newest. Decisions come grouped by stage
    (sorted), newest first, tags of unknown age last, then the tags that are not cache tags.
    """
    if keep < 0:
        raise UsageError(f"--keep: {keep} is negative; give 0 or more")
    now = _utc(now)
    guarded_tags, guarded_digests = _protected(protected)
    limit = _exact_age(older_than)
    by_stage: dict[str, list[CacheTag]] = defaultdict(list)
    others: list[CacheTag] = []
    for tag in tags:
        (by_stage[tag.stage] if tag.is_cache else others).append(tag)

    decisions: list[PruneDecision] = []
    for stage in sorted(by_stage):
        known = [(tag.created, tag) for tag in by_stage[stage] if tag.created is not None]
        known.sort(key=lambda item: item[1].tag)
        known.sort(key=lambda item: item[0], reverse=True)
        unknown = sorted((t for t in by_stage[stage] if t.created is None), key=lambda t: t.tag)
        for rank, (created, tag) in enumerate(known):
            if rank < keep:
                decisions.append(
                    PruneDecision(tag, False, f"kept: among the {_newest(keep)} of {stage}")
                )
            elif now - created <= older_than:
                decisions.append(PruneDecision(tag, False, f"kept: not older than {limit}"))
            elif keep == 0:
                decisions.append(PruneDecision(tag, True, f"older than {limit}"))
            else:
                reason = f"older than {limit}, beyond the {_newest(keep)} of {stage}"
                decisions.append(PruneDecision(tag, True, reason))
        decisions.extend(PruneDecision(tag, False, "kept: age unknown") for tag in unknown)
    decisions.extend(
        PruneDecision(tag, False, "kept: not a cache tag")
        for tag in sorted(others, key=lambda t: t.tag)
    )
    decisions = [
        PruneDecision(d.tag, False, _RESTORED)
        if d.tag.tag in guarded_tags or d.tag.digest in guarded_digests
        else d
        for d in decisions
    ]
    return _share_digests(decisions)


async def apply(
    client: RegistryClient,
    repo: Repository,
    decisions: Sequence[PruneDecision],
    *,
    concurrency: int = DELETE_CONCURRENCY,
) -> list[str]:
    """Delete what `decisions` say, each digest once; the tags deleted, in decision order.

    A digest that any kept decision points to is never deleted, nor one whose tags changed
    since the listing (`_unchanged`). A manifest already gone counts as deleted. A registry
    that refuses deletes raises RegistryUnsupported saying how to enable them.
    """
    kept = {d.tag.digest for d in decisions if not d.delete}
    doomed: dict[str, list[str]] = defaultdict(list)
    for decision in decisions:
        if not decision.delete:
            continue
        if decision.tag.digest in kept:
            logger.warning("not deleting %s: a kept tag shares its digest", decision.tag.tag)
        else:
            doomed[decision.tag.digest].append(decision.tag.tag)
    total = sum(len(tags) for tags in doomed.values())
    if doomed:
        doomed = await _unchanged(client, repo, decisions, doomed, concurrency=concurrency)
    gone: set[str] = set()

    async def delete(digest: str) -> None:
        try:
            await client.delete_manifest(_pinned(repo, digest))
        except RegistryNotFound:
            logger.info("%s@%s was already gone", repo.name, digest)
        gone.update(doomed[digest])

    try:
        await _each(sorted(doomed), delete, concurrency)
    except RegistryUnsupported as exc:
        raise RegistryUnsupported(
            f"cannot prune {repo.name}: {exc.message}. To enable deletes on distribution "
            "(registry:2), set storage.delete.enabled: true in its config, or "
            "REGISTRY_STORAGE_DELETE_ENABLED=true; hosted registries may delete only through "
            f"their own API or UI. {_count(len(gone), total)} deleted before it refused"
        ) from exc
    except RegistryError as exc:
        if not gone:
            raise
        raise type(exc)(f"{exc.message} ({_count(len(gone), total)} deleted before that)") from exc
    return [d.tag.tag for d in decisions if d.delete and d.tag.tag in gone]


async def _unchanged(
    client: RegistryClient,
    repo: Repository,
    decisions: Sequence[PruneDecision],
    doomed: dict[str, list[str]],
    *,
    concurrency: int,
) -> dict[str, list[str]]:
    """`doomed` without the digests whose tags changed since the listing.

    One more listing, and a HEAD of each tag to go and of each tag that may have moved onto
    one of their digests meanwhile: a new tag, or a hint or other tag (cache tags move only
    in a race, which the tags to go show). A tag to go that is gone now still counts.
    """
    listed = {decision.tag.tag for decision in decisions}
    going = {tag for tags in doomed.values() for tag in tags}
    asked = [
        tag
        for tag in await client.list_tags(repo)
        if tag in going or tag not in listed or stage_of(tag) is None
    ]
    now: dict[str, str] = {}

    async def head(tag: str) -> None:
        info = await client.head_manifest(Reference(repo.registry, repo.path, tag))
        if info is not None:
            now[tag] = info.digest

    await _each(asked, head, concurrency)
    unchanged: dict[str, list[str]] = {}
    for digest, tags in doomed.items():
        moved = [tag for tag in tags if now.get(tag, digest) != digest]
        joined = [tag for tag, held in now.items() if held == digest and tag not in tags]
        if moved or joined:
            logger.warning(
                "not deleting %s: %s since the listing",
                ", ".join(tags),
                f"{', '.join(moved)} moved" if moved else f"{', '.join(joined)} now points at it",
            )
        else:
            unchanged[digest] = tags
    return unchanged


def render(
    decisions: Sequence[PruneDecision], *, dry_run: bool, now: datetime | None = None
) -> str:
    """A table (TAG, STAGE, AGE, ACTION, REASON) and a summary line."""
    now = _utc(now) if now is not None else datetime.now(UTC)
    header = ("TAG", "STAGE", "AGE", "ACTION", "REASON")
    rows = [
        (
            d.tag.tag,
            d.tag.stage or "-",
            "-" if d.tag.created is None else _rough_age(now - d.tag.created),
            "delete" if d.delete else "keep",
            d.reason,
        )
        for d in decisions
    ]
    widths = [max(len(row[c]) for row in (header, *rows)) for c in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    going = sum(d.delete for d in decisions)
    counted = _count(going, len(decisions))
    summary = (
        f"{counted} would go (dry run; pass --yes to delete)" if dry_run else f"deleted {counted}"
    )
    if not decisions:
        lines = ["no tags in the cache repo"]
    return "\n".join([*lines, "", summary])


def prune_command(settings: Settings, older_than: timedelta, keep: int, *, yes: bool) -> int:
    """`prune`: what the current plan restores is never deleted, so plan first if we can;
    with several target platforms, what any platform's plan restores."""
    if settings.cache_repo is None:
        raise UsageError("prune needs --cache-repo (or cache_repo in the config, or CI)")
    protected: list[Reference] = []
    if Path(settings.dockerfile).is_file():
        graphs = platform_graphs(settings, load_graph(settings))
        plans = anyio.run(functools.partial(plans_for, settings, graphs))
        protected = [ref for item in plans.plans for ref in restored_refs(item.plan)]
    return anyio.run(run_prune, settings, older_than, keep, protected, yes)


async def run_prune(
    settings: Settings,
    older_than: timedelta,
    keep: int,
    protected: Sequence[Reference],
    yes: bool,
) -> int:
    """List, decide, delete with `yes`, and print the table; a dry run deletes nothing."""
    repo = settings.cache_repo
    assert repo is not None
    async with registry_client(settings) as client:
        tags = await inventory(client, repo)
        decisions = decide(
            tags, older_than=older_than, keep=keep, now=datetime.now(UTC), protected=protected
        )
        if yes:
            deleted = set(await apply(client, repo, decisions))
            decisions = [
                d if not d.delete or d.tag.tag in deleted else PruneDecision(d.tag, False, _CHANGED)
                for d in decisions
            ]
    print(render(decisions, dry_run=not yes))
    return 0


def _share_digests(decisions: list[PruneDecision]) -> list[PruneDecision]:
    """Keep every tag that shares its digest with a kept one: deleting it would delete both."""
    keepers: dict[str, PruneDecision] = {}
    for decision in decisions:
        if decision.delete:
            continue
        current = keepers.get(decision.tag.digest)
        if current is None or (decision.reason == _RESTORED and current.reason != _RESTORED):
            keepers[decision.tag.digest] = decision
    result = []
    for decision in decisions:
        keeper = keepers.get(decision.tag.digest)
        if decision.delete and keeper is not None:
            which = "the current plan restores" if keeper.reason == _RESTORED else "is kept"
            reason = f"kept: shares its digest with {keeper.tag.tag}, which {which}"
            decision = PruneDecision(decision.tag, False, reason)
        result.append(decision)
    return result


def _protected(refs: Iterable[Reference | str]) -> tuple[set[str], set[str]]:
    """Tag names and digests out of references, and out of tag names and references as text."""
    tags: set[str] = set()
    digests: set[str] = set()
    for ref in refs:
        if isinstance(ref, Reference):
            tags.update([ref.tag] if ref.tag is not None else [])
            digests.update([ref.digest] if ref.digest is not None else [])
            continue
        name, at, digest = ref.rpartition("/")[2].partition("@")
        if at:
            digests.add(digest)
        if ":" in name:
            tags.add(name.rpartition(":")[2])
        elif not at and "/" not in ref:
            tags.add(name)
    return tags, digests


async def _image_created(
    client: RegistryClient, ref: Reference, *, nested: bool = False
) -> datetime | None:
    """When the image (or the newest platform image of an index) was created, if known."""
    try:
        body, _ = await client.get_manifest(ref)
    except RegistryNotFound:
        return None
    document = _json_object(body)
    children = document.get("manifests")
    if isinstance(children, list):
        if nested:
            return None
        times = [
            await _image_created(client, ref.repo.pinned(digest), nested=True)
            for digest in _platform_digests(children)[:MAX_PLATFORMS]
        ]
        return max((time for time in times if time is not None), default=None)
    config = document.get("config")
    digest = config.get("digest") if isinstance(config, dict) else None
    if not isinstance(digest, str) or not _valid_digest(digest):
        return None
    try:
        blob = await client.get_blob(ref, digest)
    except RegistryNotFound:
        return None
    return parse_created(_json_object(blob).get("created"))


def _platform_digests(children: list[Any]) -> list[str]:
    """The digests of an index's platform images, without attestations."""
    digests = []
    for child in children:
        if not isinstance(child, dict):
            continue
        platform = child.get("platform")
        annotations = child.get("annotations")
        digest = child.get("digest")
        if isinstance(platform, dict) and platform.get("os") == "unknown":
            continue
        if isinstance(annotations, dict) and (
            annotations.get("vnd.docker.reference.type") == _ATTESTATION
        ):
            continue
        if isinstance(digest, str) and _valid_digest(digest):
            digests.append(digest)
    return digests


async def _each(items: Iterable[_T], work: Callable[[_T], Awaitable[None]], limit: int) -> None:
    """Run `work` on every item, `limit` at a time; the first RegistryError stops them all."""
    limiter = anyio.CapacityLimiter(limit)
    failures: list[RegistryError] = []

    async def one(item: _T, scope: anyio.CancelScope) -> None:
        async with limiter:
            try:
                await work(item)
            except RegistryError as exc:
                failures.append(exc)
                scope.cancel()

    async with anyio.create_task_group() as group:
        for item in items:
            group.start_soon(one, item, group.cancel_scope)
    if failures:
        raise failures[0]


def _pinned(repo: Repository, digest: str) -> Reference:
    """`repo@digest` for a digest a registry sent, unchecked: a malformed one fails as the
    registry's own error when asked for, not as ours before asking."""
    return Reference(repo.registry, repo.path, None, digest)


def _valid_digest(digest: str) -> bool:
    try:
        validate_digest(digest)
    except ValueError:
        return False
    return True


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _utc(moment: datetime) -> datetime:
    """Aware and in UTC; a naive time is taken to be UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _exact_age(age: timedelta) -> str:
    """An age as the flag would spell it: `14d`, `36h`, `90m` (weeks shown as days)."""
    seconds = int(age.total_seconds())
    for unit in ("d", "h", "m"):
        size = int(_AGE_UNITS[unit].total_seconds())
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _rough_age(age: timedelta) -> str:
    """`20d`, `5h`, `12m`, `<1m`: the largest whole unit."""
    for unit in ("d", "h", "m"):
        if age >= _AGE_UNITS[unit]:
            return f"{age // _AGE_UNITS[unit]}{unit}"
    return "<1m"


def _newest(keep: int) -> str:
    return "newest" if keep == 1 else f"{keep} newest"


def _count(part: int, whole: int) -> str:
    return f"{part} of {whole} tag{'' if whole == 1 else 's'}"
