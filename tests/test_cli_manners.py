"""The command as a newcomer meets it: a reader that goes away ends it quietly, each command's
help lists its own flags with their defaults, and mistakes get messages that teach."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import pytest

from pipeline.cli import _parser, main
from pipeline.errors import EXIT_PIPE
from tests.cli import cli_command
from tests.conftest import FIXTURES


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ("plan", "--offline", "--json"),
        ("plan", "--offline"),
        ("plan", "--offline", "--format", "mermaid"),
        ("--help",),
        ("prune", "--help"),
        ("--version",),
    ],
)
def test_a_closed_pipe_ends_quietly_with_141(args: tuple[str, ...], tmp_path: Path) -> None:
    """`plan --json | head`, made deterministic: the read end is closed before anything is
    written, so every write fails as the one after `head` has gone would."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            cli_command(*args),
            cwd=FIXTURES / "php",
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert result.returncode == EXIT_PIPE
    assert "internal error" not in result.stderr
    assert "Traceback" not in result.stderr
    assert "BrokenPipeError" not in result.stderr


def _command(name: str) -> argparse.ArgumentParser:
    (commands,) = (a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = commands.choices[name]
    return parser


def _flags(name: str) -> set[str]:
    return {flag for action in _command(name)._actions for flag in action.option_strings}


def test_each_command_lists_only_its_own_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert not {"--publish", "--image-repo", "--engine", "--secret", "--push"} & _flags("prune")
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    prune = capsys.readouterr().out
    assert "stage to build" not in prune
    assert "stage whose restored cache images are kept" in prune
    assert not {"--publish", "--push", "--jobs", "--verbose"} & _flags("plan")
    assert {"--secret", "--publish", "--push", "--verbose", "--engine"} <= _flags("build")


@pytest.mark.parametrize("command", ["plan", "build", "prune"])
def test_every_flag_s_help_says_its_default(command: str) -> None:
    for action in _command(command)._actions:
        if action.dest not in ("help", "json"):
            assert "(default: " in str(action.help), action.option_strings


@pytest.mark.parametrize(
    ("value", "wrong"),
    [
        ("Not A Repo!", 'its path has what a repository cannot have: capitals, a space, "!"'),
        ("localhost:5000/cache:tag", "it ends with a tag (:tag)"),
        ("http://localhost:5000/cache", "it starts with a scheme (http://)"),
    ],
)
@pytest.mark.parametrize("flag", ["--cache-repo", "--image-repo"])
def test_a_bad_repository_flag_says_what_was_wrong_and_what_one_looks_like(
    flag: str, value: str, wrong: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            ["plan", "--offline", "--dockerfile", str(FIXTURES / "php" / "Dockerfile"), flag, value]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith(f'dagger-stages: {flag} "{value}": {wrong}'), err
    assert "host[:port]/path, lowercase, with no scheme and no tag or digest" in err
    for leak in (":x", "invalid reference format", "library/", "Traceback"):
        assert leak not in err


def test_a_missing_dockerfile_names_the_folder_and_the_flags(
    chdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--offline"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"Dockerfile: Dockerfile not found: looked for Dockerfile in {chdir}; give its path with "
        "--dockerfile FILE, or a config file that names it (dockerfile:) with --config FILE"
    )
    (chdir / "dagger-stages.yaml").write_text("dockerfile: docker/Dockerfile\n")
    assert main(["plan", "--offline"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"docker/Dockerfile: Dockerfile not found: looked for Dockerfile in {chdir / 'docker'}; "
        "fix dockerfile: in "
    ), err


def test_a_target_typo_gets_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    dockerfile = str(FIXTURES / "php" / "Dockerfile")
    assert main(["plan", "--offline", "--dockerfile", dockerfile, "--target", "tset"]) == 2
    err = capsys.readouterr().err
    assert 'target stage "tset" could not be found (did you mean test?); the stages are ' in err
