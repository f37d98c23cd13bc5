"""The pipeline as GitHub Actions and GitLab CI run it: real builds, with their environments.

Docker executor, real registry; each CI is simulated with the variables its docs list.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.docker_env import DockerEnv, read_report

SHA = "c0ffee0123456789abcdef0123456789abcdef01"

DOCKERFILE = """\
FROM {base} AS deps
RUN echo deps > /deps
FROM deps AS app
COPY src/ /app/
FROM app AS test
RUN mkdir -p /out
FROM app AS release
"""

CONFIG = """\
targets: [release]
test:
  stage: test
  command: >-
    echo running; cp /app/main.py /out/junit.xml;
    mkdir -p /out/cov; echo 91 > /out/cov/total; exit $(cat /app/exit_code)
  artifacts: [/out/junit.xml, /out/cov, /out/missing.txt]
publish:
  release: ["{{sha}}", "{{branch}}", "{registry}/elsewhere/app:{{short_sha}}"]
"""


@pytest.fixture
def project(tmp_path: Path, docker_env: DockerEnv) -> Path:
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.format(base=docker_env.base))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print('hello')\n")
    (tmp_path / "src" / "exit_code").write_text("0\n")
    (tmp_path / "dagger-stages.yaml").write_text(CONFIG.format(registry=docker_env.registry))
    return tmp_path


def github_env(project: Path, repo: str) -> dict[str, str]:
    event = project.parent / "event.json"
    event.write_text(json.dumps({"repository": {"default_branch": "main"}}))
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": repo,
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_REF_NAME": "main",
        "GITHUB_REF_TYPE": "branch",
        "GITHUB_SHA": SHA,
        "GITHUB_RUN_ID": "4242",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_STEP_SUMMARY": str(project.parent / "summary.md"),
    }


def gitlab_env(image_repo: str, registry: str) -> dict[str, str]:
    return {
        "GITLAB_CI": "true",
        "CI_COMMIT_BRANCH": "feature/Login",
        "CI_COMMIT_REF_NAME": "feature/Login",
        "CI_COMMIT_SHA": SHA,
        "CI_COMMIT_SHORT_SHA": SHA[:8],
        "CI_DEFAULT_BRANCH": "main",
        "CI_PIPELINE_ID": "777",
        "CI_REGISTRY": registry,
        "CI_REGISTRY_IMAGE": image_repo,
    }


def build(project: Path, docker_env: DockerEnv, env: dict[str, str], *args: str) -> str:
    command = docker_env.build_args("--report", "report.json", "--junit", "junit.xml")
    command += ["--artifacts-dir", "artifacts", *args]
    result = run_cli(*command, cwd=project, env=env)
    assert result.returncode in (0, 1), result.stderr
    return result.stderr + f"\nexit={result.returncode}"


def test_github_push_test_stage_and_summary(project: Path, docker_env: DockerEnv) -> None:
    owner = f"acme-{docker_env.cache_repo().split('/')[1]}"
    env = github_env(project, f"{owner}/Shop")
    image_repo = f"{docker_env.registry}/{owner}/shop"
    output = build(project, docker_env, env, "--image-repo", image_repo, "--push")
    assert output.endswith("exit=0"), output
    assert "::group::deps: built" in output
    assert "::endgroup::" in output
    document = json.loads((project / "report.json").read_text())
    assert document["test"]["exit_code"] == 0
    assert (project / "artifacts" / "junit.xml").read_text() == "print('hello')\n"
    assert (project / "artifacts" / "cov" / "total").read_text().strip() == "91"
    assert "artifact /out/missing.txt not copied" in output
    published = {item["ref"]: item["digest"] for item in document["published"]}
    assert set(published) == {
        f"{image_repo}:{SHA}",
        f"{image_repo}:main",
        f"{docker_env.registry}/elsewhere/app:{SHA[:7]}",
    }
    release_digest = read_report(project / "report.json")["release"]["digest"]
    assert set(published.values()) == {release_digest}
    summary = (project.parent / "summary.md").read_text()
    assert summary.count("```mermaid") == 2
    assert "gantt" in summary
    assert "release" in summary
    junit = ET.parse(project / "junit.xml").getroot()
    assert junit.find("testsuite") is not None


def test_failing_tests_exit_1_keep_artifacts_and_publish_nothing(
    project: Path, docker_env: DockerEnv
) -> None:
    owner = f"acme-{docker_env.cache_repo().split('/')[1]}"
    image_repo = f"{docker_env.registry}/{owner}/shop"
    env = github_env(project, f"{owner}/shop")
    (project / "src" / "exit_code").write_text("3\n")
    output = build(project, docker_env, env, "--image-repo", image_repo, "--push")
    assert output.endswith("exit=1"), output
    assert (project / "artifacts" / "junit.xml").exists()
    document = json.loads((project / "report.json").read_text())
    assert document["test"]["exit_code"] == 3
    assert document["ok"] is False
    assert document["published"] == []
    assert "nothing published" in output


def test_gitlab_sections_dotenv_and_the_same_keys_as_github(
    project: Path, docker_env: DockerEnv
) -> None:
    owner = f"group-{docker_env.cache_repo().split('/')[1]}"
    image_repo = f"{docker_env.registry}/{owner}/shop"
    env = gitlab_env(image_repo, docker_env.registry)
    output = build(project, docker_env, env, "--push", "--dotenv", "build.env")
    assert output.endswith("exit=0"), output
    assert "section_start:" in output
    assert "section_end:" in output
    dotenv = dict(line.split("=", 1) for line in (project / "build.env").read_text().splitlines())
    assert any(value.startswith(f"{image_repo}:feature-login@sha256:") for value in dotenv.values())
    gitlab_report = json.loads((project / "report.json").read_text())
    assert gitlab_report["cache_repo"] == f"{image_repo}/cache"

    def plan(env: dict[str, str]) -> dict[str, tuple[str, str]]:
        args = ["plan", "--json", "--target", "release", "--target", "test"]
        result = run_cli(*args, "--cache-repo", "localhost:5000/any/cache", cwd=project, env=env)
        stages = json.loads(result.stdout)["stages"]
        return {s["name"]: (s["key"], s["cache_ref"].rsplit(":", 1)[1]) for s in stages if s["key"]}

    same = plan(env)
    assert same == plan(github_env(project, "acme/shop")) == plan({})
    assert same["release"][0] == read_report(project / "report.json")["release"]["key"]
