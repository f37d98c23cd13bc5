"""`plan` against a real registry: pinned bases, the cache forecast, and the rewrite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from pipeline.cache.context import BuildContext
from pipeline.cache.ignore import IgnoreRules
from pipeline.cache.plan import Plan, make_plan
from pipeline.cli import main
from pipeline.dockerfile.graph import select
from pipeline.dockerfile.parse import parse_dockerfile, parse_text
from pipeline.dockerfile.platforms import native_platform
from pipeline.dockerfile.stages import build_stages
from pipeline.oci.reference import Repository
from pipeline.oci.registry import RegistryClient
from tests.registry_server import RegistryServer, free_port, push_image

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE={host}/base/busybox:1
FROM $BASE AS deps
COPY deps.txt /deps.txt
FROM $BASE AS assets
COPY assets/ /assets/
FROM deps AS app
COPY --from=assets /assets /app/assets
COPY src/ /app/src/
FROM app AS test
RUN --mount=type=secret,id=token true
"""


@pytest.fixture
def project(tmp_path: Path, registry: RegistryServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    push_image(registry.url, "base/busybox", "1", config={"architecture": "amd64", "os": "linux"})
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.format(host=registry.host))
    (tmp_path / "deps.txt").write_text("deps")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "app.css").write_text("body{}")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print(1)")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def plan(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    # Docker's forecast: on Dagger, a loopback cache repo is never forecast to restore.
    assert main(["plan", "--json", "--target", "test", "--engine", "docker", *args]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {stage["name"]: stage for stage in document["stages"]}


def test_cold_then_warm_forecast(
    project: Path, registry: RegistryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cache_repo = f"{registry.host}/cold-warm/cache"
    cold = by_name(plan(capsys, "--cache-repo", cache_repo))
    assert {name: (s["cache"], s["action"]) for name, s in cold.items()} == {
        "deps": ("miss", "build"),
        "assets": ("miss", "build"),
        "app": ("miss", "build"),
        "test": ("miss", "build"),
    }
    assert all(s["unpinned"] == [] for s in cold.values())
    assert cold["app"]["cache_ref"] == f"{cache_repo}:app-{cold['app']['key'][:32]}"

    tag = cold["app"]["cache_ref"].rsplit(":", 1)[1]
    push_image(registry.url, "cold-warm/cache", tag, config={"os": "linux", "app": True})
    warm = by_name(plan(capsys, "--cache-repo", cache_repo))
    assert {name: (s["cache"], s["action"]) for name, s in warm.items()} == {
        "deps": ("miss", "skip"),
        "assets": ("miss", "skip"),
        "app": ("hit", "restore"),
        "test": ("miss", "build"),
    }
    assert {name: s["key"] for name, s in warm.items()} == {n: s["key"] for n, s in cold.items()}


def test_a_changed_file_misses_only_downstream(
    project: Path, registry: RegistryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cache_repo = f"{registry.host}/changed/cache"
    before = by_name(plan(capsys, "--cache-repo", cache_repo))
    for name in ("deps", "assets", "app", "test"):
        tag = before[name]["cache_ref"].rsplit(":", 1)[1]
        push_image(registry.url, "changed/cache", tag, config={"stage": name})
    (project / "src" / "main.py").write_text("print(2)")
    after = by_name(plan(capsys, "--cache-repo", cache_repo))
    assert {name: (s["cache"], s["action"]) for name, s in after.items()} == {
        "deps": ("hit", "restore"),
        "assets": ("hit", "restore"),
        "app": ("miss", "build"),
        "test": ("miss", "build"),
    }


def test_a_stage_on_a_rebuilt_base_stage_imports_no_hint(
    project: Path,
    registry: RegistryServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`test` is FROM app, which is rebuilt: none of test's old layers can be reused."""
    for name, value in {"GITLAB_CI": "true", "CI_COMMIT_BRANCH": "main"}.items():
        monkeypatch.setenv(name, value)
    cache_repo = f"{registry.host}/rebuilt-base/cache"
    before = by_name(plan(capsys, "--cache-repo", cache_repo))
    for name in ("deps", "assets", "app", "test"):
        for tag in (before[name]["cache_ref"].rsplit(":", 1)[1], f"{name}--main"):
            push_image(registry.url, "rebuilt-base/cache", tag, config={"stage": name})
    (project / "src" / "main.py").write_text("print(2)")
    after = by_name(plan(capsys, "--cache-repo", cache_repo))
    assert after["app"]["hint"] == f"{cache_repo}:app--main"
    assert after["test"]["hint"] is None
    assert after["test"]["why"], "still compared with its hint to say why it missed"


def test_base_digest_is_a_key_input(
    project: Path, registry: RegistryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    before = by_name(plan(capsys))
    push_image(registry.url, "base/busybox", "1", config={"os": "linux", "moved": True})
    after = by_name(plan(capsys))
    assert {n for n in before if before[n]["key"] != after[n]["key"]} == {
        "deps",
        "assets",
        "app",
        "test",
    }


def test_unreachable_registry_means_unknown_and_exit_0(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache_repo = f"127.0.0.1:{free_port()}/gone/cache"
    assert main(["plan", "--json", "--cache-repo", cache_repo]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert {s["cache"] for s in document["stages"]} == {"unknown"}
    assert {s["action"] for s in document["stages"]} == {"build"}
    assert "cache unknown" in captured.err
    assert any("cache unknown" in w["message"] for w in document["warnings"])


def test_rewrite_of_the_forecast_parses_back(
    project: Path, registry: RegistryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cache_repo = f"{registry.host}/rewrite/cache"
    before = by_name(plan(capsys, "--cache-repo", cache_repo))
    tag = before["deps"]["cache_ref"].rsplit(":", 1)[1]
    digest = push_image(registry.url, "rewrite/cache", tag, config={})

    async def forecast() -> Plan:
        graph = select(build_stages(parse_dockerfile(project / "Dockerfile")), ["app"])
        async with RegistryClient() as client:
            return await make_plan(
                graph,
                cache_repo=Repository.parse(cache_repo),
                build_args={},
                platform=native_platform(),
                context=BuildContext(project, IgnoreRules.load(project, project / "Dockerfile")),
                client=client,
            )

    made = anyio.run(forecast)
    text = made.rewritten()
    again = build_stages(parse_text(text))
    assert [s.name for s in again.stages] == ["deps", "assets", "app", "test"]
    assert again.stages[0].base == f"{cache_repo}@{digest}"
    image = f"{registry.host}/base/busybox:1"
    assert again.stages[1].base == f"{image}@{made.pins[image]}", "pinned as in its key"
    assert again.stages[2].base_stage == 0
    assert text.startswith("# syntax=docker/dockerfile:1\nARG BASE=")


def test_registry_credentials_from_the_environment(
    tmp_path: Path,
    auth_registry: RegistryServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert auth_registry.username is not None
    assert auth_registry.password is not None
    (tmp_path / "Dockerfile").write_text("FROM scratch AS only\nRUN true\n")
    monkeypatch.chdir(tmp_path)
    cache_repo = f"{auth_registry.host}/private/cache"
    assert main(["plan", "--json", "--cache-repo", cache_repo]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["stages"][0]["cache"] == "unknown"
    assert "401" in captured.err or "auth" in captured.err.lower()

    monkeypatch.setenv("REGISTRY_USER", auth_registry.username)
    monkeypatch.setenv("REGISTRY_PASSWORD", auth_registry.password)
    assert main(["plan", "--json", "--cache-repo", cache_repo]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["stages"][0]["cache"] == "miss"
    assert auth_registry.password not in captured.out + captured.err


def test_plan_as_a_mermaid_flowchart(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--format", "mermaid", "--offline", "--target", "app"]) == 0
    chart = capsys.readouterr().out
    assert chart.startswith("flowchart TD")
    for name in ("deps", "assets", "app", "test"):
        assert f'"{name}' in chart


def test_prune_through_the_cli_keeps_what_the_plan_restores(
    project: Path, registry: RegistryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cache_repo = f"{registry.host}/prune-cli/cache"
    current = by_name(plan(capsys, "--cache-repo", cache_repo))
    current_app = current["app"]["cache_ref"].rsplit(":", 1)[1]
    push_image(
        registry.url,
        "prune-cli/cache",
        current_app,
        config={"created": "2020-01-01T00:00:00Z", "current": True},
    )
    old = [f"app-{n:032x}" for n in range(4)]
    for number, tag in enumerate(old):
        created = f"2020-0{number + 2}-01T00:00:00Z"
        push_image(registry.url, "prune-cli/cache", tag, config={"created": created, "n": number})
    args = ["prune", "--cache-repo", cache_repo, "--older-than", "30d", "--keep", "1"]
    assert main(args) == 0
    dry = capsys.readouterr().out
    assert "would go (dry run; pass --yes to delete)" in dry
    assert main([*args, "--yes"]) == 0
    capsys.readouterr()
    remaining = httpx.get(f"{registry.url}/v2/prune-cli/cache/tags/list", timeout=10).json()
    assert sorted(remaining["tags"]) == sorted([current_app, old[-1]])


def test_a_stage_fetching_a_url_without_checksum_is_always_built_with_its_dependents(
    project: Path, registry: RegistryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its key holds the URL only, so a hit could hold a stale download: never restored,
    never pushed (no cache ref), and neither are the stages built on it."""
    text = (project / "Dockerfile").read_text()
    (project / "Dockerfile").write_text(
        text.replace(
            "COPY deps.txt /deps.txt\n",
            "COPY deps.txt /deps.txt\nADD https://downloads.invalid/tool.tgz /opt/\n",
        )
    )
    cache_repo = f"{registry.host}/volatile/cache"
    before = by_name(plan(capsys, "--cache-repo", cache_repo))
    assert [before[name]["cache_ref"] for name in ("deps", "app", "test")] == [None] * 3
    assets_tag = before["assets"]["cache_ref"].rsplit(":", 1)[1]
    push_image(registry.url, "volatile/cache", assets_tag, config={"stage": "assets"})
    after = by_name(plan(capsys, "--cache-repo", cache_repo))
    assert {name: (s["cache"], s["action"], s["cache_ref"]) for name, s in after.items()} == {
        "deps": (None, "build", None),
        "assets": ("hit", "restore", before["assets"]["cache_ref"]),
        "app": (None, "build", None),
        "test": (None, "build", None),
    }
    assert after["deps"]["always_built"] == (
        "line 5: ADD https://downloads.invalid/tool.tgz has no --checksum:"
        " its content is known once fetched"
    )
    assert after["app"]["always_built"] == (
        "built on deps, whose ADD https://downloads.invalid/tool.tgz (line 5) has no"
        " --checksum: its content is known once fetched"
    )
    assert after["assets"]["always_built"] is None

    assert main(["plan", "--target", "test", "--engine", "docker", "--cache-repo", cache_repo]) == 0
    table = capsys.readouterr().out
    assert "always built (content known only once fetched):\n  deps: line 5: ADD" in table


def test_a_url_with_a_checksum_is_restored(
    project: Path, registry: RegistryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (project / "Dockerfile").read_text()
    checksum = "sha256:" + "0" * 64
    (project / "Dockerfile").write_text(
        text.replace(
            "COPY deps.txt /deps.txt\n",
            f"COPY deps.txt /deps.txt\nADD --checksum={checksum} https://x.invalid/t.tgz /opt/\n",
        )
    )
    cache_repo = f"{registry.host}/pinned-url/cache"
    before = by_name(plan(capsys, "--cache-repo", cache_repo, "--target", "app"))
    tag = before["app"]["cache_ref"].rsplit(":", 1)[1]
    push_image(registry.url, "pinned-url/cache", tag, config={"stage": "app"})
    after = by_name(plan(capsys, "--cache-repo", cache_repo, "--target", "app"))
    assert (after["app"]["action"], after["app"]["always_built"]) == ("restore", None)
