"""Where we run (GitHub Actions, GitLab CI or a laptop) and the defaults that follow from it.

Credentials are recorded as *sources*, the names of environment variables or
the path of a Docker config file, never as values, so a `CIContext` can be
printed, logged and put in a plan. Detection never raises: whatever cannot be
found is None, and so is an image repository that Docker could not name (GitHub allows a
repository `.github`, the registry does not).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pipeline.oci.credentials import ANY_REGISTRY, CredentialSource
from pipeline.oci.reference import Repository

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = ["CIContext", "Provider", "detect"]

Provider = Literal["github", "gitlab", "local"]

GIT_TIMEOUT = 5.0
SHORT_SHA = 7


@dataclass(frozen=True)
class CIContext:
    """What the CI (or the laptop) says about this run: the refs publish templates fill in, and
    the registry, repos and credential sources it implies; no secret, so plans can show it."""

    provider: Provider
    branch: str | None = None
    sha: str | None = None
    short_sha: str | None = None
    tag: str | None = None
    default_branch: str | None = None
    run_id: str | None = None
    registry: str | None = None
    image_repo: Repository | None = None
    cache_repo: Repository | None = None
    credentials: tuple[CredentialSource, ...] = ()

    def to_json(self) -> dict[str, object]:
        """The plan's `ci` object."""
        return {
            "provider": self.provider,
            "branch": self.branch,
            "sha": self.sha,
            "short_sha": self.short_sha,
            "tag": self.tag,
            "default_branch": self.default_branch,
            "run_id": self.run_id,
            "registry": self.registry,
            "image_repo": None if self.image_repo is None else str(self.image_repo),
            "credentials": [asdict(source) for source in self.credentials],
        }


def detect(env: Mapping[str, str], cwd: Path) -> CIContext:
    if env.get("GITHUB_ACTIONS") == "true":
        context = _github(env)
    elif env.get("GITLAB_CI") == "true":
        context = _gitlab(env)
    else:
        context = _local(env, cwd)
    return _with_common_credentials(context, env)


def _get(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value, with empty counting as unset (GitHub sets GITHUB_HEAD_REF="")."""
    return env.get(name) or None


def _short(sha: str | None) -> str | None:
    return sha[:SHORT_SHA] if sha else None


def _repository(text: str | None) -> Repository | None:
    try:
        return None if text is None else Repository.parse(text)
    except ValueError:
        return None


def _cache(image_repo: Repository | None) -> Repository | None:
    return None if image_repo is None else image_repo.child("cache")


def _github(env: Mapping[str, str]) -> CIContext:
    """GitHub Actions; on pull requests the branch is the PR's source branch (GITHUB_HEAD_REF).

    Actions does not export GITHUB_TOKEN by itself: the workflow maps it into `env`
    (`GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}`), so without that there is no credential.
    """
    ref_type, ref_name = _get(env, "GITHUB_REF_TYPE"), _get(env, "GITHUB_REF_NAME")
    if ref_type is None:
        ref_type, ref_name = _split_ref(_get(env, "GITHUB_REF"))
    branch = _get(env, "GITHUB_HEAD_REF") or (ref_name if ref_type == "branch" else None)
    tag = ref_name if ref_type == "tag" else None
    registry = _github_registry(_get(env, "GITHUB_SERVER_URL"))
    repository = _get(env, "GITHUB_REPOSITORY")
    image_repo = (
        _repository(f"{registry}/{repository.lower()}") if registry and repository else None
    )
    credentials: tuple[CredentialSource, ...] = ()
    if registry and _get(env, "GITHUB_TOKEN"):
        credentials = (
            CredentialSource(
                registry, "env", username_env="GITHUB_ACTOR", password_env="GITHUB_TOKEN"
            ),
        )
    sha = _get(env, "GITHUB_SHA")
    return CIContext(
        provider="github",
        branch=branch,
        sha=sha,
        short_sha=_short(sha),
        tag=tag,
        default_branch=_github_default_branch(_get(env, "GITHUB_EVENT_PATH")),
        run_id=_get(env, "GITHUB_RUN_ID"),
        registry=registry,
        image_repo=image_repo,
        cache_repo=_cache(image_repo),
        credentials=credentials,
    )


def _split_ref(ref: str | None) -> tuple[str | None, str | None]:
    """`refs/heads/x` or `refs/tags/x`, for runners too old to set GITHUB_REF_TYPE."""
    for prefix, kind in (("refs/heads/", "branch"), ("refs/tags/", "tag")):
        if ref and ref.startswith(prefix):
            return kind, ref.removeprefix(prefix)
    return None, None


def _github_registry(server_url: str | None) -> str | None:
    """ghcr.io for github.com; `containers.<host>` for GitHub Enterprise Server and ghe.com."""
    host = urlsplit(server_url or "https://github.com").hostname
    if host is None:
        return None
    return "ghcr.io" if host == "github.com" else f"containers.{host}"


def _github_default_branch(event_path: str | None) -> str | None:
    if event_path is None:
        return None
    try:
        with open(event_path, encoding="utf-8") as handle:
            event = json.load(handle)
    except (OSError, ValueError):
        return None
    repository = event.get("repository") if isinstance(event, dict) else None
    branch = repository.get("default_branch") if isinstance(repository, dict) else None
    return branch if isinstance(branch, str) and branch else None


def _gitlab(env: Mapping[str, str]) -> CIContext:
    """GitLab CI. CI_COMMIT_BRANCH is unset in merge request and tag pipelines, hence the chain."""
    tag = _get(env, "CI_COMMIT_TAG")
    branch = (
        _get(env, "CI_COMMIT_BRANCH")
        or _get(env, "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME")
        or (None if tag else _get(env, "CI_COMMIT_REF_NAME"))
    )
    registry = _get(env, "CI_REGISTRY")
    credentials: tuple[CredentialSource, ...] = ()
    if registry and _get(env, "CI_REGISTRY_USER") and _get(env, "CI_REGISTRY_PASSWORD"):
        credentials = (
            CredentialSource(
                registry,
                "env",
                username_env="CI_REGISTRY_USER",
                password_env="CI_REGISTRY_PASSWORD",
            ),
        )
    elif registry and _get(env, "CI_JOB_TOKEN"):
        credentials = (
            CredentialSource(
                registry, "env", username="gitlab-ci-token", password_env="CI_JOB_TOKEN"
            ),
        )
    sha = _get(env, "CI_COMMIT_SHA")
    image_repo = _repository(_get(env, "CI_REGISTRY_IMAGE"))
    return CIContext(
        provider="gitlab",
        branch=branch,
        sha=sha,
        short_sha=_get(env, "CI_COMMIT_SHORT_SHA") or _short(sha),
        tag=tag,
        default_branch=_get(env, "CI_DEFAULT_BRANCH"),
        run_id=_get(env, "CI_PIPELINE_ID"),
        registry=registry,
        image_repo=image_repo,
        cache_repo=_cache(image_repo),
        credentials=credentials,
    )


def _local(env: Mapping[str, str], cwd: Path) -> CIContext:
    """A laptop or an unknown CI: what git says about the checkout in `cwd`."""
    answers = _ask_git(_LOCAL_QUESTIONS, env, cwd)
    sha = answers["sha"]
    origin_head = answers["origin_head"]
    return CIContext(
        provider="local",
        branch=answers["branch"],
        sha=sha,
        short_sha=_short(sha),
        tag=answers["tag"] if sha else None,
        default_branch=origin_head.removeprefix("origin/") if origin_head else None,
    )


_LOCAL_QUESTIONS = {
    "sha": ("rev-parse", "--verify", "--quiet", "HEAD"),
    "origin_head": ("symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD"),
    "branch": ("symbolic-ref", "--quiet", "--short", "HEAD"),
    "tag": ("describe", "--exact-match", "--tags", "HEAD"),
}


def _ask_git(
    questions: Mapping[str, tuple[str, ...]], env: Mapping[str, str], cwd: Path
) -> dict[str, str | None]:
    """One line of git output per question, or None on any failure (no git, not a repo,
    detached HEAD, no tag).

    The questions are asked at once, not in turn: each git process takes 8-10 ms to start on
    a slow two-core machine, and a warm build's start-up waits for all of them. One deadline,
    `GIT_TIMEOUT`, holds for them all.
    """
    git_env = {**env, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
    started: dict[str, subprocess.Popen[bytes] | None] = {}
    for name, args in questions.items():
        try:
            started[name] = subprocess.Popen(
                ("git", *args),
                cwd=cwd,
                env=git_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            started[name] = None
    deadline = time.monotonic() + GIT_TIMEOUT
    return {name: _answer(process, deadline) for name, process in started.items()}


def _answer(process: subprocess.Popen[bytes] | None, deadline: float) -> str | None:
    if process is None:
        return None
    try:
        stdout, _ = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return None
    output = stdout.decode("utf-8", "replace").strip()
    return output if process.returncode == 0 and output else None


def _with_common_credentials(context: CIContext, env: Mapping[str, str]) -> CIContext:
    """Add REGISTRY_USER/REGISTRY_PASSWORD and the Docker config file, after the CI's own."""
    sources = list(context.credentials)
    if _get(env, "REGISTRY_USER") and _get(env, "REGISTRY_PASSWORD"):
        sources.append(
            CredentialSource(
                context.registry or ANY_REGISTRY,
                "env",
                username_env="REGISTRY_USER",
                password_env="REGISTRY_PASSWORD",
            )
        )
    docker_config = _docker_config(env)
    if docker_config is not None:
        sources.append(CredentialSource(ANY_REGISTRY, "docker-config", path=docker_config))
    return replace(context, credentials=tuple(sources))


def _docker_config(env: Mapping[str, str]) -> str | None:
    """$DOCKER_CONFIG/config.json, else ~/.docker/config.json (HOME from `env`), if it exists."""
    directory = _get(env, "DOCKER_CONFIG")
    if directory is None:
        home = _get(env, "HOME")
        if home is None:
            return None
        directory = os.path.join(home, ".docker")
    path = os.path.join(directory, "config.json")
    return path if os.path.isfile(path) else None
