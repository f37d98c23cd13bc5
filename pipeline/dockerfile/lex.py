"""Dockerfile variable expansion of a single word, exactly as BuildKit does it.

This follows `frontend/dockerfile/shell/lex.go` (`ProcessWordWithMatches`) at
moby/buildkit 73ed6825. FROM image names, `--platform` values and ARG defaults
then expand as `docker build` expands them, and fail with the same messages.
The lexer's parts keep lex.go's names (`processDollar`, `processStopOn`,
`trimSuffix`, ...) so that the two can be compared side by side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.dockerfile.gostrings import go_quote

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["Expansion", "ExpansionError", "expand"]

# Go turns rune(-1), the scanner's EOF, into U+FFFD when it formats it.
_EOF_RUNE = "\ufffd"
# Go's text/scanner drops a byte-order mark at the start of its input.
_BOM = "\ufeff"
_ESCAPE_TOKENS = ("\\", "`")
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_MISSING_BRACE = "syntax error: missing '}'"
_MISSING_SLASH = "syntax error: missing '/' in ${}"


class ExpansionError(ValueError):
    """A word BuildKit refuses to expand.

    `str()` is BuildKit's whole message, `failed to process "<word>": <reason>`;
    `reason` alone is lex.go's text, such as `syntax error: bad substitution`.
    """

    def __init__(self, word: str, reason: str) -> None:
        super().__init__(f"failed to process {go_quote(word)}: {reason}")
        self.word = word
        self.reason = reason


@dataclass(frozen=True)
class Expansion:
    """The expanded word plus the names it referenced, for unused-ARG checks."""

    value: str
    used: frozenset[str]
    unset: frozenset[str]


def expand(word: str, env: Mapping[str, str], *, escape: str = "\\") -> Expansion:
    """Expand `word` as one word: quotes removed, no splitting.

    A name missing from `env` is unset, which is not the same as set to "".
    `escape` is the Dockerfile's `# escape=` character.
    """
    if escape not in _ESCAPE_TOKENS:
        raise ValueError(f"escape must be \\ or `, not {escape!r}")
    lexer = _Lexer(word, env, escape)
    try:
        value = lexer.process_stop_on(None, raw=False)
    except _Failure as failure:
        raise ExpansionError(word, failure.reason) from None
    return Expansion(value, frozenset(lexer.used), frozenset(lexer.unset))


class _Failure(Exception):
    """Unwinds the lexer; `expand` adds the word to make an ExpansionError."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _unsupported(modifier: str) -> _Failure:
    return _Failure(f"unsupported modifier ({modifier}) in substitution")


class _Lexer:
    """A cursor over one word, with lex.go's shellWord methods."""

    def __init__(self, word: str, env: Mapping[str, str], escape: str) -> None:
        self._text = word.removeprefix(_BOM)
        self._pos = 0
        self._env = env
        self._escape = escape
        self.used: set[str] = set()
        self.unset: set[str] = set()

    def _peek(self) -> str | None:
        return self._text[self._pos] if self._pos < len(self._text) else None

    def _next(self) -> str | None:
        ch = self._peek()
        if ch is not None:
            self._pos += 1
        return ch

    def _take_while(self, accept: Callable[[str], bool]) -> str:
        start = self._pos
        while self._pos < len(self._text) and accept(self._text[self._pos]):
            self._pos += 1
        return self._text[start : self._pos]

    def _lookup(self, name: str) -> str | None:
        """Read a variable and record it, like lex.go's getEnv."""
        if name in self._env:
            self.used.add(name)
            return self._env[name]
        self.unset.add(name)
        return None

    def process_stop_on(self, stop: str | None, *, raw: bool) -> str:
        """Expand up to the unquoted `stop` character, or to the end when it is None.

        `raw` keeps escape characters in the output; BuildKit sets it for
        patterns, whose escapes the pattern matcher reads again.
        """
        out: list[str] = []
        while (ch := self._peek()) is not None:
            if ch == stop:
                self._next()
                return "".join(out)
            if ch == "$":
                out.append(self._process_dollar())
            elif ch == "'":
                out.append(self._process_single_quote())
            elif ch == '"':
                out.append(self._process_double_quote(raw=raw))
            else:
                self._next()
                if ch == self._escape:
                    if raw:
                        out.append(ch)
                    ch = self._next() or ""
                out.append(ch)
        if stop is not None:
            raise _Failure(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out)

    def _operand(self, stop: str, *, raw: bool, missing: str) -> str:
        """Read the word inside `${...}`; any failure at the end of input becomes `missing`."""
        try:
            return self.process_stop_on(stop, raw=raw)
        except _Failure:
            if self._peek() is None:
                raise _Failure(missing) from None
            raise

    def _process_single_quote(self) -> str:
        self._next()
        out: list[str] = []
        while (ch := self._next()) != "'":
            if ch is None:
                raise _Failure(
                    "unexpected end of statement while looking for matching single-quote"
                )
            out.append(ch)
        return "".join(out)

    def _process_double_quote(self, *, raw: bool) -> str:
        """Only `"`, `$` and the escape character can be escaped; other escapes stay."""
        self._next()
        out: list[str] = []
        while (ch := self._peek()) != '"':
            if ch is None:
                raise _Failure(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == "$":
                out.append(self._process_dollar())
                continue
            self._next()
            if ch == self._escape:
                if raw:
                    out.append(ch)
                if self._peek() in ('"', "$", self._escape):
                    ch = self._next() or ""
            out.append(ch)
        self._next()
        return "".join(out)

    def _process_dollar(self) -> str:
        self._next()
        if self._peek() == "{":
            return self._process_braces()
        name = self._process_name()
        if not name:
            return "$"
        return self._lookup(name) or ""

    def _process_name(self) -> str:
        """Read a name; digits and shell special parameters stop it early."""
        first = self._peek()
        if first is None:
            return ""
        if first.isdecimal():
            return self._take_while(str.isdecimal)
        if first in _SPECIAL_PARAMS:
            self._next()
            return first
        return self._take_while(_is_name_char)

    def _process_braces(self) -> str:
        self._next()
        head = self._peek()
        if head is None:
            raise _Failure(_MISSING_BRACE)
        if head in "{}:":
            raise _Failure("syntax error: bad substitution")
        name = self._process_name()
        op = self._next()
        if op == "}":
            return self._lookup(name) or ""
        if op == "/":
            return self._process_replace(name)
        if op == ":":
            op = self._next()
            return self._process_modifier(name, op, ":" + (op or _EOF_RUNE), colon=True)
        if op is not None and op in "+-?#%":
            return self._process_modifier(name, op, op, colon=False)
        raise _unsupported(op or _EOF_RUNE)

    def _process_modifier(self, name: str, op: str | None, spelled: str, *, colon: bool) -> str:
        """`${V-w}` and friends; the word is expanded even when it goes unused."""
        patterned = op in ("#", "%")
        if colon and patterned:
            raise _unsupported(spelled)
        word = self._operand("}", raw=patterned, missing=_MISSING_BRACE)
        value = self._lookup(name)
        if op == "-":
            return word if value is None or (colon and not value) else value
        if op == "+":
            return "" if value is None or (colon and not value) else word
        if op == "?":
            if value is None:
                raise _Failure(f"{name}: {word or 'is not allowed to be unset'}")
            if colon and not value:
                raise _Failure(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if op == "#":
            return _trim(op, word, value or "", _trim_prefix)
        if op == "%":
            return _trim(op, word, value or "", _trim_suffix)
        raise _unsupported(spelled)

    def _process_replace(self, name: str) -> str:
        every = self._peek() == "/"
        if every:
            self._next()
        pattern = self._operand("/", raw=True, missing=_MISSING_SLASH)
        replacement = self._operand("}", raw=True, missing=_MISSING_BRACE)
        value = self._lookup(name) or ""
        regex = _shell_pattern(pattern, greedy=True)
        if every:
            return _replace_all(regex, value, replacement)
        found = regex.search(value)
        if found is None:
            return value
        return value[: found.start()] + replacement + value[found.end() :]


def _is_name_char(ch: str) -> bool:
    """Go's unicode.IsLetter/IsDigit: categories L* and Nd, unlike str.isalnum."""
    return ch == "_" or ch.isalpha() or ch.isdecimal()


def _trim(op: str, pattern: str, value: str, trim: Callable[[str, str, bool], str]) -> str:
    """A doubled operator (`##`, `%%`) asks for the longest match."""
    greedy = pattern.startswith(op)
    return trim(pattern[1:] if greedy else pattern, value, greedy)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    found = _shell_pattern(pattern, greedy=greedy).match(value)
    return value if found is None else value[found.end() :]


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    """Regexes find the leftmost match, so match the reversed pattern at the reversed start."""
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def _reverse_pattern(pattern: str) -> str:
    r"""Reverse the pattern but keep each `\x` escape pair in order."""
    return "".join(reversed(re.findall(r"\\.|.", pattern, re.DOTALL)))


def _shell_pattern(pattern: str, *, greedy: bool) -> re.Pattern[str]:
    r"""Compile a `*`/`?` pattern as lex.go's convertShellPatternToRegex does.

    The escape is always `\`, whatever `# escape=` says. `\}` and `\/` drop the
    backslash, and `\` may only escape `*`, `?` and `\`. `.` does not match a
    newline, as in Go.
    """
    star = ".*" if greedy else ".*?"
    text = pattern.removeprefix(_BOM)
    parts: list[str] = []
    i = 0
    while i < len(text):
        tok = text[i]
        i += 1
        if tok == "*":
            parts.append(star)
        elif tok == "?":
            parts.append(".")
        elif tok != "\\":
            parts.append(re.escape(tok))
        elif text[i : i + 1] not in ("}", "/"):
            escaped = text[i : i + 1]
            i += 1
            if escaped not in ("*", "?", "\\"):
                raise _Failure(
                    f"invalid pattern ({pattern}) in substitution: "
                    f"invalid escape '\\{escaped or _EOF_RUNE}'"
                )
            parts.append(re.escape(escaped))
    return re.compile("".join(parts))


def _replace_all(regex: re.Pattern[str], value: str, template: str) -> str:
    """Go's Regexp.ReplaceAllString.

    Unlike re.sub, an empty match right after a match is not replaced, and
    `$` in the replacement refers to the match.
    """
    out: list[str] = []
    last_end = 0
    pos = 0
    while pos <= len(value) and (found := regex.search(value, pos)) is not None:
        out.append(value[last_end : found.start()])
        if found.end() > last_end or found.start() == 0:
            out.append(_expand_template(template, found.group()))
        last_end = found.end()
        pos = max(pos + 1, found.end())
    out.append(value[last_end:])
    return "".join(out)


def _expand_template(template: str, match: str) -> str:
    """Go's Regexp.Expand for a regex with no groups.

    `$$` is `$`, `$0` or `${0}` is the match, and any other reference is
    empty. A `$` that starts no reference is kept as it is.
    """
    out: list[str] = []
    rest = template
    while "$" in rest:
        before, _, rest = rest.partition("$")
        out.append(before)
        if rest.startswith("$"):
            out.append("$")
            rest = rest[1:]
            continue
        reference = _template_reference(rest)
        if reference is None:
            out.append("$")
            continue
        name, rest = reference
        if name == "0":
            out.append(match)
    out.append(rest)
    return "".join(out)


def _template_reference(text: str) -> tuple[str, str] | None:
    """Split `name...` or `{name}...` into the name and the rest."""
    braced = text.startswith("{")
    body = text[1:] if braced else text
    end = 0
    while end < len(body) and _is_name_char(body[end]):
        end += 1
    if end == 0:
        return None
    if not braced:
        return body[:end], body[end:]
    if body[end : end + 1] != "}":
        return None
    return body[:end], body[end + 1 :]
