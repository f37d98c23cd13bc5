"""One Settings from its layers: defaults < CI < config file < environment < flags."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from yaml.nodes import MappingNode

from pipeline.cli import _parser, main
from pipeline.dockerfile.platforms import Platform
from pipeline.engines.runner import RunOptions
from pipeline.errors import UsageError
from pipeline.oci.credentials import CredentialSource
from pipeline.oci.reference import REPOSITORY_FORM, Repository
from pipeline.settings.ci import CIContext
from pipeline.settings.config import _Document, _parsed_by, load_config
from pipeline.settings.resolve import (
    JOBS,
    OPTIONS,
    Layer,
    Opt,
    Settings,
    flag_layer,
    merge,
    parse_repository,
    resolve_settings,
)
from pipeline.settings.secrets import SecretSpec

R = Repository.parse

GITHUB = CIContext(
    provider="github",
    image_repo=R("ghcr.io/acme/shop"),
    cache_repo=R("ghcr.io/acme/shop/cache"),
    credentials=(CredentialSource("ghcr.io", "env", "GITHUB_ACTOR", "GITHUB_TOKEN"),),
)


def settings(
    flags: dict[str, object] | None = None,
    config: dict[str, object] | None = None,
    ci: CIContext = GITHUB,
    env: dict[str, str] | None = None,
) -> Settings:
    layer = None if config is None else Layer("config", config)
    return resolve_settings(flags or {}, config=layer, ci=ci, env=env or {})


# -- defaults and layer order --------------------------------------------------------------------


def test_without_any_source_the_defaults_hold() -> None:
    found = settings(ci=CIContext(provider="local"))
    assert found == Settings()
    assert (found.dockerfile, found.context, found.engine) == ("Dockerfile", ".", "auto")
    assert (found.jobs, found.push_cache, found.run_tests) == (8, True, True)
    assert (found.cache_repo, found.image_repo, found.docker) == (None, None, None)


def test_one_default_for_jobs() -> None:
    assert Settings().jobs == RunOptions().jobs == JOBS == 8


def test_ci_gives_the_repositories_and_credentials() -> None:
    found = settings()
    assert found.image_repo == R("ghcr.io/acme/shop")
    assert found.cache_repo == R("ghcr.io/acme/shop/cache")
    assert found.credentials == GITHUB.credentials
    assert found.ci == GITHUB


def test_the_config_file_beats_ci_and_flags_beat_the_config_file() -> None:
    config = {"cache_repo": R("registry.example/a/cache"), "engine": "docker", "targets": ("web",)}
    assert settings(config=config).cache_repo == R("registry.example/a/cache")
    found = settings({"cache_repo": "other/cache", "targets": ["api"]}, config)
    assert (found.cache_repo, found.engine, found.targets) == (R("other/cache"), "docker", ("api",))


def test_the_environment_beats_defaults_and_flags_beat_the_environment() -> None:
    env = {"DAGGER_STAGES_DOCKER": "/opt/docker", "DAGGER_STAGES_INSECURE_REGISTRIES": "a:5000, b,"}
    found = settings(env=env)
    assert (found.docker, found.insecure_registries) == ("/opt/docker", ("a:5000", "b"))
    assert settings({"docker": "/usr/bin/docker"}, env=env).docker == "/usr/bin/docker"


def test_an_empty_path_counts_as_not_given() -> None:
    env = {"DAGGER_STAGES_DOCKER": "/opt/docker"}
    assert settings({"docker": ""}, env=env).docker == "/opt/docker"
    assert settings(env={"DAGGER_STAGES_DOCKER": ""}).docker is None
    assert settings({"context": "", "dockerfile": ""}).dockerfile == "Dockerfile"


def test_layers_merge_in_their_order_whatever_order_they_come_in() -> None:
    layers = [
        Layer("flags", {"engine": "auto"}),
        Layer("config", {"engine": "docker"}),
        Layer("ci", {"engine": "dagger"}),
    ]
    assert merge(layers).engine == "auto"
    assert merge(layers[1:]).engine == "docker"


def test_a_layer_holds_settings_only() -> None:
    with pytest.raises(ValueError, match="not settings: colour"):
        Layer("flags", {"colour": "red"})


# -- derived values ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["flags", "config"])
def test_an_image_repo_takes_the_cache_with_it(source: str) -> None:
    text = "registry.example/team/app"
    found = (
        settings({"image_repo": text})
        if source == "flags"
        else settings(config={"image_repo": R(text)})
    )
    assert found.image_repo == R("registry.example/team/app")
    assert found.cache_repo == R("registry.example/team/app/cache")


def test_an_explicit_cache_repo_stays_beside_any_image_repo() -> None:
    found = settings({"image_repo": "registry.example/app"}, {"cache_repo": R("cache.example/c")})
    assert found.cache_repo == R("cache.example/c")
    found = settings({"cache_repo": "cache.example/c"}, {"image_repo": R("registry.example/app")})
    assert found.cache_repo == R("cache.example/c")


def test_the_dockerfile_defaults_to_the_context_s() -> None:
    assert settings({"context": "app"}).dockerfile == "app/Dockerfile"
    assert settings(config={"context": "app"}).dockerfile == "app/Dockerfile"
    assert settings({"context": "app"}, {"dockerfile": "x/Dockerfile"}).dockerfile == "x/Dockerfile"


# -- merge rules ---------------------------------------------------------------------------------


def test_build_args_merge_per_name() -> None:
    config = {"build_args": {"A": "1", "B": "2"}}
    found = settings({"build_args": ["B=3", "C=", "B=4"]}, config)
    assert found.build_args == {"A": "1", "B": "4", "C": ""}


def test_a_bare_build_arg_flag_reads_the_environment_or_is_left_out() -> None:
    config = {"build_args": {"A": "1", "B": "2"}}
    found = settings({"build_args": ["A", "B"]}, config, env={"A": "from-env"})
    assert found.build_args == {"A": "from-env", "B": "2"}


def test_secrets_merge_per_id() -> None:
    config = {"secrets": (SecretSpec("a", env="A"), SecretSpec("b", env="B"))}
    found = settings({"secrets": ["id=b,src=b.txt", "id=c,env=C", "id=c,env=D"]}, config)
    assert found.secrets == (
        SecretSpec("a", env="A"),
        SecretSpec("b", src="b.txt"),
        SecretSpec("c", env="D"),
    )


def test_lists_are_replaced_whole() -> None:
    config = {"targets": ("a", "b"), "platforms": (Platform("linux", "amd64"),)}
    found = settings({"targets": ["c"], "platforms": ["linux/arm64"]}, config)
    assert (found.targets, found.platforms) == (("c",), (Platform("linux", "arm64"),))
    assert found.platform == Platform("linux", "arm64")


def test_several_platforms_repeated_or_comma_separated_each_once() -> None:
    found = settings({"platforms": ["linux/amd64,linux/arm64", "linux/arm/v7", "linux/x86_64"]})
    assert found.platforms == (
        Platform("linux", "amd64"),
        Platform("linux", "arm64"),
        Platform("linux", "arm", "v7"),
    )
    assert found.platform == Platform("linux", "amd64")


def test_a_bad_platform_among_several_is_named() -> None:
    with pytest.raises(UsageError) as info:
        settings({"platforms": ["linux/amd64,linux"]})
    assert info.value.message == (
        '--platform "linux/amd64,linux": expected os/arch[/variant], such as linux/amd64 or '
        "linux/arm/v7"
    )


def test_switches() -> None:
    found = settings({"push_cache": False, "run_tests": False, "fail_fast": True, "push": True})
    assert (found.push_cache, found.run_tests, found.fail_fast, found.push) == (
        False,
        False,
        True,
        True,
    )


# -- validation, located where the value came from -----------------------------------------------

FORM = f"{REPOSITORY_FORM}."


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"cache_repo": "x/cache:tag"},
            f'--cache-repo "x/cache:tag": it ends with a tag (:tag). {FORM} Did you mean x/cache?',
        ),
        (
            {"image_repo": "http://r.example/app"},
            '--image-repo "http://r.example/app": it starts with a scheme (http://), which '
            f"registries are named without. {FORM} Did you mean r.example/app?",
        ),
        (
            {"cache_repo": "acme/Shop"},
            f'--cache-repo "acme/Shop": its path has capitals. {FORM} Did you mean acme/shop?',
        ),
        (
            {"cache_repo": " x/cache"},
            f'--cache-repo " x/cache": it has spaces around it. {FORM} Did you mean x/cache?',
        ),
        (
            {"platforms": ["linux/amd64", "linux"]},
            '--platform "linux": expected os/arch[/variant], such as linux/amd64 or linux/arm/v7',
        ),
        (
            {"platforms": ["linux/amd64,"]},
            '--platform "linux/amd64,": expected os/arch[/variant], such as '
            "linux/amd64 or linux/arm/v7",
        ),
        (
            {"engine": "podman"},
            '--engine "podman": expected one of "dagger", "docker", "auto", got "podman"',
        ),
        ({"jobs": "0"}, '--jobs "0": must be at least 1'),
        ({"jobs": "many"}, '--jobs "many": expected a whole number, such as 4'),
        (
            {"build_args": ["A=1", "=x"]},
            '--build-arg "=x": the name is empty (expected NAME=VALUE or NAME)',
        ),
        (
            {"build_args": [""]},
            '--build-arg "": the name is empty (expected NAME=VALUE or NAME)',
        ),
        (
            {"build_args": ["A B=c"]},
            '--build-arg "A B=c": "A B" is not a valid name (expected NAME=VALUE or NAME)',
        ),
        (
            {"build_args": [" A=c"]},
            '--build-arg " A=c": " A" is not a valid name (expected NAME=VALUE or NAME)',
        ),
        (
            {"secrets": ["id=a"]},
            '--secret "id=a": needs env (a variable name) or src (a file path) to say where '
            "the value is",
        ),
        ({"publish": ["release"]}, '--publish "release": expected STAGE=TAG'),
        ({"publish": ["9lives=v1"]}, '--publish "9lives=v1": "9lives" is not a stage name'),
    ],
)
def test_a_bad_flag_is_a_usage_error_naming_the_flag(
    flags: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        settings(flags)
    assert str(caught.value) == message
    assert caught.value.exit_code == 2
    assert caught.value.path is None


@pytest.mark.parametrize("text", ["ghcr.io/acme/app/cache", "localhost:5000/x", "acme/cache"])
def test_one_validator_for_repositories_from_flags_and_the_config_file(
    tmp_path: Path, text: str
) -> None:
    assert settings({"cache_repo": text}).cache_repo == R(text)
    path = tmp_path / "dagger-stages.yaml"
    path.write_text(f"cache_repo: {text}\n")
    assert load_config(path).values["cache_repo"] == parse_repository(text) == R(text)


def test_the_config_file_rejects_what_the_flag_rejects(tmp_path: Path) -> None:
    """The file's check used to be a pattern of its own, which let an upper-case name through."""
    path = tmp_path / "dagger-stages.yaml"
    path.write_text("engine: docker\nimage_repo: Acme/App\n")
    with pytest.raises(UsageError) as caught:
        load_config(path)
    assert (caught.value.path, caught.value.line) == (str(path), 2)
    with pytest.raises(UsageError, match=r'^--image-repo "Acme/App": '):
        settings({"image_repo": "Acme/App"})


def test_a_platform_from_the_config_file_is_the_same_value_as_from_a_flag(tmp_path: Path) -> None:
    path = tmp_path / "dagger-stages.yaml"
    path.write_text("platforms: [LINUX/ARM64]\n")
    from_file = settings(config=dict(load_config(path).values))
    assert from_file.platforms == settings({"platforms": ["linux/arm64"]}).platforms


def test_publish_targets_match_case_insensitively_from_either_source(tmp_path: Path) -> None:
    path = tmp_path / "dagger-stages.yaml"
    path.write_text("publish:\n  Release: ['{sha}']\n  app: [x]\n")
    config = dict(load_config(path).values)
    assert config["publish"] == {"release": ("{sha}",), "app": ("x",)}
    found = settings({"publish": ["RELEASE=v1"]}, config)
    assert found.publish == {"release": ("v1",), "app": ("x",)}


def test_a_new_string_key_is_read_with_its_field_s_validator(tmp_path: Path) -> None:
    """What a config key without a reader of its own gets: a string, checked by `parse`."""
    path = tmp_path / "dagger-stages.yaml"
    path.write_text("a: 5\nb: ok\nc: '7'\n")
    doc = _Document(path, path.read_text())
    root = doc.root()
    assert isinstance(root, MappingNode)
    nodes = {key.value: value for key, value in root.value}
    read = _parsed_by(Opt(key="x", parse=int))
    assert read(doc, nodes["c"], "x") == 7
    with pytest.raises(UsageError, match=r":1: x: expected a string, got an integer$"):
        read(doc, nodes["a"], "x")
    with pytest.raises(UsageError) as caught:
        read(doc, nodes["b"], "x")
    assert str(caught.value).startswith(f'{path}:2: x: "ok": invalid literal')


# -- the command line ----------------------------------------------------------------------------


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _actions(sub)
        else:
            found.append(action)
    return found


def test_every_flag_of_a_field_is_on_the_command_line_under_the_field_s_name() -> None:
    actions = [a for a in _actions(_parser()) if a.dest in OPTIONS]
    for action in actions:
        assert OPTIONS[action.dest].flag in action.option_strings, action.dest
        assert action.default is argparse.SUPPRESS, action.dest
    with_flags = {name for name, opt in OPTIONS.items() if opt.flag is not None}
    assert {action.dest for action in actions} == with_flags


# -- --build-arg --------------------------------------------------------------------------------


def build_args(*texts: str, env: dict[str, str] | None = None) -> object:
    return flag_layer({"build_args": list(texts)}, env or {}).values["build_args"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1", ("A", "1")),
        ("A=", ("A", "")),
        ("A=b=c", ("A", "b=c")),
        ("A= spaced value ", ("A", " spaced value ")),
        ("lower.case-name=x", ("lower.case-name", "x")),
    ],
)
def test_parse_build_arg(text: str, expected: tuple[str, str]) -> None:
    assert build_args(text) == dict([expected])


def test_bare_build_arg_takes_the_environment_value() -> None:
    assert build_args("TOKENLESS", env={"TOKENLESS": "v"}) == {"TOKENLESS": "v"}
    assert build_args("EMPTY", env={"EMPTY": ""}) == {"EMPTY": ""}


def test_bare_build_arg_unset_is_skipped() -> None:
    assert build_args("MISSING") == {}


def test_bare_build_arg_reads_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "Dockerfile").write_text("ARG BASE=alpine\nARG OTHER=x\nFROM ${BASE}:${OTHER}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BASE", "busybox")
    monkeypatch.delenv("OTHER", raising=False)
    assert main(["plan", "--offline", "--json", "--build-arg", "BASE", "--build-arg", "OTHER"]) == 0
    assert json.loads(capsys.readouterr().out)["stages"][0]["base"] == "busybox:x"
