from __future__ import annotations

import pytest

from pipeline.dockerfile.copies import GitSourceError, digest_error, git_source, http_source


@pytest.mark.parametrize(
    ("source", "ref"),
    [
        ("https://github.com/moby/buildkit.git", ""),
        ("https://github.com/moby/buildkit.git#v1.0:sub", "v1.0"),
        ("https://github.com/moby/buildkit.git?tag=v1.0.0", "refs/tags/v1.0.0"),
        ("https://github.com/moby/buildkit.git?branch=v1.0", "refs/heads/v1.0"),
        ("git@github.com:moby/buildkit.git#main", "main"),
        ("ssh://git@example.com/r.git", ""),
        ("git://example.com/r", ""),
    ],
)
def test_git_sources_and_their_ref(source: str, ref: str) -> None:
    """dfgitutil/git_ref_test.go TestParseGitRef."""
    git = git_source(source)
    assert git is not None
    assert git.ref == ref


@pytest.mark.parametrize(
    "source",
    [
        "https://example.com/file.tgz",
        "./r.git",
        "github.com/moby/buildkit",
        "file.txt",
        "ftp://x/r.git",
    ],
)
def test_what_is_no_git_source(source: str) -> None:
    assert git_source(source) is None


def test_a_url_is_http_unless_it_names_a_repository() -> None:
    assert http_source("https://example.com/file.tgz")
    assert not http_source("https://example.com/r.git")
    assert not http_source("file.tgz")


def test_query_keys_with_more_than_one_value_are_refused() -> None:
    with pytest.raises(GitSourceError, match='query "ref" has multiple values'):
        git_source("https://example.com/r.git?ref=a&ref=b")


@pytest.mark.parametrize(
    ("digest", "reason"),
    [
        ("sha256:" + "a" * 64, None),
        ("sha512:" + "a" * 128, None),
        ("sha256:" + "A" * 64, "invalid checksum digest format"),
        ("sha256:", "invalid checksum digest format"),
        (":abc", "invalid checksum digest format"),
        ("sha384:abc", "invalid checksum digest length"),
    ],
)
def test_digests_as_go_digest_parses_them(digest: str, reason: str | None) -> None:
    assert digest_error(digest) == reason
