"""COPY and ADD as BuildKit's dispatchCopy judges them: `--chmod`, `--checksum` and the sources.

BuildKit checks these only while it dispatches the instruction, after expanding its words with
the stage's ARG and ENV values, and only in the stages the target needs. So `copy_error` reads an
instruction either as written, leaving every word with a variable unjudged (for a located
warning in any stage), or expanded (for the keys of a needed stage, where it fails the plan).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from pipeline.dockerfile.gostrings import go_quote

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from pipeline.dockerfile.parse import Instruction

__all__ = ["GitSourceError", "copy_error", "digest_error", "git_source", "http_source"]

# a symbolic mode, as tonistiigi/dchapes-mode parses it: clauses of who, then op and permissions
_SYMBOLIC = re.compile(r"[ugoa]*([-+=][rwxXstugo]*)+(,[ugoa]*([-+=][rwxXstugo]*)+)*")
_SCHEME = re.compile(r"^[a-zA-Z0-9]+://")
_GIT_SCHEMES = ("http", "https", "ssh", "git")
_SCP_STYLE = re.compile(r"^([a-zA-Z0-9-_]+)@([a-zA-Z0-9-.]+):(.*?)(?:\?(.*?))?(?:#(.*))?$")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_DIGEST_BYTES = {"sha256": 32, "sha384": 48, "sha512": 64}
_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True}
_GO_BOOLS |= {"0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


class GitSourceError(ValueError):
    """A Git source whose query BuildKit refuses (dfgitutil.ParseGitRef)."""


@dataclass(frozen=True)
class GitSource:
    """What a Git source asks for, once its fragment and query agree: `remote_source` tells from
    it whether the source can move, and `copy_error` checks it against the ADD's own flags."""

    ref: str
    checksum: str
    keep_git_dir: bool | None


def copy_error(instruction: Instruction, expand: Callable[[str], str] | None = None) -> str | None:
    """Why BuildKit would refuse this COPY or ADD while dispatching it, or None."""
    adding = instruction.cmd == "ADD"

    def word(text: str) -> str | None:
        if expand is not None:
            return expand(text)
        return None if "$" in text else text

    chmod = word(instruction.flag("chmod") or "")
    if chmod:
        reason = _chmod_error(chmod)
        if reason is not None:
            return reason
    sources = [word(text) for text in instruction.args[:-1] if not text.startswith("<<")]
    written = instruction.flag("checksum") or ""
    checksum = word(written)
    if written and checksum != "":
        if len(sources) != 1:
            return "checksum can't be specified for multiple sources"
        if sources[0] is not None and not _remote(sources[0]):
            return (
                "checksum requires HTTP(S) or Git sources "
                "(--checksum pins a URL or a Git commit, not a context file)"
            )
    for source in sources:
        if source is None:
            continue
        try:
            git = git_source(source)
        except GitSourceError as exc:
            return str(exc)
        if git is not None:
            reason = _git_error(git, adding, instruction.flag("keep-git-dir"), checksum)
        elif http_source(source):
            reason = _url_error(adding, checksum)
        else:
            reason = None
        if reason is not None:
            return reason
    return None


def _chmod_error(mode: str) -> str | None:
    octal = f"invalid chmod parameter: '{mode}'. it should be octal string and between 0 and 07777"
    if re.fullmatch(r"[0-7]+", mode):
        return octal if int(mode, 8) > 0o7777 else None
    if mode[0].isdigit():
        return octal
    if _SYMBOLIC.fullmatch(mode):
        return None
    return f"invalid syntax (--chmod={mode}: octal such as 0755, or symbolic such as u+x,go-w)"


def _remote(source: str) -> bool:
    try:
        return http_source(source) or git_source(source) is not None
    except GitSourceError:
        return True


def http_source(source: str) -> bool:
    if not source.startswith(("http://", "https://")):
        return False
    try:
        return git_source(source) is None
    except GitSourceError:
        return False


def _git_error(
    git: GitSource, adding: bool, keep_git_dir: str | None, checksum: str | None
) -> str | None:
    if not adding:
        return "source can't be a git ref for COPY (ADD fetches Git sources)"
    asked = None if keep_git_dir is None else keep_git_dir == "true"
    if None not in (asked, git.keep_git_dir) and asked != git.keep_git_dir:
        return "inconsistent keep-git-dir configuration"
    if checksum and git.checksum and checksum != git.checksum:
        return f"checksum mismatch {go_quote(checksum)} != {go_quote(git.checksum)}"
    return None


def _url_error(adding: bool, checksum: str | None) -> str | None:
    if not adding:
        return "source can't be a URL for COPY (ADD downloads URLs)"
    if checksum:
        return digest_error(checksum)
    return None


def digest_error(digest: str) -> str | None:
    """go-digest's Parse, with the algorithms BuildKit registers."""
    colon = digest.find(":")
    if colon <= 0 or colon + 1 == len(digest):
        return "invalid checksum digest format"
    algorithm, encoded = digest[:colon], digest[colon + 1 :]
    size = _DIGEST_BYTES.get(algorithm)
    if size is None:
        if not _DIGEST.fullmatch(digest):
            return "invalid checksum digest format"
        return f"unsupported digest algorithm (use one of {', '.join(_DIGEST_BYTES)})"
    if len(encoded) != size * 2:
        return "invalid checksum digest length"
    if not re.fullmatch(r"[a-f0-9]+", encoded):
        return "invalid checksum digest format"
    return None


def git_source(source: str) -> GitSource | None:
    """The source as a Git remote, as BuildKit tells one apart (dfgitutil.ParseGitRef), or None
    when BuildKit reads it as a URL or a local path."""
    if source.startswith(("./", "../", "github.com/")):
        return None
    if _SCHEME.match(source):
        parts = urlsplit(source)
        scheme = parts.scheme.lower()
        if scheme not in _GIT_SCHEMES:
            return None
        if scheme in ("http", "https") and not parts.path.endswith(".git"):
            return None
        query, fragment = parts.query, parts.fragment
    else:
        match = _SCP_STYLE.match(source)
        if match is None:
            return None
        query, fragment = match.group(4) or "", match.group(5) or ""
    ref, _, subdir = fragment.partition(":")
    subdir = posixpath.normpath("/" + subdir.lstrip("/")).removeprefix("/") if subdir else ""
    return _with_query(ref, subdir, parse_qs(query, keep_blank_values=True))


def _with_query(ref: str, subdir: str, query: Mapping[str, list[str]]) -> GitSource:
    """GitRef.loadQuery: `?ref=`, `?tag=`, `?branch=` and `?subdir=` must agree with the
    fragment and with each other."""
    tag = branch = checksum = ""
    keep_git_dir: bool | None = None
    for key in sorted(query):
        values = query[key]
        if len(values) > 1:
            raise GitSourceError(f"query {go_quote(key)} has multiple values")
        value = values[0] if values else ""
        flag = key in ("submodules", "keep-git-dir", "fetch-by-commit")
        if not value and not flag:
            raise GitSourceError(f"query {go_quote(key)} has no value")
        if key == "ref":
            if ref and ref != value:
                raise GitSourceError(f"ref conflicts: {go_quote(ref)} vs {go_quote(value)}")
            ref = value
        elif key == "tag":
            tag = value
        elif key == "branch":
            branch = value
        elif key == "subdir":
            if subdir and subdir != value:
                raise GitSourceError(f"subdir conflicts: {go_quote(subdir)} vs {go_quote(value)}")
            subdir = value
        elif key in ("checksum", "commit"):
            checksum = value
        elif flag:
            if value and value not in _GO_BOOLS:
                raise GitSourceError(f"invalid {key} value: {go_quote(value)}")
            if key == "keep-git-dir":
                keep_git_dir = _GO_BOOLS.get(value, True)
        elif key == "mtime":
            if value not in ("checkout", "commit"):
                raise GitSourceError(
                    f'invalid mtime value: {go_quote(value)} (must be "checkout" or "commit")'
                )
        else:
            raise GitSourceError(f"unexpected query {go_quote(key)}")
    if tag:
        tag = tag if tag.startswith("refs/tags/") else f"refs/tags/{tag}"
        if ref and ref != tag:
            raise GitSourceError(f"ref conflicts: {go_quote(ref)} vs {go_quote(tag)}")
        ref = tag
    if branch:
        if tag:
            raise GitSourceError("branch conflicts with tag")
        branch = branch if branch.startswith("refs/heads/") else f"refs/heads/{branch}"
        if ref and ref != branch:
            raise GitSourceError(f"ref conflicts: {go_quote(ref)} vs {go_quote(branch)}")
        ref = branch
    return GitSource(ref, checksum, keep_git_dir)
