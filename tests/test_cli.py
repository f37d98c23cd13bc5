from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.dockerfile.platforms import native_platform
from pipeline.errors import UsageError
from tests.cli import MAIN, ROOT, cli_command, run_cli
from tests.conftest import FIXTURES
from tests.registry_server import RegistryServer, push_image

PHP = FIXTURES / "php"


def test_plan_json_contract(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(PHP)
    assert main(["plan", "--target", "test", "--json", "--offline"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["dockerfile"] == "Dockerfile"
    assert document["context"] == "."
    assert document["targets"] == ["test"]
    assert document["ci"]["provider"] == "local"
    assert document["cache_repo"] is None
    assert document["waves"] == [
        ["composer-build", "npm-build", "php-extensions-build"],
        ["app"],
        ["dev-back"],
        ["test"],
    ]
    first, app = document["stages"][0], document["stages"][3]
    assert len(first.pop("key")) == 64
    native = str(native_platform())
    assert document["platforms"] == [native]
    assert (first.pop("target_platform"), first.pop("target_platforms")) == (native, [native])
    assert first == {
        "name": "composer-build",
        "index": 0,
        "line": 5,
        "base": "composer:2",
        "base_stage": None,
        "base_stage_index": None,
        "platform": None,
        "depends_on": [],
        "depends_on_indices": [],
        "images": [],
        "needed": True,
        "wave": 0,
        "cache_ref": None,
        "cache": None,
        "action": "build",
        "unpinned": ["composer:2"],
        "hint": None,
        "why": [],
        "always_built": None,
    }
    assert app["base"] == "php-extensions-build"
    assert app["base_stage"] == "php-extensions-build"
    assert app["depends_on"] == ["composer-build", "npm-build", "php-extensions-build"]
    assert (app["base_stage_index"], app["depends_on_indices"]) == (2, [0, 1, 2])
    assert document["target_indices"] == [7]
    assert document["wave_indices"] == [[0, 1, 2], [3], [5], [7]]
    release = document["stages"][4]
    assert (release["needed"], release["wave"], release["key"], release["action"]) == (
        False,
        None,
        None,
        None,
    )


def test_plan_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "plan",
                "--offline",
                "--context",
                str(PHP),
                "--target",
                "release",
                "--build-arg",
                "NODE_VERSION=22",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "STAGE",
        "INDEX",
        "BASE",
        "DEPENDS",
        "ON",
        "WAVE",
        "KEY",
        "CACHE",
        "ACTION",
    ]
    cells = lines[2].split()
    assert cells[:5] == ["npm-build", "1", "node:22-alpine", "-", "0"]
    assert len(cells[5]) == 12
    assert cells[6:] == ["-", "build"]
    assert lines[6].split()[-2:] == ["not", "needed"]
    assert "5 of 9 stages needed for release, in 3 waves: 5 to build, 0 to restore" in out


def test_config_file_and_cli_precedence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = tmp_path / "project"
    shutil.copytree(PHP, project)
    (tmp_path / "ci.yaml").write_text(
        "context: project\n"
        "targets: [release]\n"
        "build_args:\n  NODE_VERSION: '18'\n  PHP_VERSION: '8.2'\n"
        "cache_repo: registry.example/app/cache\n"
    )
    args = [
        "plan",
        "--offline",
        "--config",
        str(tmp_path / "ci.yaml"),
        "--json",
        "--build-arg",
        "PHP_VERSION=8.4",
    ]
    assert main(args) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["context"] == str(project)
    assert document["dockerfile"] == str(project / "Dockerfile")
    assert document["targets"] == ["release"]
    assert document["cache_repo"] == "registry.example/app/cache"
    bases = {s["name"]: s["base"] for s in document["stages"]}
    assert bases["npm-build"] == "node:18-alpine"
    assert bases["php-extensions-build"] == "php:8.4-apache"
    assert main([*args, "--target", "dev-front", "--cache-repo", "other/cache"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["targets"], document["cache_repo"]) == (["dev-front"], "other/cache")


def test_ci_default_cache_repo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_REPOSITORY", "Acme/Shop")
    monkeypatch.setenv("GITHUB_REF_TYPE", "branch")
    monkeypatch.setenv("GITHUB_REF_NAME", "feature/x")
    monkeypatch.setenv("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
    assert main(["plan", "--context", str(PHP), "--json", "--offline"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["cache_repo"] == "ghcr.io/acme/shop/cache"
    assert document["ci"]["provider"] == "github"
    assert document["ci"]["branch"] == "feature/x"


def test_duplicate_stage_warning_goes_to_stderr(
    chdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (chdir / "Dockerfile").write_text("FROM a AS x\nFROM b AS x\n")
    assert main(["plan", "--json", "--offline"]) == 0
    captured = capsys.readouterr()
    assert (
        captured.err
        == 'Dockerfile:2: warning: Duplicate stage name "x", stage names should be unique\n'
    )
    assert json.loads(captured.out)["warnings"] == [
        {"line": 2, "message": 'Duplicate stage name "x", stage names should be unique'}
    ]


def test_from_a_stage_in_uppercase_fails_offline_only_where_the_target_needs_it(
    chdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (chdir / "Dockerfile").write_text(
        "FROM alpine AS builder\nFROM Builder AS app\nFROM alpine AS other\n"
    )
    assert main(["plan", "--offline", "--target", "app"]) == 2
    err = capsys.readouterr().err
    assert err.startswith('Dockerfile:2: failed to parse stage name "Builder"')
    assert 'did you mean the stage "builder"?' in err
    assert "Traceback" not in err
    assert main(["plan", "--offline", "--json", "--target", "other"]) == 0


def test_onbuild_with_a_heredoc_plans(chdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (chdir / "Dockerfile").write_text(
        "FROM alpine AS base\nONBUILD RUN <<EOF\necho hi\nEOF\nFROM base AS child\n"
    )
    assert main(["plan", "--offline", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert json.loads(captured.out)["warnings"] == []


def test_a_later_stage_reference_fails_only_where_the_target_needs_it(
    chdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (chdir / "Dockerfile").write_text(
        "FROM alpine AS early\nCOPY --from=later /x /x\n"
        "FROM alpine AS later\nRUN true\n"
        "FROM alpine AS uses\nRUN --mount=from=mounted,target=/t true\n"
        "FROM alpine AS mounted\n"
    )
    copy = 'cannot copy from stage "later", it needs to be defined before current stage "early"'
    mount = (
        'cannot mount from stage "mounted" to "/t", '
        "stage needs to be defined before current command"
    )
    assert main(["plan", "--offline", "--json", "--target", "later"]) == 0
    captured = capsys.readouterr()
    skipped = [
        (2, f'{copy} (not an error here: stage "early" is not needed by the target)'),
        (6, f'{mount} (not an error here: stage "uses" is not needed by the target)'),
    ]
    assert captured.err == "".join(f"Dockerfile:{n}: warning: {m}\n" for n, m in skipped)
    warnings = json.loads(captured.out)["warnings"]
    assert warnings == [{"line": n, "message": m} for n, m in skipped]

    assert main(["plan", "--offline", "--target", "early"]) == 2
    assert capsys.readouterr().err.startswith(f"Dockerfile:2: {copy}")
    assert main(["plan", "--offline", "--target", "uses"]) == 2
    assert capsys.readouterr().err.startswith(f"Dockerfile:6: {mount}")


def test_errors_buildkit_finds_in_every_stage_still_fail_unneeded_stages(
    chdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (chdir / "Dockerfile").write_text("FROM alpine AS a\nCOPY --from=7 /x /x\nFROM alpine AS b\n")
    assert main(["plan", "--offline", "--target", "b"]) == 2
    assert capsys.readouterr().err.startswith("Dockerfile:2: invalid stage index 7")


CROSS = """\
FROM --platform=$BUILDPLATFORM alpine AS tools
RUN make-tools
FROM tools AS build
ARG TARGETARCH
RUN build-for $TARGETARCH
FROM alpine AS release
COPY --from=tools /t /t
COPY --from=build /out /out
"""


def test_several_platforms_plan_what_they_share_once(
    chdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (chdir / "Dockerfile").write_text(CROSS)
    assert main(["plan", "--offline", "--platform", "linux/amd64,linux/arm64"]) == 0
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()[1:6]]
    assert rows == [
        ["tools", "all"],
        ["build", "linux/amd64"],
        ["build", "linux/arm64"],
        ["release", "linux/amd64"],
        ["release", "linux/arm64"],
    ]
    (chdir / "dagger-stages.yaml").write_text("platforms: [linux/amd64, linux/arm64]\n")
    assert main(["plan", "--offline", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["platform"], document["platforms"]) == (
        "linux/amd64",
        ["linux/amd64", "linux/arm64"],
    )
    stages = [
        (s["name"], s["target_platform"], s["target_platforms"], s["action"])
        for s in document["stages"]
    ]
    assert stages == [
        ("tools", "linux/amd64", ["linux/amd64", "linux/arm64"], "build"),
        ("build", "linux/amd64", ["linux/amd64"], "build"),
        ("build", "linux/arm64", ["linux/arm64"], "build"),
        ("release", "linux/amd64", ["linux/amd64"], "build"),
        ("release", "linux/arm64", ["linux/arm64"], "build"),
    ]
    keys = {(s["name"], s["target_platform"]): s["key"] for s in document["stages"]}
    assert keys["build", "linux/amd64"] != keys["build", "linux/arm64"]
    assert main(["plan", "--offline", "--json", "--platform", "linux/arm64"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["platforms"] == ["linux/arm64"]
    assert [s["target_platforms"] for s in document["stages"]] == [["linux/arm64"]] * 3


def test_duplicate_stage_names_are_told_apart_by_index(
    chdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (chdir / "Dockerfile").write_text(
        "FROM alpine AS b\n"
        "FROM alpine AS b\n"
        "FROM b AS c\n"
        "COPY --from=0 /x /x\n"
        "COPY --from=b /y /y\n"
    )
    assert main(["plan", "--json", "--offline"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["waves"] == [["b", "b"], ["c"]]
    assert document["wave_indices"] == [[0, 1], [2]]
    assert (document["targets"], document["target_indices"]) == (["c"], [2])
    c = document["stages"][2]
    assert (c["base_stage"], c["base_stage_index"]) == ("b", 1)
    assert (c["depends_on"], c["depends_on_indices"]) == (["b", "b"], [0, 1])
    assert main(["plan", "--offline"]) == 0
    table = capsys.readouterr().out
    assert "  wave 0: b (0), b (1)\n  wave 1: c\n" in table
    row = next(line for line in table.splitlines() if line.startswith("c "))
    assert row.split()[:6] == ["c", "2", "b", "(1)", "b", "(0),"]


BAD_DOCKERFILES = [
    ("", "Dockerfile: the Dockerfile cannot be empty"),
    ("FROM a\nFROOM b\n", "Dockerfile:2: unknown instruction: FROOM (did you mean FROM?)"),
    ("RUN x\nFROM a\n", "Dockerfile:1: no build stage in current context"),
    ("FROM\n", "Dockerfile:1: FROM requires either one or three arguments"),
    (
        "FROM a AS 9lives\n",
        'Dockerfile:1: invalid name for build stage: "9lives", name can\'t start',
    ),
    (
        "FROM a AS y\nCOPY --from=x / /\nFROM a AS x\nFROM y\n",
        'Dockerfile:2: cannot copy from stage "x", it needs to be defined before current stage "y"',
    ),
    ("FROM a AS x\nCOPY --from=x / /\n", "Dockerfile:2: circular dependency detected on stage: x"),
    (
        "FROM a AS x\nFROM a\nCOPY --from=${S} / /\n",
        "Dockerfile:3: variable expansion is not supported",
    ),
    (
        "FROM alpine AS builder\nFROM Builder\n",
        'Dockerfile:2: failed to parse stage name "Builder": invalid reference format: '
        "repository name (library/Builder) must be lowercase (did you mean the stage "
        '"builder"? write FROM builder)',
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_DOCKERFILES)
def test_bad_dockerfiles_exit_2_without_traceback(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "Dockerfile").write_text(text)
    result = run_cli("plan", cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(expected)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "config", "expected"),
    [
        (
            ["--target", "nope"],
            None,
            'Dockerfile: target stage "nope" could not be found; the stages are a, b',
        ),
        (["--build-arg", "=x"], None, "--build-arg"),
        (["--dockerfile", "Missing"], None, "Missing: Dockerfile not found: looked for Missing in"),
        ([], "targets: [a\n", "dagger-stages.yaml:1:"),
        (
            [],
            "targetz: [a]\n",
            'dagger-stages.yaml:1: unknown key "targetz" (did you mean "targets"?)',
        ),
        ([], "engine: docker\nbuild_args: [1]\n", "dagger-stages.yaml:2: build_args"),
        (["--config", "absent.yaml"], None, "absent.yaml"),
    ],
)
def test_bad_flags_and_config_exit_2(
    tmp_path: Path, args: list[str], config: str | None, expected: str
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM a AS a\nFROM a AS b\n")
    if config is not None:
        (tmp_path / "dagger-stages.yaml").write_text(config)
    result = run_cli("plan", *args, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_every_entry_point_works(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM a AS only\n")
    forms = [
        cli_command(),
        [sys.executable, "-m", "pipeline"],
        [str(Path(sys.executable).parent / "dagger-stages")],
    ]
    for command in forms:
        result = subprocess.run(
            [*command, "plan", "--json"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, (command, result.stderr)
        assert json.loads(result.stdout)["targets"] == ["only"]


PROBE = """
import os, runpy, sys
def exit_now(code):
    raise SystemExit(code)
os._exit = exit_now  # the entry point ends the process without interpreter teardown
script = sys.argv[1]
sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
sys.argv = [script, "plan", "--json", "--offline"]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exit:
    print(exit.code, sys.path[0] == sys.path[0].rstrip("/") and "/pipeline" not in sys.path[0],
          "dagger" in sys.modules, "httpx" in sys.modules, file=sys.stderr)
"""


def test_script_form_unshadows_and_plan_never_imports_dagger(tmp_path: Path) -> None:
    """pipeline/ must not stay first on sys.path, and `plan` must not pay for `import dagger`,
    nor an offline plan for the HTTP client."""
    (tmp_path / "Dockerfile").write_text("FROM a\n")
    assert probe_script(PROBE, tmp_path).split() == ["0", "True", "False", "False"]


def probe_script(probe: str, project: Path) -> str:
    """What `probe` writes to stderr, run in `project` with main.py's path as its argument:
    a probe runs the script form there and reports what it saw of the process."""
    result = subprocess.run(
        [sys.executable, "-c", probe, str(MAIN)],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return result.stderr


def test_publish_flag_replaces_the_config_list_per_stage() -> None:
    from pipeline.settings.ci import CIContext
    from pipeline.settings.resolve import Layer, flag_layer, resolve_settings

    config = Layer("config", {"publish": {"release": ("{sha}", "latest"), "app": ("app-{sha}",)}})
    flags = {"publish": ["Release=v1", "release={tag}"]}
    settings = resolve_settings(flags, config=config, ci=CIContext(provider="local"), env={})
    assert settings.publish == {"release": ("v1", "{tag}"), "app": ("app-{sha}",)}
    with pytest.raises(UsageError, match='--publish "release": expected STAGE=TAG'):
        flag_layer({"publish": ["release"]}, {})


def test_the_example_plans(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's quick start: the PHP example, with its config, where nothing can be pulled."""
    config = ROOT / "examples" / "php-app" / "dagger-stages.yaml"
    assert main(["plan", "--config", str(config), "--offline", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["targets"] == ["release", "test"]
    assert [s["name"] for s in document["stages"] if s["needed"]] == [
        "composer-build",
        "npm-build",
        "php-extensions-build",
        "app",
        "release",
        "dev-back",
        "test",
    ]


CHECKSUM = "sha256:" + "c" * 64
REFUSED_ON_DAGGER = {
    "syntax": ("# syntax=ghcr.io/acme/frontend:1\nFROM busybox\nRUN true\n", 1),
    "checksum": (f"FROM busybox\nADD --checksum={CHECKSUM} https://example.com/t.tgz /t\n", 2),
    "ssh": ("FROM busybox\nWORKDIR /src\nRUN --mount=type=ssh,required git fetch\n", 3),
}


@pytest.mark.parametrize("case", sorted(REFUSED_ON_DAGGER))
def test_what_the_dagger_engine_refuses_is_exit_2_before_any_build_and_docker_builds_it(
    chdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    from tests.engines.test_docker_engine import calls, fake_docker

    text, line = REFUSED_ON_DAGGER[case]
    (chdir / "Dockerfile").write_text(text)
    monkeypatch.setenv("PATH", str(chdir))  # no dagger CLI: nothing may try to start an engine
    assert main(["build", "--engine", "dagger"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Dockerfile:{line}: the Dagger engine "), err
    assert err.rstrip().endswith("build with --engine docker"), err
    assert "Traceback" not in err
    assert main(["plan", "--offline", "--engine", "dagger", "--json"]) == 0
    captured = capsys.readouterr()
    assert f"Dockerfile:{line}: warning: the Dagger engine " in captured.err
    (warning,) = json.loads(captured.out)["warnings"]
    assert warning["line"] == line
    assert warning["message"].startswith("the Dagger engine would refuse this build: ")
    docker = fake_docker(chdir)
    assert main(["build", "--engine", "docker", "--docker", str(docker)]) == 0, capsys.readouterr()
    assert any(argv[0] == "build" for argv in calls(chdir))


@pytest.mark.parametrize(
    ("host", "insecure", "fix"),
    [
        ("localhost:5999", "", "run the engine on this machine's network"),
        ("registry.lan:5999", "registry.lan:5999", '{"registries": {"registry.lan:5999"'),
    ],
)
def test_a_cache_repo_the_dagger_engine_cannot_reach_is_exit_2_with_the_fixes(
    chdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    insecure: str,
    fix: str,
) -> None:
    (chdir / "Dockerfile").write_text("FROM busybox\nRUN true\n")
    monkeypatch.setenv("PATH", str(chdir))
    monkeypatch.setenv("DAGGER_STAGES_INSECURE_REGISTRIES", insecure)
    args = ["build", "--engine", "dagger", "--cache-repo", f"{host}/shop/cache"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dagger-stages: the Dagger engine cannot reach {host} (the cache repo")
    assert fix in err
    assert f"DAGGER_STAGES_ENGINE_REACHES={host}" in err
    assert "or build with --engine docker" in err
    # Declared reachable, the build goes on to find no engine here: exit 3, not 2.
    assert main([*args, "--engine-reaches", host]) == 3
    monkeypatch.setenv("DAGGER_STAGES_ENGINE_REACHES", "*")
    assert main(args) == 3


@pytest.mark.usefixtures("chdir")
def test_engine_reaches_is_checked_wherever_it_is_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--offline", "--engine-reaches", "http://localhost:5000"]) == 2
    assert 'dagger-stages: --engine-reaches "http://localhost:5000": expected a registry host' in (
        capsys.readouterr().err
    )
    Path("dagger-stages.yaml").write_text("engine_reaches: [localhost:5000, a/b]\n")
    assert main(["plan", "--offline"]) == 2
    assert 'dagger-stages.yaml:1: engine_reaches[1]: "a/b" is not a registry host' in (
        capsys.readouterr().err
    )


def test_plan_on_dagger_forecasts_no_restore_the_engine_cannot_pull(
    chdir: Path, capsys: pytest.CaptureFixture[str], registry: RegistryServer
) -> None:
    (chdir / "Dockerfile").write_text("FROM scratch AS app\nCOPY Dockerfile /\n")
    cache = f"{registry.host}/plan-unreachable/cache"
    reachable = ["plan", "--json", "--engine", "dagger", "--cache-repo", cache]
    reachable += ["--engine-reaches", registry.host]

    def stage() -> dict[str, object]:
        document = json.loads(capsys.readouterr().out)
        return {**document["stages"][0], "warnings": document["warnings"]}

    assert main(reachable) == 0
    tag = str(stage()["cache_ref"]).rsplit(":", 1)[1]
    push_image(registry.url, "plan-unreachable/cache", tag, config={"os": "linux"})
    assert main(reachable) == 0
    found = stage()
    assert (found["cache"], found["action"], found["warnings"]) == ("hit", "restore", [])
    assert main(reachable[:-2]) == 0
    found = stage()
    assert (found["cache"], found["action"]) == ("hit", "build")
    assert "the Dagger engine would refuse this build" in str(found["warnings"])
    assert main([*reachable[:-2], "--engine", "docker"]) == 0
    found = stage()
    assert (found["action"], found["warnings"]) == ("restore", [])


@pytest.mark.parametrize("github", [False, True])
def test_a_build_whose_every_cache_push_fails_says_so_once_and_exits_0(
    chdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    registry: RegistryServer,
    github: bool,
) -> None:
    if github:
        monkeypatch.setenv("GITHUB_ACTIONS", "true")
        monkeypatch.setenv("GITHUB_REPOSITORY", "acme/shop")
    docker = chdir / "bin" / "docker"
    docker.parent.mkdir()
    docker.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  version) echo 20.10.24 ;;\n"
        "  buildx) exit 1 ;;\n"
        '  push) echo "unauthorized: authentication required"; exit 1 ;;\n'
        "esac\n"
    )
    docker.chmod(0o755)
    (chdir / "Dockerfile").write_text("FROM scratch AS a\nCOPY Dockerfile /a\nFROM a\n")
    cache = f"{registry.host}/push-refused/cache"
    args = ["build", "--engine", "docker", "--docker", str(docker), "--cache-repo", cache]
    assert main([*args, "--report", "report.json"]) == 0
    err = capsys.readouterr().err
    assert err.count("dagger-stages: warning: the cache was not filled") == 1, err
    annotations = [line for line in err.splitlines() if line.startswith("::warning ")]
    assert len(annotations) == int(github), err
    assert f"dagger-stages: warning: the cache was not filled: all 2 cache pushes to {cache}" in err
    assert "the registry refused the login" in err
    document = json.loads((chdir / "report.json").read_text())
    assert document["ok"] is True
    assert document["warnings"] == [
        line.removeprefix("dagger-stages: warning: ")
        for line in err.splitlines()
        if line.startswith("dagger-stages: warning: the cache was not filled")
    ]


@pytest.mark.parametrize("command", ["plan", "build", "prune"])
def test_every_flag_help_shows_its_default(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out.split("options:\n", 1)[1]
    entries = [" ".join(entry.split()) for entry in text.split("\n  -")[1:]]
    assert entries
    for entry in entries:
        assert entry.startswith("h, --help") or "default" in entry, entry
    if command != "prune":
        assert any(entry.startswith("-engine") and "(default: auto)" in entry for entry in entries)


def test_the_default_engine_is_auto_and_docker_without_dagger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain `build` on a machine without Dagger uses the Docker daemon, not exit 3."""
    from pipeline.commands.build import choose_executor
    from pipeline.engines.dagger_rules import CLI_VARIABLE, SESSION_VARIABLES
    from pipeline.engines.docker_engine import DockerExecutor
    from pipeline.settings.resolve import Settings

    monkeypatch.setenv("PATH", str(tmp_path))
    for name in (CLI_VARIABLE, *SESSION_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    assert Settings().engine == "auto"
    assert isinstance(choose_executor(Settings()), DockerExecutor)


def test_shell_takes_its_stage_as_the_target_and_refuses_target(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`shell STAGE` opens STAGE: a `--target` beside it would be ignored, so it is refused."""
    with pytest.raises(SystemExit) as caught:
        main(["shell", "--target", "app", "app"])
    assert caught.value.code == 2
    assert "unrecognized arguments: --target app" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["shell", "--help"])
    assert "--target" not in capsys.readouterr().out


GC_PROBE = """
import gc, os, runpy, sys
def exit_now(code):
    raise SystemExit(code)
os._exit = exit_now
import pipeline.cli
loaded = pipeline.cli._loaded
def seen():
    print("held off while loading:", not gc.isenabled(), file=sys.stderr)
    loaded()
    print("on once loaded:", gc.isenabled(), file=sys.stderr)
pipeline.cli._loaded = seen
sys.argv = [sys.argv[1], "prune", "--older-than", "1d"]  # loads, then fails: no cache
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
"""


def test_loaded_turns_the_collector_back_on_only_where_it_was_held_off() -> None:
    import gc

    from pipeline import cli

    was = gc.isenabled()
    gc.disable()
    try:
        cli._loaded()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        if not was:
            gc.disable()
    before = gc.get_freeze_count()
    cli._loaded()  # called in a process whose collector was never held off: nothing to undo
    assert gc.get_freeze_count() == before


def test_the_script_form_holds_the_collector_off_until_loaded(tmp_path: Path) -> None:
    """From main.py's first line until a command has loaded its modules; then on again."""
    (tmp_path / "Dockerfile").write_text("FROM a AS app\n")
    stderr = probe_script(GC_PROBE, tmp_path)
    assert "held off while loading: True" in stderr, stderr
    assert "on once loaded: True" in stderr, stderr
