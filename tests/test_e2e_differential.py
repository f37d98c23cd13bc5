"""Key differentials on real builds: change one input, build with the cache, and compare the
image with a clean `docker build --no-cache` of the same files.

A change that BuildKit puts in the image must rebuild the stage (`built`); one it leaves out
must restore it (`cached`). Either way the files under /out must be the clean build's: path,
type, permission bits, owner, size, symlink target and content (never mtimes, which BuildKit
does not key either, nor hard-link counts, which contenthash does not key). One test per input
of docs/cache-keys.md's audit that dockerd 20.10's built-in frontend can build; the others are
tested at key level in tests/cache/test_audit.py: `--parents`, `--exclude` and `--link` (that
frontend fails with "Unknown flag"), and ADD of git or URLs (no network here).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.cache.tags import local_tag
from tests.cli import run_cli
from tests.docker_env import DockerEnv, read_report

SNAPSHOT = (
    "cd /out && find . | sort | xargs stat -c '%N|%a|%F|%s|%u:%g'"
    " && find . -type f | sort | xargs md5sum"
)


@dataclass(frozen=True)
class Scenario:
    dockerfile: str  # `{base}` is the base image; the target stage is `s`
    files: dict[str, str]
    change: Callable[[Path], None]
    expected: str  # the target's status after the change: "built" or "cached"
    setup: Callable[[Path], None] = lambda root: None


def retarget(link: str, target: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        (root / link).unlink()
        (root / link).symlink_to(target)

    return change


def write_text(name: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / name).write_text(text)


def hard_link(root: Path) -> None:
    (root / "tree/b").unlink()
    os.link(root / "tree/a", root / "tree/b")


def archive(root: Path, text: str = "v1") -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = text.encode()
        info = tarfile.TarInfo("inner/file")
        info.size, info.mode = len(data), 0o640
        tar.addfile(info, io.BytesIO(data))
    (root / "app.tar").write_bytes(buffer.getvalue())


SCENARIOS = {
    "symlink_inside_a_copied_tree": Scenario(
        "FROM {base} AS s\nCOPY tree/ /out/tree/\n",
        {"tree/a": "a", "tree/b": "b"},
        retarget("tree/link", "b"),
        "built",
        setup=lambda root: (root / "tree/link").symlink_to("a"),
    ),
    "symlinked_source": Scenario(
        "FROM {base} AS s\nCOPY current/ /out/current/\n",
        {"v1/a": "1", "v2/a": "2"},
        retarget("current", "v2"),
        "built",
        setup=lambda root: (root / "current").symlink_to("v1"),
    ),
    "hard_link": Scenario(
        "FROM {base} AS s\nCOPY tree/ /out/tree/\n",
        {"tree/a": "same", "tree/b": "same"},
        hard_link,
        "cached",
    ),
    "empty_directory": Scenario(
        "FROM {base} AS s\nCOPY tree/ /out/tree/\n",
        {"tree/a": "a"},
        lambda root: (root / "tree/empty").mkdir(),
        "built",
    ),
    "ignored_empty_directory": Scenario(
        "FROM {base} AS s\nCOPY tree/ /out/tree/\n",
        {"tree/a": "a", ".dockerignore": "tree/skip\n"},
        lambda root: (root / "tree/skip").mkdir(),
        "cached",
    ),
    "mtime": Scenario(
        "FROM {base} AS s\nCOPY tree/ /out/tree/\n",
        {"tree/a": "a"},
        lambda root: os.utime(root / "tree/a", (1, 1)),
        "cached",
    ),
    "chown_and_source_owner": Scenario(
        "FROM {base} AS s\nCOPY --chown=1000:1000 f /out/f\n",
        {"f": "f"},
        lambda root: os.chown(root / "f", 4321, 4321),
        "cached",
    ),
    "octal_chmod_and_source_mode": Scenario(
        "FROM {base} AS s\nCOPY --chmod=0640 f /out/f\n",
        {"f": "f"},
        lambda root: (root / "f").chmod(0o600),
        "cached",
    ),
    "local_archive": Scenario(
        "FROM {base} AS s\nADD app.tar /out/\n",
        {},
        lambda root: archive(root, "v2"),
        "built",
        setup=archive,
    ),
    "bind_mount_of_the_context": Scenario(
        "FROM {base} AS s\nRUN --mount=type=bind,source=cfg,target=/cfg cp -a /cfg /out\n",
        {"cfg/a": "1", "other": "1"},
        write_text("cfg/a", "2"),
        "built",
    ),
    "bind_mount_context_unread_file": Scenario(
        "FROM {base} AS s\nRUN --mount=type=bind,source=cfg,target=/cfg cp -a /cfg /out\n",
        {"cfg/a": "1", "other": "1"},
        write_text("other", "2"),
        "cached",
    ),
    "bind_mount_of_a_stage": Scenario(
        "FROM {base} AS tools\nCOPY tool /tool\n"
        "FROM {base} AS s\nRUN --mount=type=bind,from=tools,source=/tool,target=/t"
        " mkdir /out && cp /t /out/tool\n",
        {"tool": "1"},
        write_text("tool", "2"),
        "built",
    ),
    "dockerfile_dockerignore_override": Scenario(
        "FROM {base} AS s\nCOPY tree/ /out/tree/\n",
        {
            "tree/a": "a",
            "tree/b": "b",
            ".dockerignore": "tree/a\n",
            "Dockerfile.dockerignore": "tree/b\n",
        },
        write_text("tree/b", "changed"),
        "cached",
    ),
}


def snapshot(docker_env: DockerEnv, image: str) -> list[str]:
    shown = docker_env.run("run", "--rm", image, "sh", "-c", SNAPSHOT)
    return shown.stdout.splitlines()


def build(root: Path, docker_env: DockerEnv, cache_repo: str) -> dict[str, str]:
    command = docker_env.build_args("--cache-repo", cache_repo, "--target", "s")
    result = run_cli(*command, "--report", str(root / "report.json"), cwd=root)
    assert result.returncode == 0, result.stderr
    return {name: stage["status"] for name, stage in read_report(root / "report.json").items()}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_changed_input_rebuilds_exactly_when_a_clean_build_differs(
    name: str, tmp_path: Path, docker_env: DockerEnv
) -> None:
    scenario = SCENARIOS[name]
    root = tmp_path / "project"
    root.mkdir()
    (root / "Dockerfile").write_text(scenario.dockerfile.format(base=docker_env.base))
    for path, text in scenario.files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    scenario.setup(root)
    cache_repo = docker_env.cache_repo()
    clean = f"e2e-differential-{uuid.uuid4().hex[:12]}:clean"
    try:
        build(root, docker_env, cache_repo)
        scenario.change(root)
        assert build(root, docker_env, cache_repo)["s"] == scenario.expected
        docker_env.build_clean("--target", "s", "-t", clean, ".", cwd=root)
        via_cache = read_report(root / "report.json")["s"]["cache_ref"]
        expected = snapshot(docker_env, clean)
        assert expected, "the clean build has files under /out"
        assert snapshot(docker_env, via_cache) == expected
    finally:
        docker_env.remove_images(cache_repo, clean)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on the host's loopback, which dockerd's BuildKit fetches from."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


def test_a_url_without_checksum_is_fetched_anew_on_every_build(
    tmp_path: Path, docker_env: DockerEnv, served: tuple[Path, str]
) -> None:
    """Its key holds the URL only, so the stage and the one built on it are never restored
    nor pushed: a changed download reaches the image, as in a clean build."""
    folder, url = served
    (folder / "tool.txt").write_text("v1\n")
    root = tmp_path / "project"
    root.mkdir()
    (root / "Dockerfile").write_text(
        f"FROM {docker_env.base} AS tool\nADD {url}/tool.txt /out/tool.txt\n"
        f"FROM {docker_env.base} AS s\nCOPY --from=tool /out/tool.txt /out/copied.txt\n"
    )
    cache_repo = docker_env.cache_repo()
    clean = f"e2e-differential-{uuid.uuid4().hex[:12]}:clean"
    built: list[str] = []
    try:
        for version in ("v1\n", "v2\n"):
            (folder / "tool.txt").write_text(version)
            assert build(root, docker_env, cache_repo) == {"tool": "built", "s": "built"}
            report = read_report(root / "report.json")
            assert {stage["cache_ref"] for stage in report.values()} == {None}
            image = str(local_tag("s", report["s"]["key"]))
            built.append(image)
            assert snapshot(docker_env, image)[-1].startswith(md5(version))
        assert [tag for tag in docker_env.tags(cache_repo) if "--" not in tag] == []
        docker_env.build_clean("--target", "s", "-t", clean, ".", cwd=root)
        assert snapshot(docker_env, built[-1]) == snapshot(docker_env, clean)
    finally:
        docker_env.remove_images(cache_repo, clean, *built)


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
