"""The context walk and its digests against BuildKit's behaviour, on real files."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from pipeline.cache import context as context_module
from pipeline.cache.context import BuildContext, Entry
from pipeline.cache.ignore import ContextError, IgnoreRules
from tests.cache.test_ignore import rules, write

# --- selection -----------------------------------------------------------------------------

PROJECT = {
    "Dockerfile": "FROM scratch\n",
    "package.json": "{}",
    "composer.json": "{}",
    "a.txt": "a",
    "b.txt": "b",
    "c.txt": "c",
    "src/app/x.py": "app",
    "src/lib/x.py": "lib",
    "src/lib/y.py": "y",
    "src/x.py": "top",
    "empty/": "",
    "**/x.py": "literal stars",
}


def paths(entries: tuple[Entry, ...]) -> list[str]:
    return [entry.path for entry in entries]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write(tmp_path / "ctx", PROJECT)


def ctx(root: Path, *patterns: str) -> BuildContext:
    return BuildContext(root, rules(*patterns))


def test_a_file_selects_itself(project: Path) -> None:
    (entry,) = ctx(project).select(["a.txt"])
    mode = (project / "a.txt").stat().st_mode & 0o7777
    assert entry == Entry("a.txt", "file", mode, "sha256:" + hashlib.sha256(b"a").hexdigest())


def test_a_directory_selects_itself_and_everything_below(project: Path) -> None:
    assert paths(ctx(project).select(["src"])) == [
        "src",
        "src/app",
        "src/app/x.py",
        "src/lib",
        "src/lib/x.py",
        "src/lib/y.py",
        "src/x.py",
    ]
    (project / "empty").chmod(0o750)
    assert ctx(project).select(["empty"]) == (Entry("empty", "dir", 0o750, ""),)


def test_several_sources_sorted_and_deduplicated(project: Path) -> None:
    assert paths(ctx(project).select(["src/lib", "a.txt", "src/lib/x.py"])) == [
        "a.txt",
        "src/lib",
        "src/lib/x.py",
        "src/lib/y.py",
    ]


@pytest.mark.parametrize("root", [".", "./", "/", "", "src/.."])
def test_the_root(project: Path, root: str) -> None:
    project.chmod(0o755)
    entries = ctx(project).select([root])
    assert Entry(".", "dir", 0o755, "") in entries
    assert {"Dockerfile", "a.txt", "src/lib/y.py", "empty", "**/x.py"} <= set(paths(entries))


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*.json", ["composer.json", "package.json"]),
        ("src/*/x.py", ["src/app/x.py", "src/lib/x.py"]),
        ("[ab].txt", ["a.txt", "b.txt"]),
        ("[^ab].txt", ["c.txt"]),
        ("?.txt", ["a.txt", "b.txt", "c.txt"]),
        ("src/l*", ["src/lib", "src/lib/x.py", "src/lib/y.py"]),
        ("**/x.py", ["**/x.py", "src/x.py"]),
        ("src/**/x.py", ["src/app/x.py", "src/lib/x.py"]),
        ("\\**/x.py", ["**/x.py"]),
    ],
)
def test_globs_match_one_component_each(project: Path, pattern: str, expected: list[str]) -> None:
    assert paths(ctx(project).select([pattern])) == expected


def test_bang_is_not_negation_in_go_brackets(tmp_path: Path) -> None:
    write(tmp_path, {"a.txt": "", "b.txt": "", "!.txt": ""})
    assert paths(ctx(tmp_path).select(["[!a].txt"])) == ["!.txt", "a.txt"]


def test_a_glob_matching_nothing_selects_nothing(project: Path) -> None:
    assert ctx(project).select(["*.nothing", "src/*/nothing"]) == ()
    assert ctx(project).select(["a.txt/*"]) == ()


def test_a_glob_under_a_missing_directory_is_not_found(project: Path) -> None:
    with pytest.raises(ContextError, match=r'^"/missing/dir": not found$'):
        ctx(project).select(["missing/dir/*.py"])


@pytest.mark.parametrize("source", ["/src/x.py", "../src/x.py", "../../src/./x.py", "src//x.py/"])
def test_leading_slash_and_dotdot_are_normalised(project: Path, source: str) -> None:
    assert paths(ctx(project).select([source])) == ["src/x.py"]


def test_missing_literal_is_not_found(project: Path) -> None:
    with pytest.raises(ContextError) as caught:
        ctx(project).select(["a.txt", "missing.txt"])
    assert str(caught.value) == '"/missing.txt": not found'
    with pytest.raises(ContextError, match=r'^"/src/lib/nope": not found$'):
        ctx(project).select(["../src/lib/nope"])
    with pytest.raises(ContextError, match=r'^"/a.txt/x": not found$'):
        ctx(project).select(["a.txt/x"])


def test_not_found_quotes_like_go(project: Path) -> None:
    with pytest.raises(ContextError, match=r'^"/a\\"b\\tc": not found$'):
        ctx(project).select(['a"b\tc'])


def test_an_ignored_literal_is_not_found(project: Path) -> None:
    context = ctx(project, "*.txt", "src/lib")
    with pytest.raises(ContextError, match=r'^"/a.txt": not found$'):
        context.select(["a.txt"])
    with pytest.raises(ContextError, match=r'^"/src/lib/x.py": not found$'):
        context.select(["src/lib/x.py"])
    assert paths(context.select(["*.txt", "src"])) == ["src", "src/app", "src/app/x.py", "src/x.py"]


def test_dockerignore_applies_inside_selected_directories(project: Path) -> None:
    assert paths(ctx(project, "**/y.py", "src/app").select(["src"])) == [
        "src",
        "src/lib",
        "src/lib/x.py",
        "src/x.py",
    ]


def test_re_included_file_inside_an_ignored_directory(project: Path) -> None:
    context = ctx(project, "src", "!src/lib/y.py")
    assert paths(context.select(["src"])) == ["src", "src/lib", "src/lib/y.py"]
    assert paths(context.select(["src/lib/y.py"])) == ["src/lib/y.py"]
    assert paths(context.select(["src/*"])) == ["src/lib", "src/lib/y.py"]
    with pytest.raises(ContextError, match="not found"):
        context.select(["src/app"])


def test_wildcard_exception_re_includes_anywhere(project: Path) -> None:
    context = ctx(project, "src", "!**/y.py")
    assert paths(context.select(["."]))[-3:] == ["src", "src/lib", "src/lib/y.py"]


def test_dockerfile_and_dockerignore_are_ordinary_files(project: Path) -> None:
    write(project, {".dockerignore": "*.txt\n"})
    context = BuildContext(project, IgnoreRules.load(project, project / "Dockerfile"))
    selected = paths(context.select(["."]))
    assert {".dockerignore", "Dockerfile"} <= set(selected)
    assert "a.txt" not in selected
    excluded = BuildContext(project, rules("Dockerfile", ".dockerignore"))
    assert not {".dockerignore", "Dockerfile"} & set(paths(excluded.select(["."])))


def test_excluded_directory_without_exceptions_is_never_listed(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed: list[str] = []
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        listed.append(os.path.relpath(path, project))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    ctx(project, "src", "!a.txt").select(["."])
    assert "src" not in listed
    listed.clear()
    ctx(project, "src", "!src/lib/y.py").select(["."])
    assert {"src", "src/lib"} <= set(listed)
    assert "src/app" not in listed
    listed.clear()
    ctx(project, "src", "!*/lib/y.py").select(["."])
    assert "src" in listed


def test_walk_follows_fsutil_not_matches_or_parent_matches(tmp_path: Path) -> None:
    """fsutil's walker (MatchesUsingParentResults) forgets a pattern skipped for the parent."""
    write(tmp_path, {"d/c": "c", "d/e": "e"})
    ignore = rules("d", "!d/c", "d")
    assert ignore.excluded("d/c")
    assert paths(BuildContext(tmp_path, ignore).select(["."])) == [".", "d", "d/c"]


def test_exclude_is_relative_to_each_source(project: Path) -> None:
    context = ctx(project)
    assert paths(context.select(["src"], excludes=["*.py"])) == [
        "src",
        "src/app",
        "src/app/x.py",
        "src/lib",
        "src/lib/x.py",
        "src/lib/y.py",
    ]
    assert paths(context.select(["src"], excludes=["**/x.py", "app"])) == [
        "src",
        "src/lib",
        "src/lib/y.py",
    ]
    assert paths(context.select(["src"], excludes=["src/x.py"])) == paths(context.select(["src"]))
    assert paths(context.select(["src/*"], excludes=["x.py"])) == [
        "src/app",
        "src/lib",
        "src/lib/y.py",
        "src/x.py",
    ]


MONOREPO = {
    "package.json": "root",
    "packages/package.json": "packages",
    "packages/web/package.json": "web",
    "packages/web/nested/lib/package.json": "lib",
    "packages/web/src/index.js": "js",
}


@pytest.mark.parametrize(
    ("source", "changed", "keyed"),
    [
        # an include pattern (convert_copy.go): ** spans folders, zero of them too
        ("packages/**/package.json", "packages/web/nested/lib/package.json", True),
        ("packages/**/package.json", "packages/package.json", True),
        ("packages/**/package.json", "packages/web/src/index.js", False),
        ("packages/**/package.json", "package.json", False),
        ("packages/*/package.json", "packages/web/nested/lib/package.json", False),
        # a /./ pivot: the pattern is below the base
        ("packages/./web/package.json", "packages/web/package.json", True),
        ("packages/./web/package.json", "packages/package.json", False),
        ("packages/./web", "packages/web/src/index.js", True),
    ],
)
def test_copy_parents_reads_what_its_include_pattern_matches(
    tmp_path: Path, source: str, changed: str, keyed: bool
) -> None:
    root = write(tmp_path / "ctx", MONOREPO)
    before = BuildContext(root, rules()).digest([source], parents=True)
    (root / changed).write_text("edited")
    assert (BuildContext(root, rules()).digest([source], parents=True) != before) is keyed


def test_copy_parents_keys_where_the_pivot_is(tmp_path: Path) -> None:
    """The pivot decides the destination's folders, so it is part of what is keyed."""
    context = BuildContext(write(tmp_path / "ctx", MONOREPO), rules())
    digests = {
        context.digest([source], parents=True)
        for source in ("packages/web/package.json", "packages/./web/package.json")
    }
    assert len(digests) == 2


def test_exclude_never_drops_a_source_itself(project: Path) -> None:
    assert paths(ctx(project).select(["a.txt"], excludes=["*"])) == ["a.txt"]


def test_exclude_exceptions(project: Path) -> None:
    context = ctx(project)
    assert paths(context.select(["src"], excludes=["lib", "!lib/y.py"])) == [
        "src",
        "src/app",
        "src/app/x.py",
        "src/lib",
        "src/lib/y.py",
        "src/x.py",
    ]
    assert paths(context.select(["."], excludes=["*", "!src/app"])) == [
        ".",
        "src",
        "src/app",
        "src/app/x.py",
    ]


def test_bad_exclude_pattern(project: Path) -> None:
    with pytest.raises(ContextError, match=r'^invalid --exclude pattern "\[": syntax error'):
        ctx(project).select(["src"], excludes=["["])


# --- symlinks ------------------------------------------------------------------------------


@pytest.fixture
def linked(project: Path) -> Path:
    os.symlink("src/lib", project / "lib")
    os.symlink("../a.txt", project / "src" / "a-link")
    os.symlink("/src/x.py", project / "abs-link")
    os.symlink("../../../etc/hostname", project / "escape")
    os.symlink("missing", project / "dangling")
    return project


def test_a_symlinked_source_is_followed(linked: Path) -> None:
    context = ctx(linked)
    (entry,) = context.select(["src/a-link"])
    assert entry == dataclasses.replace(context.select(["a.txt"])[0], path="src/a-link")


def test_a_symlink_loop_is_an_error(tmp_path: Path) -> None:
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(ContextError, match=r'^"/loop": too many links$'):
        ctx(tmp_path).select(["loop"])
    assert ctx(tmp_path).select(["."])[1].kind == "symlink"


def test_symlinked_directory_source_keeps_the_written_path(linked: Path) -> None:
    context = ctx(linked)
    assert paths(context.select(["lib"])) == ["lib", "lib/x.py", "lib/y.py"]
    assert paths(context.select(["lib/y.py"])) == ["lib/y.py"]
    assert paths(context.select(["l*"])) == ["lib", "lib/x.py", "lib/y.py"]


def test_absolute_and_escaping_targets_stay_inside_the_context(linked: Path) -> None:
    context = ctx(linked)
    (entry,) = context.select(["abs-link"])
    assert entry.digest == context.select(["src/x.py"])[0].digest
    with pytest.raises(ContextError, match=r'^"/escape": not found$'):
        context.select(["escape"])
    write(linked, {"etc/hostname": "inside"})
    (entry,) = ctx(linked).select(["escape"])
    assert entry.digest == "sha256:" + hashlib.sha256(b"inside").hexdigest()


def test_dangling_symlink_source_is_not_found(linked: Path) -> None:
    with pytest.raises(ContextError, match=r'^"/dangling": not found$'):
        ctx(linked).select(["dangling"])
    with pytest.raises(ContextError, match=r'^"/dangling": not found$'):
        ctx(linked).select(["dang*"])


def test_symlink_to_an_ignored_file_is_not_found(linked: Path) -> None:
    with pytest.raises(ContextError, match=r'^"/src/a-link": not found$'):
        ctx(linked, "a.txt").select(["src/a-link"])
    with pytest.raises(ContextError, match=r'^"/lib/x.py": not found$'):
        ctx(linked, "lib").select(["lib/x.py"])


def test_symlinks_inside_a_directory_are_recorded_not_followed(linked: Path) -> None:
    entries = {e.path: e for e in ctx(linked).select(["src", "."])}
    link = entries["src/a-link"]
    assert link == Entry(
        "src/a-link", "symlink", 0, "sha256:" + hashlib.sha256(b"../a.txt").hexdigest()
    )
    assert entries["dangling"].kind == "symlink"
    assert "lib/x.py" not in entries


# --- digests -------------------------------------------------------------------------------


def digest(root: Path, sources: list[str], *patterns: str) -> str:
    return ctx(root, *patterns).digest(sources)


def test_digest_format(project: Path) -> None:
    value = digest(project, ["."])
    assert value.startswith("sha256:")
    assert len(value) == len("sha256:") + 64


def test_digest_changes_with_content(project: Path) -> None:
    before = digest(project, ["src"])
    (project / "src/lib/y.py").write_text("changed")
    assert digest(project, ["src"]) != before


def test_digest_changes_with_the_relative_path(project: Path) -> None:
    before = digest(project, ["src"])
    (project / "src/lib/y.py").rename(project / "src/lib/z.py")
    assert digest(project, ["src"]) != before


def test_digest_changes_with_an_empty_directory(project: Path) -> None:
    before = digest(project, ["src"])
    (project / "src/new").mkdir()
    assert digest(project, ["src"]) != before


@pytest.mark.parametrize(
    ("path", "before", "after"),
    [
        ("src/x.py", 0o644, 0o600),
        ("src/x.py", 0o644, 0o744),
        ("src/x.py", 0o755, 0o4755),
        ("src/lib", 0o755, 0o700),
        ("src/lib", 0o755, 0o1755),
        ("src", 0o755, 0o2755),
    ],
)
def test_digest_changes_with_any_permission_bit(
    project: Path, path: str, before: int, after: int
) -> None:
    """BuildKit copies every permission bit of files and directories into the image."""
    (project / path).chmod(before)
    old = digest(project, ["src"])
    (project / path).chmod(after)
    assert digest(project, ["src"]) != old
    (project / path).chmod(before)
    assert digest(project, ["src"]) == old


def test_entries_carry_the_permission_bits(project: Path) -> None:
    (project / "src/x.py").chmod(0o4750)
    (project / "src/lib").chmod(0o700)
    entries = {e.path: e.mode for e in ctx(project).select(["src"])}
    assert entries["src/x.py"] == 0o4750
    assert entries["src/lib"] == 0o700


def test_an_octal_chmod_leaves_the_rwx_bits_of_files_out(project: Path) -> None:
    """`COPY --chmod=<octal>` replaces them, so they cannot change the image."""
    path = project / "src/x.py"
    path.chmod(0o644)
    keyed = ctx(project).digest(["src"], chmod=True)
    assert keyed != digest(project, ["src"])
    path.chmod(0o600)
    assert ctx(project).digest(["src"], chmod=True) == keyed
    path.chmod(0o4600)
    assert ctx(project).digest(["src"], chmod=True) != keyed
    path.chmod(0o644)
    (project / "src/lib").chmod(0o700)
    assert ctx(project).digest(["src"], chmod=True) != keyed


def test_a_symlink_mode_never_counts(linked: Path) -> None:
    """BuildKit copies the link itself, and Linux ignores a link's own mode."""
    entries = {e.path: e for e in ctx(linked).select(["src"])}
    assert entries["src/a-link"].mode == 0


def test_digest_changes_with_a_symlink_target(linked: Path) -> None:
    before = digest(linked, ["src"])
    (linked / "src/a-link").unlink()
    os.symlink("../b.txt", linked / "src/a-link")
    assert digest(linked, ["src"]) != before


def test_followed_symlink_digest_follows_the_target_content(linked: Path) -> None:
    before = digest(linked, ["src/a-link"])
    (linked / "a.txt").write_text("changed")
    assert digest(linked, ["src/a-link"]) != before


def test_digest_ignores_mtime(project: Path) -> None:
    before = digest(project, ["."])
    for path in [project, *project.rglob("*")]:
        os.utime(path, (1_000_000, 1_000_000))
    assert digest(project, ["."]) == before


def test_digest_ignores_where_the_context_lives(linked: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(linked, moved, symlinks=True)
    assert digest(moved, ["."]) == digest(linked, ["."])
    assert digest(moved, ["lib", "abs-link"]) == digest(linked, ["lib", "abs-link"])


def test_digest_ignores_ignored_files(project: Path) -> None:
    before = digest(project, ["."], "*.txt", "src/app")
    (project / "a.txt").write_text("changed")
    (project / "src/app/x.py").write_text("changed")
    (project / "src/app/new.py").write_text("new")
    assert digest(project, ["."], "*.txt", "src/app") == before


def test_digest_ignores_files_outside_the_sources(project: Path) -> None:
    before = digest(project, ["src/lib", "*.json"])
    (project / "a.txt").write_text("changed")
    (project / "src/app/x.py").write_text("changed")
    assert digest(project, ["src/lib", "*.json"]) == before


def test_digest_ignores_excluded_files(project: Path) -> None:
    before = ctx(project).digest(["src"], excludes=["lib"])
    before_all = ctx(project).digest(["src"])
    (project / "src/lib/x.py").write_text("changed")
    assert ctx(project).digest(["src"], excludes=["lib"]) == before
    assert ctx(project).digest(["src"]) != before_all


def test_source_order_counts(project: Path) -> None:
    """A later source overwrites an earlier one at the destination, so order is in the key."""
    context = ctx(project)
    assert context.select(["a.txt", "src"]) == context.select(["src", "a.txt"])
    assert context.digest(["a.txt", "src"]) != context.digest(["src", "a.txt"])


def test_equivalent_spellings_digest_alike(project: Path) -> None:
    context = ctx(project)
    assert context.digest(["src"]) == context.digest(["/src/"]) == context.digest(["../src/."])
    assert context.digest(["."]) == context.digest(["./"]) == context.digest(["/"])


def test_bind_digest(project: Path) -> None:
    context = ctx(project)
    assert context.bind_digest() == context.bind_digest(".") == context.digest(["."])
    assert context.bind_digest("src/lib") == context.digest(["src/lib"])
    with pytest.raises(ContextError, match=r'^"/nope": not found$'):
        context.bind_digest("nope")


def test_bind_source_has_no_wildcards(project: Path) -> None:
    write(project, {"*.json": "literal"})
    context = ctx(project)
    assert context.bind_digest("*.json") != context.digest(["*.json"])
    with pytest.raises(ContextError, match="not found"):
        context.bind_digest("*.txt")


# --- each file is read once ----------------------------------------------------------------


def test_each_file_is_hashed_once(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: Counter[str] = Counter()
    real_hash = context_module._hash_file

    def counting(path: str, size: int) -> str:
        reads[os.path.relpath(path, project)] += 1
        return real_hash(path, size)

    monkeypatch.setattr(context_module, "_hash_file", counting)
    context = ctx(project)
    first = context.digest(["src", "*.txt"])
    second = context.digest([".", "src/lib/x.py"], excludes=["c.txt"])
    assert first != second
    assert set(reads.values()) == {1}
    files = [e.path for e in context.select(["."]) if e.kind == "file"]
    assert sorted(reads) == sorted(files)
    assert context.digest(["src", "*.txt"]) == first
    assert sum(reads.values()) == len(files)


def test_a_new_context_reads_again(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_hash = context_module._hash_file
    monkeypatch.setattr(
        context_module, "_hash_file", lambda path, size: calls.append(path) or real_hash(path, size)
    )
    ctx(project).digest(["a.txt"])
    ctx(project).digest(["a.txt"])
    assert len(calls) == 2


# --- large files ---------------------------------------------------------------------------


def test_large_sparse_file(tmp_path: Path) -> None:
    size = 20 * 1024 * 1024
    with (tmp_path / "big.bin").open("wb") as file:
        file.truncate(size)
    (entry,) = ctx(tmp_path).select(["big.bin"])
    assert entry.digest == "sha256:" + hashlib.sha256(bytes(size)).hexdigest()


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 5 * (1 << 20) // 2])
def test_chunk_boundaries(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    (entry,) = ctx(tmp_path).select(["f"])
    assert entry.digest == "sha256:" + hashlib.sha256(data).hexdigest()


def test_context_must_be_a_directory(tmp_path: Path) -> None:
    write(tmp_path, {"file": ""})
    with pytest.raises(ContextError, match="not a directory"):
        BuildContext(tmp_path / "file", IgnoreRules(()))
