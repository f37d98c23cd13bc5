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

from pipeline.dockerfile.copies import GitSourceError, git_source, http_source

__all__ = ["RemoteKind", "RemoteSource", "remote_source"]

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

    `checksum` is the instruction's `--checksum`. Which sources are Git, and what their query
    says, is `copies.git_source`'s to tell, as it is for the checks BuildKit makes of them.
    """
    try:
        git = git_source(source)
    except GitSourceError:
        # refused where the stage is dispatched (copies.copy_error); never a pinned source
        return RemoteSource(RemoteKind.GIT, source, "has a Git query BuildKit refuses")
    if git is not None:
        if checksum or git.checksum or _COMMIT.fullmatch(git.ref):
            return RemoteSource(RemoteKind.GIT, source)
        what = f"ref {git.ref}" if git.ref else "no ref (the default branch)"
        return RemoteSource(RemoteKind.GIT, source, f"names {what}, not a commit, so it can move")
    if http_source(source):
        moving = None if checksum else "has no --checksum: its content is known once fetched"
        return RemoteSource(RemoteKind.URL, source, moving)
    return None
