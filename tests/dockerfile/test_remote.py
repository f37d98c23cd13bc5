from __future__ import annotations

import pytest

from pipeline.dockerfile.remote import RemoteKind, remote_source

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("source", "checksum", "kind", "pinned"),
    [
        ("https://example.com/tool.tar.gz", None, RemoteKind.URL, False),
        ("https://example.com/tool.tar.gz", "sha256:" + "a" * 64, RemoteKind.URL, True),
        ("http://example.com/file", None, RemoteKind.URL, False),
        ("https://github.com/moby/buildkit.git", None, RemoteKind.GIT, False),
        ("https://github.com/moby/buildkit.git#v0.12.0", None, RemoteKind.GIT, False),
        ("https://github.com/moby/buildkit.git#main:docs", None, RemoteKind.GIT, False),
        (f"https://github.com/moby/buildkit.git#{SHA}", None, RemoteKind.GIT, True),
        (f"https://github.com/moby/buildkit.git#{SHA}:docs", None, RemoteKind.GIT, True),
        ("https://github.com/moby/buildkit.git#v0.12.0", SHA, RemoteKind.GIT, True),
        (f"https://example.com/r.git?ref=main&checksum={SHA}", None, RemoteKind.GIT, True),
        (f"https://github.com/moby/buildkit.git?commit={SHA}", None, RemoteKind.GIT, True),
        ("https://github.com/moby/buildkit.git?tag=v0.12.0", None, RemoteKind.GIT, False),
        ("git@github.com:moby/buildkit.git#main", None, RemoteKind.GIT, False),
        (f"git@github.com:moby/buildkit.git#{SHA}", None, RemoteKind.GIT, True),
        ("deploy_key@git.example.com:team/repo", None, RemoteKind.GIT, False),
        ("git://example.com/repo#main", None, RemoteKind.GIT, False),
        ("ssh://git@example.com/repo.git", None, RemoteKind.GIT, False),
        ("GIT://example.com/repo", None, RemoteKind.GIT, False),
    ],
)
def test_remote_sources_as_buildkit_reads_them(
    source: str, checksum: str | None, kind: RemoteKind, pinned: bool
) -> None:
    remote = remote_source(source, checksum)
    assert remote is not None
    assert (remote.kind, remote.pinned) == (kind, pinned)
    assert remote.text == source


@pytest.mark.parametrize(
    "source",
    [
        "src/",
        "./https://x",
        "github.com/moby/buildkit",  # indistinguishable from a path: a path in ADD
        "ftp://example.com/file",  # not a git protocol, not HTTP: a path
        "HTTPS://example.com/file",  # isHTTPSource is case-sensitive; not .git either
        "app.tar.gz",
    ],
)
def test_context_paths_are_not_remote(source: str) -> None:
    assert remote_source(source, None) is None


def test_the_reason_names_what_moves() -> None:
    reasons = {
        source: getattr(remote_source(source, None), "moving", None)
        for source in (
            "https://example.com/repo.git#main",
            "https://example.com/repo.git",
            "https://example.com/file",
        )
    }
    assert list(reasons.values()) == [
        "names ref main, not a commit, so it can move",
        "names no ref (the default branch), not a commit, so it can move",
        "has no --checksum: its content is known once fetched",
    ]
