"""Which build-context files a COPY, ADD or bind mount reads, and a digest of them.

A stage's cache key must change exactly when those files change, so this module mirrors what
BuildKit (moby/buildkit 73ed6825) does with the local context:

- `.dockerignore` is read by patternmatcher's `ignorefile.ReadAll` and applied as fsutil's
  sender applies it (`filter.go`): the last matching pattern wins, a pattern matching a
  directory matches everything below it, and `!` re-includes even inside an excluded directory.
- Sources are normalised like `system.NormalizePath`, wildcards resolve like fsutil's
  `copy.ResolveWildcards` (Go's `filepath.Match` per path component), symlinks in a source
  path resolve inside the context like `contenthash.getFollowLinks`, and a missing source fails
  with contenthash's `"/path": not found`.
- `--exclude` patterns are matched relative to each copied source, as fsutil's copier and
  contenthash's `includedPaths` match them (not relative to the context root).

A digest covers file contents, paths relative to the context root, the file type, the owner's
executable bit and symlink targets; never mtimes, owners or where the context lives. Each file is
read at most once per `BuildContext`, and directory listings are kept, because many instructions
of one run look at the same files.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Literal, NamedTuple

from pipeline.dockerfile.gostrings import go_quote
from pipeline.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

__all__ = ["BuildContext", "ContextError", "Entry", "IgnoreRules", "Pattern"]

Kind = Literal["file", "dir", "symlink"]

_CHUNK = 1 << 20
_MAX_LINKS = 255
_DIGEST_VERSION = b"dagger-stages context v1\0"
# Go's unicode.IsSpace, which strings.TrimSpace uses; str.strip() also trims \x1c-\x1f.
_GO_SPACE = " \t\n\v\f\r\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(
    map(chr, range(0x2000, 0x200B))
)
# fsutil's patternChars: an exception containing one of these may re-include anything.
_PATTERN_CHARS = frozenset("*[]?^\\")
_KINDS: dict[int, Kind] = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink"}


class ContextError(UsageError):
    """A source or ignore pattern BuildKit would refuse, in BuildKit's words.

    Raised without a location for sources (the caller knows the Dockerfile line), and with the
    ignore file and line for a bad `.dockerignore` pattern.
    """


def _not_found(path: str) -> ContextError:
    return ContextError(f"{go_quote('/' + path)}: not found")


def _go_clean(path: str) -> str:
    """Go's filepath.Clean; posixpath keeps a leading '//', Go does not."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _normalize(source: str) -> str:
    """`system.NormalizePath("/", source)`: '/a', '../a', './a/' and 'a' are all '/a'."""
    return posixpath.normpath("/" + source.lstrip("/"))


# --- Go's filepath.Match syntax ------------------------------------------------------------


class _BadPattern(ValueError):
    def __init__(self) -> None:
        super().__init__("syntax error in pattern")


class _Token(NamedTuple):
    kind: Literal["lit", "esc", "star", "any", "class"]
    char: str = ""
    negated: bool = False
    ranges: tuple[tuple[str, str], ...] = ()


_STAR = _Token("star")
_ANY = _Token("any")
_SLASH = _Token("lit", "/")
_CARET = _Token("lit", "^")
_CLOSE = _Token("lit", "]")
# Go's regexp (RE2) meaning of '\\' + letter, as far as Python's re can say the same.
_RE2_ESCAPES = {
    "a": r"\x07",
    "f": r"\f",
    "t": r"\t",
    "n": r"\n",
    "r": r"\r",
    "v": r"\v",
    "b": r"\b",
    "B": r"\B",
    "A": r"\A",
    "z": r"\Z",
    "d": "[0-9]",
    "D": "[^0-9]",
    "s": r"[\t\n\f\r ]",
    "S": r"[^\t\n\f\r ]",
    "w": "[0-9A-Za-z_]",
    "W": "[^0-9A-Za-z_]",
}


def _tokens(pattern: str) -> list[_Token]:
    """Split a `filepath.Match` pattern, failing where Go's Match returns ErrBadPattern."""
    tokens: list[_Token] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            tokens.append(_STAR)
        elif ch == "?":
            tokens.append(_ANY)
        elif ch == "\\":
            if i + 1 == len(pattern):
                raise _BadPattern
            i += 1
            tokens.append(_Token("esc", pattern[i]))
        elif ch == "[":
            token, i = _bracket(pattern, i + 1)
            tokens.append(token)
            continue
        else:
            tokens.append(_Token("lit", ch))
        i += 1
    return tokens


def _bracket(pattern: str, i: int) -> tuple[_Token, int]:
    """A character class after its '['; only '^' negates, as in Go (not '!')."""
    negated = pattern.startswith("^", i)
    if negated:
        i += 1
    ranges: list[tuple[str, str]] = []
    while not (ranges and pattern.startswith("]", i)):
        lo, i = _class_char(pattern, i)
        hi = lo
        if pattern[i] == "-":
            hi, i = _class_char(pattern, i + 1)
        ranges.append((lo, hi))
    return _Token("class", negated=negated, ranges=tuple(ranges)), i + 1


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """Go's getEsc: a possibly escaped character that may not end the pattern."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise _BadPattern
    if pattern[i] == "\\":
        i += 1
    if i + 1 >= len(pattern):
        raise _BadPattern
    return pattern[i], i + 1


def _class_regex(token: _Token, *, strict: bool) -> str:
    """A Python class; Go's regexp (patternmatcher) rejects a range like z-a, Match ignores it."""
    parts = []
    for lo, hi in token.ranges:
        if lo > hi:
            if strict:
                raise _BadPattern
            continue
        parts.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
    if not parts:
        return "(?s:.)" if token.negated else "(?!)"
    return "[" + "^" * token.negated + "".join(parts) + "]"


def _token_regex(token: _Token, *, strict: bool) -> str:
    if token.kind == "star":
        return "[^/]*"
    if token.kind == "any":
        return "[^/]"
    if token.kind == "class":
        return _class_regex(token, strict=strict)
    return re.escape(token.char)


def _component_matcher(pattern: str) -> re.Pattern[str]:
    """`filepath.Match(pattern, name)` for one path component, as a compiled regex."""
    return re.compile("".join(_token_regex(t, strict=False) for t in _tokens(pattern)))


def _has_wildcards(name: str) -> bool:
    """fsutil's containsWildcards: an escaped character never counts."""
    escaped = False
    for ch in name:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in "*?[":
            return True
    return False


# --- .dockerignore -------------------------------------------------------------------------

_MatchKind = Literal["exact", "prefix", "suffix", "regexp"]


@dataclass(frozen=True)
class Pattern:
    """One patternmatcher pattern: `text` is cleaned and has no leading '!'.

    Matching follows patternmatcher's compile: '**' spans directories, a trailing '**' is a
    prefix test and a leading one a suffix test (so `**file` matches `afile`). Brackets follow
    `filepath.Match`; patternmatcher rewrites '*' and '?' even inside brackets before Go's
    regexp reads them, so brackets holding those (or '\\' + letter, or a POSIX class) can
    match differently there. `Pattern("[")` raises ValueError.
    """

    text: str
    exclusion: bool = False
    kind: _MatchKind = field(init=False, repr=False)
    regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kind, regex = _compile_ignore(self.text)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "regex", regex)

    def matches(self, path: str) -> bool:
        """Whether `path` itself matches, without looking at its parents."""
        if self.regex is not None:
            return self.regex.fullmatch(path) is not None
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        suffix = self.text[2:]
        return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])

    def matches_parent(self, path: str) -> bool:
        """Whether a directory above `path` matches."""
        end = path.find("/")
        while end != -1:
            if self.matches(path[:end]):
                return True
            end = path.find("/", end + 1)
        return False


def _compile_ignore(text: str) -> tuple[_MatchKind, re.Pattern[str] | None]:
    """patternmatcher's `Pattern.compile`: the match type it picks and, for regexp, the regex."""
    tokens = _tokens(text)
    kind: _MatchKind = "exact"
    parts: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.kind == "star" and i + 1 < len(tokens) and tokens[i + 1].kind == "star":
            first = i == 0
            i += 2
            if i < len(tokens) and tokens[i] == _SLASH:
                i += 1
            if i < len(tokens):
                parts.append("(?:.*/)?")
                kind = "regexp"
            elif kind == "exact":
                kind = "prefix"
            else:
                parts.append(".*")
                kind = "regexp"
            if first:
                kind = "suffix"
            continue
        if token.kind != "lit" or token == _CLOSE:
            kind = "regexp"
        parts.append(_ignore_token_regex(token))
        i += 1
    if kind != "regexp":
        return kind, None
    return kind, re.compile("".join(parts), re.ASCII)


def _ignore_token_regex(token: _Token) -> str:
    r"""One token as it ends up in patternmatcher's regex.

    patternmatcher leaves '^' and '\x' to Go's regexp, where '^' anchors and '\b' is a word
    boundary; escapes Python cannot mirror (hex, octal, \p, \Q) are refused as bad patterns.
    """
    if token == _CARET:
        return "^"
    if token.kind != "esc" or (token.char.isascii() and not token.char.isalnum()):
        return _token_regex(token, strict=True)
    if token.char in _RE2_ESCAPES:
        return _RE2_ESCAPES[token.char]
    raise _BadPattern


class _Invalid(Exception):
    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


def _new_patterns(lines: Iterable[str]) -> tuple[Pattern, ...]:
    """patternmatcher.New over `lines`; _Invalid carries the index of the first bad one."""
    patterns: list[Pattern] = []
    for index, line in enumerate(lines):
        text = line.strip(_GO_SPACE)
        if not text:
            continue
        text = _go_clean(text)
        exclusion = text.startswith("!")
        if exclusion:
            text = text[1:]
            if not text:
                raise _Invalid(index, 'illegal exclusion pattern: "!"')
        try:
            patterns.append(Pattern(text, exclusion))
        except _BadPattern as exc:
            raise _Invalid(index, str(exc)) from None
    return tuple(patterns)


def _read_all(text: str) -> list[str]:
    """ignorefile.ReadAll, with '' for each skipped line so that indexes stay line numbers."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    patterns = []
    for raw in lines:
        line = raw.removesuffix("\r")
        pattern = "" if line.startswith("#") else line.strip(_GO_SPACE)
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip(_GO_SPACE)
        if pattern:
            pattern = _go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


_Info = tuple[bool, ...] | None


@dataclass(frozen=True)
class IgnoreRules:
    """The compiled `.dockerignore` of a build context (also used for `--exclude`)."""

    patterns: tuple[Pattern, ...]
    source: str | None = None

    @classmethod
    def load(cls, context: Path, dockerfile: Path) -> IgnoreRules:
        """`<Dockerfile>.dockerignore` beside the Dockerfile wins over `<context>/.dockerignore`."""
        beside = dockerfile.with_name(dockerfile.name + ".dockerignore")
        for candidate in (beside, context / ".dockerignore"):
            if candidate.is_file():
                return cls._read(candidate)
        return cls(())

    @classmethod
    def _read(cls, path: Path) -> IgnoreRules:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ContextError(f"cannot read ignore file: {exc.strerror}", path=path) from None
        return cls.parse(data.decode("utf-8", "surrogateescape"), source=str(path))

    @classmethod
    def parse(cls, text: str, source: str | None = None) -> IgnoreRules:
        """ReadAll then New: a bad pattern is a ContextError naming the file and line."""
        try:
            patterns = _new_patterns(_read_all(text))
        except _Invalid as exc:
            raise ContextError(
                exc.reason, path=source or ".dockerignore", line=exc.index + 1
            ) from None
        return cls(patterns, source)

    def excluded(self, relpath: str) -> bool:
        """patternmatcher's MatchesOrParentMatches; the context root is never excluded."""
        path = _go_clean(relpath)
        if path == ".":
            return False
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            if pattern.matches(path) or pattern.matches_parent(path):
                matched = not pattern.exclusion
        return matched

    @cached_property
    def _has_exceptions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    @cached_property
    def _exception_prefixes(self) -> tuple[str, ...] | None:
        """Where `!` patterns point, or None if one has wildcards and could point anywhere."""
        prefixes = []
        for pattern in self.patterns:
            if pattern.exclusion:
                text = pattern.text.removesuffix("/**").removesuffix("/*")
                if _PATTERN_CHARS.intersection(text):
                    return None
                prefixes.append(text + "/")
        return tuple(prefixes)

    def _prunes(self, directory: str) -> bool:
        """fsutil's rule for skipping an excluded directory: no `!` pattern can reach inside."""
        prefixes = self._exception_prefixes
        if prefixes is None:
            return False
        inside = directory + "/"
        return not any(prefix.startswith(inside) for prefix in prefixes)

    def _step(self, path: str, parent: _Info) -> tuple[bool, _Info]:
        """patternmatcher's MatchesUsingParentResults: what fsutil's walker decides for `path`.

        `parent` is what this returned for the parent directory (None at the top). Unlike
        `excluded`, a pattern skipped for the parent is not carried down, as in fsutil.
        """
        if not self.patterns:
            return False, ()
        matched = False
        result = []
        for index, pattern in enumerate(self.patterns):
            hit = parent[index] if parent else False
            if not hit:
                if pattern.exclusion != matched:
                    result.append(False)
                    continue
                hit = pattern.matches(path) or (not parent and pattern.matches_parent(path))
            result.append(hit)
            if hit:
                matched = not pattern.exclusion
        return matched, tuple(result)


_NO_RULES = IgnoreRules(())


def _exclude_rules(excludes: Sequence[str]) -> IgnoreRules:
    """COPY/ADD `--exclude`: patternmatcher.New, without ReadAll's cleaning of a leading '/'."""
    try:
        return IgnoreRules(_new_patterns(excludes))
    except _Invalid as exc:
        pattern = go_quote(excludes[exc.index])
        raise ContextError(f"invalid --exclude pattern {pattern}: {exc.reason}") from None


# --- the context ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One selected path. `digest` is of the content, of a symlink's target text, or "" (dir)."""

    path: str
    kind: Kind
    executable: bool
    digest: str


class _Node(NamedTuple):
    path: str
    kind: Kind
    executable: bool
    size: int
    ignored: bool
    info: _Info


class _State(NamedTuple):
    info: _Info
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
        self._source_digests: dict[tuple[str, tuple[str, ...], bool], bytes] = {}
        self._excludes: dict[tuple[str, ...], IgnoreRules] = {}

    def select(self, sources: Sequence[str], *, excludes: Sequence[str] = ()) -> tuple[Entry, ...]:
        """Every entry one COPY/ADD reads from the context, sorted by path and deduplicated."""
        chosen: dict[str, Entry] = {}
        for source in sources:
            for entry in self._source(_normalize(source), tuple(excludes), wildcards=True):
                chosen.setdefault(entry.path, entry)
        return tuple(sorted(chosen.values(), key=lambda entry: entry.path))

    def digest(self, sources: Sequence[str], *, excludes: Sequence[str] = ()) -> str:
        """Digest of one COPY/ADD's sources, in the order written, and what each selects.

        Order counts because a later source overwrites an earlier one at the destination.
        """
        return self._digest(sources, tuple(excludes), wildcards=True)

    def bind_digest(self, source: str = "") -> str:
        """Digest for `RUN --mount=type=bind,source=<source>` from the context; no wildcards."""
        return self._digest([source], (), wildcards=False)

    def _digest(self, sources: Sequence[str], excludes: tuple[str, ...], *, wildcards: bool) -> str:
        digest = hashlib.sha256(_DIGEST_VERSION)
        for source in sources:
            normalized = _normalize(source)
            key = (normalized, excludes, wildcards)
            if key not in self._source_digests:
                entries = self._source(normalized, excludes, wildcards=wildcards)
                self._source_digests[key] = _entries_digest(entries)
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
            cut = next((i for i, part in enumerate(parts) if _has_wildcards(part)), None)
            if wildcards and cut is not None:
                found = self._glob("/".join(parts[:cut]), parts[cut:], rules)
            else:
                found = self._literal(rel, rules)
            entries = tuple(sorted(found, key=lambda entry: entry.path))
            self._sources[key] = entries
        return entries

    def _rules_for(self, excludes: tuple[str, ...]) -> IgnoreRules:
        rules = self._excludes.get(excludes)
        if rules is None:
            rules = self._excludes[excludes] = _exclude_rules(excludes)
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
            level = self._glob_level(level, _component_matcher(part), last=depth == len(parts) - 1)
        entries: list[Entry] = []
        for logical, path, _ in level:
            target = self._resolve(path)
            st = None if target is None else self._lookup(target)
            if target is None or st is None:
                raise _not_found(logical)
            entries.extend(self._expand(logical, target, st, excludes))
        return entries

    def _glob_level(
        self, level: list[tuple[str, str, _Info]], matcher: re.Pattern[str], *, last: bool
    ) -> list[tuple[str, str, _Info]]:
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
            executable = bool(st.st_mode & stat.S_IXUSR)
            return [Entry(logical, "file", executable, self._content(real, st.st_size))]
        cut = len(real) + 1 if real else 0
        entries = [Entry(logical or ".", "dir", False, "")]
        for node in self._tree(real, excludes):
            entries.append(self._entry(_join(logical, node.path[cut:]), node))
        return entries

    def _entry(self, path: str, node: _Node) -> Entry:
        if node.kind == "file":
            return Entry(path, "file", node.executable, self._content(node.path, node.size))
        if node.kind == "symlink":
            return Entry(path, "symlink", False, self._link(node.path))
        return Entry(path, "dir", False, "")

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
        return kind == "dir" and not self.ignore._prunes(rel) and bool(self._tree(rel, _NO_RULES))

    def _node_present(self, node: _Node) -> bool:
        if not node.ignored:
            return True
        if node.kind != "dir" or self.ignore._prunes(node.path):
            return False
        return bool(self._tree(node.path, _NO_RULES))

    def _state(self, rel: str) -> _State:
        if not rel:
            return _ROOT
        state = self._states.get(rel)
        if state is None:
            parent_rel = rel.rpartition("/")[0]
            parent = self._state(parent_rel)
            ignored, info = self.ignore._step(rel, parent.info)
            pruned = parent.ignored and self.ignore._prunes(parent_rel)
            state = self._states[rel] = _State(info, ignored, parent.blocked or pruned)
        return state

    def _listing(self, rel: str, info: _Info) -> tuple[_Node, ...]:
        """One directory's files, dirs and symlinks with their .dockerignore verdicts."""
        nodes = self._listings.get(rel)
        if nodes is not None:
            return nodes
        prefix = rel + "/" if rel else ""
        step = self.ignore._step
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
                    executable = kind == "file" and bool(st.st_mode & stat.S_IXUSR)
                    found.append(_Node(path, kind, executable, st.st_size, ignored, child))
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
        info: _Info,
        excludes: IgnoreRules | None,
        cut: int,
        excluded_info: _Info,
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
                hit, node_excluded_info = excludes._step(node.path[cut:], excluded_info)
            if node.kind != "dir":
                if not (node.ignored or hit):
                    out.append(node)
                    found = True
                continue
            if node.ignored and self.ignore._prunes(node.path):
                continue
            if hit and excludes is not None and not excludes._has_exceptions:
                continue
            out.append(node)
            inner = self._collect(node.path, node.info, excludes, cut, node_excluded_info, out)
            if inner or not (node.ignored or hit):
                found = True
            else:
                out.pop()
        return found


def _entries_digest(entries: Iterable[Entry]) -> bytes:
    """NUL-separated fields: no path, target or digest can contain NUL, so this is unambiguous."""
    digest = hashlib.sha256()
    digest.update(
        b"".join(
            b"%s\0%s\0%d\0%s\0"
            % (e.kind.encode(), os.fsencode(e.path), e.executable, e.digest.encode())
            for e in entries
        )
    )
    return digest.digest()
