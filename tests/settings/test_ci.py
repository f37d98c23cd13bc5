from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.oci.credentials import CredentialSource
from pipeline.oci.reference import Repository
from pipeline.settings import ci
from pipeline.settings.ci import CIContext, detect

SHA = "3f2a9c41d5e6b7a8c9d0e1f2a3b4c5d6e7f8a9b0"
GITHUB_TOKEN = "ghs_notARealTokenButSecret0123456789"
GITLAB_PASSWORD = "glcbt-registry-password-value"
JOB_TOKEN = "glcbt-job-token-value"
REGISTRY_PASSWORD = "laptop-registry-password"

requires_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def github_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The variables GitHub Actions sets for a push to a branch (from GitHub's variables docs)."""
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"repository": {"default_branch": "main"}}), encoding="utf-8")
    env = {
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_REF": "refs/heads/feature/login",
        "GITHUB_REF_NAME": "feature/login",
        "GITHUB_REF_TYPE": "branch",
        "GITHUB_HEAD_REF": "",
        "GITHUB_BASE_REF": "",
        "GITHUB_SHA": SHA,
        "GITHUB_REPOSITORY": "Acme/Shop",
        "GITHUB_REPOSITORY_OWNER": "Acme",
        "GITHUB_RUN_ID": "9876543210",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_ACTOR": "octocat",
        "GITHUB_TOKEN": GITHUB_TOKEN,
    }
    env.update(overrides)
    return env


def gitlab_env(**overrides: str) -> dict[str, str]:
    """The variables GitLab CI sets for a branch pipeline (from GitLab's predefined variables)."""
    env = {
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_PIPELINE_SOURCE": "push",
        "CI_COMMIT_BRANCH": "feature/login",
        "CI_COMMIT_REF_NAME": "feature/login",
        "CI_COMMIT_SHA": SHA,
        "CI_COMMIT_SHORT_SHA": SHA[:8],
        "CI_DEFAULT_BRANCH": "main",
        "CI_PIPELINE_ID": "1234567",
        "CI_REGISTRY": "registry.gitlab.com",
        "CI_REGISTRY_IMAGE": "registry.gitlab.com/acme/shop",
        "CI_REGISTRY_USER": "gitlab-ci-token",
        "CI_REGISTRY_PASSWORD": GITLAB_PASSWORD,
        "CI_JOB_TOKEN": JOB_TOKEN,
    }
    env.update(overrides)
    return env


def without(env: dict[str, str], *names: str) -> dict[str, str]:
    return {key: value for key, value in env.items() if key not in names}


# -- GitHub Actions ------------------------------------------------------------------------------


def test_github_push_to_a_branch(tmp_path: Path) -> None:
    context = detect(github_env(tmp_path), tmp_path)
    assert context == CIContext(
        provider="github",
        branch="feature/login",
        sha=SHA,
        short_sha=SHA[:7],
        tag=None,
        default_branch="main",
        run_id="9876543210",
        registry="ghcr.io",
        image_repo=Repository.parse("ghcr.io/acme/shop"),
        cache_repo=Repository.parse("ghcr.io/acme/shop/cache"),
        credentials=(
            CredentialSource(
                "ghcr.io", "env", username_env="GITHUB_ACTOR", password_env="GITHUB_TOKEN"
            ),
        ),
    )


def test_github_tag(tmp_path: Path) -> None:
    env = github_env(
        tmp_path, GITHUB_REF="refs/tags/v1.2.0", GITHUB_REF_NAME="v1.2.0", GITHUB_REF_TYPE="tag"
    )
    context = detect(env, tmp_path)
    assert (context.branch, context.tag) == (None, "v1.2.0")


def test_github_pull_request_uses_the_source_branch(tmp_path: Path) -> None:
    env = github_env(
        tmp_path,
        GITHUB_EVENT_NAME="pull_request",
        GITHUB_REF="refs/pull/42/merge",
        GITHUB_REF_NAME="42/merge",
        GITHUB_REF_TYPE="branch",
        GITHUB_HEAD_REF="feature/login",
        GITHUB_BASE_REF="main",
    )
    context = detect(env, tmp_path)
    assert (context.branch, context.tag, context.default_branch) == ("feature/login", None, "main")


def test_github_without_ref_type_falls_back_to_github_ref(tmp_path: Path) -> None:
    env = without(github_env(tmp_path), "GITHUB_REF_TYPE", "GITHUB_REF_NAME")
    assert detect(env, tmp_path).branch == "feature/login"
    tag_env = {**env, "GITHUB_REF": "refs/tags/v2"}
    assert (detect(tag_env, tmp_path).branch, detect(tag_env, tmp_path).tag) == (None, "v2")


@pytest.mark.parametrize("content", [None, "not json", "[]", '{"repository": {}}'])
def test_github_default_branch_unknown_without_a_usable_event(
    tmp_path: Path, content: str | None
) -> None:
    env = github_env(tmp_path)
    event = Path(env["GITHUB_EVENT_PATH"])
    if content is None:
        event.unlink()
    else:
        event.write_text(content, encoding="utf-8")
    assert detect(env, tmp_path).default_branch is None
    assert detect(without(env, "GITHUB_EVENT_PATH"), tmp_path).default_branch is None


def test_github_without_token_has_no_ghcr_credential(tmp_path: Path) -> None:
    context = detect(without(github_env(tmp_path), "GITHUB_TOKEN"), tmp_path)
    assert context.credentials == ()


def test_github_enterprise_server_registry(tmp_path: Path) -> None:
    env = github_env(tmp_path, GITHUB_SERVER_URL="https://github.example.com")
    context = detect(env, tmp_path)
    assert context.registry == "containers.github.example.com"
    assert str(context.image_repo) == "containers.github.example.com/acme/shop"
    assert context.credentials[0].registry == "containers.github.example.com"


def test_github_without_repository_has_no_image_repo(tmp_path: Path) -> None:
    context = detect(without(github_env(tmp_path), "GITHUB_REPOSITORY"), tmp_path)
    assert (context.registry, context.image_repo, context.cache_repo) == ("ghcr.io", None, None)


def test_github_repository_docker_cannot_name_has_no_image_repo(tmp_path: Path) -> None:
    context = detect(github_env(tmp_path, GITHUB_REPOSITORY="acme/.github"), tmp_path)
    assert (context.registry, context.image_repo, context.cache_repo) == ("ghcr.io", None, None)


def test_github_actions_must_be_exactly_true(tmp_path: Path) -> None:
    env = github_env(tmp_path, GITHUB_ACTIONS="1", PATH=str(tmp_path / "no-git"))
    assert detect(env, tmp_path).provider == "local"


# -- GitLab CI -----------------------------------------------------------------------------------


def test_gitlab_branch_pipeline(tmp_path: Path) -> None:
    assert detect(gitlab_env(), tmp_path) == CIContext(
        provider="gitlab",
        branch="feature/login",
        sha=SHA,
        short_sha=SHA[:8],
        tag=None,
        default_branch="main",
        run_id="1234567",
        registry="registry.gitlab.com",
        image_repo=Repository.parse("registry.gitlab.com/acme/shop"),
        cache_repo=Repository.parse("registry.gitlab.com/acme/shop/cache"),
        credentials=(
            CredentialSource(
                "registry.gitlab.com",
                "env",
                username_env="CI_REGISTRY_USER",
                password_env="CI_REGISTRY_PASSWORD",
            ),
        ),
    )


def test_gitlab_tag_pipeline(tmp_path: Path) -> None:
    env = without(
        gitlab_env(CI_COMMIT_TAG="v1.2.0", CI_COMMIT_REF_NAME="v1.2.0"), "CI_COMMIT_BRANCH"
    )
    context = detect(env, tmp_path)
    assert (context.branch, context.tag) == (None, "v1.2.0")


def test_gitlab_merge_request_pipeline(tmp_path: Path) -> None:
    env = without(
        gitlab_env(
            CI_PIPELINE_SOURCE="merge_request_event",
            CI_MERGE_REQUEST_SOURCE_BRANCH_NAME="feature/login",
            CI_MERGE_REQUEST_TARGET_BRANCH_NAME="main",
            CI_MERGE_REQUEST_IID="7",
            CI_COMMIT_REF_NAME="feature/login",
        ),
        "CI_COMMIT_BRANCH",
    )
    context = detect(env, tmp_path)
    assert (context.branch, context.tag) == ("feature/login", None)


def test_gitlab_ref_name_is_the_last_resort_for_the_branch(tmp_path: Path) -> None:
    env = without(gitlab_env(CI_COMMIT_REF_NAME="release"), "CI_COMMIT_BRANCH")
    assert detect(env, tmp_path).branch == "release"


def test_gitlab_short_sha_falls_back_to_seven(tmp_path: Path) -> None:
    context = detect(without(gitlab_env(), "CI_COMMIT_SHORT_SHA"), tmp_path)
    assert context.short_sha == SHA[:7]


def test_gitlab_job_token_when_no_registry_password(tmp_path: Path) -> None:
    env = without(gitlab_env(), "CI_REGISTRY_USER", "CI_REGISTRY_PASSWORD")
    assert detect(env, tmp_path).credentials == (
        CredentialSource(
            "registry.gitlab.com", "env", username="gitlab-ci-token", password_env="CI_JOB_TOKEN"
        ),
    )


def test_gitlab_without_container_registry(tmp_path: Path) -> None:
    env = without(gitlab_env(), "CI_REGISTRY", "CI_REGISTRY_IMAGE")
    context = detect(env, tmp_path)
    assert (context.registry, context.image_repo, context.cache_repo) == (None, None, None)
    assert context.credentials == ()


# -- local: git ----------------------------------------------------------------------------------


def git_env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: no user or system git config, no repository above tmp_path."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CEILING_DIRECTORIES": str(tmp_path),
    }


def git(repo: Path, env: dict[str, str], *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    result = subprocess.run(
        [*command, *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    env = git_env(tmp_path)
    git(path, env, "init", "-q")
    git(path, env, "symbolic-ref", "HEAD", "refs/heads/main")
    return path


@requires_git
def test_local_repository(tmp_path: Path, repo: Path) -> None:
    env = git_env(tmp_path)
    git(repo, env, "commit", "-q", "--allow-empty", "-m", "first")
    sha = git(repo, env, "rev-parse", "HEAD")
    assert detect(env, repo) == CIContext(
        provider="local", branch="main", sha=sha, short_sha=sha[:7]
    )


@requires_git
def test_local_tag_and_default_branch(tmp_path: Path, repo: Path) -> None:
    env = git_env(tmp_path)
    git(repo, env, "commit", "-q", "--allow-empty", "-m", "first")
    git(repo, env, "tag", "v1.0.0")
    git(repo, env, "update-ref", "refs/remotes/origin/trunk", "HEAD")
    git(repo, env, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/trunk")
    context = detect(env, repo)
    assert (context.branch, context.tag, context.default_branch) == ("main", "v1.0.0", "trunk")


@requires_git
def test_local_detached_head_has_no_branch(tmp_path: Path, repo: Path) -> None:
    env = git_env(tmp_path)
    git(repo, env, "commit", "-q", "--allow-empty", "-m", "first")
    git(repo, env, "checkout", "-q", "--detach")
    context = detect(env, repo)
    assert context.branch is None
    assert context.sha == git(repo, env, "rev-parse", "HEAD")


@requires_git
def test_local_repository_without_commits(tmp_path: Path, repo: Path) -> None:
    assert detect(git_env(tmp_path), repo) == CIContext(provider="local", branch="main")


@requires_git
def test_local_subdirectory_of_a_repository(tmp_path: Path, repo: Path) -> None:
    env = git_env(tmp_path)
    git(repo, env, "commit", "-q", "--allow-empty", "-m", "first")
    (repo / "examples" / "app").mkdir(parents=True)
    assert detect(env, repo / "examples" / "app").branch == "main"


@requires_git
def test_local_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert detect(git_env(tmp_path), plain) == CIContext(provider="local")


def test_local_without_git(tmp_path: Path) -> None:
    (tmp_path / "empty-bin").mkdir()
    env = {"PATH": str(tmp_path / "empty-bin")}
    assert detect(env, tmp_path) == CIContext(provider="local")


def test_local_missing_directory(tmp_path: Path) -> None:
    assert detect(git_env(tmp_path), tmp_path / "gone") == CIContext(provider="local")


def test_local_hanging_git_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "git"
    fake.write_text("#!/bin/sh\nexec sleep 30\n", encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setattr(ci, "GIT_TIMEOUT", 0.2)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.defpath}"}
    assert detect(env, tmp_path) == CIContext(provider="local")


# -- credentials anywhere ------------------------------------------------------------------------


def test_registry_user_locally_is_for_any_registry(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "REGISTRY_USER": "me", "REGISTRY_PASSWORD": REGISTRY_PASSWORD}
    assert detect(env, tmp_path).credentials == (
        CredentialSource(
            "*", "env", username_env="REGISTRY_USER", password_env="REGISTRY_PASSWORD"
        ),
    )


def test_registry_user_in_ci_is_for_the_ci_registry(tmp_path: Path) -> None:
    env = github_env(tmp_path, REGISTRY_USER="me", REGISTRY_PASSWORD=REGISTRY_PASSWORD)
    sources = detect(env, tmp_path).credentials
    assert [(s.registry, s.username_env, s.password_env) for s in sources] == [
        ("ghcr.io", "GITHUB_ACTOR", "GITHUB_TOKEN"),
        ("ghcr.io", "REGISTRY_USER", "REGISTRY_PASSWORD"),
    ]


def test_registry_user_needs_both_variables(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "REGISTRY_USER": "me"}
    assert detect(env, tmp_path).credentials == ()


def docker_config(directory: Path) -> Path:
    directory.mkdir(parents=True)
    path = directory / "config.json"
    path.write_text(json.dumps({"auths": {"ghcr.io": {"auth": "bWU6ZG9ja2VyLXNlY3JldA=="}}}))
    return path


def test_docker_config_from_docker_config_variable(tmp_path: Path) -> None:
    path = docker_config(tmp_path / "dockercfg")
    env = {"PATH": str(tmp_path), "DOCKER_CONFIG": str(tmp_path / "dockercfg")}
    assert detect(env, tmp_path).credentials == (
        CredentialSource("*", "docker-config", path=str(path)),
    )


def test_docker_config_from_home(tmp_path: Path) -> None:
    path = docker_config(tmp_path / "home" / ".docker")
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path / "home")}
    assert detect(env, tmp_path).credentials == (
        CredentialSource("*", "docker-config", path=str(path)),
    )


def test_no_docker_config_file(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path / "x")}
    assert detect(env, tmp_path).credentials == ()


def test_ci_credentials_come_before_common_ones(tmp_path: Path) -> None:
    docker_config(tmp_path / "home" / ".docker")
    env = gitlab_env(
        HOME=str(tmp_path / "home"), REGISTRY_USER="me", REGISTRY_PASSWORD=REGISTRY_PASSWORD
    )
    kinds = [(s.kind, s.username_env) for s in detect(env, tmp_path).credentials]
    assert kinds == [
        ("env", "CI_REGISTRY_USER"),
        ("env", "REGISTRY_USER"),
        ("docker-config", None),
    ]


# -- nothing secret is ever printable ------------------------------------------------------------


SECRETS = (
    GITHUB_TOKEN,
    GITLAB_PASSWORD,
    JOB_TOKEN,
    REGISTRY_PASSWORD,
    "bWU6ZG9ja2VyLXNlY3JldA==",
    "docker-secret",
)


@pytest.mark.parametrize("provider", ["github", "gitlab", "local"])
def test_repr_and_json_never_contain_secret_values(tmp_path: Path, provider: str) -> None:
    docker_config(tmp_path / "home" / ".docker")
    common = {
        "HOME": str(tmp_path / "home"),
        "REGISTRY_USER": "me",
        "REGISTRY_PASSWORD": REGISTRY_PASSWORD,
    }
    env = {
        "github": {**github_env(tmp_path), **common},
        "gitlab": {**gitlab_env(), **common},
        "local": {**common, "PATH": str(tmp_path), "GITHUB_TOKEN": GITHUB_TOKEN},
    }[provider]
    context = detect(env, tmp_path)
    assert context.credentials
    printed = repr(context) + json.dumps(context.to_json()) + str(context)
    for secret in SECRETS:
        assert secret not in printed


def test_to_json_shape(tmp_path: Path) -> None:
    data = detect(github_env(tmp_path), tmp_path).to_json()
    assert data == {
        "provider": "github",
        "branch": "feature/login",
        "sha": SHA,
        "short_sha": SHA[:7],
        "tag": None,
        "default_branch": "main",
        "run_id": "9876543210",
        "registry": "ghcr.io",
        "image_repo": "ghcr.io/acme/shop",
        "credentials": [
            {
                "registry": "ghcr.io",
                "kind": "env",
                "username_env": "GITHUB_ACTOR",
                "password_env": "GITHUB_TOKEN",
                "path": None,
                "username": None,
            }
        ],
    }
    assert json.loads(json.dumps(data)) == data
