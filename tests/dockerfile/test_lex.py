"""pipeline.dockerfile.lex against BuildKit's lexer tables (lex_test.go, envVarTest) and quirks."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.dockerfile import lex
from pipeline.dockerfile.lex import Expansion, ExpansionError, expand

# The environment of lex_test.go's TestShellParser4EnvVars.
ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}

UNSET = "is not allowed to be unset"
BAD = "syntax error: bad substitution"
NO_BRACE = "syntax error: missing '}'"
NO_SLASH = "syntax error: missing '/' in ${}"
OPEN_SINGLE = "unexpected end of statement while looking for matching single-quote"
OPEN_DOUBLE = "unexpected end of statement while looking for matching double-quote"


def unsupported(modifier: str) -> str:
    return f"unsupported modifier ({modifier}) in substitution"


def bad_pattern(pattern: str, escaped: str) -> str:
    return f"invalid pattern ({pattern}) in substitution: invalid escape '\\{escaped}'"


# envVarTest lines that expand, with ENV.
ENV_VAR_TEST = [
    ("hello", "hello"),
    ("he'll'o", "hello"),
    (r"he\'llo", "he'llo"),
    (r"abc\tdef", "abctdef"),
    (r'"abc\tdef"', r"abc\tdef"),
    (r'"abc\\tdef"', r"abc\tdef"),
    (r"'abc\tdef'", r"abc\tdef"),
    ("hello\\", "hello"),
    ("hello\\\\", "hello\\"),
    ('"hel\'lo"', "hel'lo"),
    ("'hello\\'", "hello\\"),
    (r"'hello\there'", r"hello\there"),
    (r"'hello\\there'", r"hello\\there"),
    ("\"''\"", "''"),
    ("$.", "$."),
    ("he$1x", "hex"),
    ("he$.x", "he$.x"),
    ("he$pwd.", "he."),
    ("he$PWD", "he/home"),
    (r"he\$PWD", "he$PWD"),
    (r"he\\$PWD", r"he\/home"),
    (r'"he\$PWD"', "he$PWD"),
    (r'"he\\$PWD"', r"he\/home"),
    (r"\${}", "${}"),
    (r"\${}aaa", "${}aaa"),
    (r"he\${}xx", "he${}xx"),
    ("he${hi}", "he"),
    ("he${hi}xx", "hexx"),
    ("he${PWD}", "he/home"),
    ("he${XXX:-000}xx", "he000xx"),
    ("he${PWD:-000}xx", "he/homexx"),
    ("he${XXX:-$PWD}xx", "he/homexx"),
    ("he${XXX:-${PWD:-yyy}}xx", "he/homexx"),
    ("he${XXX:-${YYY:-yyy}}xx", "heyyyxx"),
    ("he${PWD?}", "he/home"),
    ("he${PWD:?}", "he/home"),
    ("he${NULL?}", "he"),
    ("he${XXX:+${PWD}}xx", "hexx"),
    ("he${PWD:+${XXX}}xx", "hexx"),
    ("he${PWD:+${SHELL}}xx", "hebashxx"),
    ("he${XXX:+000}xx", "hexx"),
    ("he${PWD:+000}xx", "he000xx"),
    ("'he${XX}'", "he${XX}"),
    ('"he${PWD}"', "he/home"),
    ("\"he'$PWD'\"", "he'/home'"),
    ('"$PWD"', "/home"),
    ("'$PWD'", "$PWD"),
    (r"'\$PWD'", r"\$PWD"),
    ("'\"hello\"'", '"hello"'),
    (r"'he\$PWD'", r"he\$PWD"),
    ("he${PWD:+${PWD}:}xx", "he/home:xx"),
    (r"he${XXX:-\$PWD:}xx", "he$PWD:xx"),
    (r"he${XXX:-\${PWD}z}xx", "he${PWDz}xx"),
    ("안녕'하'세요", "안녕하세요"),
    (r"안녕\'하세요", "안녕'하세요"),
    (r'"안녕\t하세요"', r"안녕\t하세요"),
    ("$KOREAN", "한국어"),
    ("안녕$KOREAN", "안녕한국어"),
    ("${aaa}}", "}"),
    ("${aaa:-bbb}}", "bbb}"),
    ("${aaa:-bbb}", "bbb"),
    ("${aaa:-${bbb:-ccc}}", "ccc"),
    ("${aaa:-bbb {foo}", "bbb {foo"),
    ("$1", ""),
    ("${1}", ""),
    ("${1:+bbb}", ""),
    ("${1:-bbb}", "bbb"),
    ("$999aaa", "aaa"),
    ("${999:-bbb}aaa", "bbbaaa"),
    ("$001aaa", "aaa"),
    ("${001:+bbb}aaa", "aaa"),
    ("$@", ""),
    ("$@@@", "@@"),
    ("$@aaa", "aaa"),
    ("${@:-bbb}aaa", "bbbaaa"),
    ("$*", ""),
    ("${*:-bbb}", "bbb"),
    ("$#", ""),
    ("${#:+bbb}", ""),
    ("$?", ""),
    ("${?:-bbb}", "bbb"),
    ("$-", ""),
    ("${-:-bbb}", "bbb"),
    ("$$", ""),
    ("${$:-bbb}", "bbb"),
    ("$!", ""),
    ("${!:-bbb}", "bbb"),
    ("$0", ""),
    ("${0:-bbb}", "bbb"),
]

# envVarTest lines that fail, with lex.go's reason.
ENV_VAR_ERRORS = [
    ("he'llo", OPEN_SINGLE),
    (r"he\\'llo", OPEN_SINGLE),
    ("'hello", OPEN_SINGLE),
    ("안녕'하세요", OPEN_SINGLE),
    ('"hello', OPEN_DOUBLE),
    ('"hello\\"', OPEN_DOUBLE),
    ("${}", BAD),
    ("${}aaa", BAD),
    ("he${}xx", BAD),
    ("${{aaa}", BAD),
    ("${{aaa:-bbb}", BAD),
    ("${:}", BAD),
    ("${:-bbb}", BAD),
    ("${:+bbb}", BAD),
    ("he${.}", unsupported(".")),
    ("he${XXX:YYY}", unsupported(":Y")),
    ("he${PWD:=000}xx", unsupported(":=")),
    ("he${XXX?}", f"XXX: {UNSET}"),
    ("he${XXX:?}", f"XXX: {UNSET}"),
    ("he${NULL:?}", "NULL: is not allowed to be empty"),
    # lex.go reads EOF as the modifier and prints rune(-1) as U+FFFD.
    ("he${PWD", unsupported("\ufffd")),
    ("${aaa", unsupported("\ufffd")),
    ("${aaa:-bbb", NO_BRACE),
    ("${aaa:-bbb ${foo}", NO_BRACE),
]

# lex_test.go's TestProcessWithMatches, then our own: (word, env, value, used, unset).
WITH_MATCHES: list[tuple[str, dict[str, str], str, set[str], set[str]]] = [
    ("x", {"DUMMY": "dummy"}, "x", set(), set()),
    ("x ${UNUSED}", {"DUMMY": "dummy"}, "x ", set(), {"UNUSED"}),
    ("x ${FOO}", {"FOO": "y"}, "x y", {"FOO"}, set()),
    (
        "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
        {"FOO": "xxx", "BAR": ""},
        "xxx  ccc",
        {"FOO", "BAR"},
        {"BAZ"},
    ),
    (
        "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
        {"FOO": "xxx", "BAR": ""},
        "xxx bbb ccc",
        {"FOO", "BAR"},
        {"BAZ"},
    ),
    ("${FOO:-}", {"FOO": "xxx", "BAR": ""}, "xxx", {"FOO"}, set()),
    ("${FOO:-}", {}, "", set(), {"FOO"}),
    (
        "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
        {"FOO": "xxx", "BAR": ""},
        "aaa bbb ",
        {"FOO", "BAR"},
        {"BAZ"},
    ),
    (
        "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
        {"FOO": "xxx", "BAR": ""},
        "aaa  ",
        {"FOO", "BAR"},
        {"BAZ"},
    ),
    ("${FOO?aaa}", {"FOO": "xxx", "BAR": ""}, "xxx", {"FOO"}, set()),
    ("${BAR?bbb}", {"FOO": "xxx", "BAR": ""}, "", {"BAR"}, set()),
    ("${FOO:?aaa}", {"FOO": "xxx", "BAR": ""}, "xxx", {"FOO"}, set()),
    (r"${FOO#()[]{\}^$.\*\?|\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x", {"FOO"}, set()),
    (r"${FOO%%\**}", {"FOO": "xx**"}, "xx", {"FOO"}, set()),
    ("${FOO#*x*y}", {"FOO": "xxyy"}, "y", {"FOO"}, set()),
    ("${FOO#*}", {"FOO": "xxyy"}, "xxyy", {"FOO"}, set()),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy", {"FOO", "BAR"}, set()),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy", {"FOO", "BAR"}, set()),
    ("${FOO#}", {"FOO": "xxyy"}, "xxyy", {"FOO"}, set()),
    ("${FOO##*x}", {"FOO": "xxyy"}, "yy", {"FOO"}, set()),
    ("${FOO##}", {"FOO": "xxyy"}, "xxyy", {"FOO"}, set()),
    (r"${FOO#?\?}", {"FOO": "???y"}, "?y", {"FOO"}, set()),
    ("${ABC:-.}${FOO%x}${ABC:-.}", {"FOO": "xxyy"}, ".xxyy.", {"FOO"}, {"ABC"}),
    (r"${FOO%%\**\*}", {"FOO": "a***yy*"}, "a", {"FOO"}, set()),
    ("${FOO%}", {"FOO": "xxyy"}, "xxyy", {"FOO"}, set()),
    ("${FOO%%$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy", {"FOO", "BAR"}, set()),
    (
        "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
        {"FOO": "/foo*/*/*.txt", "NEEDLE": "\\*/"},
        "/foo.*/*.txt - /foo..*.txt",
        {"FOO", "NEEDLE"},
        set(),
    ),
    (
        "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
        {"FOO": "/tmp/tmp/bar.txt", "NEEDLE": "/tmp"},
        "/tmp/bar.txt - /bar.txt",
        {"FOO", "NEEDLE"},
        set(),
    ),
    (
        "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
        {"FOO": "/a/foo/b/c.txt", "NEEDLE": "/?/", "REPLACEMENT": "/"},
        "/foo/b/c.txt - /foo/c.txt",
        {"FOO", "NEEDLE", "REPLACEMENT"},
        set(),
    ),
    (
        "${FOO/$NEEDLE/$REPLACEMENT}",
        {"FOO": "http://google.de", "NEEDLE": "http://", "REPLACEMENT": "https://"},
        "https://google.de",
        {"FOO", "NEEDLE", "REPLACEMENT"},
        set(),
    ),
    (r"${FOO//\//\/}", {"FOO": "/tmp/foo.txt"}, r"\/tmp\/foo.txt", {"FOO"}, set()),
    ("${FOO/$BAR/ww}", {"FOO": "xxyy", "BAR": ""}, "wwxxyy", {"FOO", "BAR"}, set()),
    ("${FOO///}", {"FOO": "xxyy"}, "xxyy", {"FOO"}, set()),
    ("${FOO///}", {}, "", set(), {"FOO"}),
    # The operand is expanded, and its names recorded, even when it is not used.
    ("${PWD:-$XXX}", ENV, "/home", {"PWD"}, {"XXX"}),
    ("${A:+$B}", {"A": "", "B": "b"}, "", {"A", "B"}, set()),
    ("$1${@}$$", {}, "", set(), {"1", "@", "$"}),
    ("'$A'\\$B", {}, "$A$B", set(), set()),
    ("$pwd$PWD", {"PWD": "/home"}, "/home", {"PWD"}, {"pwd"}),
    ("${+x}", {}, "", set(), {""}),
]

# Forms the BuildKit tables leave out, each checked against lex.go itself.
MORE_FORMS = [
    ("${V%x*}", {"V": "axbxc"}, "axb"),
    ("${V%%x*}", {"V": "axbxc"}, "a"),
    ("${V#*x}", {"V": "axbxc"}, "bxc"),
    ("${V##*x}", {"V": "axbxc"}, "c"),
    ("${V/x/_}", {"V": "axbxc"}, "a_bxc"),
    ("${V//x/_}", {"V": "axbxc"}, "a_b_c"),
    ("${V//?/-}", {"V": "abc"}, "---"),
    ("${V/x/_}", {}, ""),
    ("${V-}", {}, ""),
    ("${V+'x y'}", {"V": ""}, "x y"),
    ("${V:-\\}}", {}, "}"),
    ('${V:-a"}"b}', {}, "a}b"),
    ("${V:-$}x}", {}, "$x}"),
    ("$'x'", {}, "$x"),
    ("$", {}, "$"),
    ("a$", {}, "a$"),
    ("a<<b", {}, "a<<b"),
    ("${KOREAN#?}", ENV, "국어"),
    ("${KOREAN%?}", ENV, "한국"),
    # Go's ReplaceAllString: an empty match right after a match is skipped.
    ("${V//*/r}", {"V": "abc"}, "r"),
    ("${V//$E/-}", {"V": "abc", "E": ""}, "-a-b-c-"),
    # Only `//` runs the replacement through Go's Regexp.Expand.
    ("${V//b/$R}", {"V": "abc", "R": "[$0]"}, "a[b]c"),
    ("${V//b/$R}", {"V": "abc", "R": "${0}$1$x"}, "abc"),
    ("${V//b/$R}", {"V": "abc", "R": "$$"}, "a$c"),
    ("${V//b/$R}", {"V": "abc", "R": "$"}, "a$c"),
    ("${V/b/$R}", {"V": "abc", "R": "[$0]"}, "a[$0]c"),
    # Quotes do not stop `*` being a wildcard; only `\*` does.
    ("${V#'*'}", {"V": "*abc"}, "*abc"),
    (r"${V#\*}", {"V": "*abc"}, "abc"),
    # A quoted `#` still doubles the operator.
    ("${V#a*}", {"V": "abab"}, "bab"),
    ("${V#'#'a*}", {"V": "abab"}, ""),
    # Patterns keep escapes, and inside "..." an ordinary escape is kept twice.
    (r'${V#"\*"}', {"V": "\\abc"}, "abc"),
    # Go's `.` does not match a newline.
    ("${V##*}", {"V": "a\nb"}, "\nb"),
    # text/scanner drops a leading byte-order mark, and only that one.
    ("\ufeffa", {}, "a"),
    ("a\ufeff", {}, "a\ufeff"),
]

MORE_ERRORS = [
    ("${", {}, NO_BRACE),
    ("${V:", {}, NO_BRACE),
    ("${V:}", {}, NO_BRACE),
    ("${V:}x}", {}, unsupported(":}")),
    ("${V/a", {}, NO_SLASH),
    ("${V/a/b", {}, NO_BRACE),
    ("${FOO//ww}", {"FOO": "xxyy"}, NO_SLASH),
    ("${FOO//}", {"FOO": "xxyy"}, NO_SLASH),
    ("${FOO=aaa}", {"FOO": "xxx"}, unsupported("=")),
    ("${FOO=:aaa}", {"FOO": "xxx"}, unsupported("=")),
    ("${FOO=}", {}, unsupported("=")),
    ("${FOO:#}", {}, unsupported(":#")),
    ("${FOO:##}", {}, unsupported(":#")),
    ("${FOO:%}", {}, unsupported(":%")),
    ("${FOO:%%}", {}, unsupported(":%")),
    ("${V:/a/b}", {}, unsupported(":/")),
    ("${-x}", {}, unsupported("x")),
    ("${1a}", {}, unsupported("a")),
    ("${BAZ?ccc}", {"FOO": "xxx"}, "BAZ: ccc"),
    ("${BAR:?bbb}", {"BAR": ""}, "BAR: bbb"),
    ("${BAZ:?}", {}, f"BAZ: {UNSET}"),
    ("${V:?must be set}", {}, "V: must be set"),
    ("${V?$W}", {"W": "w"}, "V: w"),
    ("${V:-${}}", {}, BAD),
    ("${V:-${W:?oops}}", {}, "W: oops"),
    # Any failure that reaches the end of the word turns into a missing brace.
    ("${V:-${W:?oops}", {}, NO_BRACE),
    ("${V:-'x}", {}, NO_BRACE),
    (r"${V#\x}", {"V": "a"}, bad_pattern(r"\x", "x")),
    (r"${V/\x/y}", {"V": "a"}, bad_pattern(r"\x", "x")),
    # `%` matches the reversed pattern, and the message shows it reversed.
    (r"${V%a\x}", {"V": "a"}, bad_pattern(r"\xa", "x")),
    ("${V#$P}", {"V": "a", "P": "\\"}, bad_pattern("\\", "\ufffd")),
    (r'${V#"a\"b"}', {}, bad_pattern(r"a\"b", '"')),
]

# With `# escape=` set to a backtick; patterns still escape with `\`.
BACKTICK = [
    ("he`$PWD", ENV, "he$PWD"),
    ("he\\$PWD", ENV, "he\\/home"),
    ("C:\\Windows\\$NULL", ENV, "C:\\Windows\\"),
    ('"a`"b"', {}, 'a"b'),
    ('"a\\b"', {}, "a\\b"),
    ('"a``b"', {}, "a`b"),
    ("hello`", {}, "hello"),
    ("````", {}, "``"),
    ("${V:-`}}", {}, "}"),
    ("${V#`*}", {"V": "*abc"}, "*abc"),
    ("${V#`a}", {"V": "`abc"}, "bc"),
    ("${V#\\*}", {"V": "*abc"}, "abc"),
]


@pytest.mark.parametrize(("word", "value"), ENV_VAR_TEST)
def test_env_var_test(word: str, value: str) -> None:
    assert expand(word, ENV).value == value


@pytest.mark.parametrize(("word", "reason"), ENV_VAR_ERRORS)
def test_env_var_test_errors(word: str, reason: str) -> None:
    with pytest.raises(ExpansionError) as caught:
        expand(word, ENV)
    assert caught.value.reason == reason


@pytest.mark.parametrize(("word", "env", "value", "used", "unset"), WITH_MATCHES)
def test_matches(
    word: str, env: dict[str, str], value: str, used: set[str], unset: set[str]
) -> None:
    assert expand(word, env) == Expansion(value, frozenset(used), frozenset(unset))


@pytest.mark.parametrize(("word", "env", "value"), MORE_FORMS)
def test_more_forms(word: str, env: dict[str, str], value: str) -> None:
    assert expand(word, env).value == value


@pytest.mark.parametrize(("word", "env", "reason"), MORE_ERRORS)
def test_more_errors(word: str, env: dict[str, str], reason: str) -> None:
    with pytest.raises(ExpansionError) as caught:
        expand(word, env)
    assert caught.value.reason == reason


@pytest.mark.parametrize(("word", "env", "value"), BACKTICK)
def test_backtick_escape(word: str, env: dict[str, str], value: str) -> None:
    assert expand(word, env, escape="`").value == value


def test_backtick_escape_leaves_pattern_escapes_to_backslash() -> None:
    with pytest.raises(ExpansionError) as caught:
        expand(r"${V#\x}", {"V": "a"}, escape="`")
    assert caught.value.reason == bad_pattern(r"\x", "x")


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ({"VAR": "plain", "ARG": "x"}, "plain"),
        ({"VAR": "", "ARG": "x"}, None),
        ({"ARG": "x"}, None),
    ],
)
def test_mandatory_not_empty(env: dict[str, str], value: str | None) -> None:
    word = "${VAR:?message here$ARG}"
    if value is not None:
        assert expand(word, env).value == value
        return
    with pytest.raises(ExpansionError, match="VAR: message herex"):
        expand(word, env)


@pytest.mark.parametrize(
    ("env", "value"),
    [({"VAR": "plain", "ARG": "x"}, "plain"), ({"VAR": "", "ARG": "x"}, ""), ({"ARG": "x"}, None)],
)
def test_mandatory_set(env: dict[str, str], value: str | None) -> None:
    word = "${VAR?message here$ARG}"
    if value is not None:
        assert expand(word, env).value == value
        return
    with pytest.raises(ExpansionError, match="VAR: message herex"):
        expand(word, env)


@pytest.mark.parametrize(
    ("variant", "name"),
    [
        ({"TARGETVARIANT": "v7"}, "linux-arm-v7"),
        ({"TARGETVARIANT": ""}, "linux-arm"),
        ({}, "linux-arm"),
    ],
)
def test_release_file_name(variant: dict[str, str], name: str) -> None:
    word = "x-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz"
    env = {"VERSION": "v1.2.3", "TARGETOS": "linux", "TARGETARCH": "arm", **variant}
    assert expand(word, env).value == f"x-v1.2.3.{name}.tar.gz"


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("he${}", 'failed to process "he${}": syntax error: bad substitution'),
        ('x"\t\\', f'failed to process "x\\"\\t\\\\": {OPEN_DOUBLE}'),
        ("${\u200b}\x00", 'failed to process "${\\u200b}\\x00": ' + unsupported("\u200b")),
        ("${\U0001f600}", 'failed to process "${\U0001f600}": ' + unsupported("\U0001f600")),
    ],
)
def test_error_message_quotes_the_word_like_go(word: str, message: str) -> None:
    with pytest.raises(ExpansionError) as caught:
        expand(word, {})
    assert str(caught.value) == message
    assert caught.value.word == word


def test_error_is_a_value_error() -> None:
    assert issubclass(ExpansionError, ValueError)


def test_other_escape_characters_are_refused() -> None:
    with pytest.raises(ValueError, match="escape must be"):
        expand("x", {}, escape="'")


def test_exports() -> None:
    assert sorted(lex.__all__) == ["Expansion", "ExpansionError", "expand"]


LEXER_CHARS = st.sampled_from([*"${}:-+?#%/*\\`'\"aAbx_019@ \n", "\ufeff", "한"])
NAMES = st.sampled_from(["a", "A", "b", "1", "@", ""])
ENVS = st.dictionaries(NAMES, st.text(st.sampled_from([*"ab*?\\/}{$`.\n"]), max_size=6))


@given(
    st.text(st.characters(exclude_characters="$'\"\\`\ufeff")),
    st.sampled_from(["\\", "`"]),
)
def test_plain_text_is_unchanged(text: str, escape: str) -> None:
    assert expand(text, ENV, escape=escape) == Expansion(text, frozenset(), frozenset())


@given(st.one_of(st.text(LEXER_CHARS, max_size=30), st.text()), ENVS, st.sampled_from(["\\", "`"]))
def test_only_expansion_errors_escape(word: str, env: dict[str, str], escape: str) -> None:
    with contextlib.suppress(ExpansionError):
        expand(word, env, escape=escape)
