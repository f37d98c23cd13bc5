"""The whole plan for a build: keys, cache refs, what the registry holds, and what to do.

This is the one step that talks to a registry before a build: it resolves external images to
digests (they are key inputs), then HEADs every needed stage's cache ref at once. A registry
that cannot be reached is not an error: images stay unpinned, the cache is `unknown`, and
everything is built. `build --no-cache` builds every needed stage whatever the cache holds, so
it asks the cache only whether it answers (one HEAD, sent with the base images' resolve, so
that an unreachable cache is not pushed to): no probe, no hint, and each stage's `cache` is
None, not asked.

Over a distant registry every round of requests costs a round trip, so the hint lookups (a
GET of the hint manifest, then of its config) do not wait for the probe: those of the stages
likeliest to be built (`SPECULATIVE_HINTS` of them, nearest the targets first) start with
it, each sending its first GET only; once the probe has answered, the lookups of the stages
not built are cancelled and those of the others go on or start. A cold plan costs one round
fewer, and a warm one at most `SPECULATIVE_HINTS` GETs more. Next to the registry (its
quickest answer so far within `SPECULATE_BEYOND`) the round saved is worth less than those
GETs: the lookups wait for the probe.

All of it (base images, cache HEADs, hint tags) shares one deadline, `PROBE_DEADLINE`, however
many stages there are: a registry that accepts connections and never answers would otherwise
cost a timeout per wave of requests. Past it, the plan goes on as if the registry were
unreachable, with one warning.

A volatile stage (`keys.Volatile`: it ADDs a URL without a checksum or a moving git ref, or is
built on such a stage) gets no cache ref: it is never probed, so never restored, and its image
is never pushed under a key that does not identify it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from pipeline.cache.explain import LABEL, explain, key_label
from pipeline.cache.forecast import Cache, Forecast, decide
from pipeline.cache.keys import StageKey, Volatile, compute_keys, external_images
from pipeline.cache.tags import KEY_CHARS, cache_tag, hint_tag
from pipeline.dockerfile.rewrite import pinned, rewrite
from pipeline.oci.errors import RegistryError, RegistryNotFound
from pipeline.oci.reference import Reference

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from pipeline.cache.context import BuildContext
    from pipeline.dockerfile.graph import Graph
    from pipeline.dockerfile.platforms import Platform
    from pipeline.dockerfile.stages import Stage
    from pipeline.oci.reference import Repository
    from pipeline.oci.registry import RegistryClient

__all__ = ["PROBE_DEADLINE", "SPECULATE_BEYOND", "SPECULATIVE_HINTS", "Plan", "make_plan"]

PROBE_DEADLINE = 15.0
SPECULATIVE_HINTS = 8
"""How many hint lookups start before the probe has answered: a warm plan of a 500-stage
Dockerfile must not pay 500 GETs for hints it does not use."""
SPECULATE_BEYOND = 0.02
"""Seconds: the hint lookups start before the probe has answered only when the cache registry's
quickest answer so far took this long, or it has not answered yet. At 0 ms, the bench's warm
fan-in took 19 ms longer with them (40 interleaved pairs), more than a round trip this short
saves a cold plan."""


@dataclass(frozen=True)
class Plan:
    """Everything one platform's build is decided by, worked out before it starts: keys, cache
    refs, forecasts and pinned bases, so that `plan` shows exactly what `build` then does."""

    graph: Graph
    cache_repo: Repository | None
    keys: Mapping[int, StageKey]
    refs: Mapping[int, Reference]  # each needed stage's cache ref, with a cache repo
    forecasts: Mapping[int, Forecast]
    warnings: tuple[str, ...]
    hints: Mapping[int, Reference] = field(default_factory=dict)
    why: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    labels: Mapping[int, str] = field(default_factory=dict)
    pins: Mapping[str, str] = field(default_factory=dict)  # external image -> resolved digest
    cache_warning: str | None = None  # the one of `warnings` that says why the cache is unknown

    def stage(self, index: int) -> Stage:
        return self.graph.stages[index]

    def indices(self, action: str) -> tuple[int, ...]:
        return tuple(i for i in sorted(self.forecasts) if self.forecasts[i].action == action)

    def pinned(self, digest: str) -> Reference:
        """`<cache_repo>@<digest>`: a stage image in the cache, whatever its tags say now."""
        assert self.cache_repo is not None
        return self.cache_repo.pinned(digest)

    def restored(self) -> dict[int, Reference]:
        """Restored stages, each pinned by digest: `<cache_repo>@sha256:…`."""
        restored: dict[int, Reference] = {}
        for index in self.indices("restore"):
            digest = self.forecasts[index].digest
            assert digest is not None
            restored[index] = self.pinned(digest)
        return restored

    def rewritten(
        self, *, name_unnamed: bool = False, built: Mapping[int, Reference] | None = None
    ) -> str:
        """The Dockerfile to build; `built` adds stages built in this run, each pinned to the
        image it was just pushed as, and swapped for it as the restored stages are."""
        restored = {index: str(ref) for index, ref in {**self.restored(), **(built or {})}.items()}
        return rewrite(self.graph.dockerfile, restored, pins=self.pins, name_unnamed=name_unnamed)


async def make_plan(
    graph: Graph,
    *,
    cache_repo: Repository | None,
    build_args: Mapping[str, str],
    platform: Platform,
    context: BuildContext,
    client: RegistryClient | None,
    no_cache: bool = False,
    restore: bool = True,
    branches: Sequence[str] = (),
    deadline: float = PROBE_DEADLINE,
    on_image: Callable[[Reference, str | None], None] | None = None,
    on_build: Callable[[], None] | None = None,
) -> Plan:
    """`client` None means offline: no image is pinned and the cache is not asked.

    `on_image` is told, as soon as each is known, the images from a registry that builds may
    read, so that an engine that fetches such images before building may start: each pinned
    base image of the target platform (`pinned_base`), with that platform, once resolved,
    before the cache is asked; and each hint the plan will give a build, with None, before
    the plan reads the hint's config (one round trip more).
    `on_build` is told once the cache has answered that a stage is to be built, before the
    plan reads that stage's hint: an engine that must be found first can start then.

    `branches` (this build's branch, then the default branch) name the hint tags that a missed
    stage reuses layers from and is compared with to say why it missed. A stage whose base
    stage is built too reuses nothing from its hint, as all its layers sit on the new base:
    it gets no hint to import, only the comparison. `deadline` (seconds) bounds every
    registry question of the plan together.

    `no_cache` (`build --no-cache`) builds every needed stage and asks the cache only whether
    it answers.
    `restore` False (an engine that cannot pull from the cache) restores nothing either, but
    the cache is still asked, so that `plan` shows what it holds.
    """
    warnings: list[str] = []
    dockerfile = graph.dockerfile
    images = external_images(dockerfile, graph.needed)
    digests: dict[str, str | None] = dict.fromkeys(images)
    until = anyio.current_time() + deadline
    expired = False
    unreachable: list[str] = []
    if client is not None:
        with anyio.move_on_at(until) as scope:
            async with anyio.create_task_group() as group:
                if no_cache and cache_repo is not None and graph.targets:
                    # a tag no build writes: its answer only says whether the cache answers
                    probe = cache_repo.tag(cache_tag(graph.targets[0], "0" * KEY_CHARS))
                    group.start_soon(_reach, client, probe, unreachable)
                told = None
                if on_image is not None:
                    told = functools.partial(_found_bases, graph, on_image, str(platform))
                await _resolve(client, digests, warnings, told)
        expired = scope.cancel_called
    keys = compute_keys(
        dockerfile,
        graph.needed,
        build_args=build_args,
        platform=platform,
        image_digests=digests,
        context=context,
    )
    volatile: dict[int, Volatile] = {}
    for index in graph.needed:
        moving = keys[index].volatile
        if moving is not None:
            volatile[index] = moving
    refs: dict[int, Reference] = {}
    if cache_repo is not None:
        refs = {
            i: cache_repo.tag(cache_tag(graph.stages[i], keys[i].key))
            for i in graph.needed
            if i not in volatile
        }
    cache: dict[int, Cache] = {}
    found: dict[int, str] = {}
    cache_warning: str | None = None
    hints: dict[int, Reference] = {}
    labels: dict[int, str] = {}
    building_now: set[int] = set()  # filled once the probe has answered

    def forecast() -> dict[int, Forecast]:
        rebuild = no_cache or not restore
        return decide(graph, cache, found, no_cache=rebuild, volatile=volatile)

    def built() -> list[int]:
        return _to_build(forecast())

    asking = client is not None and not expired and not no_cache
    hinting = asking and cache_repo is not None and bool(branches) and restore
    if asking and client is not None and (refs or hinting):
        lookup: Callable[[int, anyio.Event], Awaitable[None]] | None = None
        if hinting:
            assert cache_repo is not None
            lookup = functools.partial(
                _hint, client, cache_repo, graph, branches, hints, labels, building_now, on_image
            )
        likely = _likely(graph) if _distant(client, cache_repo) else []
        with anyio.move_on_at(until) as scope:
            cache_warning = await _ask(
                client, refs, cache, found, lookup, likely, built, building_now, on_build
            )
        expired = scope.cancel_called
    if refs and unreachable:
        cache = dict.fromkeys(refs, "unknown")
        cache_warning = _unasked(unreachable[0])
    if refs and (client is None or expired):
        cache, found = dict.fromkeys(refs, "unknown"), {}
    forecasts = forecast()
    building = _to_build(forecasts)
    why: dict[int, tuple[str, ...]] = {}
    if hinting and not expired and "unknown" not in cache.values():
        names = {keys[i].key: graph.stages[i].name for i in keys}
        for index in building:
            if forecasts[index].cache == "miss" and index not in volatile:
                why[index] = tuple(explain(keys[index], labels.get(index), names, context))
        hints = {
            i: ref
            for i, ref in hints.items()
            if i in building and graph.stages[i].base_stage not in building
        }
    else:
        hints = {}
    if expired:
        cache_warning = f"cache unknown, the registry did not answer within {deadline:g} s"
        warnings.clear()
    if cache_warning is not None:
        warnings.append(cache_warning)
    return Plan(
        graph=graph,
        cache_repo=cache_repo,
        keys=keys,
        refs=refs,
        forecasts=forecasts,
        warnings=tuple(warnings),
        hints=hints,
        why=why,
        labels={i: key_label(keys[i], context) for i in building},
        pins={image: digest for image, digest in digests.items() if digest},
        cache_warning=cache_warning,
    )


async def _reach(client: RegistryClient, ref: Reference, failures: list[str]) -> None:
    """`build --no-cache` probes no tag, but pushes to the cache: one HEAD, sent with the
    base images' resolve, tells whether it answers, as the probe would have."""
    try:
        await client.head_manifest(ref)
    except RegistryError as exc:
        failures.append(exc.message)


def _distant(client: RegistryClient, cache_repo: Repository | None) -> bool:
    """Whether the cache registry is far enough for the hint lookups to start with the probe."""
    if cache_repo is None:
        return False
    quickest = client.round_trip(cache_repo)
    return quickest is None or quickest >= SPECULATE_BEYOND


def _likely(graph: Graph) -> list[int]:
    """The needed stages likeliest to be built, at most `SPECULATIVE_HINTS`: a changed stage
    is built with every stage on its way to the targets, so the targets come first, then what
    they build on, breadth first, as `forecast.decide` walks."""
    order = [stage.index for stage in graph.targets]
    seen = set(order)
    for index in order:
        if len(order) >= SPECULATIVE_HINTS:
            break
        for dependency in graph.stages[index].depends_on:
            if dependency not in seen:
                seen.add(dependency)
                order.append(dependency)
    return order[:SPECULATIVE_HINTS]


async def _ask(
    client: RegistryClient,
    refs: Mapping[int, Reference],
    cache: dict[int, Cache],
    found: dict[int, str],
    lookup: Callable[[int, anyio.Event], Awaitable[None]] | None,
    likely: Sequence[int],
    built: Callable[[], Sequence[int]],
    building_now: set[int],
    on_build: Callable[[], None] | None = None,
) -> str | None:
    """The probe (`_probe`), and with `lookup` the hint lookups of the stages to build.

    Those of the `likely` stages start as soon as the probe's HEADs are under way, behind them
    for the client's connections, and send one GET each until the probe has answered (`decided`
    is set). Then a cache that could not be asked cancels them all, as no hint is used; else
    those of the stages that are not built are cancelled, and the others go on or start.
    """
    decided = anyio.Event()
    scopes: dict[int, anyio.CancelScope] = {}

    async def run(index: int, scope: anyio.CancelScope) -> None:
        assert lookup is not None
        with scope:
            await lookup(index, decided)

    async with anyio.create_task_group() as group:

        def start(index: int) -> None:
            scopes[index] = anyio.CancelScope()
            group.start_soon(run, index, scopes[index])

        def speculate() -> None:
            if lookup is not None:
                for index in likely:
                    start(index)

        warning = await _probe(client, refs, cache, found, speculate)
        if lookup is None or "unknown" in cache.values():
            group.cancel_scope.cancel()
            return warning
        building = built()
        building_now.update(building)
        if building and on_build is not None:
            on_build()
        for index, scope in scopes.items():
            if index not in building:
                scope.cancel()
        decided.set()
        for index in building:
            if index not in scopes:
                start(index)
    return warning


async def _hint(
    client: RegistryClient,
    cache_repo: Repository,
    graph: Graph,
    branches: Sequence[str],
    hints: dict[int, Reference],
    labels: dict[int, str],
    building: set[int],
    found: Callable[[Reference, str | None], None] | None,
    index: int,
    decided: anyio.Event,
) -> None:
    """The stage's first hint tag that exists, and its key-inputs label, filled in place so
    that the caller keeps nothing half-known past the deadline. `found` is told the hint as
    soon as it is known to be given (the stage is built, and its base stage is not).

    Every request but the first waits for `decided`: a lookup started before the probe has
    answered costs one GET at most if its stage turns out not to be built.
    """
    stage = graph.stages[index]
    for position, branch in enumerate(dict.fromkeys(branches)):
        ref = cache_repo.tag(hint_tag(stage, branch))
        if position:
            await decided.wait()
        try:
            body, _ = await client.get_manifest(ref)
            config_digest = json.loads(body)["config"]["digest"]
            await decided.wait()
            if found is not None and index in building and stage.base_stage not in building:
                found(ref, None)
            config = json.loads(await client.get_blob(ref, config_digest))
        except RegistryNotFound:
            continue
        except (RegistryError, ValueError, KeyError, TypeError):
            return
        hints[index] = ref
        label = ((config.get("config") or {}).get("Labels") or {}).get(LABEL)
        if isinstance(label, str):
            labels[index] = label
        return


def pinned_base(stage: Stage, pins: Mapping[str, str]) -> Reference | None:
    """The stage's base image pinned as its build reads it, if it is of the target platform:
    `FROM <image>` without `--platform`, resolved to a digest by the plan."""
    text = pinned(stage, pins)
    if text is None or stage.instructions[0].flag("platform") is not None:
        return None
    return Reference.parse(text)


def _found_bases(
    graph: Graph,
    found: Callable[[Reference, str | None], None],
    platform: str,
    image: str,
    digest: str,
) -> None:
    """Tell `found` of `image`, just pinned, as the base of each needed stage it is one of."""
    told: set[Reference] = set()
    for index in graph.needed:
        ref = pinned_base(graph.stages[index], {image: digest})
        if ref is not None and ref not in told:
            told.add(ref)
            found(ref, platform)


async def _resolve(
    client: RegistryClient,
    digests: dict[str, str | None],
    warnings: list[str],
    resolved: Callable[[str, str], None] | None = None,
) -> None:
    """Each image's digest, filled into `digests` in place: those left None stay unpinned.
    `resolved` is told each image and its digest as soon as it is known."""

    async def one(image: str) -> None:
        try:
            digest = digests[image] = await client.resolve(Reference.parse(image))
            if resolved is not None:
                resolved(image, digest)
        except ValueError as exc:
            warnings.append(f"image {image}: {exc}; its key uses the reference unpinned")
        except RegistryError as exc:
            warnings.append(f"image {image}: {exc.message}; its key uses the tag, unpinned")

    async with anyio.create_task_group() as group:
        for image in digests:
            group.start_soon(one, image)


async def _probe(
    client: RegistryClient,
    refs: Mapping[int, Reference],
    cache: dict[int, Cache],
    found: dict[int, str],
    started: Callable[[], None],
) -> str | None:
    """One HEAD per needed stage, all at once, filling `cache` and `found` in place; the
    warning that the cache is unknown, if a HEAD failed. `started` is called once the HEADs
    are under way: what it starts queues behind them for the client's connections."""
    failures: list[str] = []

    async def one(index: int, ref: Reference) -> None:
        try:
            info = await client.head_manifest(ref)
        except RegistryError as exc:
            cache[index] = "unknown"
            failures.append(exc.message)
            return
        cache[index] = "hit" if info is not None else "miss"
        if info is not None:
            found[index] = info.digest

    async with anyio.create_task_group() as group:
        for index, ref in refs.items():
            group.start_soon(one, index, ref)
        started()
    if failures:
        return _unasked(failures[0])
    return None


def _unasked(failure: str) -> str:
    return f"cache unknown, the registry could not be asked: {failure}"


def _to_build(forecasts: Mapping[int, Forecast]) -> list[int]:
    return [i for i in sorted(forecasts) if forecasts[i].action == "build"]
