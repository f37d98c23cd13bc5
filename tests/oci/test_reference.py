"""References parse and normalise as `docker pull` does (distribution's reference grammar)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.oci.reference import (
    Reference,
    Repository,
    is_insecure_host,
    validate_digest,
    validate_tag,
)

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("composer:2", "docker.io", "library/composer", "2", None),
        ("acme/app", "docker.io", "acme/app", "latest", None),
        ("docker.io/library/node:20-alpine", "docker.io", "library/node", "20-alpine", None),
        ("index.docker.io/php", "docker.io", "library/php", "latest", None),
        ("host/x:tag", "docker.io", "host/x", "tag", None),
        ("localhost/x", "localhost", "x", "latest", None),
        ("localhost:5000/x", "localhost:5000", "x", "latest", None),
        ("127.0.0.1:5000/team/app:v1", "127.0.0.1:5000", "team/app", "v1", None),
        ("[::1]:5000/x:1", "[::1]:5000", "x", "1", None),
        (f"ghcr.io/o/r@{DIGEST}", "ghcr.io", "o/r", None, DIGEST),
        (f"registry.example.com/x:tag@{DIGEST}", "registry.example.com", "x", "tag", DIGEST),
        (
            "Registry.Example.com/a__b/c-d.e:TAG_1",
            "Registry.Example.com",
            "a__b/c-d.e",
            "TAG_1",
            None,
        ),
        ("localhost:5000", "docker.io", "library/localhost", "5000", None),
    ],
)
def test_parse(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    assert Reference.parse(text) == Reference(registry, repository, tag, digest)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("acme/App", "repository name (acme/App) must be lowercase"),
        ("ghcr.io/Owner/repo:1", "repository name (Owner/repo) must be lowercase"),
        ("", "must have at least one component"),
        ("x:-bad", "invalid tag format"),
        ("x:" + "t" * 129, "invalid tag format"),
        ("a" * 64, "cannot specify 64-byte hexadecimal strings"),
        ("a//b", "invalid reference format"),
        ("a/b/", "invalid reference format"),
        ("x@sha256:abc", "invalid reference format"),
        ("x@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("x@sha256:" + "A" * 64, "invalid checksum digest"),
        ("ghcr.io/" + "a" * 250, "must not be more than 255 characters"),
    ],
)
def test_parse_errors_give_the_grammars_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        Reference.parse(text)


@pytest.mark.parametrize(
    ("text", "familiar"),
    [
        ("composer:2", "composer:2"),
        ("acme/app", "acme/app:latest"),
        ("docker.io/library/php", "php:latest"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("docker.io/my.org/app:1", "docker.io/my.org/app:1"),
        (f"ghcr.io/o/r@{DIGEST}", f"ghcr.io/o/r@{DIGEST}"),
        (f"example.com/x:t@{DIGEST}", f"example.com/x:t@{DIGEST}"),
    ],
)
def test_str_gives_the_familiar_form(text: str, familiar: str) -> None:
    assert str(Reference.parse(text)) == familiar


def test_names_and_api_host() -> None:
    hub = Reference.parse("composer:2")
    assert hub.name == "docker.io/library/composer"
    assert hub.familiar_name == "composer"
    assert hub.api_host == "registry-1.docker.io"
    assert Reference("index.docker.io", "library/x", "1").api_host == "registry-1.docker.io"
    assert Reference.parse("ghcr.io/o/r:1").api_host == "ghcr.io"


def test_with_tag_drops_the_digest_and_with_digest_keeps_the_tag() -> None:
    pinned = Reference.parse(f"ghcr.io/o/r:1@{DIGEST}")
    assert pinned.with_tag("2") == Reference("ghcr.io", "o/r", "2", None)
    assert Reference.parse("ghcr.io/o/r:1").with_digest(DIGEST) == pinned
    with pytest.raises(ValueError, match="invalid tag format"):
        pinned.with_tag("no/slash")
    with pytest.raises(ValueError, match="digest"):
        pinned.with_digest("sha256:short")


@pytest.mark.parametrize("tag", ["latest", "1.2.3", "_x", "A" * 128, "v1-rc.2_b"])
def test_valid_tags(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".x", "-x", "A" * 129, "a:b", "a/b", "é"])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(ValueError, match="invalid tag format"):
        validate_tag(tag)


def test_validate_digest() -> None:
    assert validate_digest(DIGEST) == DIGEST
    assert validate_digest("sha512:" + "0" * 128)
    with pytest.raises(ValueError, match="length"):
        validate_digest("sha256:" + "a" * 63)


@pytest.mark.parametrize(
    ("host", "insecure", "expected"),
    [
        ("localhost", (), True),
        ("localhost:5000", (), True),
        ("127.0.0.1:5000", (), True),
        ("127.10.20.30", (), True),
        ("[::1]:5000", (), True),
        ("::1", (), True),
        ("ghcr.io", (), False),
        ("10.0.0.1:5000", (), False),
        ("registry.lan:5000", ["registry.lan:5000"], True),
        ("registry.lan:5000", ["registry.lan"], True),
        ("registry.lan:5001", ["registry.lan:5000"], False),
        ("Registry.LAN", ["registry.lan"], True),
    ],
)
def test_is_insecure_host(host: str, insecure: list[str], expected: bool) -> None:
    assert is_insecure_host(host, insecure) is expected


_alnum = st.text("abz09", min_size=1, max_size=4)
_separator = st.sampled_from([".", "_", "__", "-", "--"])


@st.composite
def _components(draw: st.DrawFn) -> str:
    parts = [draw(_alnum)]
    for _ in range(draw(st.integers(0, 2))):
        parts += [draw(_separator), draw(_alnum)]
    return "".join(parts)


_tag = st.text("aZ_09.-", min_size=1, max_size=10).filter(lambda tag: tag[0] not in ".-")
_registry = st.sampled_from(["docker.io", "ghcr.io", "localhost:5000", "registry.example.com"])


@settings(max_examples=200, deadline=None)
@given(
    registry=_registry,
    path=st.lists(_components(), min_size=1, max_size=3),
    tag=st.none() | _tag,
    digest=st.none() | st.text("0123456789abcdef", min_size=64, max_size=64).map("sha256:".__add__),
)
def test_familiar_form_parses_back_to_the_same_reference(
    registry: str, path: list[str], tag: str | None, digest: str | None
) -> None:
    text = f"{registry}/{'/'.join(path)}"
    text += f":{tag}" if tag else ""
    text += f"@{digest}" if digest else ""
    reference = Reference.parse(text)
    assert Reference.parse(str(reference)) == reference


@pytest.mark.parametrize(
    ("text", "registry", "path", "shown"),
    [
        ("ghcr.io/acme/shop/cache", "ghcr.io", "acme/shop/cache", "ghcr.io/acme/shop/cache"),
        ("localhost:5000/x/cache", "localhost:5000", "x/cache", "localhost:5000/x/cache"),
        ("acme/cache", "docker.io", "acme/cache", "acme/cache"),
        ("docker.io/acme/cache", "docker.io", "acme/cache", "acme/cache"),
        (" cache ", "docker.io", "library/cache", "cache"),
    ],
)
def test_repository_parse(text: str, registry: str, path: str, shown: str) -> None:
    repo = Repository.parse(text)
    assert repo == Repository(registry, path)
    assert str(repo) == shown
    assert repo.tag("app-1") == Reference(registry, path, "app-1")
    assert repo.pinned(DIGEST) == Reference(registry, path, None, DIGEST)
    assert repo.child("cache") == Repository(registry, f"{path}/cache")
    assert Reference.parse(f"{shown}:t").repo == repo


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "it is empty."),
        (
            "http://localhost:5000/cache",
            "it starts with a scheme (http://), which registries are named without.",
        ),
        ("localhost:5000/cache:tag", "it ends with a tag (:tag)."),
        (f"ghcr.io/o/r@{DIGEST}", "it ends with a digest (@sha256:aaaaaaaaaaaa…)."),
        ("localhost:5000", "it names a registry (host:port) and no repository on it."),
        (
            "Not A Repo!",
            'its path has what a repository cannot have: capitals, a space, "!".',
        ),
        ("a//b", 'its path component "" is not letters and digits joined by'),
    ],
)
def test_repository_parse_errors_say_what_is_wrong_and_the_form(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)) as caught:
        Repository.parse(text)
    message = str(caught.value)
    form = "A repository is host[:port]/path, lowercase, with no scheme and no tag or digest"
    assert form in message
    assert ":x" not in message
    assert "invalid reference format" not in message
    assert "library/" not in message


@pytest.mark.parametrize(
    ("text", "meant"),
    [
        ("http://localhost:5000/cache", "localhost:5000/cache"),
        ("localhost:5000/cache:tag", "localhost:5000/cache"),
        ("HTTPS://ghcr.io/Acme/App:v1", "ghcr.io/acme/app"),
        ("localhost:5000", "localhost:5000/cache"),
    ],
)
def test_repository_parse_errors_name_the_repository_meant(text: str, meant: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"Did you mean {meant}?")):
        Repository.parse(text)


def test_repository_refuses_a_bad_tag() -> None:
    with pytest.raises(ValueError, match="invalid tag format"):
        Repository.parse("ghcr.io/o/r").tag("-bad")
