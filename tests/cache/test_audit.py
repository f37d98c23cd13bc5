"""The audit of docs/cache-keys.md: for each input BuildKit reads for a stage, the key changes
exactly when the image would. Real files on disk; a stage's key before and after a change.

The real-build side of the same inputs, where dockerd 20.10 can build them, is
tests/test_e2e_differential.py.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from pipeline.cache.context import BuildContext
from pipeline.cache.ignore import IgnoreRules
from pipeline.cache.keys import StageKey, compute_keys
from pipeline.dockerfile.parse import parse_dockerfile
from pipeline.dockerfile.platforms import Platform
from pipeline.dockerfile.stages import build_stages
from pipeline.errors import UsageError

AMD64 = Platform("linux", "amd64")
BASE = "registry.example/base:1"
SHA = "0123456789abcdef0123456789abcdef01234567"


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def stage_keys(root: Path, digests: dict[str, str | None] | None = None) -> dict[str, StageKey]:
    df = build_stages(parse_dockerfile(root / "Dockerfile"))
    keys = compute_keys(
        df,
        range(len(df.stages)),
        build_args={},
        platform=AMD64,
        image_digests={BASE: "sha256:" + "b" * 64, **(digests or {})},
        context=BuildContext(root, IgnoreRules.load(root, root / "Dockerfile")),
    )
    return {df.stages[i].name: key for i, key in keys.items()}


def key(root: Path, stage: str = "s") -> str:
    return stage_keys(root)[stage].key


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "ctx"
    path.mkdir()
    return path


def dockerfile(root: Path, body: str) -> None:
    (root / "Dockerfile").write_text(f"FROM {BASE} AS s\n{body}\n")


# COPY --parents: include patterns from the pivot (or the root), `**` across directories.


def test_copy_parents_double_star_reaches_deep_files(root: Path) -> None:
    dockerfile(root, "COPY --parents packages/**/package.json /app/")
    write(root, {"packages/a/b/package.json": "{}", "packages/a/b/index.js": "1", "x": "x"})
    before = key(root)
    (root / "packages/a/b/index.js").write_text("2")
    (root / "x").write_text("y")
    assert key(root) == before, "not selected: the image is the same"
    (root / "packages/a/b/package.json").write_text('{"v": 2}')
    assert key(root) != before
    again = key(root)
    (root / "packages/c").mkdir()
    (root / "packages/c/package.json").write_text("{}")
    assert key(root) != again, "a new match is a new file in the image"


def test_copy_parents_pivot_selects_below_it(root: Path) -> None:
    dockerfile(root, "COPY --parents src/./lib/*.py /app/")
    write(root, {"src/lib/a.py": "1", "src/other.py": "1", "src/lib/notes.txt": "n"})
    before = key(root)
    (root / "src/other.py").write_text("2")
    (root / "src/lib/notes.txt").write_text("m")
    assert key(root) == before
    (root / "src/lib/a.py").write_text("2")
    assert key(root) != before


def test_copy_parents_without_wildcards_requires_the_path(root: Path) -> None:
    dockerfile(root, "COPY --parents src/./lib/a.py /app/")
    write(root, {"src/lib/b.py": "1"})
    with pytest.raises(UsageError, match=r'"/src/lib/a\.py": not found'):
        key(root)


def test_copy_parents_keys_differ_from_a_plain_copy(root: Path) -> None:
    write(root, {"a/b.txt": "1"})
    dockerfile(root, "COPY --parents a/b.txt /app/")
    parents = stage_keys(root)["s"].inputs["context"][0]
    dockerfile(root, "COPY a/b.txt /app/")
    plain = stage_keys(root)["s"].inputs["context"][0]
    assert parents["parents"] is True
    assert "parents" not in plain
    assert parents["digest"] != plain["digest"]


# --exclude, --link, --chown, --chmod


def test_exclude_leaves_excluded_files_out(root: Path) -> None:
    dockerfile(root, "COPY --exclude=*.md docs/ /docs/")
    write(root, {"docs/a.md": "a", "docs/a.txt": "a"})
    before = key(root)
    (root / "docs/a.md").write_text("b")
    assert key(root) == before
    (root / "docs/a.txt").write_text("b")
    assert key(root) != before


def test_link_is_a_flag_of_the_instruction_and_reads_the_same_files(root: Path) -> None:
    write(root, {"f": "1"})
    dockerfile(root, "COPY f /f")
    plain = stage_keys(root)["s"]
    dockerfile(root, "COPY --link f /f")
    linked = stage_keys(root)["s"]
    assert plain.key != linked.key
    assert plain.inputs["context"] == linked.inputs["context"]
    (root / "f").write_text("2")
    assert key(root) != linked.key


def test_chown_owner_of_the_source_never_counts(root: Path) -> None:
    """The docker CLI sends every file as 0:0 (resetUIDAndGID); --chown sets the owner."""
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    dockerfile(root, "COPY --chown=1000:1000 f /f")
    write(root, {"f": "1"})
    before = key(root)
    os.chown(root / "f", 4321, 4321)
    assert key(root) == before
    dockerfile(root, "COPY --chown=1001:1000 f /f")
    assert key(root) != before


def test_octal_chmod_replaces_the_source_mode(root: Path) -> None:
    write(root, {"f": "1"})
    dockerfile(root, "COPY --chmod=0644 f /f")
    before = key(root)
    (root / "f").chmod(0o600)
    assert key(root) == before
    dockerfile(root, "COPY f /f")
    kept = key(root)
    (root / "f").chmod(0o644)
    assert key(root) != kept


# ADD of URLs, git repositories and local archives.


def test_add_url_without_checksum_is_volatile(root: Path) -> None:
    dockerfile(root, "ADD https://example.com/tool.tgz /opt/\nFROM s AS child\nRUN true")
    keys = stage_keys(root)
    own, child = keys["s"].volatile, keys["child"].volatile
    assert own is not None
    assert (own.source, own.stage, own.line) == ("https://example.com/tool.tgz", 0, 2)
    assert child == own, "a stage built on it inherits it"


def test_add_url_with_checksum_is_keyed_by_it(root: Path) -> None:
    dockerfile(root, f"ADD --checksum=sha256:{'1' * 64} https://example.com/tool.tgz /opt/")
    first = stage_keys(root)["s"]
    assert first.volatile is None
    dockerfile(root, f"ADD --checksum=sha256:{'2' * 64} https://example.com/tool.tgz /opt/")
    assert key(root) != first.key


@pytest.mark.parametrize(
    ("source", "volatile"),
    [
        ("https://github.com/moby/buildkit.git#v0.12.0", True),
        ("https://github.com/moby/buildkit.git", True),
        ("git@github.com:moby/buildkit.git#main", True),
        (f"https://github.com/moby/buildkit.git#{SHA}", False),
    ],
)
def test_add_git_is_volatile_unless_pinned_to_a_commit(
    root: Path, source: str, volatile: bool
) -> None:
    dockerfile(root, f"ADD {source} /src/")
    keys = stage_keys(root)
    assert (keys["s"].volatile is not None) == volatile
    assert keys["s"].inputs["urls"] == [{"url": source, "checksum": None}]


def test_add_git_commit_change_changes_the_key(root: Path) -> None:
    dockerfile(root, f"ADD https://github.com/moby/buildkit.git#{SHA} /src/")
    before = key(root)
    dockerfile(root, f"ADD https://github.com/moby/buildkit.git#{SHA[::-1]} /src/")
    assert key(root) != before


def tar_bytes(files: dict[str, bytes], mtime: int = 0) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_add_local_archive_is_keyed_by_its_bytes_not_its_mtime(root: Path) -> None:
    """ADD extracts it: the image holds what the archive holds, read from its content."""
    dockerfile(root, "ADD app.tar.gz /opt/")
    (root / "app.tar.gz").write_bytes(tar_bytes({"a": b"1"}))
    before = key(root)
    os.utime(root / "app.tar.gz", (1, 1))
    assert key(root) == before
    (root / "app.tar.gz").write_bytes(tar_bytes({"a": b"2"}))
    assert key(root) != before


# RUN mounts.


def test_bind_mount_from_the_context(root: Path) -> None:
    dockerfile(root, "RUN --mount=type=bind,source=cfg,target=/cfg cat /cfg/a > /a")
    write(root, {"cfg/a": "1", "other": "1"})
    before = key(root)
    (root / "other").write_text("2")
    assert key(root) == before
    (root / "cfg/a").write_text("2")
    assert key(root) != before


def test_bind_mount_from_a_stage(root: Path) -> None:
    (root / "Dockerfile").write_text(
        f"FROM {BASE} AS tools\nCOPY tool /tool\n"
        f"FROM {BASE} AS s\nRUN --mount=type=bind,from=tools,target=/t /t/tool > /out\n"
    )
    write(root, {"tool": "1"})
    before = key(root)
    (root / "tool").write_text("2")
    assert key(root) != before


def test_cache_and_tmpfs_mounts_read_nothing_keyed(root: Path) -> None:
    """BuildKit keys neither: their content is scratch space, not an input of the step."""
    dockerfile(
        root,
        "RUN --mount=type=cache,target=/root/.cache --mount=type=tmpfs,target=/tmp make",
    )
    write(root, {"f": "1"})
    document = stage_keys(root)["s"].inputs
    assert (document["context"], document["stages"], document["images"]) == ([], {}, {})
    before = key(root)
    (root / "f").write_text("2")
    assert key(root) == before


def test_cache_mount_from_a_stage_follows_that_stage(root: Path) -> None:
    (root / "Dockerfile").write_text(
        f"FROM {BASE} AS seed\nCOPY f /f\n"
        f"FROM {BASE} AS s\nRUN --mount=type=cache,from=seed,target=/c cp /c/f /f\n"
    )
    write(root, {"f": "1"})
    before = key(root)
    (root / "f").write_text("2")
    assert key(root) != before


# Named contexts: with no --build-context, BuildKit reads the name as an image.


def test_a_named_context_without_build_context_is_an_image_and_keys_follow_it(
    root: Path,
) -> None:
    (root / "Dockerfile").write_text(
        f"FROM {BASE} AS s\nCOPY --from=mytools /bin/tool /tool\nFROM mytools AS t\n"
    )
    before = stage_keys(root, {"mytools": "sha256:" + "1" * 64})
    after = stage_keys(root, {"mytools": "sha256:" + "2" * 64})
    assert before["s"].inputs["images"] == {
        "mytools": {"ref": "mytools", "digest": "sha256:" + "1" * 64}
    }
    assert before["t"].inputs["base"]["ref"] == "mytools"
    assert before["s"].key != after["s"].key
    assert before["t"].key != after["t"].key


# The ignore file beside the Dockerfile.


def test_the_dockerfile_dockerignore_decides_what_is_keyed(root: Path) -> None:
    dockerfile(root, "COPY . /app/")
    write(root, {"a": "1", "b": "1", ".dockerignore": "a\n", "Dockerfile.dockerignore": "b\n"})
    before = key(root)
    (root / "b").write_text("2")
    assert key(root) == before, "ignored by Dockerfile.dockerignore, which wins"
    (root / "a").write_text("2")
    assert key(root) != before, "the context's .dockerignore is not read"


# Symlinks, hard links, empty directories, mtimes, extended attributes.


def test_a_symlink_inside_a_copied_tree_is_keyed_by_its_target_text(root: Path) -> None:
    dockerfile(root, "COPY tree/ /tree/")
    write(root, {"tree/a": "1", "tree/b": "2"})
    (root / "tree/link").symlink_to("a")
    before = key(root)
    (root / "tree/a").write_text("changed")
    changed_target_content = key(root)
    assert changed_target_content != before, "a is copied too"
    (root / "tree/link").unlink()
    (root / "tree/link").symlink_to("b")
    assert key(root) != changed_target_content


def test_a_symlinked_source_is_followed(root: Path) -> None:
    dockerfile(root, "COPY current /app/")
    write(root, {"v1/a": "1", "v2/a": "2"})
    (root / "current").symlink_to("v1")
    before = key(root)
    (root / "v2/a").write_text("3")
    assert key(root) == before
    (root / "v1/a").write_text("3")
    assert key(root) != before
    again = key(root)
    (root / "current").unlink()
    (root / "current").symlink_to("v2")
    assert key(root) == again, "same files under the same path: the same image"


def test_a_hard_link_is_keyed_as_the_file_it_shares(root: Path) -> None:
    """contenthash gives a hard link its source's digest, so BuildKit's key is unchanged."""
    dockerfile(root, "COPY tree/ /tree/")
    write(root, {"tree/a": "same", "tree/b": "same"})
    before = key(root)
    (root / "tree/b").unlink()
    os.link(root / "tree/a", root / "tree/b")
    assert key(root) == before


def test_an_empty_directory_is_copied_and_keyed(root: Path) -> None:
    dockerfile(root, "COPY tree/ /tree/")
    write(root, {"tree/a": "1", ".dockerignore": "tree/ignored\n"})
    before = key(root)
    (root / "tree/ignored").mkdir()
    assert key(root) == before, "an ignored empty directory is never sent"
    (root / "tree/empty").mkdir()
    assert key(root) != before


def test_mtimes_never_count(root: Path) -> None:
    dockerfile(root, "COPY tree/ /tree/")
    write(root, {"tree/a": "1"})
    before = key(root)
    os.utime(root / "tree/a", (1, 1))
    os.utime(root / "tree", (1, 1))
    assert key(root) == before


def test_extended_attributes_count_as_contenthash_keys_them(root: Path) -> None:
    dockerfile(root, "COPY tree/ /tree/")
    write(root, {"tree/a": "1"})
    before = key(root)
    try:
        os.setxattr(root / "tree/a", "user.origin", b"1")
    except OSError as exc:
        pytest.skip(f"no user xattrs on this filesystem: {exc}")
    with_one = key(root)
    assert with_one != before
    os.setxattr(root / "tree/a", "user.origin", b"2")
    assert key(root) != with_one
    os.removexattr(root / "tree/a", "user.origin")
    assert key(root) == before, "without xattrs a tree keys as it did before they counted"
