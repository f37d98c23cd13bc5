"""The CI templates in ci/ and dagger.json: the keys each CI requires, the pinned Dagger version,
injection-safe scripts (run here with a fake `dagger` and `dagger-stages`), and, where
check-jsonschema is installed, its vendored schemas for GitHub Actions, workflows and GitLab CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "ci" / "github" / "action.yml"
WORKFLOW = ROOT / "ci" / "github" / "workflow.example.yml"
GITLAB = ROOT / "ci" / "gitlab" / "dagger-stages.gitlab-ci.yml"
DAGGER_JSON = ROOT / "dagger.json"

HIDDEN_JOB = ".dagger-stages"
DAGGER_ACTION = "dagger/dagger-for-github"
# Top-level keywords of a GitLab CI file that are not jobs.
GITLAB_GLOBALS = {
    "default",
    "include",
    "stages",
    "variables",
    "workflow",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
    "spec",
}


class _Yaml12Loader(yaml.SafeLoader):
    """Booleans as GitHub's YAML 1.2 parser reads them: true/false only.

    PyYAML follows YAML 1.1, where `on`, `off`, `yes` and `no` are booleans too, so a
    workflow's `on:` key would come back as True.
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _load_github(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Yaml12Loader)
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


def _load_gitlab(path: Path) -> dict[str, Any]:
    """GitLab's parser is YAML 1.1 (Ruby's Psych), as PyYAML's."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


def _load_gitlab_resolved(path: Path) -> dict[str, Any]:
    """The schema lets hidden jobs (`^[.]`) hold anything: check every job as GitLab runs it,
    with `extends:` merged in, under a name that is not hidden."""
    config = _load_gitlab(path)
    resolved = {key: value for key, value in config.items() if key in GITLAB_GLOBALS}
    for name in _gitlab_jobs(config):
        resolved[f"job {name}"] = _resolved(config, name)
    return resolved


@pytest.fixture(scope="module")
def action() -> dict[str, Any]:
    return _load_github(ACTION)


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return _load_github(WORKFLOW)


@pytest.fixture(scope="module")
def gitlab() -> dict[str, Any]:
    return _load_gitlab(GITLAB)


@pytest.fixture(scope="module")
def engine_version() -> str:
    return str(json.loads(DAGGER_JSON.read_text(encoding="utf-8"))["engineVersion"])


def _run_steps(action: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for step in action["runs"]["steps"] if "run" in step]


def _step(action: dict[str, Any], step_id: str) -> dict[str, Any]:
    for step in action["runs"]["steps"]:
        if step.get("id") == step_id:
            return dict(step)
    raise AssertionError(f"no step with id {step_id!r}")


def _strings(value: object) -> list[str]:
    """Every string in a parsed YAML document, keys and values."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (*_strings(key), *_strings(item))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _gitlab_jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: job for name, job in config.items() if name not in GITLAB_GLOBALS}


def _resolved(config: dict[str, Any], name: str) -> dict[str, Any]:
    """A job with its `extends:` merged in, as GitLab does (deep merge of mappings)."""
    job = config[name]
    parents = job.get("extends", [])
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = _deep_merge(merged, _resolved(config, parent))
    return _deep_merge(merged, {k: v for k, v in job.items() if k != "extends"})


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# dagger.json


def test_dagger_json_pins_a_0_21_engine_and_declares_no_module_source() -> None:
    config = json.loads(DAGGER_JSON.read_text(encoding="utf-8"))
    assert config["name"] == "dagger-stages"
    assert re.fullmatch(r"v0\.21\.\d+", config["engineVersion"])
    # Dagger's dagger.json schema requires only name and engineVersion; with no sdk or source
    # there is no module to load or generate code for (`dagger run` loads none anyway).
    assert not {"sdk", "source"} & set(config)


def test_engine_version_matches_the_installed_dagger_io_sdk(engine_version: str) -> None:
    """The SDK talks to the engine the CLI starts: their minor versions must agree."""
    sdk = metadata.version("dagger-io").split(".")[:2]
    assert engine_version.removeprefix("v").split(".")[:2] == sdk


# GitHub: the composite action


def test_action_is_a_composite_action(action: dict[str, Any]) -> None:
    assert action["name"]
    assert action["description"]
    assert action["runs"]["using"] == "composite"
    assert action["runs"]["steps"]


def test_every_run_step_has_a_shell(action: dict[str, Any]) -> None:
    for step in _run_steps(action):
        assert step.get("shell"), f"composite steps with `run` need `shell`: {step.get('name')}"


def test_every_referenced_input_is_declared(action: dict[str, Any]) -> None:
    """Every value, not comments: `${{ inputs.x }}` expressions and `if:` conditions."""
    referenced = {
        name
        for text in _strings(action)
        for name in re.findall(r"(?<![\w.])inputs\.([A-Za-z_][\w-]*)", text)
    }
    assert referenced
    assert referenced <= set(action["inputs"]), referenced - set(action["inputs"])


def test_declared_inputs_and_outputs(action: dict[str, Any]) -> None:
    inputs = action["inputs"]
    expected = {"targets", "config", "push", "engine", "working-directory", "extra-args", "token"}
    assert expected <= set(inputs)
    for name, spec in inputs.items():
        assert spec.get("description"), f"input {name} has no description"
    assert inputs["engine"]["default"] == "dagger"
    assert inputs["push"]["default"] == "false"
    assert inputs["token"]["default"] == "${{ github.token }}"
    outputs = action["outputs"]
    assert {"report", "junit"} <= set(outputs)
    for name, spec in outputs.items():
        assert spec["value"].startswith("${{ steps."), f"output {name} needs a value"


def test_no_expression_is_expanded_inside_a_run_script(action: dict[str, Any]) -> None:
    """Expressions in `run:` are pasted into the script before the shell sees it (injection);
    inputs and contexts go through `env:` and are expanded as "$VAR"."""
    for step in _run_steps(action):
        assert "${{ inputs." not in step["run"], step.get("name")
        assert "${{" not in step["run"], step.get("name")


def test_the_token_reaches_the_build_as_github_token(action: dict[str, Any]) -> None:
    env = _step(action, "build")["env"]
    assert env["GITHUB_TOKEN"] == "${{ inputs.token }}"


def test_the_action_installs_itself_from_its_own_checkout(action: dict[str, Any]) -> None:
    install = _step(action, "install")["run"]
    assert '"$GITHUB_ACTION_PATH/../.."' in install
    assert (ACTION.parent / "../../pyproject.toml").resolve() == ROOT / "pyproject.toml"


def test_the_pip_cache_is_keyed_on_pyproject(action: dict[str, Any]) -> None:
    assert "pyproject.toml" in _step(action, "pip-cache")["run"]
    caches = [
        s for s in action["runs"]["steps"] if str(s.get("uses", "")).startswith("actions/cache@")
    ]
    assert len(caches) == 1
    assert "steps.pip-cache.outputs.hash" in caches[0]["with"]["key"]


def test_the_action_pins_the_dagger_cli_to_dagger_json(
    action: dict[str, Any], engine_version: str
) -> None:
    steps = [s for s in action["runs"]["steps"] if str(s.get("uses", "")).startswith(DAGGER_ACTION)]
    assert len(steps) == 1
    step = steps[0]
    # a full commit, never a moving tag, for a third-party action that runs a downloaded binary
    assert re.fullmatch(rf"{DAGGER_ACTION}@[0-9a-f]{{40}}", step["uses"])
    assert "v" + str(step["with"]["version"]).removeprefix("v") == engine_version
    # no verb, call, args or shell: the action only installs the CLI
    assert not {"verb", "call", "args", "shell", "check"} & set(step["with"])


def test_every_used_action_is_pinned(action: dict[str, Any], workflow: dict[str, Any]) -> None:
    steps = list(action["runs"]["steps"])
    for job in workflow["jobs"].values():
        steps += job["steps"]
    for step in steps:
        if "uses" in step and not step["uses"].startswith("./"):
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[\w.-]+", step["uses"]), step["uses"]


# GitHub: the example workflow


def test_workflow_has_triggers_and_jobs(workflow: dict[str, Any]) -> None:
    assert True not in workflow, "`on` must stay a key (YAML 1.2), see _Yaml12Loader"
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert workflow["jobs"]
    for name, job in workflow["jobs"].items():
        assert job.get("runs-on"), f"job {name} has no runs-on"
        assert job.get("steps"), f"job {name} has no steps"


def test_pyyaml_alone_would_read_on_as_true() -> None:
    """Why _Yaml12Loader exists."""
    assert True in yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def test_workflow_can_write_packages(workflow: dict[str, Any]) -> None:
    permissions = workflow["permissions"]
    assert permissions["packages"] == "write"
    assert permissions["contents"] == "read"


def test_workflow_uses_the_action_and_publishes_junit_always(workflow: dict[str, Any]) -> None:
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    uses = [str(step.get("uses", "")) for step in steps]
    ours = [
        step
        for step in steps
        if re.fullmatch(
            r"(\./ci/github|[\w.-]+/dagger-stages/ci/github@[\w./-]+)", step.get("uses", "")
        )
    ]
    assert len(ours) == 1, uses
    assert ours[0]["with"]["targets"] == "test"
    assert any(u.startswith("actions/checkout@") for u in uses)
    assert uses.index(next(u for u in uses if u.startswith("actions/checkout@"))) < uses.index(
        ours[0]["uses"]
    )
    reporters = [
        s for s in steps if str(s.get("uses", "")).startswith("mikepenz/action-junit-report@")
    ]
    assert len(reporters) == 1
    assert reporters[0]["if"].startswith("always()")
    assert f"steps.{ours[0]['id']}.outputs.junit" in reporters[0]["with"]["report_paths"]


# GitLab


def test_gitlab_has_the_hidden_job_and_a_default_job_extending_it(
    gitlab: dict[str, Any],
) -> None:
    assert HIDDEN_JOB in gitlab
    visible = [name for name in _gitlab_jobs(gitlab) if not name.startswith(".")]
    assert visible
    for name in visible:
        assert gitlab[name].get("extends") in (HIDDEN_JOB, [HIDDEN_JOB])


def test_gitlab_jobs_have_scripts(gitlab: dict[str, Any]) -> None:
    for name in _gitlab_jobs(gitlab):
        job = _resolved(gitlab, name)
        assert job.get("script"), f"job {name} has no script"
        assert all(isinstance(line, str) for line in job["script"])


def test_gitlab_job_runs_python_with_a_dind_service(gitlab: dict[str, Any]) -> None:
    job = _resolved(gitlab, "dagger-stages")
    assert str(job["image"]).startswith("python:3.11")
    names = [s if isinstance(s, str) else s["name"] for s in job["services"]]
    assert any(re.fullmatch(r"docker:([\w.-]+-)?dind", name) for name in names), names


def test_gitlab_dind_tls_variables_are_consistent(gitlab: dict[str, Any]) -> None:
    job = _resolved(gitlab, "dagger-stages")
    variables = job["variables"]
    certdir = variables["DOCKER_TLS_CERTDIR"]
    assert certdir, "an empty DOCKER_TLS_CERTDIR turns TLS off"
    assert variables["DOCKER_HOST"] == "tcp://docker:2376", "2376 is dind's TLS port"
    assert str(variables["DOCKER_TLS_VERIFY"]) == "1"
    cert_path = variables["DOCKER_CERT_PATH"].replace("$DOCKER_TLS_CERTDIR", certdir)
    assert cert_path == f"{certdir}/client"
    # the service is reached by the host name DOCKER_HOST names, and waited for on its port
    for service in job["services"]:
        if isinstance(service, dict) and "dind" in service["name"]:
            assert service.get("alias", "docker") == "docker"
            assert service["variables"]["HEALTHCHECK_TCP_PORT"] == "2376"


def test_gitlab_artifacts_are_kept_always_with_native_reports(gitlab: dict[str, Any]) -> None:
    job = _resolved(gitlab, "dagger-stages")
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always"
    assert artifacts["reports"]["junit"] == "junit.xml"
    assert artifacts["reports"]["dotenv"] == "build.env"
    assert "report.json" in artifacts["paths"]
    script = "\n".join(job["script"])
    for flag, name in (
        ("--junit", "junit.xml"),
        ("--dotenv", "build.env"),
        ("--report", "report.json"),
    ):
        assert f'{flag} "$CI_PROJECT_DIR/{name}"' in script


def test_gitlab_variables_and_pinned_dagger_version(
    gitlab: dict[str, Any], engine_version: str
) -> None:
    variables = gitlab["variables"]
    assert {"DAGGER_STAGES_TARGETS", "DAGGER_STAGES_CONFIG"} <= set(variables)
    assert "v" + variables["DAGGER_STAGES_DAGGER_VERSION"] == engine_version
    install = "\n".join(_resolved(gitlab, "dagger-stages")["before_script"])
    assert 'DAGGER_VERSION="$DAGGER_STAGES_DAGGER_VERSION"' in install
    # DOCKER_* must not leak into the including project's other jobs
    assert not [name for name in variables if name.startswith("DOCKER_")]


# The scripts, run with fakes: every argument arrives as one word, and nothing is expanded.

HOSTILE = "$(touch pwned) `touch pwned` *"


def _executable(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def fakes(tmp_path: Path) -> Path:
    """A bin folder with `dagger` (run: execs its command, noting it) and `dagger-stages`
    (writes its argv as JSON), and `python` for the GitLab script."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.json"
    _executable(
        bin_dir / "dagger-stages",
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd(),"
        f" 'via_dagger': os.environ.get('VIA_DAGGER') == '1'}}, open({str(record)!r}, 'w'))\n",
    )
    _executable(
        bin_dir / "dagger",
        f"#!{sys.executable}\nimport os, sys\n"
        "assert sys.argv[1] == 'run', sys.argv\n"
        "os.environ['VIA_DAGGER'] = '1'\n"
        "os.execvp(sys.argv[2], sys.argv[2:])\n",
    )
    _executable(bin_dir / "python", f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    return bin_dir


def _recorded(fakes: Path) -> dict[str, Any]:
    data = json.loads((fakes.parent / "argv.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _run(
    shell: str, script: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    path = shutil.which(shell)
    assert path is not None, f"needs {shell}, as the CI runners that run these scripts have"
    return subprocess.run(
        [path, "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _github_env(fakes: Path, tmp_path: Path, **inputs: str) -> dict[str, str]:
    (tmp_path / "runner-temp").mkdir(exist_ok=True)
    env = {
        "PATH": f"{fakes}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "RUNNER_TEMP": str(tmp_path / "runner-temp"),
        "GITHUB_OUTPUT": str(tmp_path / "github-output"),
        "GITHUB_TOKEN": "token",
        "DAGGER_STAGES_PYTHON": sys.executable,
        "DAGGER_STAGES_BIN": str(fakes / "dagger-stages"),
        "INPUT_TARGETS": "",
        "INPUT_CONFIG": "",
        "INPUT_PUSH": "false",
        "INPUT_ENGINE": "dagger",
        "INPUT_WORKING_DIRECTORY": ".",
        "INPUT_EXTRA_ARGS": "",
    }
    env.update({f"INPUT_{name.upper()}": value for name, value in inputs.items()})
    return env


def _outputs(tmp_path: Path) -> dict[str, str]:
    lines = (tmp_path / "github-output").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_action_build_script_passes_inputs_as_words(
    action: dict[str, Any], fakes: Path, tmp_path: Path
) -> None:
    workspace = tmp_path / "workspace"
    (workspace / "app dir").mkdir(parents=True)
    env = _github_env(
        fakes,
        tmp_path,
        targets="test\n  release ",
        config="ci/dagger stages.yaml",
        push="true",
        working_directory="app dir",
        extra_args=f"--build-arg 'NOTE=a b' --jobs 4 '{HOSTILE}'",
    )
    result = _run("bash", _step(action, "build")["run"], env, workspace)
    assert result.returncode == 0, result.stderr
    outputs = _outputs(tmp_path)
    recorded = _recorded(fakes)
    assert recorded["via_dagger"]
    assert recorded["cwd"] == str(workspace / "app dir")
    assert recorded["argv"] == [
        "build",
        "--engine",
        "dagger",
        "--report",
        outputs["report"],
        "--junit",
        outputs["junit"],
        "--target",
        "test",
        "--target",
        "release",
        "--config",
        "ci/dagger stages.yaml",
        "--push",
        "--build-arg",
        "NOTE=a b",
        "--jobs",
        "4",
        HOSTILE,
    ]
    assert Path(outputs["report"]).parent.parent == tmp_path / "runner-temp"
    assert not list(tmp_path.rglob("pwned"))


def test_action_build_script_never_expands_targets(
    action: dict[str, Any], fakes: Path, tmp_path: Path
) -> None:
    env = _github_env(fakes, tmp_path, targets=HOSTILE, engine="docker")
    result = _run("bash", _step(action, "build")["run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    recorded = _recorded(fakes)
    assert not recorded["via_dagger"], "engine docker runs without `dagger run`"
    targets = [recorded["argv"][i + 1] for i, a in enumerate(recorded["argv"]) if a == "--target"]
    assert targets == HOSTILE.split()
    assert not list(tmp_path.rglob("pwned"))


def test_action_build_script_rejects_a_push_that_is_not_a_boolean(
    action: dict[str, Any], fakes: Path, tmp_path: Path
) -> None:
    env = _github_env(fakes, tmp_path, push="yes")
    result = _run("bash", _step(action, "build")["run"], env, tmp_path)
    assert result.returncode == 2
    assert not (tmp_path / "argv.json").exists()


def test_gitlab_script_passes_variables_as_words(
    gitlab: dict[str, Any], fakes: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    env = {
        "PATH": f"{fakes}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "CI_PROJECT_DIR": str(project),
        **{
            name: str(value["value"])
            for name, value in gitlab["variables"].items()
            if isinstance(value, dict)
        },
        "DAGGER_STAGES_TARGETS": f"test release {HOSTILE}",
        "DAGGER_STAGES_CONFIG": "ci/dagger stages.yaml",
        "DAGGER_STAGES_PUSH": "true",
        "DAGGER_STAGES_EXTRA_ARGS": f"--build-arg 'NOTE=a b' '{HOSTILE}'",
    }
    script = "\n".join(_resolved(gitlab, "dagger-stages")["script"])
    result = _run("sh", script, env, project)
    assert result.returncode == 0, result.stderr
    recorded = _recorded(fakes)
    assert recorded["via_dagger"]
    assert recorded["argv"] == [
        "build",
        "--engine",
        "dagger",
        *[word for t in ["test", "release", *HOSTILE.split()] for word in ("--target", t)],
        "--config",
        "ci/dagger stages.yaml",
        "--push",
        "--build-arg",
        "NOTE=a b",
        HOSTILE,
        "--junit",
        f"{project}/junit.xml",
        "--dotenv",
        f"{project}/build.env",
        "--report",
        f"{project}/report.json",
    ]
    assert not list(tmp_path.rglob("pwned"))


# The schemas check-jsonschema vendors (SchemaStore's github-action and github-workflow, and
# GitLab's own gitlab-ci), read from the installed package: no network.


def _vendored_schema(name: str) -> dict[str, Any]:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema vendors the CI schemas")
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath(name).read_text("utf-8")
    )
    schema = json.loads(text)
    assert isinstance(schema, dict)
    return schema


@pytest.mark.parametrize(
    ("schema_name", "path", "loader"),
    [
        pytest.param("github-actions.json", ACTION, _load_github, id="action"),
        pytest.param("github-workflows.json", WORKFLOW, _load_github, id="workflow"),
        pytest.param("gitlab-ci.json", GITLAB, _load_gitlab, id="gitlab"),
        pytest.param("gitlab-ci.json", GITLAB, _load_gitlab_resolved, id="gitlab-jobs-resolved"),
    ],
)
def test_templates_match_their_ci_schema(schema_name: str, path: Path, loader: Any) -> None:
    schema = _vendored_schema(schema_name)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(loader(path)), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{path.name}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )
