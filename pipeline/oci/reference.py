"""Image references: `composer:2`, `ghcr.io/o/r@sha256:…`, parsed as Docker parses them.

The grammar is distribution's `reference` package (`reference/regexp.go`) and the
normalisation is Docker's `ParseNormalizedNamed`: a first path component without a
dot or colon that is not `localhost` is a Docker Hub user, not a registry, and a
single-component Hub name is an official image under `library/`. A parse error
carries the reason distribution gives, so users see the message `docker` shows.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Collection

_SLUG_UNSAFE = re.compile(r"[^a-z0-9_.-]+")

__all__ = [
    "DOCKER_HUB",
    "REPOSITORY_FORM",
    "Reference",
    "Repository",
    "host_listed",
    "is_insecure_host",
    "is_loopback_host",
    "repository_error",
    "slugify",
    "validate_digest",
    "validate_tag",
]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_HUB_ALIASES = frozenset({DOCKER_HUB, "index.docker.io"})
_OFFICIAL_PREFIX = "library/"
_DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALPHA_NUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALPHA_NUMERIC}(?:{_SEPARATOR}{_ALPHA_NUMERIC})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$")
_TAG_RE = re.compile(rf"^{_TAG}$", re.ASCII)
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True)
class Reference:
    """A normalised reference: `registry` is a host (with port), never empty.

    `tag` and `digest` may both be set (`host/x:tag@sha256:…`); the digest then
    identifies the content and the tag is only informative, as in Docker.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse and normalise like `docker pull`; a bare name gets the tag `latest`."""
        if _IDENTIFIER_RE.match(text):
            raise ValueError(
                f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
            )
        registry, remainder = _split_domain(text)
        remote = remainder.split("@", 1)[0].split(":", 1)[0]
        if remote.lower() != remote:
            raise ValueError(
                f"invalid reference format: repository name ({remote}) must be lowercase"
            )
        match = _REFERENCE_RE.match(f"{registry}/{remainder}")
        if match is None:
            raise ValueError(_reason(text))
        name, tag, digest = match.groups()
        if len(name) > NAME_TOTAL_LENGTH_MAX:
            raise ValueError(
                f"invalid reference format: repository name must not be more than "
                f"{NAME_TOTAL_LENGTH_MAX} characters ({text})"
            )
        if digest is not None:
            validate_digest(digest)
        if tag is None and digest is None:
            tag = _DEFAULT_TAG
        return cls(registry, remote, tag, digest)

    @property
    def name(self) -> str:
        """The fully qualified name, `docker.io/library/composer`."""
        return f"{self.registry}/{self.repository}"

    @property
    def repo(self) -> Repository:
        """The repository, without tag or digest."""
        return Repository(self.registry, self.repository)

    @property
    def familiar_name(self) -> str:
        """The name as Docker prints it: `composer`, `acme/app`, `ghcr.io/o/r`.

        Unlike Docker, a Hub name whose first component looks like a host keeps
        `docker.io/`, so that the text parses back to the same reference.
        """
        if self.registry not in _HUB_ALIASES:
            return self.name
        short = self.repository.removeprefix(_OFFICIAL_PREFIX)
        familiar = short if "/" not in short else self.repository
        first = familiar.split("/", 1)[0]
        looks_like_host = "/" in familiar and (
            any(char in first for char in ".:") or first == "localhost"
        )
        return self.name if looks_like_host else familiar

    @property
    def api_host(self) -> str:
        return self.repo.api_host

    def with_tag(self, tag: str) -> Reference:
        """The same repository under `tag`; the digest goes, since a new tag names other content."""
        return replace(self, tag=validate_tag(tag), digest=None)

    def with_digest(self, digest: str) -> Reference:
        """This reference pinned to `digest`, keeping the tag: `repo:tag@sha256:…`."""
        return replace(self, digest=validate_digest(digest))

    def __str__(self) -> str:
        text = self.familiar_name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class Repository:
    """A repository such as `ghcr.io/acme/shop/cache`: where tags and digests live.

    Cache and image repositories are values of this type from the moment they are read, so a
    reference into them is made (`tag`, `pinned`), never concatenated and parsed again.
    """

    registry: str
    path: str

    @classmethod
    def parse(cls, text: str) -> Repository:
        """A repository as `docker push` names one. ValueError says what is wrong with `text`,
        what a repository looks like, and the repository meant where that is clear."""
        text = text.strip()
        problem, meant = _repository_problem(text)
        if problem is None:
            try:
                reference = Reference.parse(text)
            except ValueError as exc:
                problem = _path_problem(_split_domain(text)[1]) or str(exc)
            else:
                return cls(reference.registry, reference.repository)
        raise repository_error(problem, meant)

    @property
    def name(self) -> str:
        """The fully qualified name, `docker.io/acme/cache`."""
        return f"{self.registry}/{self.path}"

    @property
    def api_host(self) -> str:
        """The host that serves the distribution API: Docker Hub's differs from its name."""
        return DOCKER_HUB_API if self.registry in _HUB_ALIASES else self.registry

    def tag(self, tag: str) -> Reference:
        """`<repository>:<tag>`; ValueError for a tag outside the grammar."""
        return Reference(self.registry, self.path, validate_tag(tag))

    def pinned(self, digest: str) -> Reference:
        """`<repository>@<digest>`: exactly that content, whatever the tags say."""
        return Reference(self.registry, self.path, None, validate_digest(digest))

    def child(self, name: str) -> Repository:
        """`<repository>/<name>`, such as the cache beside the images: `<image repo>/cache`."""
        return Repository.parse(f"{self.name}/{name}")

    def __str__(self) -> str:
        return Reference(self.registry, self.path).familiar_name


REPOSITORY_FORM = (
    "A repository is host[:port]/path, lowercase, with no scheme and no tag or digest, "
    "such as ghcr.io/acme/app/cache or localhost:5000/cache"
)


def repository_error(problem: str, meant: str | None = None) -> ValueError:
    """`problem` with a given repository, what a repository looks like, and the one meant."""
    fix = f" Did you mean {meant}?" if meant is not None else ""
    return ValueError(f"{problem}. {REPOSITORY_FORM}.{fix}")


def _repository_problem(text: str) -> tuple[str | None, str | None]:
    """What is wrong with `text` as a repository, as its writer sees it, and the repository
    meant when that is only a scheme, a tag, a digest, spaces or capitals away."""
    if not text:
        return "it is empty", None
    problems = []
    meant = text
    scheme, sep, rest = meant.partition("://")
    if sep:
        problems.append(
            f"it starts with a scheme ({scheme}://), which registries are named without"
        )
        meant = rest
    meant, at, digest = meant.partition("@")
    if at:
        problems.append(f"it ends with a digest (@{_shorten(digest)})")
    host, slash, path = meant.rpartition("/")
    path, colon, tag = path.partition(":")
    if colon and not slash and tag.isdigit():
        return "it names a registry (host:port) and no repository on it", f"{meant}/cache"
    if colon:
        problems.append(f"it ends with a tag (:{tag})")
    meant = f"{host}{slash}{path}"
    first, has_host, rest = meant.partition("/")
    host_part = bool(has_host) and (any(char in first for char in ".:") or first == "localhost")
    remainder = rest if host_part else meant
    lowered = f"{first}/{rest.lower()}" if host_part else meant.lower()
    if _path_problem(remainder.lower()) is not None:
        return "; ".join([*problems, str(_path_problem(remainder))]), None
    if lowered != meant:
        problems.append("its path has capitals")
    return ("; ".join(problems), lowered) if problems else (None, None)


def _path_problem(path: str) -> str | None:
    """What in a repository path (below its host) breaks distribution's grammar, if anything."""
    odd = dict.fromkeys(
        "capitals" if char.isupper() else "a space" if char == " " else f'"{char}"'
        for char in path
        if not re.match(r"[a-z0-9._/-]", char)
    )
    if odd:
        return f"its path has what a repository cannot have: {', '.join(odd)}"
    for component in path.split("/"):
        if not re.fullmatch(_PATH_COMPONENT, component):
            return (
                f'its path component "{component}" is not letters and digits joined by '
                '".", "_", "__" or "-"'
            )
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        return f"its path is longer than {NAME_TOTAL_LENGTH_MAX} characters"
    return None


def _shorten(digest: str) -> str:
    return digest if len(digest) <= 19 else f"{digest[:19]}…"


def slugify(text: str) -> str:
    """Any text as a tag: `feature/Login_v2` → `feature-login_v2`."""
    slug = _SLUG_UNSAFE.sub("-", text.lower()).strip("-.")
    return slug[:128] or "unknown"


def validate_tag(tag: str) -> str:
    """Return `tag` if it is a valid tag, else raise ValueError with the grammar."""
    if not _TAG_RE.match(tag):
        raise ValueError(
            f"invalid tag format: {tag!r} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
        )
    return tag


def validate_digest(digest: str) -> str:
    """Return `digest` if it is `algorithm:hex` for a known algorithm, as go-digest checks."""
    if not re.fullmatch(_DIGEST, digest):
        raise ValueError(f"invalid checksum digest format: {digest!r}")
    algorithm, encoded = digest.split(":", 1)
    length = _DIGEST_HEX_LENGTHS.get(algorithm)
    if length is None:
        raise ValueError(f"unsupported digest algorithm: {digest!r}")
    if len(encoded) != length or not re.fullmatch(r"[a-f0-9]+", encoded):
        raise ValueError(f"invalid checksum digest length or case: {digest!r}")
    return digest


def is_insecure_host(host: str, insecure: Collection[str]) -> bool:
    """Plain HTTP for loopback (as Docker allows) and for hosts listed, with or without port."""
    return is_loopback_host(host) or host_listed(host, insecure)


def is_loopback_host(host: str) -> bool:
    """`localhost`, `127.0.0.0/8` or `::1`, with or without a port: this machine only."""
    hostname = _hostname(host).lower()
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def host_listed(host: str, listed: Collection[str]) -> bool:
    """Whether a list of hosts names `host`, as `host:port` or by its name alone."""
    entries = {entry.lower() for entry in listed}
    return host.lower() in entries or _hostname(host).lower() in entries


def _hostname(host: str) -> str:
    """`host:port`, `[::1]:5000` or `::1` without the port or brackets."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _split_domain(text: str) -> tuple[str, str]:
    """Docker's splitDockerDomain: which part of `text` is the registry."""
    first, slash, rest = text.partition("/")
    is_domain = bool(slash) and (
        any(char in first for char in ".:") or first == "localhost" or first.lower() != first
    )
    registry, remainder = (first, rest) if is_domain else (DOCKER_HUB, text)
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in remainder:
            remainder = _OFFICIAL_PREFIX + remainder
    return registry, remainder


def _reason(text: str) -> str:
    """Distribution's reason for a reference that does not match the grammar."""
    if not text:
        return "invalid reference format: repository name must have at least one component"
    _, _, after_name = text.rpartition("/")
    if ":" in after_name.split("@", 1)[0]:
        tag = after_name.split("@", 1)[0].split(":", 1)[1]
        if not _TAG_RE.match(tag):
            return f"invalid reference format: invalid tag format ({text})"
    return f"invalid reference format ({text})"
