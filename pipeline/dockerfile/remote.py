"""Which ADD sources are remote, and whether their content is known before they are fetched.

BuildKit (moby/buildkit 73ed6825, dockerfile2llb/convert_copy.go) reads each ADD source in turn
as a git repository (`dfgitutil.ParseGitRef`), else an HTTP(S) URL (`isHTTPSource`), else a
context path. A git source is `http(s)://…` whose path ends in `.git`, `git://…`, `ssh://…`, or
the scp-like `user@host:path`; `github.com/…` reads like a path and stays one in ADD.

A remote source is *pinned* when its content is decided by what the Dockerfile says: a URL
with `--checksum` (the download must match it), a git source whose ref is a full commit id or
that carries a checksum (`--checksum`, `?checksum=`, `?commit=`). Anything else is fetched
anew: a file behind a URL can change, and a branch or a tag can move, so no key made before the
fetch can say what the stage's image holds.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

__all__ = ["RemoteKind", "RemoteSource", "remote_source"]

# gitutil's protoRegexp and supported schemes, and sshutil's scp-style URL.
_PROTOCOL = re.compile(r"^([a-zA-Z0-9]+)://")
_GIT_SCHEMES = frozenset({"http", "https", "git", "ssh"})
_SCP = re.compile(r"^[a-zA-Z0-9_-]+@[a-zA-Z0-9.-]+:(.*?)(?:\?(.*?))?(?:#(.*))?$")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class RemoteKind(enum.Enum):
    URL = "url"
    GIT = "git"


@dataclass(frozen=True)
class RemoteSource:
    """One remote ADD source, as expanded. `moving` says why its content is unknown, if it is."""

    kind: RemoteKind
    text: str
    moving: str | None = None

    @property
    def pinned(self) -> bool:
        return self.moving is None


def remote_source(source: str, checksum: str | None) -> RemoteSource | None:
    """The remote source `source` is for ADD, or None for a context path.

    `checksum` is the instruction's `--checksum`.
    """
    git = _git(source, checksum)
    if git is not None:
        return git
    if source.startswith(("http://", "https://")):
        moving = None if checksum else "has no --checksum: its content is known once fetched"
        return RemoteSource(RemoteKind.URL, source, moving)
    return None


def _git(source: str, checksum: str | None) -> RemoteSource | None:
    if source.startswith(("./", "../", "github.com/")):
        return None
    protocol = _PROTOCOL.match(source)
    if protocol is not None:
        scheme = protocol.group(1).lower()
        if scheme not in _GIT_SCHEMES:
            return None
        parts = urlsplit(source)
        if scheme in ("http", "https") and not parts.path.endswith(".git"):
            return None
        query, fragment = parts.query, parts.fragment
    else:
        scp = _SCP.match(source)
        if scp is None:
            return None
        query, fragment = scp.group(2) or "", scp.group(3) or ""
    ref = fragment.partition(":")[0]
    values = parse_qs(query, keep_blank_values=True)
    ref = ref or next(iter(values.get("ref", ())), "")
    given = checksum or next(iter(values.get("checksum", values.get("commit", ()))), "")
    if given or _COMMIT.fullmatch(ref):
        return RemoteSource(RemoteKind.GIT, source)
    what = f"ref {ref}" if ref else "no ref (the default branch)"
    moving = f"names {what}, not a commit, so it can move"
    return RemoteSource(RemoteKind.GIT, source, moving)
