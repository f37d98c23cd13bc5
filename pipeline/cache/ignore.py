"""Go's `filepath.Match` and the `.dockerignore` rules, as BuildKit applies them.

This mirrors moby/patternmatcher and fsutil (moby/buildkit 73ed6825):

- `.dockerignore` is read by patternmatcher's `ignorefile.ReadAll`: a `<Dockerfile>.dockerignore`
  beside the Dockerfile wins over `<context>/.dockerignore`. Patterns compile as patternmatcher's
  `New` compiles them: the last matching pattern wins, a pattern matching a directory matches
  everything below it, and `!` re-includes even inside an excluded directory.
- COPY/ADD `--exclude` patterns are the same rules, without ReadAll's cleaning.
- The walk of the build context (`pipeline.cache.context`) asks, per path, what fsutil's walker
  decides (`IgnoreRules.walk_match`) and whether it may skip an excluded directory unlisted
  (`IgnoreRules.prunes`, `IgnoreRules.has_exceptions`); source wildcards resolve one path
  component at a time with `component_matcher`, Go's `filepath.Match`.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Literal, NamedTuple

from pipeline.dockerfile.gostrings import go_quote
from pipeline.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

__all__ = [
    "ContextError",
    "IgnoreRules",
    "MatchInfo",
    "Pattern",
    "component_matcher",
    "has_wildcards",
]

# Go's unicode.IsSpace, which strings.TrimSpace uses; str.strip() also trims \x1c-\x1f.
_GO_SPACE = " \t\n\v\f\r\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(
    map(chr, range(0x2000, 0x200B))
)
# fsutil's patternChars: an exception containing one of these may re-include anything.
_PATTERN_CHARS = frozenset("*[]?^\\")


class ContextError(UsageError):
    """A source or ignore pattern BuildKit would refuse, in BuildKit's words.

    Defined here, beside the ignore rules, because both they and the context walk raise it.
    Raised without a location for sources (the caller knows the Dockerfile line), and with the
    ignore file and line for a bad `.dockerignore` pattern.
    """


def _go_clean(path: str) -> str:
    """Go's filepath.Clean; posixpath keeps a leading '//', Go does not."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


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


def component_matcher(pattern: str) -> re.Pattern[str]:
    """`filepath.Match(pattern, name)` for one path component, as a compiled regex.

    fsutil's `ResolveWildcards` matches a COPY source this way, a component at a time, so a
    wildcard never spans a '/'. A malformed pattern raises ValueError.
    """
    return re.compile("".join(_token_regex(t, strict=False) for t in _tokens(pattern)))


def has_wildcards(name: str) -> bool:
    """fsutil's containsWildcards: whether a source component is a pattern or a literal name.

    An escaped character never counts.
    """
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


MatchInfo = tuple[bool, ...] | None
"""patternmatcher's MatchInfo: which patterns matched a directory, for a walk to pass down.

None above the top of a walk (the context root, or the source an `--exclude` is relative to).
"""


@dataclass(frozen=True)
class IgnoreRules:
    """The compiled `.dockerignore` of a build context (also used for `--exclude`).

    `excluded` answers for one path; a walk asks `walk_match`, `prunes` and `has_exceptions`
    instead, which decide as fsutil's walker and copier do, a directory at a time.
    """

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

    @classmethod
    def for_excludes(cls, excludes: Sequence[str]) -> IgnoreRules:
        """COPY/ADD `--exclude`: patternmatcher.New, without ReadAll's cleaning of a leading '/'.

        A bad pattern is a ContextError quoting it, without a location: the caller knows the
        Dockerfile line.
        """
        try:
            return cls(_new_patterns(excludes))
        except _Invalid as exc:
            pattern = go_quote(excludes[exc.index])
            raise ContextError(f"invalid --exclude pattern {pattern}: {exc.reason}") from None

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

    def walk_match(self, path: str, parent: MatchInfo) -> tuple[bool, MatchInfo]:
        """Whether a walk drops `path`, and the MatchInfo to pass to its children.

        patternmatcher's MatchesUsingParentResults, which fsutil's walker uses; `parent` is what
        this returned for the parent directory. Unlike `excluded`, a pattern skipped for the
        parent is not carried down, as in fsutil, so a walk must use this and not `excluded`.
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

    def prunes(self, directory: str) -> bool:
        """Whether a walk may skip an excluded `directory` without listing it.

        fsutil's rule for the context it sends: no `!` pattern can reach inside. An exception
        with wildcards could reach anywhere, so then nothing is pruned.
        """
        prefixes = self._exception_prefixes
        if prefixes is None:
            return False
        inside = directory + "/"
        return not any(prefix.startswith(inside) for prefix in prefixes)

    @cached_property
    def has_exceptions(self) -> bool:
        """Whether any pattern is a `!` one.

        fsutil's copier, which applies `--exclude`, skips an excluded directory unlisted only
        when none is: a coarser rule than `prunes`.
        """
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
