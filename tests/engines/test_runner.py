"""The scheduler with a fake session: concurrency, failure cascades, fail-fast, pushes."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import httpx
import pytest

from pipeline.cache.context import BuildContext
from pipeline.cache.forecast import Forecast
from pipeline.cache.ignore import IgnoreRules
from pipeline.cache.plan import Plan, make_plan
from pipeline.dockerfile.graph import select
from pipeline.dockerfile.parse import parse_text
from pipeline.dockerfile.platforms import Platform
from pipeline.dockerfile.rewrite import build_targets
from pipeline.dockerfile.stages import build_stages
from pipeline.engines.base import Image, StageJob
from pipeline.engines.results import StageResult
from pipeline.engines.runner import DISTANT, Hints, RunOptions, execute, jobs_for
from pipeline.errors import StageFailed
from pipeline.oci.reference import Reference, Repository
from pipeline.oci.registry import RegistryClient

if TYPE_CHECKING:
    from collections.abc import Callable

DOCKERFILE = """\
FROM busybox AS a
FROM busybox AS b
FROM a AS c
COPY --from=b /x /x
FROM c AS d
FROM busybox AS e
FROM busybox AS top
COPY --from=d /x /x
COPY --from=e /x /x
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make(tmp_path: Path, targets: tuple[str, ...] = ("top",), text: str = DOCKERFILE) -> Plan:
    df = build_stages(parse_text(text))
    return anyio.run(
        lambda: make_plan(
            select(df, targets),
            cache_repo=Repository.parse("registry.test/x/cache"),
            build_args={},
            platform=Platform("linux", "amd64"),
            context=BuildContext(tmp_path, IgnoreRules.parse("")),
            client=None,
        )
    )


class FakeSession:
    def __init__(
        self,
        fail: frozenset[str] = frozenset(),
        push_fails: frozenset[str] = frozenset(),
        quick: frozenset[str] = frozenset(),
        slow: frozenset[str] = frozenset(),
        isolates_secret_steps: bool = False,
        exports: bool = False,
        shares_push_uploads: bool = False,
        tells_running: bool = False,
    ) -> None:
        self.isolates_secret_steps = isolates_secret_steps
        self.shares_push_uploads = shares_push_uploads
        self.tells_running = tells_running
        # says when it exports, and lets every other task run until blocked before returning
        self.exports = exports
        self.jobs: dict[str, StageJob] = {}
        self.events: list[str] = []
        self.fail = fail
        self.quick = quick
        self.slow = slow
        self.push_fails = push_fails
        self.in_flight = 0
        self.peak = 0
        self.pushed: list[str] = []
        self.started: list[str] = []
        self.hints_pushed: list[str] = []  # hint tags pushed beside cache tags

    async def build(
        self,
        job: StageJob,
        log: object,
        exporting: Callable[[], None] | None = None,
        running: Callable[[], None] | None = None,
    ) -> Image:
        self.started.append(job.name)
        if self.tells_running and running is not None:
            await anyio.sleep(0.02)  # the client's set-up, before the first step
            self.events.append(f"running {job.name}")
            running()
        self.jobs[job.name] = job
        self.events.append(f"build {job.name}")
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            quick = job.name in self.fail or job.name in self.quick
            await anyio.sleep(0.01 if quick else 30 if job.name in self.slow else 0.1)
            if self.exports and exporting is not None:
                await self.exporting(job, exporting)
            if job.name in self.fail:
                raise StageFailed(f"{job.name} broke", tail="line 1\nline 2")
            self.events.append(f"built {job.name}")
            return Image(job)
        finally:
            self.in_flight -= 1

    async def exporting(self, job: StageJob, exporting: Callable[[], None]) -> None:
        exporting()
        await anyio.wait_all_tasks_blocked()

    async def push(self, image: Image, ref: Reference, log: object) -> str:
        if ref.tag is not None and "--" in ref.tag:
            return await self.push_hint(image, ref)
        if image.job.name in self.push_fails:
            raise StageFailed("push failed", tail="retrying\nconnection reset\n")
        self.pushed.append(image.job.name)
        self.events.append(f"pushed {image.job.name}")
        return digest_of(image.job.name)

    async def push_hint(self, image: Image, ref: Reference) -> str:
        await anyio.lowlevel.checkpoint()
        self.hints_pushed.append(str(ref.tag))
        self.events.append(f"pushed {ref.tag}")
        return digest_of(image.job.name)


def digest_of(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


class Recorder:
    def __init__(self) -> None:
        self.updates: list[StageResult] = []
        self.notes: list[str] = []
        self.warnings: list[str] = []

    def update(self, result: StageResult) -> None:
        self.updates.append(result)

    def log(self, stage: str, line: str) -> None:
        pass

    def note(self, stage: str, line: str) -> None:
        self.notes.append(f"[{stage}] {line}")

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def run(
    plan: Plan, session: FakeSession, **options: object
) -> tuple[dict[str, StageResult], Recorder]:
    recorder = Recorder()
    targets = build_targets(plan.graph.dockerfile)
    local = {i: Reference.parse(f"local/{i}") for i in plan.indices("build")}
    jobs = jobs_for(plan, targets, local)

    async def go() -> dict[int, StageResult]:
        return await execute(plan, session, jobs, RunOptions(**options), recorder)  # type: ignore[arg-type]

    results = anyio.run(go)
    return {r.name: r for r in results.values()}, recorder


def test_everything_starts_at_once_and_is_pushed(tmp_path: Path) -> None:
    session = FakeSession()
    results, _ = run(make(tmp_path), session, jobs=8)
    assert {n: r.status for n, r in results.items()} == dict.fromkeys(
        ["a", "b", "c", "d", "e", "top"], "built"
    )
    assert session.peak == 6
    assert sorted(session.pushed) == sorted(["a", "b", "c", "d", "e", "top"])
    assert all(r.digest and r.cache_ref for r in results.values())


def test_jobs_bounds_concurrency(tmp_path: Path) -> None:
    session = FakeSession()
    run(make(tmp_path), session, jobs=2)
    assert session.peak == 2


def test_a_failure_cancels_dependents_and_lets_the_rest_finish(tmp_path: Path) -> None:
    session = FakeSession(
        fail=frozenset({"c"}), quick=frozenset({"a", "b"}), slow=frozenset({"d", "top"})
    )
    results, _ = run(make(tmp_path), session)
    assert {n: r.status for n, r in results.items()} == {
        "a": "built",
        "b": "built",
        "c": "failed",
        "d": "cancelled",
        "e": "built",
        "top": "cancelled",
    }
    assert results["c"].tail == "line 1\nline 2"
    assert results["d"].error == "c failed"
    assert "c" not in session.pushed


def test_a_stage_failing_because_its_dependency_failed_is_cancelled(tmp_path: Path) -> None:
    session = FakeSession(fail=frozenset({"a", "c"}))
    results, _ = run(make(tmp_path), session)
    assert results["a"].status == "failed"
    assert (results["c"].status, results["c"].error) == ("cancelled", "a failed")


def test_fail_fast_cancels_everything(tmp_path: Path) -> None:
    session = FakeSession(fail=frozenset({"b"}), slow=frozenset({"a", "c", "d", "e", "top"}))
    results, _ = run(make(tmp_path), session, fail_fast=True)
    assert results["b"].status == "failed"
    assert {results[n].status for n in ("a", "c", "d", "e", "top")} == {"cancelled"}


def test_a_failed_push_is_a_warning_and_the_stage_is_built(tmp_path: Path) -> None:
    session = FakeSession(push_fails=frozenset({"e"}))
    results, recorder = run(make(tmp_path), session)
    assert (results["e"].status, results["e"].digest, results["e"].cache_ref) == (
        "built",
        None,
        None,
    )
    assert recorder.warnings == [
        f"e: cache push to {make(tmp_path).refs[4]} failed: push failed: connection reset"
    ]
    assert results["e"].push_error == "push failed: connection reset"
    assert {r.push_error for name, r in results.items() if name != "e"} == {None}


def test_no_push_without_push_cache(tmp_path: Path) -> None:
    session = FakeSession()
    results, _ = run(make(tmp_path), session, push_cache=False)
    assert session.pushed == []
    assert {r.status for r in results.values()} == {"built"}


def test_a_build_imports_the_hints_of_every_stage_it_runs(tmp_path: Path) -> None:
    """`top` runs a, b, c, d and e too; c and d sit on a rebuilt base and have no hint."""
    plan = make(tmp_path)
    index = {plan.stage(i).name: i for i in plan.forecasts}
    cache = Repository.parse("registry.test/x/cache")
    hints = {index[n]: cache.tag(f"{n}--main") for n in ("a", "b", "e", "top")}
    plan = replace(plan, hints=hints)
    local = dict.fromkeys(index.values(), Reference.parse("local/x"))
    jobs = jobs_for(plan, build_targets(plan.graph.dockerfile), local)
    cache_from = {jobs[i].name: [ref.tag for ref in jobs[i].cache_from] for i in jobs}
    assert cache_from == {
        "a": ["a--main"],
        "b": ["b--main"],
        "c": ["a--main", "b--main"],
        "d": ["a--main", "b--main"],
        "e": ["e--main"],
        "top": ["a--main", "b--main", "e--main", "top--main"],
    }


def test_a_build_whose_steps_another_runs_starts_once_that_one_is_running(
    tmp_path: Path,
) -> None:
    """`top` runs every other stage's steps too: on an engine that tells when a build's steps
    begin, the others start after that, and share those steps; on one that cannot, at once."""
    telling = FakeSession(tells_running=True)
    results, _ = run(make(tmp_path), telling, push_cache=False)
    assert {r.status for r in results.values()} == {"built"}
    assert telling.started[0] == "top"
    assert telling.events.index("running top") < telling.events.index("build a")
    silent = FakeSession()
    run(make(tmp_path), silent, push_cache=False)
    assert silent.started[0] == "a"


def test_a_build_waiting_for_another_starts_if_that_one_fails_first(tmp_path: Path) -> None:
    session = FakeSession(tells_running=True, fail=frozenset({"top"}))
    plan = make(tmp_path, ("top",), "FROM busybox AS a\nRUN true\nFROM a AS top\nRUN false\n")
    results, _ = run(plan, session, push_cache=False)
    assert {name: r.status for name, r in results.items()} == {"a": "built", "top": "failed"}


READS_DOCKERFILE = """\
FROM busybox AS tools
FROM --platform=$BUILDPLATFORM busybox AS native
FROM busybox AS mid
FROM mid AS final
COPY --from=tools /x /x
COPY --from=native /y /y
COPY --from=alpine /z /z
"""


def test_a_build_reads_the_pinned_bases_and_restored_stages_of_its_platform(
    tmp_path: Path,
) -> None:
    """`final` runs `mid` (FROM busybox, pinned) and copies from the restored `tools` and
    `native`; `native` runs on the build platform, and alpine is not pinned: neither is read."""
    plan = make(tmp_path, ("final",), READS_DOCKERFILE)
    index = {plan.stage(i).name: i for i in plan.forecasts}
    busybox, tools, native = ("sha256:" + c * 64 for c in "abc")
    forecasts = dict(plan.forecasts)
    for name, digest in (("tools", tools), ("native", native)):
        forecasts[index[name]] = Forecast("hit", "restore", digest)
    plan = replace(plan, forecasts=forecasts, pins={"busybox": busybox})
    local = dict.fromkeys(index.values(), Reference.parse("local/x"))
    jobs = jobs_for(plan, build_targets(plan.graph.dockerfile), local)
    reads = {jobs[i].name: [str(ref) for ref in jobs[i].reads] for i in jobs}
    assert reads == {
        "mid": [f"busybox@{busybox}"],
        "final": [f"busybox@{busybox}", f"registry.test/x/cache@{tools}"],
    }


SECRETS_DOCKERFILE = """\
FROM busybox AS deps
RUN --mount=type=secret,id=npm,target=/root/.npmrc npm ci
ONBUILD RUN --mount=type=secret,id=onbuild true
FROM deps AS test
RUN --mount=type=secret,id=cov,env=COV true
RUN --mount=type=secret,id=npm true
FROM busybox AS other
RUN --mount=type=secret,id=other true
FROM busybox AS top
COPY --from=test /x /x
"""


def test_a_build_gets_the_secret_mounts_of_the_steps_it_runs_and_no_other(tmp_path: Path) -> None:
    """An engine that hands a build more secrets lets steps that never asked read them."""
    plan = make(tmp_path, ("top", "other"), SECRETS_DOCKERFILE)
    index = {plan.stage(i).name: i for i in plan.forecasts}
    local = dict.fromkeys(index.values(), Reference.parse("local/x"))
    jobs = {
        job.name: job
        for job in jobs_for(plan, build_targets(plan.graph.dockerfile), local).values()
    }
    assert {name: job.secret_ids for name, job in jobs.items()} == {
        "deps": ("npm",),
        "test": ("npm", "onbuild", "cov"),
        "other": ("other",),
        "top": ("npm", "onbuild", "cov"),
    }
    mounts = [(m.secret_id, m.target, m.env) for m in jobs["test"].secret_mounts]
    assert mounts == [
        ("npm", "/root/.npmrc", None),
        ("onbuild", None, None),
        ("cov", None, "COV"),
        ("npm", None, None),
    ]


LEAKY_DOCKERFILE = """\
FROM busybox AS deps
RUN --mount=type=secret,id=npm npm ci
FROM deps AS app
RUN --mount=type=secret,id=token make
FROM app AS test
RUN make test
FROM busybox AS assets
RUN make assets
FROM busybox AS site
COPY --from=assets /x /x
"""
CACHE = "registry.test/x/cache"


def leaky(
    tmp_path: Path, session: FakeSession, **options: object
) -> tuple[dict[str, StageResult], Recorder]:
    plan = make(tmp_path, ("test", "site"), LEAKY_DOCKERFILE)
    return run(plan, session, **options)


def test_a_build_waits_for_its_secret_dependencies_and_builds_on_their_pushed_images(
    tmp_path: Path,
) -> None:
    """On an engine that keeps secret mounts on later steps, test's build runs only its own
    RUN, from app's pushed image, and is handed no secret."""
    session = FakeSession(isolates_secret_steps=True)
    results, recorder = leaky(tmp_path, session)
    assert {r.status for r in results.values()} == {"built"}
    assert recorder.warnings == []
    events = session.events
    assert events.index("build test") > events.index("pushed app") > events.index("pushed deps")
    assert events.index("build app") > events.index("pushed deps")
    assert {name: job.secret_ids for name, job in session.jobs.items()} == {
        "deps": ("npm",),
        "app": ("token",),
        "test": (),
        "assets": (),
        "site": (),
    }
    test = session.jobs["test"].dockerfile
    assert test is not None
    assert f"FROM {CACHE}@{digest_of('deps')} AS deps" in test
    assert f"FROM {CACHE}@{digest_of('app')} AS app" in test
    assert "npm ci" not in test
    assert "make test" in test
    app = session.jobs["app"].dockerfile
    assert app is not None
    assert f"FROM {CACHE}@{digest_of('deps')} AS deps" in app
    assert "RUN --mount=type=secret,id=token make" in app
    assert [session.jobs[n].dockerfile for n in ("deps", "assets", "site")] == [None] * 3


def test_builds_without_secret_dependencies_start_at_once(tmp_path: Path) -> None:
    session = FakeSession(isolates_secret_steps=True)
    leaky(tmp_path, session)
    assert set(session.started[:3]) == {"deps", "assets", "site"}


def test_an_engine_that_mounts_a_secret_only_where_asked_builds_everything_at_once(
    tmp_path: Path,
) -> None:
    """BuildKit (the docker executor): no waiting, the shared Dockerfile, every secret its
    build runs."""
    session = FakeSession()
    leaky(tmp_path, session)
    assert session.peak == 5
    assert {job.dockerfile for job in session.jobs.values()} == {None}
    assert session.jobs["test"].secret_ids == ("npm", "token")


def test_without_a_cache_push_the_secret_stages_are_built_along_and_said_once(
    tmp_path: Path,
) -> None:
    session = FakeSession(isolates_secret_steps=True)
    results, recorder = leaky(tmp_path, session, push_cache=False)
    assert {r.status for r in results.values()} == {"built"}
    assert session.peak == 5
    assert {job.dockerfile for job in session.jobs.values()} == {None}
    assert recorder.warnings == [
        "deps: built again in the build of app, test, as the cache is not pushed; on this "
        'engine their later RUN steps may read its secret "npm"',
        "app: built again in the build of test, as the cache is not pushed; on this "
        'engine their later RUN steps may read its secret "token"',
    ]


def test_a_failed_push_builds_that_dependency_along_and_says_so_once(tmp_path: Path) -> None:
    session = FakeSession(isolates_secret_steps=True, push_fails=frozenset({"app"}))
    results, recorder = leaky(tmp_path, session)
    assert results["test"].status == "built"
    test = session.jobs["test"]
    assert test.dockerfile is not None
    assert f"FROM {CACHE}@{digest_of('deps')} AS deps" in test.dockerfile
    assert "RUN --mount=type=secret,id=token make" in test.dockerfile
    assert test.secret_ids == ("token",)
    along = [w for w in recorder.warnings if "built again" in w]
    assert along == [
        "app: built again in the build of test, as its cache push failed; on this engine "
        'their later RUN steps may read its secret "token"'
    ]


def test_a_failed_secret_dependency_cancels_the_builds_waiting_for_it(tmp_path: Path) -> None:
    session = FakeSession(isolates_secret_steps=True, fail=frozenset({"deps"}))
    results, _ = leaky(tmp_path, session)
    assert {n: (r.status, r.error) for n, r in results.items() if n in ("app", "test")} == {
        "app": ("cancelled", "deps failed"),
        "test": ("cancelled", "deps failed"),
    }
    assert "app" not in session.started
    assert "test" not in session.started
    assert (results["site"].status, results["assets"].status) == ("built", "built")


def test_a_secret_stage_with_onbuild_triggers_is_built_along(tmp_path: Path) -> None:
    """Its image would run the triggers itself instead of its children: it cannot stand in."""
    text = LEAKY_DOCKERFILE.replace("npm ci\n", "npm ci\nONBUILD RUN true\n")
    session = FakeSession(isolates_secret_steps=True)
    results, recorder = run(make(tmp_path, ("test", "site"), text), session)
    assert {r.status for r in results.values()} == {"built"}
    assert session.jobs["app"].dockerfile is None
    test = session.jobs["test"].dockerfile
    assert test is not None
    assert f"FROM {CACHE}@{digest_of('app')} AS app" in test
    assert "FROM busybox AS deps" in test
    assert [w.split(",", 1)[0] for w in recorder.warnings] == [
        "deps: built again in the build of app"
    ]
    assert "ONBUILD triggers" in recorder.warnings[0]


def test_a_secret_stage_fetching_a_url_anew_is_built_along_and_never_pushed(
    tmp_path: Path,
) -> None:
    """Its image is not pushed (its key does not identify it), so nothing can build on it."""
    text = LEAKY_DOCKERFILE.replace("npm ci\n", "npm ci\nADD https://example.test/x.tgz /x\n")
    session = FakeSession(isolates_secret_steps=True)
    results, recorder = run(make(tmp_path, ("test", "site"), text), session)
    assert {r.status for r in results.values()} == {"built"}
    assert {n: r.cache_ref for n, r in results.items() if n in ("deps", "app", "test")} == {
        "deps": None,
        "app": None,
        "test": None,
    }
    assert session.jobs["test"].dockerfile is None
    assert [w.split(",", 1)[0] for w in recorder.warnings] == [
        "deps: built again in the build of app",
        "app: built again in the build of test",
    ]
    assert "fetched anew from a remote source" in recorder.warnings[0]


# --- first writer wins: a cache tag another run wrote meanwhile is adopted, not overwritten --


class WrittenTags:
    """A registry that holds `written` (tag -> digest) in the cache repo; records requests."""

    def __init__(
        self, written: dict[str, str], *, broken: bool = False, events: list[str] | None = None
    ) -> None:
        self.written = written
        self.broken = broken
        self.requests: list[tuple[str, str]] = []
        self.events = [] if events is None else events  # "<method> <stage>", with the session's

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        tag = request.url.path.rpartition("/")[2]
        stage = tag.rpartition("-")[0]
        self.events.append(f"{request.method} {stage}")
        if self.broken:
            return httpx.Response(500)
        if request.method != "HEAD" or stage not in self.written:
            return httpx.Response(404)
        headers = {
            "Docker-Content-Digest": self.written[stage],
            "Content-Type": "application/vnd.oci.image.manifest.v1+json",
            "Content-Length": "100",
        }
        return httpx.Response(200, headers=headers)


class Logs(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []

    def log(self, stage: str, line: str) -> None:
        self.lines.append((stage, line))

    def note(self, stage: str, line: str) -> None:
        self.lines.append((stage, line))


def run_with_registry(
    plan: Plan,
    session: FakeSession,
    registry: WrittenTags,
    options: RunOptions | None = None,
    round_trip: float | None = None,
) -> tuple[dict[str, StageResult], Logs, dict[int, Image], list[tuple[str, str]]]:
    recorder = Logs()
    jobs = jobs_for(plan, build_targets(plan.graph.dockerfile), dict(plan.refs))
    images: dict[int, Image] = {}
    moved: list[tuple[str, str]] = []

    async def move(index: int, digest: str) -> None:
        moved.append((plan.stage(index).name, digest))

    async def go() -> dict[int, StageResult]:
        transport = httpx.MockTransport(registry)
        async with (
            RegistryClient(transport=transport, retries=0) as client,
            anyio.create_task_group() as group,
        ):
            hints = Hints(hint_tags(plan, jobs), move, group, round_trip)
            chosen = options or RunOptions()
            return await execute(plan, session, jobs, chosen, recorder, images, hints, client)  # type: ignore[arg-type]

    results = anyio.run(go)
    return {r.name: r for r in results.values()}, recorder, images, moved


def hint_tags(plan: Plan, jobs: dict[int, StageJob]) -> dict[int, Reference]:
    assert plan.cache_repo is not None
    return {index: plan.cache_repo.tag(f"{job.name}--main") for index, job in jobs.items()}


OTHER = "sha256:" + "0" * 64


def test_a_tag_another_run_wrote_since_the_plan_is_adopted_not_overwritten(
    tmp_path: Path,
) -> None:
    plan = make(tmp_path)
    registry = WrittenTags({"c": OTHER})
    session = FakeSession()
    results, recorder, images, moved = run_with_registry(plan, session, registry)
    assert sorted(session.pushed) == ["a", "b", "d", "e", "top"]
    c = results["c"]
    assert (c.status, c.digest, c.adopted) == ("built", OTHER, True)
    assert c.cache_ref == str(plan.refs[c.index])
    assert not any(r.adopted for n, r in results.items() if n != "c")
    assert results["d"].digest == digest_of("d")
    # the image built here no longer stands for c: tests and publishing use the adopted one
    assert c.index not in images
    assert len(images) == 5
    assert ("c", OTHER) in moved
    assert ("c", f"cache tag {c.cache_ref} already written by another run; adopted {OTHER}") in (
        recorder.lines
    )
    # one HEAD per pushed stage, and nothing else
    assert sorted(method for method, _ in registry.requests) == ["HEAD"] * 6


def test_a_child_built_on_a_pushed_parent_builds_on_the_adopted_image(tmp_path: Path) -> None:
    session = FakeSession(isolates_secret_steps=True)
    plan = make(tmp_path, ("test", "site"), LEAKY_DOCKERFILE)
    results, _, _, _ = run_with_registry(plan, session, WrittenTags({"app": OTHER}))
    assert results["app"].adopted
    assert "app" not in session.pushed
    test = session.jobs["test"].dockerfile
    assert test is not None
    assert f"FROM {CACHE}@{OTHER} AS app" in test


def test_a_tag_that_cannot_be_read_is_pushed_to_as_before(tmp_path: Path) -> None:
    session = FakeSession()
    results, recorder, _, _ = run_with_registry(
        make(tmp_path), session, WrittenTags({"c": OTHER}, broken=True)
    )
    assert sorted(session.pushed) == ["a", "b", "c", "d", "e", "top"]
    assert not any(r.adopted for r in results.values())
    assert results["c"].digest == digest_of("c")
    assert any(
        stage == "c" and line.startswith("cache tag ") and "not checked" in line
        for stage, line in recorder.lines
    )


class RacedSession(FakeSession):
    """The registry fails this run's push of `c` while another run's push of it lands (seen
    with distribution's filesystem storage: a 500 for a tag being written at that moment)."""

    def __init__(self, registry: WrittenTags) -> None:
        super().__init__(push_fails=frozenset({"c"}))
        self.registry = registry

    async def push(self, image: Image, ref: Reference, log: object) -> str:
        if image.job.name == "c":
            self.registry.written["c"] = OTHER
        return await super().push(image, ref, log)


def test_a_push_that_fails_while_another_run_writes_the_tag_adopts_it(tmp_path: Path) -> None:
    registry = WrittenTags({})
    results, recorder, images, _ = run_with_registry(
        make(tmp_path), RacedSession(registry), registry
    )
    assert (results["c"].digest, results["c"].adopted, results["c"].push_error) == (
        OTHER,
        True,
        None,
    )
    assert not recorder.warnings
    assert len(images) == 5


def test_a_push_that_fails_with_the_tag_still_absent_is_a_warning(tmp_path: Path) -> None:
    registry = WrittenTags({})
    session = FakeSession(push_fails=frozenset({"c"}))
    results, recorder, _, _ = run_with_registry(make(tmp_path), session, registry)
    assert (results["c"].digest, results["c"].adopted) == (None, False)
    assert results["c"].push_error is not None
    assert [w.split(":", 1)[0] for w in recorder.warnings] == ["c"]


def test_without_first_writer_wins_a_run_pushes_its_own_images(tmp_path: Path) -> None:
    """`--no-cache`: the run uses and pushes what it built, replacing the tag; it asks nothing."""
    session = FakeSession()
    registry = WrittenTags({"c": OTHER})
    options = RunOptions(first_writer_wins=False)
    results, _, images, _ = run_with_registry(make(tmp_path), session, registry, options)
    assert sorted(session.pushed) == ["a", "b", "c", "d", "e", "top"]
    assert (results["c"].digest, results["c"].adopted) == (digest_of("c"), False)
    assert len(images) == 6
    assert registry.requests == []


# --- registry work off the critical path ----------------------------------------------------

STAGES = ("a", "b", "c", "d", "e", "top")


def test_the_cache_tag_is_read_while_the_image_exports(tmp_path: Path) -> None:
    """On an engine that says when it exports, each stage's HEAD goes out before its build
    returns, and its answer still decides: c, written by another run, is adopted."""
    session = FakeSession(exports=True)
    registry = WrittenTags({"c": OTHER}, events=session.events)
    results, _, _, _ = run_with_registry(make(tmp_path), session, registry)
    events = session.events
    for name in STAGES:
        assert events.index(f"HEAD {name}") < events.index(f"built {name}"), name
    assert (results["c"].adopted, results["c"].digest) == (True, OTHER)
    assert sorted(session.pushed) == ["a", "b", "d", "e", "top"]
    assert sorted(method for method, _ in registry.requests) == ["HEAD"] * 6


def test_an_engine_that_cannot_tell_has_the_tag_read_when_its_build_returns(
    tmp_path: Path,
) -> None:
    session = FakeSession()
    registry = WrittenTags({}, events=session.events)
    run_with_registry(make(tmp_path), session, registry)
    events = session.events
    for name in STAGES:
        built, head, pushed = (events.index(f"{e} {name}") for e in ("built", "HEAD", "pushed"))
        assert built < head < pushed, name


class WritingSession(FakeSession):
    """Another run writes c's cache tag while c's image exports: before this run's HEAD of it
    is sent (`before`), or once that HEAD has been answered."""

    def __init__(self, registry: WrittenTags, *, before: bool) -> None:
        super().__init__(exports=True)
        self.registry = registry
        self.before = before

    async def exporting(self, job: StageJob, exporting: Callable[[], None]) -> None:
        if job.name == "c" and self.before:
            self.registry.written["c"] = OTHER
        await super().exporting(job, exporting)
        if job.name == "c" and not self.before:
            self.registry.written["c"] = OTHER


def test_a_tag_written_before_the_head_is_sent_is_adopted(tmp_path: Path) -> None:
    registry = WrittenTags({})
    session = WritingSession(registry, before=True)
    results, _, _, _ = run_with_registry(make(tmp_path), session, registry)
    assert (results["c"].adopted, results["c"].digest) == (True, OTHER)
    assert "c" not in session.pushed


def test_a_tag_written_after_the_head_was_answered_is_pushed_over(tmp_path: Path) -> None:
    """The race window of two runs that both found the tag absent: each keeps its own digest."""
    registry = WrittenTags({})
    session = WritingSession(registry, before=False)
    results, _, _, _ = run_with_registry(make(tmp_path), session, registry)
    assert (results["c"].adopted, results["c"].digest) == (False, digest_of("c"))
    assert "c" in session.pushed


def test_a_build_failing_while_it_exports_pushes_nothing(tmp_path: Path) -> None:
    session = FakeSession(exports=True, fail=frozenset({"c"}))
    results, recorder, _, _ = run_with_registry(make(tmp_path), session, WrittenTags({}))
    assert results["c"].status == "failed"
    assert "c" not in session.pushed
    assert results["e"].status == "built"
    assert not recorder.warnings


def test_hint_tags_are_pushed_beside_the_cache_tags_where_pushes_share_uploads(
    tmp_path: Path,
) -> None:
    """dockerd: a pushed stage's hint tag goes with its cache push, at that push's digest; only
    the adopted stage's hint is copied, to the digest it adopted."""
    session = FakeSession(shares_push_uploads=True)
    results, _, _, moved = run_with_registry(make(tmp_path), session, WrittenTags({"c": OTHER}))
    assert sorted(session.hints_pushed) == [f"{n}--main" for n in ("a", "b", "d", "e", "top")]
    assert moved == [("c", OTHER)]
    assert {r.status for r in results.values()} == {"built"}


@pytest.mark.parametrize(
    ("shares", "round_trip"), [(False, None), (False, 0.1), (True, DISTANT / 10)]
)
def test_elsewhere_every_hint_is_copied_to_its_stage_digest(
    tmp_path: Path, shares: bool, round_trip: float | None
) -> None:
    """On an engine whose pushes do not share uploads, or with a registry close enough that a
    second push beside the cache push costs more than copying the hint after it."""
    session = FakeSession(shares_push_uploads=shares)
    registry = WrittenTags({"c": OTHER})
    results, _, _, moved = run_with_registry(make(tmp_path), session, registry, None, round_trip)
    assert session.hints_pushed == []
    assert sorted(moved) == sorted((name, results[name].digest) for name in STAGES)


def test_with_a_distant_registry_hints_are_pushed_beside_the_cache(tmp_path: Path) -> None:
    session = FakeSession(shares_push_uploads=True)
    run_with_registry(make(tmp_path), session, WrittenTags({}), None, DISTANT)
    assert len(session.hints_pushed) == len(STAGES)


class OddHintPushes(FakeSession):
    """Its hint push of `a` fails, and that of `b` ends on another digest than b's cache push."""

    def __init__(self) -> None:
        super().__init__(shares_push_uploads=True)

    async def push_hint(self, image: Image, ref: Reference) -> str:
        if image.job.name == "a":
            await anyio.lowlevel.checkpoint()
            raise StageFailed("docker push exited with 1")
        digest = await super().push_hint(image, ref)
        return OTHER if image.job.name == "b" else digest


def test_a_hint_push_that_failed_or_ended_elsewhere_is_copied_to_the_cache_digest(
    tmp_path: Path,
) -> None:
    session = OddHintPushes()
    results, recorder, _, moved = run_with_registry(make(tmp_path), session, WrittenTags({}))
    assert sorted(moved) == [("a", digest_of("a")), ("b", digest_of("b"))]
    assert ("a", f"hint tag {CACHE}:a--main not pushed: docker push exited with 1") in (
        recorder.lines
    )
    assert not recorder.warnings
    assert {r.status for r in results.values()} == {"built"}


def test_a_stage_whose_cache_push_failed_gets_no_hint(tmp_path: Path) -> None:
    session = FakeSession(shares_push_uploads=True, push_fails=frozenset({"e"}))
    results, _, _, moved = run_with_registry(make(tmp_path), session, WrittenTags({}))
    assert results["e"].digest is None
    assert "e--main" not in session.hints_pushed
    assert "e" not in {name for name, _ in moved}


def test_execute_returns_while_the_hint_moves_still_run(tmp_path: Path) -> None:
    """The test, the local copies and publishing follow `execute`: none of them waits for a
    hint move, however slow, as the moves run in the caller's group."""
    plan = make(tmp_path)
    jobs = jobs_for(plan, build_targets(plan.graph.dockerfile), dict(plan.refs))
    order: list[str] = []
    release = anyio.Event()
    every_move_started = anyio.Event()
    started: list[int] = []

    async def move(index: int, digest: str) -> None:
        started.append(index)
        if len(started) == len(jobs):
            every_move_started.set()
        await release.wait()
        order.append("moved")

    async def release_once_all_wait() -> None:
        """Were `execute` waiting for the moves, it would return only after this, after them."""
        await every_move_started.wait()
        await anyio.wait_all_tasks_blocked()
        release.set()

    async def go() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(release_once_all_wait)
            hints = Hints(hint_tags(plan, jobs), move, group)
            await execute(plan, FakeSession(), jobs, RunOptions(), Recorder(), None, hints)  # type: ignore[arg-type]
            order.append("returned")

    anyio.run(go)
    assert order == ["returned"] + ["moved"] * len(jobs)
