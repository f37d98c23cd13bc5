from __future__ import annotations

import json
import re

import pytest

from pipeline.cache.multi import MultiPlan, PlatformPlan
from pipeline.cache.plan import Plan
from pipeline.commands.publish import Publication, publications, publish_index, slugify
from pipeline.dockerfile.graph import select
from pipeline.dockerfile.parse import parse_text
from pipeline.dockerfile.platforms import Platform
from pipeline.dockerfile.stages import Stage, build_stages
from pipeline.engines.results import Published, StageResult, Status
from pipeline.errors import UsageError
from pipeline.oci.reference import Reference, Repository
from pipeline.oci.registry import RegistryClient
from pipeline.settings.ci import CIContext
from tests.registry_server import RegistryServer, push_image

SHA = "0123456789abcdef0123456789abcdef01234567"


def stages(*names: str) -> tuple[Stage, ...]:
    text = "".join(f"FROM busybox AS {name}\n" for name in names)
    return build_stages(parse_text(text)).stages


def github(branch: str | None = "main", tag: str | None = None) -> CIContext:
    return CIContext(
        provider="github",
        branch=branch,
        sha=SHA,
        short_sha=SHA[:7],
        tag=tag,
        default_branch="main",
        run_id="42",
        registry="ghcr.io",
        image_repo=Repository.parse("ghcr.io/acme/shop"),
        cache_repo=Repository.parse("ghcr.io/acme/shop/cache"),
    )


def refs(targets: tuple[Stage, ...], templates: dict[str, list[str]], ci: CIContext) -> list[str]:
    return [str(p.ref) for p in publications(targets, templates, ci)]


def test_defaults_sha_always_latest_on_the_default_branch() -> None:
    release = stages("release")
    assert refs(release, {}, github()) == [
        f"ghcr.io/acme/shop:{SHA}",
        "ghcr.io/acme/shop:latest",
    ]
    assert refs(release, {}, github(branch="feature/x")) == [f"ghcr.io/acme/shop:{SHA}"]
    assert refs(release, {}, github(branch=None, tag="v1.2.0")) == [
        f"ghcr.io/acme/shop:{SHA}",
        "ghcr.io/acme/shop:v1.2.0",
    ]


def test_several_targets_get_a_repository_each() -> None:
    assert refs(stages("web", "worker"), {}, github(branch="dev")) == [
        f"ghcr.io/acme/shop/web:{SHA}",
        f"ghcr.io/acme/shop/worker:{SHA}",
    ]


def test_templates_expand_and_skip_what_has_no_value() -> None:
    templates = {
        "release": [
            "{branch}-{short_sha}",
            "{tag}",
            "registry.example:5000/team/app:{stage}-{run_id}",
            "{default_branch}",
        ]
    }
    assert refs(stages("release"), templates, github(branch="Feature/Login_V2")) == [
        "ghcr.io/acme/shop:feature-login_v2-0123456",
        "registry.example:5000/team/app:release-42",
        "ghcr.io/acme/shop:main",
    ]


@pytest.mark.parametrize(
    ("template", "ci", "message"),
    [
        ("{commit}", github(), "unknown {commit}"),
        ("{sha", github(), "expected '}'"),
        ("{sha}", CIContext(provider="local", sha=SHA), "is a bare tag, but there is no image"),
        ("Registry/App:{sha}", github(), "must be lowercase"),
    ],
)
def test_bad_templates(template: str, ci: CIContext, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        publications(stages("release"), {"release": [template]}, ci)


@pytest.mark.parametrize(
    ("branch", "slug"),
    [("main", "main"), ("feature/ABC-12_x", "feature-abc-12_x"), ("--x..", "x"), ("ü", "unknown")],
)
def test_slugify(branch: str, slug: str) -> None:
    assert slugify(branch) == slug


def test_a_stage_name_that_is_no_repository_fails_only_a_bare_tag() -> None:
    targets = stages("web_", "worker")
    whole = {"web_": ["registry.example/team/web:{short_sha}"]}
    assert refs(targets, whole, github(branch="dev"))[0] == "registry.example/team/web:0123456"
    with pytest.raises(UsageError, match=re.escape('gives "ghcr.io/acme/shop/web_:0123456"')):
        publications(targets, {"web_": ["{short_sha}"]}, github(branch="dev"))


@pytest.mark.anyio
async def test_an_index_over_restored_platform_images_moves_no_blob_byte(
    registry: RegistryServer,
) -> None:
    """Each platform image is mounted into the target repository by digest, then the index
    is PUT: only manifests cross the runner, however big the layers."""
    cache_repo = Repository.parse(f"{registry.host}/zero-bytes/cache")
    platforms = (Platform.parse("linux/amd64"), Platform.parse("linux/arm64"))
    digests = {
        platform: push_image(
            registry.url,
            "zero-bytes/cache",
            f"release-{platform.arch}",
            config={"architecture": platform.arch, "os": platform.os},
            layers=[platform.arch.encode() * 400_000],
        )
        for platform in platforms
    }
    graph = select(build_stages(parse_text("FROM busybox AS release\n")), ["release"])
    plan = Plan(graph, cache_repo, keys={}, refs={}, forecasts={}, warnings=())
    plans = MultiPlan(tuple(PlatformPlan(platform, plan) for platform in platforms))
    results = [
        {
            0: StageResult(
                index=0,
                name=f"release ({platform})",
                status=Status.CACHED,
                key="k",
                cache_ref=str(cache_repo.tag(f"release-{platform.arch}")),
                digest=digests[platform],
                platform=str(platform),
            )
        }
        for platform in platforms
    ]
    target = Reference.parse(f"{registry.host}/zero-bytes/app:v1")
    async with RegistryClient() as client:
        published, failures = await publish_index(
            client, plans, [Publication(0, target)], results, [{}, {}], [], lambda *_: None
        )
        assert failures == []
        assert client.stats.bytes_in + client.stats.bytes_out < 20_000
        body, info = await client.get_manifest(target)
    assert published == [Published("release", str(target), info.digest)]
    index = json.loads(body)
    assert [entry["digest"] for entry in index["manifests"]] == list(digests.values())
    assert [entry["platform"] for entry in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux"},
    ]
