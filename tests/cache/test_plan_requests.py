"""`make_plan`'s requests to a real registry, recorded in order by the client's transport.

`--no-cache` asks the cache nothing; the hint lookups go out alongside the cache probe rather
than after it, so a cold plan costs one round trip fewer with the same result; a warm plan of
100 stages pays at most `SPECULATIVE_HINTS` GETs for it. Order is asserted, never time: the
registry's distance is played by holding the probe's answers until the requests that should
not wait for them have been sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from pipeline.cache import plan as plan_module
from pipeline.cache.context import BuildContext
from pipeline.cache.explain import LABEL
from pipeline.cache.ignore import IgnoreRules
from pipeline.cache.plan import SPECULATIVE_HINTS, Plan, make_plan
from pipeline.dockerfile.graph import select
from pipeline.dockerfile.parse import parse_text
from pipeline.dockerfile.platforms import native_platform
from pipeline.dockerfile.stages import build_stages
from pipeline.oci.reference import Reference, Repository
from pipeline.oci.registry import RegistryClient
from tests.registry_server import DOCKER_MANIFEST, RegistryServer, free_port, push_image

if TYPE_CHECKING:
    from pathlib import Path

    from pipeline.dockerfile.graph import Graph

DOCKERFILE = """\
FROM {base} AS deps
COPY deps.txt /deps.txt
FROM {base} AS assets
COPY assets/ /assets/
FROM deps AS app
COPY --from=assets /assets /app/assets
COPY src/ /app/src/
FROM app AS test
RUN true
"""
STAGES = ("deps", "assets", "app", "test")
HOLD_LIMIT = 10.0  # only a way out for a client that never sends what is waited for


@dataclass(frozen=True)
class Logged:
    what: str  # "sent" or "answered"
    method: str
    path: str


class Recorder(httpx.AsyncBaseTransport):
    """Forwards to the registry and logs each request as it is sent and as its answer comes.

    With `hold`, the answer to a HEAD of a cache tag waits until `hold` GETs of hint manifests
    have been sent: a distant registry, whose probe answers arrive after the client has had
    all the time it needs to send what does not wait for them.
    """

    def __init__(self, cache_path: str, *, hold: int = 0) -> None:
        self.log: list[Logged] = []
        self._inner = httpx.AsyncHTTPTransport(retries=0)
        self._cache = f"/v2/{cache_path}/"
        self._hold = hold
        self._enough: anyio.Event | None = None  # made in the loop that waits on it

    def hint_get(self, event: Logged) -> bool:
        return event.method == "GET" and self._is(event.path, "manifests/") and "--" in event.path

    def cache_head(self, event: Logged) -> bool:
        return event.method == "HEAD" and self._is(event.path, "manifests/")

    def blob_get(self, event: Logged) -> bool:
        return event.method == "GET" and self._is(event.path, "blobs/")

    def cache_requests(self) -> list[Logged]:
        return [e for e in self.log if e.what == "sent" and e.path.startswith(self._cache)]

    def _is(self, path: str, kind: str) -> bool:
        return path.startswith(self._cache + kind)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = Logged("sent", request.method, request.url.path)
        self.log.append(sent)
        if self._enough is None:
            self._enough = anyio.Event()
        if sum(1 for e in self.log if e.what == "sent" and self.hint_get(e)) >= self._hold:
            self._enough.set()
        if self._hold and self.cache_head(sent):
            with anyio.move_on_after(HOLD_LIMIT):
                await self._enough.wait()
        response = await self._inner.handle_async_request(request)
        self.log.append(Logged("answered", request.method, request.url.path))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.fixture
def project(tmp_path: Path, registry: RegistryServer) -> Path:
    push_image(registry.url, "base/busybox", "1", config={"architecture": "amd64", "os": "linux"})
    (tmp_path / "deps.txt").write_text("deps")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "app.css").write_text("body{}")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print(1)")
    return tmp_path


def graph_of(text: str, target: str) -> Graph:
    return select(build_stages(parse_text(text)), [target])


def plan_with(
    tmp_path: Path,
    graph: Graph,
    cache_repo: str,
    recorder: Recorder | None,
    *,
    no_cache: bool = False,
    found: list[tuple[int, str | None]] | None = None,
) -> Plan:
    """`found` collects each image the plan tells of (`on_image`), with how many requests
    `recorder` had logged by then."""
    context = BuildContext(tmp_path, IgnoreRules.load(tmp_path, tmp_path / "Dockerfile"))

    async def make() -> Plan:
        async with RegistryClient(transport=recorder, retries=0) as client:
            return await make_plan(
                graph,
                cache_repo=Repository.parse(cache_repo),
                build_args={},
                platform=native_platform(),
                context=context,
                client=client,
                no_cache=no_cache,
                branches=["main"],
                on_image=None if found is None else tell,
            )

    def tell(ref: Reference, platform: str | None) -> None:
        assert found is not None
        found.append((len(recorder.log) if recorder else 0, str(ref) if platform else ref.tag))

    return anyio.run(make)


def tag_all(registry: RegistryServer, repository: str, tags: dict[str, dict[str, object]]) -> None:
    """Each tag onto a small image whose config is the one given."""
    for tag, config in tags.items():
        push_image(registry.url, repository, tag, config=config)


def same_result(one: Plan, other: Plan) -> None:
    assert one.forecasts == other.forecasts
    assert one.hints == other.hints
    assert one.labels == other.labels
    assert one.why == other.why
    assert one.warnings == other.warnings


def test_a_no_cache_plan_asks_the_cache_only_whether_it_answers(
    project: Path, registry: RegistryServer
) -> None:
    graph = graph_of(DOCKERFILE.format(base=f"{registry.host}/base/busybox:1"), "test")
    recorder = Recorder("no-cache/cache")
    plan = plan_with(project, graph, f"{registry.host}/no-cache/cache", recorder, no_cache=True)
    asked = [e.path for e in recorder.cache_requests()]
    assert asked == ["/v2/no-cache/cache/manifests/test-" + "0" * 32], "one HEAD, no hint GET"
    sent = [e.path for e in recorder.log if e.what == "sent"]
    assert sorted(sent) == sorted(["/v2/base/busybox/manifests/1", *asked])
    assert {(f.cache, f.action) for f in plan.forecasts.values()} == {(None, "build")}
    assert len(plan.refs) == len(STAGES), "every stage is still pushed under its cache tag"
    assert (plan.hints, plan.why, plan.warnings, plan.cache_warning) == ({}, {}, (), None)
    assert set(plan.labels) == set(plan.forecasts)


def test_a_no_cache_plan_with_an_unreachable_registry_pushes_nothing(project: Path) -> None:
    """As without --no-cache: the cache is unknown, so no push waits on a registry that is
    not there."""
    gone = f"127.0.0.1:{free_port()}"
    graph = graph_of(DOCKERFILE.format(base=f"{gone}/base/busybox:1"), "test")
    plan = plan_with(project, graph, f"{gone}/gone/cache", Recorder("gone/cache"), no_cache=True)
    assert {(f.cache, f.action) for f in plan.forecasts.values()} == {("unknown", "build")}
    assert "its key uses the tag, unpinned" in plan.warnings[0]
    assert plan.cache_warning is not None
    assert plan.cache_warning.startswith("cache unknown, the registry could not be asked")


def test_without_no_cache_an_unreachable_registry_is_still_unknown(project: Path) -> None:
    gone = f"127.0.0.1:{free_port()}"
    graph = graph_of(DOCKERFILE.format(base="scratch"), "test")
    plan = plan_with(project, graph, f"{gone}/gone/cache", Recorder("gone/cache"))
    assert {(f.cache, f.action) for f in plan.forecasts.values()} == {("unknown", "build")}
    assert plan.cache_warning is not None
    assert plan.cache_warning.startswith("cache unknown, the registry could not be asked")


@pytest.fixture
def distant(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local registry is as close as can be: it counts as distant here (`SPECULATE_BEYOND`)."""
    monkeypatch.setattr(plan_module, "SPECULATE_BEYOND", 0.0)


@pytest.mark.usefixtures("distant")
def test_the_hint_lookups_of_a_cold_plan_go_out_before_the_probe_answers(
    project: Path, registry: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = graph_of(DOCKERFILE.format(base=f"{registry.host}/base/busybox:1"), "test")
    cache_repo = f"{registry.host}/cold-overlap/cache"
    recorder = Recorder("cold-overlap/cache", hold=len(STAGES))
    plan = plan_with(project, graph, cache_repo, recorder)
    sent_gets = [i for i, e in enumerate(recorder.log) if e.what == "sent" and recorder.hint_get(e)]
    head_answers = [
        i for i, e in enumerate(recorder.log) if e.what == "answered" and recorder.cache_head(e)
    ]
    assert len(sent_gets) == len(head_answers) == len(STAGES)
    assert max(sent_gets) < min(head_answers), "the hint GETs overlap the probe"
    assert {(f.cache, f.action) for f in plan.forecasts.values()} == {("miss", "build")}

    monkeypatch.setattr(plan_module, "SPECULATIVE_HINTS", 0)
    same_result(plan, plan_with(project, graph, cache_repo, Recorder("cold-overlap/cache")))


@pytest.mark.usefixtures("distant")
def test_a_partly_changed_plan_is_as_without_speculation(
    project: Path, registry: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deps and assets hit (their lookups are dropped), app and test miss: app reuses its hint,
    test (on the rebuilt app) only says why it missed. A lookup's second request, the hint's
    config, waits for the probe: until it answers, a lookup costs one GET."""
    graph = graph_of(DOCKERFILE.format(base=f"{registry.host}/base/busybox:1"), "test")
    cache_repo = f"{registry.host}/changed-overlap/cache"
    before = plan_with(project, graph, cache_repo, None)
    names = {i: before.stage(i).name for i in before.forecasts}
    tags: dict[str, dict[str, object]] = {}
    for index, name in names.items():
        tags[before.refs[index].tag or ""] = {"stage": name}
        tags[f"{name}--main"] = {"config": {"Labels": {LABEL: before.labels[index]}}}
    tag_all(registry, "changed-overlap/cache", tags)
    (project / "src" / "main.py").write_text("print(2)")

    recorder = Recorder("changed-overlap/cache", hold=len(STAGES))
    found: list[tuple[int, str | None]] = []
    plan = plan_with(project, graph, cache_repo, recorder, found=found)
    by_name = {names[i]: f for i, f in plan.forecasts.items()}
    assert {n: (f.cache, f.action) for n, f in by_name.items()} == {
        "deps": ("hit", "restore"),
        "assets": ("hit", "restore"),
        "app": ("miss", "build"),
        "test": ("miss", "build"),
    }
    assert {names[i]: ref.tag for i, ref in plan.hints.items()} == {"app": "app--main"}
    assert {names[i] for i in plan.why} == {"app", "test"}
    app = next(i for i, name in names.items() if name == "app")
    assert any("main.py" in reason for reason in plan.why[app]), plan.why[app]
    log = recorder.log
    head_answers = [i for i, e in enumerate(log) if e.what == "answered" and recorder.cache_head(e)]
    blobs = [i for i, e in enumerate(log) if e.what == "sent" and recorder.blob_get(e)]
    assert len(blobs) == 2, "the configs of app's and test's hints, not those of the hits"
    assert max(head_answers) < min(blobs)
    # engines may fetch meanwhile: the pinned base is told before the cache is asked, and the
    # one hint given before any config is
    base = f"{registry.host}/base/busybox:1@{plan.pins[f'{registry.host}/base/busybox:1']}"
    assert [told for _, told in found] == [base, "app--main"]
    first_cache_request = log.index(recorder.cache_requests()[0])
    assert found[0][0] <= first_cache_request
    assert found[1][0] <= min(blobs)

    monkeypatch.setattr(plan_module, "SPECULATIVE_HINTS", 0)
    same_result(plan, plan_with(project, graph, cache_repo, Recorder("changed-overlap/cache")))


def chain(stages: int) -> str:
    lines = ["FROM scratch AS s0", "COPY deps.txt /"]
    for n in range(1, stages):
        lines += [f"FROM s{n - 1} AS s{n}", f"COPY deps.txt /{n}.txt"]
    return "\n".join(lines) + "\n"


@pytest.mark.usefixtures("distant")
def test_a_warm_plan_of_100_stages_pays_at_most_8_hint_gets(
    project: Path, registry: RegistryServer
) -> None:
    stages = 100
    graph = graph_of(chain(stages), f"s{stages - 1}")
    cache_repo = f"{registry.host}/warm-100/cache"
    before = plan_with(project, graph, cache_repo, None)
    push_image(registry.url, "warm-100/cache", "seed", config={"os": "linux"})
    with httpx.Client(base_url=registry.url, timeout=10, trust_env=False) as http:
        seed = http.get("/v2/warm-100/cache/manifests/seed", headers={"Accept": DOCKER_MANIFEST})
        seed.raise_for_status()
        for index in before.forecasts:
            for tag in (before.refs[index].tag, f"s{index}--main"):
                put = http.put(
                    f"/v2/warm-100/cache/manifests/{tag}",
                    content=seed.content,
                    headers={"Content-Type": DOCKER_MANIFEST},
                )
                put.raise_for_status()

    recorder = Recorder("warm-100/cache")
    plan = plan_with(project, graph, cache_repo, recorder)
    assert plan.indices("restore") == (stages - 1,)
    assert len(plan.indices("skip")) == stages - 1
    assert (plan.hints, plan.why) == ({}, {})
    requests = recorder.cache_requests()
    assert sum(1 for e in requests if recorder.cache_head(e)) == stages
    gets = [e for e in requests if e.method == "GET"]
    assert len(gets) <= SPECULATIVE_HINTS == 8
    assert all(recorder.hint_get(e) for e in gets), "a manifest GET each, never its config"


def test_a_warm_plan_next_to_its_cache_sends_the_probe_alone(
    project: Path, registry: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base image's digest came from the cache's registry within `SPECULATE_BEYOND` (a
    minute here): no hint lookup starts before the probe has answered, and none after it."""
    monkeypatch.setattr(plan_module, "SPECULATE_BEYOND", 60.0)
    graph = graph_of(DOCKERFILE.format(base=f"{registry.host}/base/busybox:1"), "test")
    cache_repo = f"{registry.host}/warm-near/cache"
    before = plan_with(project, graph, cache_repo, None)
    tags = {before.refs[i].tag or "": {"stage": before.stage(i).name} for i in before.forecasts}
    tag_all(registry, "warm-near/cache", tags)
    recorder = Recorder("warm-near/cache")
    plan = plan_with(project, graph, cache_repo, recorder)
    assert plan.indices("build") == ()
    assert [e.method for e in recorder.cache_requests()] == ["HEAD"] * len(STAGES)


def test_the_speculative_lookups_are_the_stages_nearest_the_targets() -> None:
    assert plan_module._likely(graph_of(chain(100), "s99")) == list(range(99, 91, -1))
    fan_in = "".join(f"FROM scratch AS l{n}\nRUN true\n" for n in range(20))
    fan_in += "FROM scratch AS final\n" + "".join(f"COPY --from=l{n} / /\n" for n in range(20))
    assert plan_module._likely(graph_of(fan_in, "final")) == [20, *range(7)]
    assert plan_module._likely(graph_of(chain(3), "s2")) == [2, 1, 0]
