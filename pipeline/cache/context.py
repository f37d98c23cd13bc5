"""Which build-context files a COPY, ADD or bind mount reads, and a digest of them.

A stage's cache key must change exactly when those files change, so this module mirrors what
BuildKit (moby/buildkit 73ed6825) does with the local context:

- The walk applies `.dockerignore` (`pipeline.cache.ignore`) as fsutil's sender applies it
  (`filter.go`), a directory at a time, and lists an excluded directory only when a `!` pattern
  could re-include something in it.
- Sources are normalised like `system.NormalizePath`, wildcards resolve like fsutil's
  `copy.ResolveWildcards` (Go's `filepath.Match` per path component), symlinks in a source
  path resolve inside the context like `contenthash.getFollowLinks`, and a missing source fails
  with contenthash's `"/path": not found`.
- `--exclude` patterns are matched relative to each copied source, as fsutil's copier and
  contenthash's `includedPaths` match them (not relative to the context root).

A digest covers file contents, paths relative to the context root, the file type, the permission
bits (`st_mode & 0o7777`) of files and directories, which BuildKit copies into the image, and
symlink targets; never mtimes, owners or where the context lives. A symlink's own mode is 0:
BuildKit copies the link itself and Linux ignores a link's mode. With `COPY --chmod=<octal>` the
source's rwx bits of files never reach the image, so `digest(..., chmod=True)` leaves them out.
Each file is read at most once per `BuildContext`, and directory listings are kept, because many
instructions of one run look at the same files.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from pipeline.cache.ignore import (
    ContextError,
    IgnoreRules,
    MatchInfo,
    component_matcher,
    has_wildcards,
)
from pipeline.dockerfile.gostrings import go_quote

if TYPE_CHECKING:
    import re
    from collections.abc import Iterable, Sequence
    from pathlib import Path

__all__ = ["BuildContext", "Entry"]

Kind = Literal["file", "dir", "symlink"]

_CHUNK = 1 << 20
_MAX_LINKS = 255
_DIGEST_VERSION = b"dagger-stages context v2\0"
_PERMISSIONS = 0o7777
# What an octal `--chmod` replaces; setuid, setgid and sticky bits are still keyed.
_CHMOD_REPLACES = 0o777
_KINDS: dict[int, Kind] = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink"}
# No `--exclude`: what the walk sends below a directory by the .dockerignore alone.
_NO_RULES = IgnoreRules(())


def _not_found(path: str) -> ContextError:
    return ContextError(f"{go_quote('/' + path)}: not found")


def _pivot(source: str) -> str:
    """A `COPY --parents` source as `<base>/./<pattern>`, each normalised; without a `/./`
    pivot the base is the root."""
    base, pivot, pattern = source.partition("/./")
    if not pivot:
        base, pattern = "/", source
    return f"{_normalize(base).rstrip('/')}/./{_normalize(pattern).lstrip('/')}"


def _normalize(source: str) -> str:
    """`system.NormalizePath("/", source)`: '/a', '../a', './a/' and 'a' are all '/a'."""
    return posixpath.normpath("/" + source.lstrip("/"))


@dataclass(frozen=True, slots=True)
class Entry:
    """One selected path. `digest` is of the content, of a symlink's target text, or "" (dir).

    `mode` is the permission part of `st_mode` (0 for a symlink), which BuildKit preserves.
    """

    path: str
    kind: Kind
    mode: int
    digest: str


class _Node(NamedTuple):
    path: str
    kind: Kind
    mode: int
    size: int
    ignored: bool
    info: MatchInfo


class _State(NamedTuple):
    info: MatchInfo
    ignored: bool
    blocked: bool


_ROOT = _State(None, ignored=False, blocked=False)


def _hash_file(path: str, size: int) -> str:
    """sha256 of a file's content, read in chunks of at most 1 MiB.

    Never follows a symlink nor waits on a FIFO, in case the path changed since it was listed.
    """
    digest = hashlib.sha256()
    want = min(size + 1, _CHUNK)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        while chunk := os.read(fd, want):
            digest.update(chunk)
            want = _CHUNK
    finally:
        os.close(fd)
    return "sha256:" + digest.hexdigest()


def _join(base: str, rel: str) -> str:
    return f"{base}/{rel}" if base and rel else base or rel


class BuildContext:
    """The files of one build context, after its `.dockerignore`.

    Results are memoized for the life of the object: build one per run, not per instruction.
    """

    def __init__(self, root: Path, ignore: IgnoreRules) -> None:
        self.root = root
        self.ignore = ignore
        self._root = os.path.abspath(root)
        if not os.path.isdir(self._root):
            raise ContextError("build context is not a directory", path=root)
        self._hashes: dict[str, str] = {}
        self._listings: dict[str, tuple[_Node, ...]] = {}
        self._states: dict[str, _State] = {}
        self._trees: dict[tuple[str, IgnoreRules], tuple[_Node, ...]] = {}
        self._sources: dict[tuple[str, tuple[str, ...], bool], tuple[Entry, ...]] = {}
        self._source_digests: dict[tuple[str, tuple[str, ...], bool, bool], bytes] = {}
        self._excludes: dict[tuple[str, ...], IgnoreRules] = {}

    def select(self, sources: Sequence[str], *, excludes: Sequence[str] = ()) -> tuple[Entry, ...]:
        """Every entry one COPY/ADD reads from the context, sorted by path and deduplicated."""
        chosen: dict[str, Entry] = {}
        for source in sources:
            for entry in self._source(_normalize(source), tuple(excludes), wildcards=True):
                chosen.setdefault(entry.path, entry)
        return tuple(sorted(chosen.values(), key=lambda entry: entry.path))

    def digest(
        self,
        sources: Sequence[str],
        *,
        excludes: Sequence[str] = (),
        chmod: bool = False,
        parents: bool = False,
    ) -> str:
        """Digest of one COPY/ADD's sources, in the order written, and what each selects.

        Order counts because a later source overwrites an earlier one at the destination.
        `chmod` is for an octal `--chmod`, which replaces the rwx bits of every copied file, so
        those bits cannot change the image and would only cause misses (say, across umasks).
        `parents` is `COPY --parents`, which selects differently (`_parents_source`).
        """
        if parents:
            sources = [_pivot(source) for source in sources]
        return self._digest(sources, tuple(excludes), wildcards=True, chmod=chmod)

    def bind_digest(self, source: str = "") -> str:
        """Digest for `RUN --mount=type=bind,source=<source>` from the context; no wildcards."""
        return self._digest([source], (), wildcards=False, chmod=False)

    def _digest(
        self, sources: Sequence[str], excludes: tuple[str, ...], *, wildcards: bool, chmod: bool
    ) -> str:
        digest = hashlib.sha256(_DIGEST_VERSION)
        if chmod:
            digest.update(b"chmod\0")
        for source in sources:
            normalized = source if "/./" in source else _normalize(source)
            key = (normalized, excludes, wildcards, chmod)
            if key not in self._source_digests:
                if "/./" in normalized:
                    entries = self._parents_source(normalized, excludes)
                else:
                    entries = self._source(normalized, excludes, wildcards=wildcards)
                self._source_digests[key] = _entries_digest(entries, chmod=chmod)
            digest.update(b"source\0" + os.fsencode(normalized) + b"\0")
            digest.update(self._source_digests[key])
        return "sha256:" + digest.hexdigest()

    def _source(
        self, normalized: str, excludes: tuple[str, ...], *, wildcards: bool
    ) -> tuple[Entry, ...]:
        key = (normalized, excludes, wildcards)
        entries = self._sources.get(key)
        if entries is None:
            rules = self._rules_for(excludes)
            rel = normalized.lstrip("/")
            parts = rel.split("/") if rel else []
            cut = next((i for i, part in enumerate(parts) if has_wildcards(part)), None)
            if wildcards and cut is not None:
                found = self._glob("/".join(parts[:cut]), parts[cut:], rules)
            else:
                found = self._literal(rel, rules)
            entries = tuple(sorted(found, key=lambda entry: entry.path))
            self._sources[key] = entries
        return entries

    def _parents_source(self, pivoted: str, excludes: tuple[str, ...]) -> tuple[Entry, ...]:
        """`COPY --parents <base>/./<pattern>`: what is below `base` and matches `pattern`.

        BuildKit copies `base` with `pattern` as an include pattern (convert_copy.go), matched
        as .dockerignore patterns are, a path or one of its parents, so `**` spans folders;
        the folders on the way to a match are copied too.
        """
        base, _, pattern = pivoted.partition("/./")
        include = self._rules_for((pattern,))
        entries = self._source(base or "/", excludes, wildcards=True)
        prefix = base.lstrip("/")
        root, cut = prefix or ".", len(prefix) + 1 if prefix else 0
        matched = [e for e in entries if e.path != root and include.excluded(e.path[cut:])]
        if not matched:
            return ()
        keep = {root}
        for entry in matched:
            path = entry.path
            while path and path not in keep:
                keep.add(path)
                path = posixpath.dirname(path)
        return tuple(e for e in entries if e.path in keep)

    def _rules_for(self, excludes: tuple[str, ...]) -> IgnoreRules:
        rules = self._excludes.get(excludes)
        if rules is None:
            rules = self._excludes[excludes] = IgnoreRules.for_excludes(excludes)
        return rules

    def _literal(self, rel: str, excludes: IgnoreRules) -> list[Entry]:
        real = self._resolve(rel)
        st = None if real is None else self._lookup(real)
        if real is None or st is None:
            raise _not_found(rel)
        return self._expand(rel, real, st, excludes)

    def _glob(self, base: str, parts: list[str], excludes: IgnoreRules) -> list[Entry]:
        """fsutil's ResolveWildcards: the base must exist; each part matches one level."""
        real = self._resolve(base)
        st = None if real is None else self._lookup(real)
        if real is None or st is None:
            raise _not_found(base)
        if not stat.S_ISDIR(st.st_mode):
            return []
        level = [(base, real, self._state(real).info)]
        for depth, part in enumerate(parts):
            level = self._glob_level(level, component_matcher(part), last=depth == len(parts) - 1)
        entries: list[Entry] = []
        for logical, path, _ in level:
            target = self._resolve(path)
            st = None if target is None else self._lookup(target)
            if target is None or st is None:
                raise _not_found(logical)
            entries.extend(self._expand(logical, target, st, excludes))
        return entries

    def _glob_level(
        self, level: list[tuple[str, str, MatchInfo]], matcher: re.Pattern[str], *, last: bool
    ) -> list[tuple[str, str, MatchInfo]]:
        """The children of `level`'s directories whose names match.

        filepath.Walk does not descend symlinks, so only the last level may hold other kinds.
        """
        found = []
        for logical, real, info in level:
            for node in self._listing(real, info):
                name = node.path.rpartition("/")[2]
                if not matcher.fullmatch(name) or not (last or node.kind == "dir"):
                    continue
                if self._node_present(node):
                    found.append((_join(logical, name), node.path, node.info))
        return found

    def _expand(
        self, logical: str, real: str, st: os.stat_result, excludes: IgnoreRules
    ) -> list[Entry]:
        """The entries of one resolved source: a file, or a directory and all below it."""
        if not stat.S_ISDIR(st.st_mode):
            mode = st.st_mode & _PERMISSIONS
            return [Entry(logical, "file", mode, self._content(real, st.st_size))]
        cut = len(real) + 1 if real else 0
        entries = [Entry(logical or ".", "dir", st.st_mode & _PERMISSIONS, "")]
        for node in self._tree(real, excludes):
            entries.append(self._entry(_join(logical, node.path[cut:]), node))
        return entries

    def _entry(self, path: str, node: _Node) -> Entry:
        if node.kind == "file":
            return Entry(path, "file", node.mode, self._content(node.path, node.size))
        if node.kind == "symlink":
            return Entry(path, "symlink", 0, self._link(node.path))
        return Entry(path, "dir", node.mode, "")

    def _content(self, rel: str, size: int) -> str:
        digest = self._hashes.get(rel)
        if digest is None:
            try:
                digest = _hash_file(self._abs(rel), size)
            except OSError as exc:
                raise ContextError(f"cannot read {go_quote('/' + rel)}: {exc.strerror}") from None
            self._hashes[rel] = digest
        return digest

    def _link(self, rel: str) -> str:
        digest = self._hashes.get(rel)
        if digest is None:
            try:
                target = os.fsencode(os.readlink(self._abs(rel)))
            except OSError as exc:
                raise ContextError(f"cannot read {go_quote('/' + rel)}: {exc.strerror}") from None
            digest = self._hashes[rel] = "sha256:" + hashlib.sha256(target).hexdigest()
        return digest

    def _abs(self, rel: str) -> str:
        return f"{self._root}/{rel}" if rel else self._root

    def _resolve(self, rel: str) -> str | None:
        """Follow every symlink in `rel` inside the context, like contenthash's getFollowLinks.

        An absolute target restarts at the context root and '..' stops there, so nothing
        outside the context is ever read. None when a symlink on the way is ignored.
        """
        done: list[str] = []
        todo = [part for part in reversed(rel.split("/")) if part]
        links = 0
        while todo:
            part = todo.pop()
            if part == ".":
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            done.append(part)
            current = "/".join(done)
            try:
                is_link = stat.S_ISLNK(os.lstat(self._abs(current)).st_mode)
            except OSError:
                continue
            if not is_link:
                continue
            if not self._present(current, "symlink"):
                return None
            links += 1
            if links > _MAX_LINKS:
                raise ContextError(f"{go_quote('/' + rel)}: too many links")
            target = os.readlink(self._abs(current))
            done.pop()
            if target.startswith("/"):
                done.clear()
            todo.extend(part for part in reversed(target.split("/")) if part)
        return "/".join(done)

    def _lookup(self, real: str) -> os.stat_result | None:
        """The stat of a symlink-free path if the context, after .dockerignore, has it."""
        try:
            st = os.lstat(self._abs(real))
        except OSError:
            return None
        kind = _KINDS.get(stat.S_IFMT(st.st_mode))
        if kind is None or not self._present(real, kind):
            return None
        return st

    def _present(self, rel: str, kind: Kind) -> bool:
        """Whether fsutil would send `rel`: not ignored, or an ignored dir with sent content."""
        state = self._state(rel)
        if state.blocked:
            return False
        if not state.ignored:
            return True
        return kind == "dir" and not self.ignore.prunes(rel) and bool(self._tree(rel, _NO_RULES))

    def _node_present(self, node: _Node) -> bool:
        if not node.ignored:
            return True
        if node.kind != "dir" or self.ignore.prunes(node.path):
            return False
        return bool(self._tree(node.path, _NO_RULES))

    def _state(self, rel: str) -> _State:
        if not rel:
            return _ROOT
        state = self._states.get(rel)
        if state is None:
            parent_rel = rel.rpartition("/")[0]
            parent = self._state(parent_rel)
            ignored, info = self.ignore.walk_match(rel, parent.info)
            pruned = parent.ignored and self.ignore.prunes(parent_rel)
            state = self._states[rel] = _State(info, ignored, parent.blocked or pruned)
        return state

    def _listing(self, rel: str, info: MatchInfo) -> tuple[_Node, ...]:
        """One directory's files, dirs and symlinks with their .dockerignore verdicts."""
        nodes = self._listings.get(rel)
        if nodes is not None:
            return nodes
        prefix = rel + "/" if rel else ""
        step = self.ignore.walk_match
        found = []
        try:
            with os.scandir(self._abs(rel)) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    kind = _KINDS.get(stat.S_IFMT(st.st_mode))
                    if kind is None:
                        continue
                    path = prefix + entry.name
                    ignored, child = step(path, info)
                    mode = 0 if kind == "symlink" else st.st_mode & _PERMISSIONS
                    found.append(_Node(path, kind, mode, st.st_size, ignored, child))
        except OSError as exc:
            raise ContextError(f"cannot list {go_quote('/' + rel)}: {exc.strerror}") from None
        nodes = self._listings[rel] = tuple(found)
        return nodes

    def _tree(self, rel: str, excludes: IgnoreRules) -> tuple[_Node, ...]:
        """Everything below directory `rel` that is copied, with `excludes` relative to it."""
        nodes = self._trees.get((rel, excludes))
        if nodes is None:
            found: list[_Node] = []
            cut = len(rel) + 1 if rel else 0
            rules = excludes if excludes.patterns else None
            self._collect(rel, self._state(rel).info, rules, cut, None, found)
            nodes = self._trees[rel, excludes] = tuple(found)
        return nodes

    def _collect(
        self,
        rel: str,
        info: MatchInfo,
        excludes: IgnoreRules | None,
        cut: int,
        excluded_info: MatchInfo,
        out: list[_Node],
    ) -> bool:
        """Append what is copied below `rel` to `out`; say whether anything was.

        An excluded directory is descended only when a `!` pattern could re-include something
        in it, and kept only if something was (fsutil creates parents lazily).
        """
        found = False
        for node in self._listing(rel, info):
            hit, node_excluded_info = False, None
            if excludes is not None:
                hit, node_excluded_info = excludes.walk_match(node.path[cut:], excluded_info)
            if node.kind != "dir":
                if not (node.ignored or hit):
                    out.append(node)
                    found = True
                continue
            if node.ignored and self.ignore.prunes(node.path):
                continue
            if hit and excludes is not None and not excludes.has_exceptions:
                continue
            out.append(node)
            inner = self._collect(node.path, node.info, excludes, cut, node_excluded_info, out)
            if inner or not (node.ignored or hit):
                found = True
            else:
                out.pop()
        return found


def _entries_digest(entries: Iterable[Entry], *, chmod: bool = False) -> bytes:
    """NUL-separated fields: no path, target or digest can contain NUL, so this is unambiguous.

    Modes are octal text. Under `chmod`, a file keeps only the bits an octal `--chmod` leaves
    alone; a directory keeps its whole mode, as not every BuildKit applies `--chmod` to one.
    """
    digest = hashlib.sha256()
    digest.update(
        b"".join(
            b"%s\0%s\0%o\0%s\0"
            % (
                e.kind.encode(),
                os.fsencode(e.path),
                e.mode & ~_CHMOD_REPLACES if chmod and e.kind == "file" else e.mode,
                e.digest.encode(),
            )
            for e in entries
        )
    )
    return digest.digest()
