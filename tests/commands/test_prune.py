"""`prune`: ages, the pure decision table, the table shown, and deletes on a real registry."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from pipeline.cache.forecast import Forecast
from pipeline.cache.plan import Plan
from pipeline.cache.tags import stage_of
from pipeline.commands.prune import (
    CacheTag,
    PruneDecision,
    apply,
    decide,
    inventory,
    parse_age,
    parse_created,
    render,
    restored_refs,
)
from pipeline.errors import UsageError
from pipeline.oci.reference import Repository
from pipeline.oci.registry import RegistryClient, RegistryError, RegistryUnsupported
from tests.registry_server import RegistryServer, push_image, sha256_digest

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
KEY = "0123456789abcdef0123456789abcdef"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def key() -> str:
    return uuid.uuid4().hex


def digest_of(name: str) -> str:
    return sha256_digest(name.encode())


def tag(name: str, days: float | None, *, digest: str | None = None) -> CacheTag:
    """A tag created `days` before NOW (None: unknown), its own digest unless one is given."""
    created = None if days is None else NOW - days * DAY
    return CacheTag(name, stage_of(name) or "", digest or digest_of(name), created)


# -- parse_age, parse_created ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("14d", timedelta(days=14)),
        ("36h", timedelta(hours=36)),
        ("90m", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
        ("0d", timedelta(0)),
        (" 7d ", timedelta(days=7)),
        ("007h", timedelta(hours=7)),
    ],
)
def test_parse_age(text: str, expected: timedelta) -> None:
    assert parse_age(text) == expected


@pytest.mark.parametrize(
    "text", ["", "14", "d", "-1d", "1.5d", "14 d", "14D", "1y", "30s", "٣d", "99999999999999w"]
)
def test_parse_age_rejects_with_the_flag(text: str) -> None:
    with pytest.raises(UsageError, match=r"^--older-than: ") as caught:
        parse_age(text)
    assert caught.value.exit_code == 2


def test_parse_age_names_another_flag() -> None:
    with pytest.raises(UsageError, match=r"^--max-age: 'x' is not an age"):
        parse_age("x", flag="--max-age")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-01T12:00:00Z", NOW),
        ("2026-03-01T12:00:00.123456789Z", NOW + timedelta(microseconds=123456)),
        ("2026-03-01T13:00:00+01:00", NOW),
        ("2026-03-01T12:00:00", NOW),
        ("1970-01-01T00:00:00Z", None),
        ("0001-01-01T00:00:00Z", None),
        ("yesterday", None),
        ("", None),
        (1772366400, None),
        (None, None),
    ],
)
def test_parse_created(value: object, expected: datetime | None) -> None:
    created = parse_created(value)
    assert created == expected
    assert created is None or created.tzinfo is UTC


# -- decide -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    tags: tuple[CacheTag, ...]
    expected: dict[str, str]  # tag -> reason; a reason not starting with "kept" means delete
    keep: int = 3
    older_than: timedelta = 14 * DAY
    protected: tuple[str, ...] = ()


A = [f"app-{n:032x}" for n in range(8)]
B = [f"builder-{n:032x}" for n in range(8)]
S = f"stage-2-{KEY}"
BEYOND_3 = "older than 14d, beyond the 3 newest of app"
NEWEST_3 = "kept: among the 3 newest of app"
YOUNG = "kept: not older than 14d"
RESTORED = "kept: the current plan restores it"

CASES = {
    "keep the newest, delete the old beyond them": Case(
        (tag(A[0], 1), tag(A[1], 2), tag(A[2], 3), tag(A[3], 20), tag(A[4], 30)),
        {A[0]: NEWEST_3, A[1]: NEWEST_3, A[2]: NEWEST_3, A[3]: BEYOND_3, A[4]: BEYOND_3},
    ),
    "young tags beyond the newest stay": Case(
        (tag(A[0], 1), tag(A[1], 2), tag(A[2], 3), tag(A[3], 5), tag(A[4], 14)),
        {A[0]: NEWEST_3, A[1]: NEWEST_3, A[2]: NEWEST_3, A[3]: YOUNG, A[4]: YOUNG},
    ),
    "old tags among the newest stay": Case(
        (tag(A[0], 100), tag(A[1], 200)),
        {A[0]: NEWEST_3, A[1]: NEWEST_3},
    ),
    "each stage keeps its own newest": Case(
        (tag(A[0], 30), tag(B[0], 40), tag(B[1], 50), tag(S, 60)),
        {
            A[0]: "kept: among the newest of app",
            B[0]: "kept: among the newest of builder",
            B[1]: "older than 14d, beyond the newest of builder",
            S: "kept: among the newest of stage-2",
        },
        keep=1,
    ),
    "keep=0 deletes every old tag": Case(
        (tag(A[0], 1), tag(A[1], 20), tag(B[0], 30)),
        {A[0]: YOUNG, A[1]: "older than 14d", B[0]: "older than 14d"},
        keep=0,
    ),
    "keep=0 and 0d delete all but a tag created now": Case(
        (tag(A[0], 0), tag(A[1], 0.001), tag(A[2], -1)),
        {A[0]: "kept: not older than 0d", A[1]: "older than 0d", A[2]: "kept: not older than 0d"},
        keep=0,
        older_than=timedelta(0),
    ),
    "hours are shown as hours": Case(
        (tag(A[0], 1), tag(A[1], 2)),
        {A[0]: "kept: not older than 36h", A[1]: "older than 36h"},
        keep=0,
        older_than=timedelta(hours=36),
    ),
    "protected by tag name, by reference and by digest": Case(
        (tag(A[0], 1), tag(A[1], 20), tag(A[2], 30), tag(A[3], 40), tag(A[4], 50)),
        {A[0]: "kept: among the newest of app", A[1]: RESTORED, A[2]: RESTORED, A[3]: RESTORED}
        | {A[4]: "older than 14d, beyond the newest of app"},
        keep=1,
        protected=(
            A[1],
            f"localhost:5000/team/cache:{A[2]}",
            f"localhost:5000/team/cache@{digest_of(A[3])}",
        ),
    ),
    "a protected tag among the newest is shown as protected": Case(
        (tag(A[0], 1), tag(A[1], 20)),
        {A[0]: RESTORED, A[1]: "older than 14d, beyond the newest of app"},
        keep=1,
        protected=(f"registry.example/cache:{A[0]}",),
    ),
    "a repository name alone protects nothing": Case(
        (tag(A[0], 20),),
        {A[0]: "older than 14d"},
        keep=0,
        protected=("registry.example/cache", "registry.example/app"),
    ),
    "a digest shared with a kept tag of another stage stays": Case(
        (tag(A[0], 1), tag(A[1], 30, digest=digest_of("x")), tag(B[0], 30, digest=digest_of("x"))),
        {
            A[0]: "kept: among the newest of app",
            A[1]: f"kept: shares its digest with {B[0]}, which is kept",
            B[0]: "kept: among the newest of builder",
        },
        keep=1,
    ),
    "a digest shared with a protected tag stays": Case(
        (tag(A[0], 30, digest=digest_of("x")), tag(A[1], 31, digest=digest_of("x"))),
        {A[1]: RESTORED, A[0]: f"kept: shares its digest with {A[1]}, which the current plan"},
        keep=0,
        protected=(A[1],),
    ),
    "a protected keeper is named before another kept one": Case(
        (
            tag(A[0], 1, digest=digest_of("x")),
            tag(A[1], 30, digest=digest_of("x")),
            tag(B[0], 31, digest=digest_of("x")),
        ),
        {
            A[0]: "kept: among the newest of app",
            A[1]: f"kept: shares its digest with {B[0]}, which the current plan restores",
            B[0]: RESTORED,
        },
        keep=1,
        protected=(B[0],),
    ),
    "a digest shared with a tag that is not a cache tag stays": Case(
        (tag(A[0], 30, digest=digest_of("x")), tag("latest", 30, digest=digest_of("x"))),
        {A[0]: "kept: shares its digest with latest, which is kept", "latest": "kept: not a cache"},
        keep=0,
    ),
    "old tags sharing a digest go together": Case(
        (tag(A[0], 30, digest=digest_of("x")), tag(B[0], 30, digest=digest_of("x"))),
        {A[0]: "older than 14d", B[0]: "older than 14d"},
        keep=0,
    ),
    "unknown ages stay and take no place among the newest": Case(
        (tag(A[0], None), tag(A[1], None), tag(A[2], 20), tag(A[3], 30)),
        {
            A[0]: "kept: age unknown",
            A[1]: "kept: age unknown",
            A[2]: "kept: among the newest of app",
            A[3]: "older than 14d, beyond the newest of app",
        },
        keep=1,
    ),
    "tags that are not cache tags never go": Case(
        (tag("latest", 1000), tag("main", None), tag(f"app-{KEY[:8]}", 1000)),
        {"latest": "kept: not a cache tag", "main": "kept: not a cache tag"}
        | {f"app-{KEY[:8]}": "kept: not a cache tag"},
        keep=0,
    ),
    "nothing to decide": Case((), {}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_decide(case: Case) -> None:
    decisions = decide(
        case.tags,
        older_than=case.older_than,
        keep=case.keep,
        now=NOW,
        protected=case.protected,
    )
    assert sorted(d.tag.tag for d in decisions) == sorted(t.tag for t in case.tags)
    for decision in decisions:
        reason = case.expected[decision.tag.tag]
        assert decision.reason.startswith(reason), decision
        assert decision.delete is not reason.startswith("kept"), decision


def test_decide_orders_by_stage_then_newest_first() -> None:
    tags = [
        tag("latest", 1),
        tag(A[2], None),
        tag(B[0], 5),
        tag(A[0], 10),
        tag(A[1], 1),
        tag(A[3], 10),
        tag("aaa", 1),
    ]
    decisions = decide(tags, older_than=DAY, keep=1, now=NOW, protected=())
    assert [d.tag.tag for d in decisions] == [A[1], A[0], A[3], A[2], B[0], "aaa", "latest"]


def test_decide_takes_any_timezone() -> None:
    east = timezone(timedelta(hours=5))
    tags = [CacheTag(A[0], "app", digest_of("a"), (NOW - 20 * DAY).astimezone(east))]
    local_now = NOW.astimezone(east)
    [decision] = decide(tags, older_than=14 * DAY, keep=0, now=local_now, protected=())
    assert decision.delete


def test_decide_rejects_a_negative_keep() -> None:
    with pytest.raises(UsageError, match="--keep"):
        decide([], older_than=DAY, keep=-1, now=NOW, protected=())


def test_restored_refs_protect_what_the_plan_restores() -> None:
    cache = "localhost:5000/team/cache"
    repo = Repository.parse(cache)
    plan = Plan(
        graph=None,  # type: ignore[arg-type]
        cache_repo=repo,
        keys={},
        refs={0: repo.tag(A[0]), 1: repo.tag(A[1]), 2: repo.tag(A[2])},
        forecasts={
            0: Forecast("hit", "restore", digest_of("zero")),
            1: Forecast("miss", "build"),
            2: Forecast("hit", "skip", digest_of("two")),
        },
        warnings=(),
    )
    refs = restored_refs(plan)
    assert [str(ref) for ref in refs] == [f"{cache}:{A[0]}", f"{cache}@{digest_of('zero')}"]
    tags = [tag(A[0], 30, digest=digest_of("zero")), tag(A[1], 30), tag(A[2], 30)]
    decisions = decide(tags, older_than=DAY, keep=0, now=NOW, protected=refs)
    assert [d.delete for d in decisions] == [False, True, True]


# -- render -----------------------------------------------------------------------------------


def test_render_dry_run() -> None:
    decisions = decide(
        [tag(A[0], 1), tag(A[1], 20), tag(A[2], 30.5), tag("latest", None)],
        older_than=14 * DAY,
        keep=1,
        now=NOW,
        protected=(),
    )
    text = render(decisions, dry_run=True, now=NOW)
    lines = text.splitlines()
    assert lines[0].split() == ["TAG", "STAGE", "AGE", "ACTION", "REASON"]
    assert lines[1].split()[:4] == [A[0], "app", "1d", "keep"]
    assert lines[2].split()[:4] == [A[1], "app", "20d", "delete"]
    assert lines[2].endswith("older than 14d, beyond the newest of app")
    assert lines[4].split() == ["latest", "-", "-", "keep", "kept:", "not", "a", "cache", "tag"]
    assert lines[-1] == "2 of 4 tags would go (dry run; pass --yes to delete)"
    column = lines[0].index("ACTION")
    assert [line[column:].split()[0] for line in lines[1:5]] == ["keep", "delete", "delete", "keep"]


def test_render_after_deleting() -> None:
    decisions = [PruneDecision(tag(A[0], 2 / 24), True, "older than 1h")]
    assert render(decisions, dry_run=False, now=NOW).splitlines()[1:] == [
        f"{A[0]}  app    2h   delete  older than 1h",
        "",
        "deleted 1 of 1 tag",
    ]


def test_render_nothing() -> None:
    assert render([], dry_run=True) == (
        "no tags in the cache repo\n\n0 of 0 tags would go (dry run; pass --yes to delete)"
    )


# -- apply on a mock registry -----------------------------------------------------------------

REPO = Repository.parse("registry.example/team/cache")


def client_for(handler: httpx.MockTransport) -> RegistryClient:
    return RegistryClient(transport=handler, backoff=0.0, retries=0)


class Listed:
    """A mock cache repo holding `tags` (tag -> digest) as the listing saw them; records every
    request, and answers each DELETE with `delete` (a 404 for a digest in `gone`)."""

    def __init__(
        self,
        tags: dict[str, str],
        *,
        delete: httpx.Response | None = None,
        gone: str | None = None,
    ) -> None:
        self.tags = tags
        self.delete = delete or httpx.Response(202)
        self.gone = gone
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        name = request.url.path.rpartition("/")[2]
        if request.method == "GET" and name == "list":
            return httpx.Response(200, json={"name": "team/cache", "tags": sorted(self.tags)})
        if request.method == "HEAD":
            if name not in self.tags:
                return httpx.Response(404)
            headers = {
                "Docker-Content-Digest": self.tags[name],
                "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                "Content-Length": "10",
            }
            return httpx.Response(200, headers=headers)
        if request.method == "DELETE" and name == self.gone:
            return httpx.Response(404)
        return self.delete

    def deletes(self) -> list[str]:
        return sorted(line for line in self.seen if line.startswith("DELETE "))


def listed(decisions: list[PruneDecision]) -> dict[str, str]:
    return {d.tag.tag: d.tag.digest for d in decisions}


@pytest.mark.anyio
async def test_apply_deletes_each_digest_once_and_never_a_kept_one() -> None:
    shared, kept = digest_of("shared"), digest_of("kept")
    decisions = [
        PruneDecision(tag(A[0], 30, digest=shared), True, "old"),
        PruneDecision(tag(B[0], 30, digest=shared), True, "old"),
        PruneDecision(tag(A[1], 30, digest=kept), True, "old, but the caller got it wrong"),
        PruneDecision(tag("latest", 30, digest=kept), False, "kept: not a cache tag"),
        PruneDecision(tag(A[2], 30, digest=digest_of("gone")), True, "old"),
        PruneDecision(tag(A[3], 1), False, "kept: among the newest"),
    ]
    registry = Listed(listed(decisions), gone=digest_of("gone"))
    async with client_for(httpx.MockTransport(registry)) as client:
        deleted = await apply(client, REPO, decisions)
    assert deleted == [A[0], B[0], A[2]], "in decision order, the one already gone included"
    assert registry.deletes() == sorted(
        f"DELETE /v2/team/cache/manifests/{digest}" for digest in (shared, digest_of("gone"))
    )
    # looked at again right before: the tags to go, and the tag that is not a cache tag
    heads = sorted(line for line in registry.seen if line.startswith("HEAD "))
    assert heads == sorted(
        f"HEAD /v2/team/cache/manifests/{name}" for name in (A[0], B[0], A[2], "latest")
    )


@pytest.mark.anyio
async def test_apply_never_deletes_a_digest_whose_tags_changed_since_the_listing() -> None:
    """A tag to go that a run rewrote (a race), or a tag that came to point at a digest to go
    (a new tag, a moved hint): that digest stays."""
    decisions = [
        PruneDecision(tag(A[0], 30), True, "old"),
        PruneDecision(tag(A[1], 30), True, "old"),
        PruneDecision(tag(B[0], 30), True, "old"),
        PruneDecision(
            tag("app--main", 30, digest=digest_of("hint")), False, "kept: not a cache tag"
        ),
    ]
    now = listed(decisions)
    now[A[0]] = digest_of("the run that raced")
    now["app--feature"] = digest_of(A[1])
    registry = Listed(now)
    async with client_for(httpx.MockTransport(registry)) as client:
        deleted = await apply(client, REPO, decisions)
    assert deleted == [B[0]]
    assert registry.deletes() == [f"DELETE /v2/team/cache/manifests/{digest_of(B[0])}"]


@pytest.mark.anyio
async def test_apply_nothing_to_delete_sends_nothing() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(request)

    async with client_for(httpx.MockTransport(handler)) as client:
        assert await apply(client, REPO, [PruneDecision(tag(A[0], 1), False, "kept")]) == []


@pytest.mark.anyio
async def test_apply_says_how_to_enable_deletes() -> None:
    body = {"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported."}]}
    decisions = [PruneDecision(tag(A[0], 30), True, "old")]
    registry = Listed(listed(decisions), delete=httpx.Response(405, json=body))
    async with client_for(httpx.MockTransport(registry)) as client:
        with pytest.raises(RegistryUnsupported) as caught:
            await apply(client, REPO, decisions)
    message = str(caught.value)
    assert isinstance(caught.value, RegistryError)
    assert message.startswith("cannot prune registry.example/team/cache: ")
    assert "storage.delete.enabled: true" in message
    assert "UNSUPPORTED" in message
    assert message.endswith("0 of 1 tag deleted before it refused")


@pytest.mark.anyio
async def test_apply_other_errors_pass_through() -> None:
    denied = httpx.Response(403, json={"errors": [{"code": "DENIED", "message": "no"}]})
    decisions = [PruneDecision(tag(A[0], 30), True, "old")]
    registry = Listed(listed(decisions), delete=denied)
    async with client_for(httpx.MockTransport(registry)) as client:
        with pytest.raises(RegistryError, match=re.escape("denied DELETE")):
            await apply(client, REPO, decisions)


# -- a real registry --------------------------------------------------------------------------


def unique_repo(server: RegistryServer) -> Repository:
    return Repository.parse(f"{server.host}/prune/r{uuid.uuid4().hex[:12]}")


def push(
    server: RegistryServer,
    repo: Repository,
    name: str,
    created: datetime | None,
    *,
    content: str | None = None,
    os: str = "linux",
    architecture: str = "amd64",
) -> str:
    """Push a small image at `name`; pushes with equal `content` and times share a digest."""
    config: dict[str, object] = {
        "architecture": architecture,
        "os": os,
        "rootfs": {"type": "layers", "diff_ids": []},
        "comment": content or name,
    }
    if created is not None:
        config["created"] = created.isoformat().replace("+00:00", "Z")
    return push_image(server.url, repo.path, name, config=config)


async def tags_of(client: RegistryClient, repo: Repository) -> list[str]:
    return sorted(await client.list_tags(repo))


@pytest.mark.anyio
async def test_real_registry_prune(registry: RegistryServer) -> None:
    repo = unique_repo(registry)
    now = datetime.now(UTC)
    app = {days: f"app-{key()}" for days in (1, 2, 3, 20, 30)}
    builder = {days: f"builder-{key()}" for days in (1, 40, 50)}
    unnamed = f"stage-2-{key()}"
    undated = f"app-{key()}"
    for stage in (app, builder):
        for days, name in stage.items():
            push(registry, repo, name, now - days * DAY)
    push(registry, repo, unnamed, now - 60 * DAY)
    push(registry, repo, "latest", now - 400 * DAY)
    push(registry, repo, undated, None)
    restored = app[30]

    async with RegistryClient() as client:
        everything = await tags_of(client, repo)
        assert len(everything) == 11
        tags = await inventory(client, repo)
        assert [t.tag for t in tags] == everything
        found = {t.tag: t for t in tags}
        assert (found[undated].stage, found[undated].created) == ("app", None)
        assert (found["latest"].stage, found["latest"].is_cache) == ("", False)
        assert found[unnamed].stage == "stage-2"
        assert found[app[20]].created == parse_created((now - 20 * DAY).isoformat())
        assert len({t.digest for t in tags}) == 11

        decisions = decide(
            tags, older_than=parse_age("14d"), keep=2, now=now, protected=[f"{repo}:{restored}"]
        )
        text = render(decisions, dry_run=True, now=now)
        assert text.endswith("\n2 of 11 tags would go (dry run; pass --yes to delete)")
        assert await tags_of(client, repo) == everything, "a dry run deletes nothing"

        deleted = await apply(client, repo, decisions)
        assert sorted(deleted) == sorted([app[20], builder[50]])
        assert await tags_of(client, repo) == sorted(set(everything) - set(deleted))
        assert render(decisions, dry_run=False, now=now).endswith("\ndeleted 2 of 11 tags")

        unprotected = decide(
            await inventory(client, repo), older_than=14 * DAY, keep=2, now=now, protected=[]
        )
        assert [d.tag.tag for d in unprotected if d.delete] == [restored]


@pytest.mark.anyio
async def test_real_registry_keeps_protected_and_shared_digests(registry: RegistryServer) -> None:
    repo = unique_repo(registry)
    now = datetime.now(UTC).replace(microsecond=0)
    shared_with_builder, protected, old, shared_with_release = (f"app-{key()}" for _ in "1234")
    newest, builder = f"app-{key()}", f"builder-{key()}"
    push(registry, repo, newest, now - DAY)
    one = push(registry, repo, builder, now - 30 * DAY, content="one")
    assert push(registry, repo, shared_with_builder, now - 30 * DAY, content="one") == one
    push(registry, repo, protected, now - 31 * DAY)
    push(registry, repo, old, now - 32 * DAY)
    two = push(registry, repo, "release", now - 33 * DAY, content="two")
    assert push(registry, repo, shared_with_release, now - 33 * DAY, content="two") == two

    async with RegistryClient() as client:
        before = await tags_of(client, repo)
        decisions = decide(
            await inventory(client, repo),
            older_than=14 * DAY,
            keep=1,
            now=now,
            protected=[f"{repo.name}:{protected}"],
        )
        reasons = {d.tag.tag: d.reason for d in decisions}
        assert reasons[shared_with_builder] == (
            f"kept: shares its digest with {builder}, which is kept"
        )
        assert reasons[shared_with_release] == (
            "kept: shares its digest with release, which is kept"
        )
        assert reasons[protected] == "kept: the current plan restores it"
        assert await apply(client, repo, decisions) == [old]
        assert await tags_of(client, repo) == sorted(set(before) - {old})


@pytest.mark.anyio
async def test_real_registry_a_tag_rewritten_after_the_listing_keeps_both_images(
    registry: RegistryServer,
) -> None:
    """Runs push while prune lists: a tag to go that a run rewrote, and a hint moved onto an
    image to go, keep those images (a run may have pinned them); the rest goes."""
    repo = unique_repo(registry)
    now = datetime.now(UTC).replace(microsecond=0)
    raced, hinted, old = (f"app-{key()}" for _ in "123")
    first = push(registry, repo, raced, now - 30 * DAY)
    on_hint = push(registry, repo, hinted, now - 31 * DAY)
    push(registry, repo, old, now - 32 * DAY)
    push(registry, repo, f"app-{key()}", now)
    async with RegistryClient() as client:
        decisions = decide(
            await inventory(client, repo), older_than=14 * DAY, keep=1, now=now, protected=[]
        )
        assert sorted(d.tag.tag for d in decisions if d.delete) == sorted([raced, hinted, old])
        last = push(registry, repo, raced, now, content="the run that pushed last")
        assert push(registry, repo, "app--main", now - 31 * DAY, content=hinted) == on_hint
        assert await apply(client, repo, decisions) == [old]
        for digest in (first, last, on_hint):
            assert (await client.head_manifest(repo.pinned(digest))) is not None
        assert old not in await tags_of(client, repo)


@pytest.mark.anyio
async def test_real_registry_index_is_as_old_as_its_newest_platform(
    registry: RegistryServer,
) -> None:
    repo = unique_repo(registry)
    now = datetime.now(UTC).replace(microsecond=0)
    platforms = [
        ("amd64", "linux", now - 20 * DAY),
        ("arm64", "linux", now - 10 * DAY),
        ("unknown", "unknown", now - 1 * DAY),
    ]
    async with RegistryClient() as client:
        children = []
        for architecture, os, created in platforms:
            push(registry, repo, architecture, created, os=os, architecture=architecture)
            _, info = await client.get_manifest(repo.tag(architecture))
            children.append(
                {
                    "mediaType": info.media_type,
                    "size": info.size,
                    "digest": info.digest,
                    "platform": {"architecture": architecture, "os": os},
                }
            )
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": children}
        ).encode()
        multi = f"multi-{key()}"
        digest = await client.put_manifest(repo.tag(multi), index, DOCKER_MANIFEST_LIST)
        assert digest == sha256_digest(index)

        found = {t.tag: t for t in await inventory(client, repo)}
        assert found[multi] == CacheTag(multi, "multi", digest, now - 10 * DAY)
        assert found["amd64"].created == now - 20 * DAY

        decisions = decide(list(found.values()), older_than=7 * DAY, keep=0, now=now, protected=[])
        assert await apply(client, repo, decisions) == [multi]
        assert await tags_of(client, repo) == ["amd64", "arm64", "unknown"]
