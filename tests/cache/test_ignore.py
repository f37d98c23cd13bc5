"""The .dockerignore and --exclude rules against patternmatcher's tables and BuildKit."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cache.ignore import (
    ContextError,
    IgnoreRules,
    Pattern,
    component_matcher,
    has_wildcards,
)
from pipeline.errors import UsageError

# (patterns, path, excluded): BUILDKIT-NOTES §4's examples, then moby/patternmatcher
# (TestPatternMatches*, TestMatches and its multiPatternTests, TestMatch's matchTests).
NOTES_TABLE = [
    (["*.go"], "fileutils.go", True),
    (["!fileutils.go", "*.go"], "fileutils.go", True),
    (["*.go", "!fileutils.go"], "fileutils.go", False),
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs/", "!docs/README.md"], "docs/README.md", False),
    (["docs/*", "!docs/README.md"], "docs/README.md", False),
    (["**/dir"], "dir/file", True),
    (["abc/**"], "abc", False),
    (["abc/**"], "abc/def", True),
    (["a/*.txt"], "a/dir/file.txt", False),
    (["**/*.txt"], "file.txt", True),
    ([".*"], ".foo", True),
    ([".*"], "foo", False),
    (["abc?def"], "abcdef", False),
    (["abc?def"], "abcZdef", True),
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (["*.md", "!README*.md", "README-secret.md"], "README-secret.md", True),
    (["*.md", "!README*.md", "README-secret.md"], "README.md", False),
    (["*.md", "README-secret.md", "!README*.md"], "README-secret.md", False),
    (["*.md", "!README.md"], "sub/x.md", False),
]

WHEEL = "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"

# TestMatches' single-pattern table, every row.
TEST_MATCHES = [
    ("**", "file", True),
    ("**", "file/", True),
    ("**/", "file", True),
    ("**/", "file/", True),
    ("**", "/", True),
    ("**/", "/", True),
    ("**", "dir/file", True),
    ("**/", "dir/file", True),
    ("**", "dir/file/", True),
    ("**/", "dir/file/", True),
    ("**/**", "dir/file", True),
    ("**/**", "dir/file/", True),
    ("dir/**", "dir/file", True),
    ("dir/**", "dir/file/", True),
    ("dir/**", "dir/dir2/file", True),
    ("dir/**", "dir/dir2/file/", True),
    ("**/dir", "dir", True),
    ("**/dir", "dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/*", "dir/dir2/file/", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**/dir2/**", "dir/dir2/dir3/file/", True),
    ("**file", "file", True),
    ("**file", "dir/file", True),
    ("**/file", "dir/file", True),
    ("**file", "dir/dir/file", True),
    ("**/file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True),
    ("**/file*.txt", "dir/dir/file.txt", True),
    ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True),
    ("**/**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True),
    ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False),
    ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True),
    (".*", ".foo", True),
    (".*", "foo", False),
    ("abc.def", "abcdef", False),
    ("abc.def", "abc.def", True),
    ("abc.def", "abcZdef", False),
    ("abc?def", "abcZdef", True),
    ("abc?def", "abcdef", False),
    ("a\\\\", "a\\", True),
    ("**/foo/bar", "foo/bar", True),
    ("**/foo/bar", "dir/foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("abc/**", "abc", False),
    ("abc/**", "abc/def", True),
    ("abc/**", "abc/def/ghi", True),
    ("**/.foo", ".foo", True),
    ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True),
    ("a(b)c/def", "a(b)c/xyz", False),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    (WHEEL, WHEEL, True),
    ("dist/*.whl", WHEEL, True),
    ("a\\*b", "a*b", True),
]

MULTI_PATTERN_TESTS = [
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (["**", "!" + WHEEL], WHEEL, False),
    (["**", "!dist/*.whl"], WHEEL, False),
]

# TestMatch's matchTests (Go's filepath.Match table) that compile.
MATCH_TESTS = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", True),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("*x", "xxx", True),
]

# Checked against patternmatcher itself: it hands '^', ']' and '\\<letter>' to Go's regexp.
REGEXP_QUIRKS = [
    ("^*", "anything", True),
    ("*^", "^", False),
    ("a^b", "a^b", True),
    ("a^b*", "a^b", False),
    ("^]", "]", True),
    ("*\\a", "a", False),
    ("a*\\b", "a", True),
    ("\\ba/*", "a/b", True),
    ("\\d*", "1x", True),
    ("\\.*", ".x", True),
]

BAD_PATTERNS = [
    "[]a]",
    "[-]",
    "[x-]",
    "[-x]",
    "\\",
    "[a-b-c]",
    "[",
    "[^",
    "[^bc",
    "a[",
    # Valid for filepath.Match, but Go's regexp rejects the range l-O when patternmatcher
    # first matches with it (TestMatchesOrParentMatchesMalformedPatternDoesNotPanic...).
    "[Local-Only]/",
    # Go's regexp escapes that Python's re cannot mirror are refused.
    "\\x41",
    "a*\\Q",
    "\\pL*",
]


def rules(*patterns: str) -> IgnoreRules:
    return IgnoreRules.parse("\n".join(patterns))


@pytest.mark.parametrize(("patterns", "path", "excluded"), NOTES_TABLE)
def test_notes_examples(patterns: list[str], path: str, excluded: bool) -> None:
    assert rules(*patterns).excluded(path) is excluded


@pytest.mark.parametrize(("pattern", "path", "excluded"), TEST_MATCHES + MATCH_TESTS)
def test_patternmatcher_single_pattern(pattern: str, path: str, excluded: bool) -> None:
    assert rules(pattern).excluded(path) is excluded


@pytest.mark.parametrize(("pattern", "path", "excluded"), REGEXP_QUIRKS)
def test_patternmatcher_regexp_quirks(pattern: str, path: str, excluded: bool) -> None:
    assert rules(pattern).excluded(path) is excluded


@pytest.mark.parametrize(("patterns", "path", "excluded"), MULTI_PATTERN_TESTS)
def test_patternmatcher_multi_pattern(patterns: list[str], path: str, excluded: bool) -> None:
    assert rules(*patterns).excluded(path) is excluded


def test_the_table_is_big_enough() -> None:
    assert len(NOTES_TABLE) + len(TEST_MATCHES) + len(MULTI_PATTERN_TESTS) >= 40


@pytest.mark.parametrize("pattern", BAD_PATTERNS)
def test_bad_pattern_names_file_and_line(pattern: str) -> None:
    with pytest.raises(ContextError) as caught:
        IgnoreRules.parse(f"# comment\nok\n{pattern}\n", source="ctx/.dockerignore")
    assert str(caught.value) == "ctx/.dockerignore:3: syntax error in pattern"


def test_context_error_is_a_usage_error() -> None:
    assert issubclass(ContextError, UsageError)
    assert ContextError("x").exit_code == 2


def texts(ignore: IgnoreRules) -> list[str]:
    return [("!" if p.exclusion else "") + p.text for p in ignore.patterns]


def test_read_all_like_ignorefile() -> None:
    content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n"
    assert texts(IgnoreRules.parse(content)) == [
        "test1",
        "test2",
        "a/file/here",
        "lastfile",
        "!inverted/abs/path",
    ]


def test_read_all_cleaning() -> None:
    content = "\ufeff./a\nb/\n/c\n  d  \n!  e  \nf/../g\n/\n.\r\n"
    assert texts(IgnoreRules.parse(content)) == ["a", "b", "c", "d", "!e", "g", "/", "."]


def test_bom_only_on_the_first_line() -> None:
    assert texts(IgnoreRules.parse("\ufeff#comment\nx")) == ["x"]
    assert texts(IgnoreRules.parse("x\n\ufeffy")) == ["x", "\ufeffy"]


def test_comment_only_at_column_one() -> None:
    ignore = IgnoreRules.parse("#a\n  #b\n")
    assert texts(ignore) == ["#b"]
    assert ignore.excluded("#b")
    assert not ignore.excluded("a")


def test_dot_pattern_excludes_nothing() -> None:
    ignore = rules(".")
    assert not ignore.excluded(".")
    assert not ignore.excluded("a")
    assert not ignore.excluded("a/b")


@pytest.mark.parametrize("line", ["!", "! ", "  !  "])
def test_lone_exclamation_is_an_error(line: str) -> None:
    with pytest.raises(ContextError) as caught:
        IgnoreRules.parse(f"a\n\n{line}\n", source=".dockerignore")
    assert str(caught.value) == '.dockerignore:3: illegal exclusion pattern: "!"'


def test_pattern_value_errors() -> None:
    assert Pattern("a/**").matches("a/b")
    assert Pattern("**/dir").matches_parent("x/dir/y")
    with pytest.raises(ValueError, match="syntax error in pattern"):
        Pattern("[")


def test_no_patterns_exclude_nothing() -> None:
    assert not IgnoreRules(()).excluded("any/path/there")


# --- which ignore file ---------------------------------------------------------------------


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    """Create files (a name ending in '/' is an empty directory)."""
    for name, content in files.items():
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def test_dockerfile_dockerignore_beats_the_context_one(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            ".dockerignore": "from-context\n",
            "docker/Dockerfile": "FROM scratch\n",
            "docker/Dockerfile.dockerignore": "from-dockerfile\n",
        },
    )
    ignore = IgnoreRules.load(tmp_path, tmp_path / "docker" / "Dockerfile")
    assert texts(ignore) == ["from-dockerfile"]
    assert ignore.source == str(tmp_path / "docker" / "Dockerfile.dockerignore")


def test_custom_dockerfile_name(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            ".dockerignore": "from-context\n",
            "ci/App.Dockerfile": "FROM scratch\n",
            "ci/Dockerfile.dockerignore": "wrong-name\n",
            "ci/App.Dockerfile.dockerignore": "custom\n",
        },
    )
    assert texts(IgnoreRules.load(tmp_path, tmp_path / "ci" / "App.Dockerfile")) == ["custom"]


def test_context_dockerignore_when_none_beside(tmp_path: Path) -> None:
    write(tmp_path, {".dockerignore": "x\n", "ci/App.Dockerfile": ""})
    ignore = IgnoreRules.load(tmp_path, tmp_path / "ci" / "App.Dockerfile")
    assert texts(ignore) == ["x"]
    assert ignore.source == str(tmp_path / ".dockerignore")


def test_no_ignore_file(tmp_path: Path) -> None:
    write(tmp_path, {"Dockerfile": ""})
    assert IgnoreRules.load(tmp_path, tmp_path / "Dockerfile") == IgnoreRules((), None)


def test_bad_ignore_file_names_its_path(tmp_path: Path) -> None:
    write(tmp_path, {".dockerignore": "ok\n[\n", "Dockerfile": ""})
    with pytest.raises(ContextError) as caught:
        IgnoreRules.load(tmp_path, tmp_path / "Dockerfile")
    assert caught.value.path == str(tmp_path / ".dockerignore")
    assert caught.value.line == 2


# --- what the context walk asks ------------------------------------------------------------


def test_walk_match_forgets_a_pattern_skipped_for_the_parent() -> None:
    ignore = rules("d", "!d/c", "d")
    dropped, info = ignore.walk_match("d", None)
    assert dropped
    assert ignore.walk_match("d/c", info)[0] is False
    assert ignore.excluded("d/c")


def test_walk_match_passes_parent_results_down() -> None:
    ignore = rules("a/*/c")
    dropped, info = ignore.walk_match("a", None)
    assert not dropped
    dropped, info = ignore.walk_match("a/b", info)
    assert not dropped
    assert ignore.walk_match("a/b/c", info)[0]
    assert IgnoreRules(()).walk_match("any", None) == (False, ())


def test_prunes_only_where_no_exception_reaches() -> None:
    assert rules("src").prunes("src")
    assert rules("src", "!a.txt").prunes("src")
    assert not rules("src", "!src/lib/y.py").prunes("src")
    assert not rules("src", "!src/lib/y.py").prunes("src/lib")
    assert rules("src", "!src/lib/y.py").prunes("src/app")
    assert not rules("src", "!*/lib/y.py").prunes("src/app")


def test_has_exceptions() -> None:
    assert not rules("src", "*.txt").has_exceptions
    assert rules("src", "!a.txt").has_exceptions
    assert not IgnoreRules(()).has_exceptions


def test_for_excludes_keeps_a_leading_slash() -> None:
    assert texts(IgnoreRules.for_excludes(["/a", "!b/", "  "])) == ["/a", "!b"]
    assert texts(rules("/a")) == ["a"]


def test_bad_exclude_pattern_quotes_it() -> None:
    with pytest.raises(ContextError) as caught:
        IgnoreRules.for_excludes(["ok", "a[\t"])
    assert str(caught.value) == 'invalid --exclude pattern "a[\\t": syntax error in pattern'
    assert caught.value.path is None


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("*.json", "package.json", True),
        ("*", "a/b", False),
        ("[^ab].txt", "c.txt", True),
        ("[!a].txt", "!.txt", True),
        ("\\*", "*", True),
        ("\\*", "x", False),
    ],
)
def test_component_matcher(pattern: str, name: str, matches: bool) -> None:
    assert (component_matcher(pattern).fullmatch(name) is not None) is matches


def test_component_matcher_bad_pattern() -> None:
    with pytest.raises(ValueError, match="syntax error in pattern"):
        component_matcher("[")


@pytest.mark.parametrize(
    ("name", "wildcards"),
    [("a", False), ("*.py", True), ("a?", True), ("[ab]", True), ("\\*", False), ("\\**", True)],
)
def test_has_wildcards(name: str, wildcards: bool) -> None:
    assert has_wildcards(name) is wildcards
