from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.dockerfile.platforms import Platform
from pipeline.errors import UsageError
from pipeline.oci.reference import REPOSITORY_FORM, Repository
from pipeline.settings import config as config_module
from pipeline.settings.config import load_config
from pipeline.settings.config_file import CONFIG_FILENAME, find_config
from pipeline.settings.resolve import Layer, TestSpec
from pipeline.settings.secrets import SecretSpec

SCHEMA_PATH = Path(config_module.__file__).parent.parent / "schema" / "dagger-stages.schema.json"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory, so paths in messages are the short relative ones users see."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(text: str, name: str = CONFIG_FILENAME) -> Path:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(text: str) -> str:
    with pytest.raises(UsageError) as caught:
        load_config(write(text))
    assert caught.value.exit_code == 2
    return str(caught.value)


# -- loading valid files -------------------------------------------------------------------------


@pytest.mark.usefixtures("project")
def test_full_config() -> None:
    path = write(
        """\
        # yaml-language-server: $schema=pipeline/schema/dagger-stages.schema.json
        dockerfile: docker/app.Dockerfile
        context: .
        targets: [web, worker]
        build_args:
          PHP_VERSION: "8.10"
          NODE_MAJOR: 20
          MODE: 0755
          EMPTY: ""
        cache_repo: localhost:5000/shop/cache
        engine: docker
        platforms:
          - linux/arm/v7
        secrets:
          - id=npm,env=NPM_TOKEN
          - {id: netrc, src: .netrc}
          - {id: key, source: keys/id_ed25519}
        publish:
          web: ["ghcr.io/acme/shop:{branch}", "ghcr.io/acme/shop:{short_sha}"]
          worker: ["ghcr.io/acme/worker:{branch}"]
        """
    )
    assert load_config(path) == Layer(
        "config",
        {
            "config_path": str(path),
            "dockerfile": "docker/app.Dockerfile",
            "context": ".",
            "targets": ("web", "worker"),
            "build_args": {"PHP_VERSION": "8.10", "NODE_MAJOR": "20", "MODE": "0755", "EMPTY": ""},
            "cache_repo": Repository.parse("localhost:5000/shop/cache"),
            "engine": "docker",
            "platforms": (Platform("linux", "arm", "v7"),),
            "secrets": (
                SecretSpec(id="npm", env="NPM_TOKEN"),
                SecretSpec(id="netrc", src=".netrc"),
                SecretSpec(id="key", src="keys/id_ed25519"),
            ),
            "publish": {
                "web": ("ghcr.io/acme/shop:{branch}", "ghcr.io/acme/shop:{short_sha}"),
                "worker": ("ghcr.io/acme/worker:{branch}",),
            },
        },
    )
    assert list(load_config(path).values["build_args"]) == [
        "PHP_VERSION",
        "NODE_MAJOR",
        "MODE",
        "EMPTY",
    ]


@pytest.mark.usefixtures("project")
@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "~\n"])
def test_empty_file_is_an_empty_config(text: str) -> None:
    path = write(text)
    assert load_config(path) == Layer("config", {"config_path": str(path)})


@pytest.mark.usefixtures("project")
def test_unset_fields_stay_unset_whatever_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No defaults and no CI values leak in: the CLI does the layering."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/shop")
    monkeypatch.setenv("PHP_VERSION", "7.4")
    path = write("targets: web\n")
    assert load_config(path) == Layer("config", {"config_path": str(path), "targets": ("web",)})


@pytest.mark.usefixtures("project")
def test_single_strings_become_one_item_tuples() -> None:
    config = load_config(write("targets: web\nplatforms: linux/arm64\n")).values
    assert config["targets"] == ("web",)
    assert config["platforms"] == (Platform("linux", "arm64"),)


@pytest.mark.usefixtures("project")
def test_several_platforms_each_once() -> None:
    config = load_config(write("platforms: [linux/amd64, linux/arm64, linux/x86_64]\n")).values
    assert config["platforms"] == (Platform("linux", "amd64"), Platform("linux", "arm64"))


@pytest.mark.usefixtures("project")
def test_paths_are_relative_to_the_config_directory() -> None:
    path = write("context: .\ndockerfile: Dockerfile\n", "examples/php-app/dagger-stages.yaml")
    config = load_config(path).values
    assert config["context"] == "examples/php-app"
    assert config["dockerfile"] == "examples/php-app/Dockerfile"


@pytest.mark.usefixtures("project")
def test_paths_are_normalised_and_absolute_paths_kept() -> None:
    path = write("context: ../..\ndockerfile: /srv/Dockerfile\n", "a/b/c/dagger-stages.yaml")
    config = load_config(path).values
    assert config["context"] == "a"
    assert config["dockerfile"] == "/srv/Dockerfile"


@pytest.mark.usefixtures("project")
def test_config_in_the_working_directory_keeps_paths_short() -> None:
    config = load_config(write("context: ./app\ndockerfile: Dockerfile\n")).values
    assert (config["context"], config["dockerfile"]) == ("app", "Dockerfile")


@pytest.mark.usefixtures("project")
def test_integers_are_passed_as_written() -> None:
    config = load_config(write("build_args:\n  A: 0755\n  B: 1_000\n  C: -3\n  D: 0x1F\n"))
    assert config.values["build_args"] == {"A": "0755", "B": "1_000", "C": "-3", "D": "0x1F"}


@pytest.mark.usefixtures("project")
def test_explicit_str_tag_is_a_string() -> None:
    config = load_config(write("build_args:\n  V: !!str 8.10\n"))
    assert config.values["build_args"] == {"V": "8.10"}


@pytest.mark.usefixtures("project")
def test_engine_values() -> None:
    for engine in ("dagger", "docker", "auto"):
        assert load_config(write(f"engine: {engine}\n")).values["engine"] == engine


# -- errors, each with its path and line ---------------------------------------------------------


@pytest.mark.usefixtures("project")
@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "targets: web\ntargetz: [a]\n",
            'dagger-stages.yaml:2: unknown key "targetz" (did you mean "targets"?)',
            id="unknown-key-suggestion",
        ),
        pytest.param(
            "\n\nfrobnicate: 1\n",
            'dagger-stages.yaml:3: unknown key "frobnicate" (allowed: dockerfile, context, '
            "targets, build_args, cache_repo, image_repo, engine, platforms, secrets, publish, "
            "test, engine_reaches)",
            id="unknown-key-allowed-list",
        ),
        pytest.param(
            "engine: docker\ntargets: a\nengine: dagger\n",
            'dagger-stages.yaml:3: duplicate key "engine" (first at line 1)',
            id="duplicate-top-level-key",
        ),
        pytest.param(
            "build_args:\n  A: x\n  B: y\n  A: z\n",
            'dagger-stages.yaml:4: build_args: duplicate key "A" (first at line 2)',
            id="duplicate-nested-key",
        ),
        pytest.param(
            "targets: web\n  engine: docker\n",
            "dagger-stages.yaml:2: mapping values are not allowed here",
            id="yaml-syntax",
        ),
        pytest.param(
            "targets: [web\nengine: docker\n",
            "dagger-stages.yaml:2: expected ',' or ']', but got ':'",
            id="yaml-unclosed-flow",
        ),
        pytest.param(
            "engine: docker\ntargets: [web\n",
            "dagger-stages.yaml:2: expected ',' or ']', but got '<stream end>'",
            id="yaml-unclosed-at-end-of-file",
        ),
        pytest.param(
            'engine: docker\ndockerfile: "Dockerfile\n\n',
            "dagger-stages.yaml:2: found unexpected end of stream",
            id="yaml-unclosed-quote",
        ),
        pytest.param(
            "targets: web\n---\ntargets: api\n",
            "dagger-stages.yaml:2: but found another document",
            id="two-documents",
        ),
        pytest.param(
            "engine: docker\nx: \x07\n",
            "dagger-stages.yaml:2: unacceptable character #x0007: "
            "special characters are not allowed",
            id="control-character",
        ),
        pytest.param(
            "- web\n- api\n",
            "dagger-stages.yaml:1: expected a mapping of settings, got a list",
            id="top-level-list",
        ),
        pytest.param(
            "just a string\n",
            "dagger-stages.yaml:1: expected a mapping of settings, got a string",
            id="top-level-string",
        ),
        pytest.param(
            "on: push\n",
            'dagger-stages.yaml:1: expected a string key, got a boolean (quote it: "on" would '
            "read as true)",
            id="key-that-yaml-reads-as-a-boolean",
        ),
        pytest.param(
            "dockerfile:\n",
            "dagger-stages.yaml:1: dockerfile: expected a string, got null",
            id="null-value",
        ),
        pytest.param(
            'context: ""\n',
            "dagger-stages.yaml:1: context: must not be empty",
            id="empty-string",
        ),
        pytest.param(
            "dockerfile: [a]\n",
            "dagger-stages.yaml:1: dockerfile: expected a string, got a list",
            id="list-for-string",
        ),
        pytest.param(
            "targets: 3\n",
            "dagger-stages.yaml:1: targets: expected a string or a list of strings, got an integer",
            id="targets-integer",
        ),
        pytest.param(
            "targets:\n  - web\n  - {name: api}\n",
            "dagger-stages.yaml:3: targets[1]: expected a string, got a mapping",
            id="targets-item-mapping",
        ),
        pytest.param(
            "targets:\n  - web\n  - api\n  - web\n",
            'dagger-stages.yaml:4: targets[2]: "web" is listed twice',
            id="targets-duplicate",
        ),
        pytest.param(
            "targets: web,api\n",
            'dagger-stages.yaml:1: targets: "web,api" is not a stage name '
            "(list several targets as a YAML list)",
            id="targets-comma",
        ),
        pytest.param(
            "targets:\n  - web\n  - 2nd\n",
            'dagger-stages.yaml:3: targets[1]: "2nd" is not a stage name '
            "(list several targets as a YAML list)",
            id="targets-bad-name",
        ),
        pytest.param(
            "platforms: [linux/amd64, linux]\n",
            'dagger-stages.yaml:1: platforms[1]: "linux" is not a platform like linux/amd64 '
            "(os/arch[/variant]; list several as a YAML list)",
            id="platform-without-arch",
        ),
        pytest.param(
            "platforms: linux/amd64,linux/arm64\n",
            'dagger-stages.yaml:1: platforms: "linux/amd64,linux/arm64" is not a platform like '
            "linux/amd64 (os/arch[/variant]; list several as a YAML list)",
            id="platforms-comma",
        ),
        pytest.param(
            "build_args:\n  PHP_VERSION: 8.10\n",
            "dagger-stages.yaml:2: build_args.PHP_VERSION: expected a string, got a float "
            '(quote it: "8.10" would read as 8.1)',
            id="build-arg-float",
        ),
        pytest.param(
            "build_args:\n  DEBUG: yes\n",
            "dagger-stages.yaml:2: build_args.DEBUG: expected a string, got a boolean "
            '(quote it: "yes" would read as true)',
            id="build-arg-boolean",
        ),
        pytest.param(
            "build_args:\n  BUILT: 2024-05-01\n",
            "dagger-stages.yaml:2: build_args.BUILT: expected a string, got a date",
            id="build-arg-date",
        ),
        pytest.param(
            "build_args:\n  A:\n",
            "dagger-stages.yaml:2: build_args.A: expected a string, got null",
            id="build-arg-null",
        ),
        pytest.param(
            "build_args:\n  A: x\n  B C: y\n",
            'dagger-stages.yaml:3: build_args: "B C" is not a valid build arg name',
            id="build-arg-name-with-space",
        ),
        pytest.param(
            "build_args:\n  1: x\n",
            "dagger-stages.yaml:2: build_args: expected a string key, got an integer",
            id="build-arg-integer-name",
        ),
        pytest.param(
            "build_args: [A=1]\n",
            "dagger-stages.yaml:1: build_args: expected a mapping of NAME: value, got a list",
            id="build-args-list",
        ),
        pytest.param(
            "cache_repo: ghcr.io/acme/shop:cache\n",
            'dagger-stages.yaml:1: cache_repo: "ghcr.io/acme/shop:cache": it ends with a tag '
            f"(:cache). {REPOSITORY_FORM}. Did you mean ghcr.io/acme/shop?",
            id="cache-repo-tag",
        ),
        pytest.param(
            "cache_repo: https://ghcr.io/acme\n",
            'dagger-stages.yaml:1: cache_repo: "https://ghcr.io/acme": it starts with a scheme '
            f"(https://), which registries are named without. {REPOSITORY_FORM}. "
            "Did you mean ghcr.io/acme?",
            id="cache-repo-scheme",
        ),
        pytest.param(
            "engine: podman\n",
            'dagger-stages.yaml:1: engine: expected one of "dagger", "docker", "auto", '
            'got "podman"',
            id="engine-unknown",
        ),
        pytest.param(
            "engine: true\n",
            'dagger-stages.yaml:1: engine: expected one of "dagger", "docker", "auto", '
            'got a boolean (quote it: "true" would read as true)',
            id="engine-boolean",
        ),
        pytest.param(
            "secrets: id=a,env=A\n",
            "dagger-stages.yaml:1: secrets: expected a list, got a string",
            id="secrets-not-a-list",
        ),
        pytest.param(
            "secrets:\n  - id=a,env=A\n  - id=b\n",
            'dagger-stages.yaml:3: secrets[1]: "id=b": needs env (a variable name) or src '
            "(a file path) to say where the value is",
            id="secret-string-without-source",
        ),
        pytest.param(
            "secrets:\n  - id=a,file=x\n",
            'dagger-stages.yaml:2: secrets[0]: "id=a,file=x": unknown key "file" '
            "(expected id, env, src or type)",
            id="secret-string-unknown-key",
        ),
        pytest.param(
            "secrets:\n  - id: a\n    env: A\n    src: a.txt\n",
            "dagger-stages.yaml:2: secrets[0]: give env or src, not both",
            id="secret-mapping-both",
        ),
        pytest.param(
            "secrets:\n  - env: A\n",
            "dagger-stages.yaml:2: secrets[0]: the id is missing",
            id="secret-mapping-no-id",
        ),
        pytest.param(
            "secrets:\n  - id: a\n    value: hunter2\n",
            'dagger-stages.yaml:3: secrets[0]: unknown key "value" (allowed: id, env, src)',
            id="secret-mapping-unknown-key",
        ),
        pytest.param(
            "secrets:\n  - id: a\n    envv: A\n",
            'dagger-stages.yaml:3: secrets[0]: unknown key "envv" (did you mean "env"?)',
            id="secret-mapping-typo",
        ),
        pytest.param(
            "secrets:\n  - id: a\n    src: x\n    source: y\n",
            "dagger-stages.yaml:4: secrets[0]: give src or source, not both",
            id="secret-mapping-src-and-source",
        ),
        pytest.param(
            "secrets:\n  - id: a\n    env: 1\n",
            "dagger-stages.yaml:3: secrets[0].env: expected a string, got an integer",
            id="secret-mapping-integer",
        ),
        pytest.param(
            "secrets:\n  - id=a,env=A\n  - 7\n",
            "dagger-stages.yaml:3: secrets[1]: expected a string like id=ID,env=VAR or a "
            "mapping with id and env or src, got an integer",
            id="secret-integer",
        ),
        pytest.param(
            "secrets:\n  - id=npm,env=NPM_TOKEN\n  - {id: npm, src: .npmrc}\n",
            'dagger-stages.yaml:3: secrets[1]: secret "npm" is already defined at line 2',
            id="secret-duplicate-id",
        ),
        pytest.param(
            "publish: [web]\n",
            "dagger-stages.yaml:1: publish: expected a mapping of target: [tag template, ...], "
            "got a list",
            id="publish-list",
        ),
        pytest.param(
            "publish:\n  web: ghcr.io/acme/shop:latest\n",
            "dagger-stages.yaml:2: publish.web: expected a list of strings, got a string",
            id="publish-string",
        ),
        pytest.param(
            "publish:\n  web: []\n",
            "dagger-stages.yaml:2: publish.web: expected at least one tag",
            id="publish-empty",
        ),
        pytest.param(
            "publish:\n  web:\n    - a:1\n    - 2\n",
            "dagger-stages.yaml:4: publish.web[1]: expected a string, got an integer",
            id="publish-integer-tag",
        ),
        pytest.param(
            "publish:\n  web app: [x]\n",
            'dagger-stages.yaml:2: publish: "web app" is not a stage name',
            id="publish-bad-target",
        ),
        pytest.param(
            "base: &base\n  engine: docker\n<<: *base\n",
            'dagger-stages.yaml:1: unknown key "base" (allowed: dockerfile, context, targets, '
            "build_args, cache_repo, image_repo, engine, platforms, secrets, publish, test, "
            "engine_reaches)",
            id="anchors-are-not-keys",
        ),
        pytest.param(
            "<<: {engine: docker}\n",
            "dagger-stages.yaml:1: expected a string key, got a merge key (<<)",
            id="merge-key",
        ),
        pytest.param(
            "targets: !!set {web: null}\n",
            "dagger-stages.yaml:1: targets: expected a string or a list of strings, "
            "got a value tagged !!set",
            id="yaml-set",
        ),
        pytest.param(
            "dockerfile: !env DOCKERFILE\n",
            "dagger-stages.yaml:1: dockerfile: expected a string, got a value tagged !env",
            id="custom-tag",
        ),
    ],
)
def test_errors(text: str, message: str) -> None:
    assert load_error(text) == message


def test_error_path_is_the_path_as_given(tmp_path: Path) -> None:
    path = tmp_path / "ci" / "stages.yaml"
    path.parent.mkdir()
    path.write_text("engine: podman\n", encoding="utf-8")
    with pytest.raises(UsageError) as caught:
        load_config(path)
    assert caught.value.path == str(path)
    assert caught.value.line == 1


@pytest.mark.usefixtures("project")
def test_not_utf8() -> None:
    Path(CONFIG_FILENAME).write_bytes(b"targets: caf\xe9\n")
    with pytest.raises(UsageError) as caught:
        load_config(Path(CONFIG_FILENAME))
    assert str(caught.value) == "dagger-stages.yaml: config file is not UTF-8 text"


@pytest.mark.usefixtures("project")
def test_unreadable() -> None:
    Path("dir.yaml").mkdir()
    with pytest.raises(UsageError, match=r"^dir\.yaml: cannot read config file: "):
        load_config(Path("dir.yaml"))


# -- find_config ---------------------------------------------------------------------------------


def test_find_config_default(tmp_path: Path) -> None:
    assert find_config(None, tmp_path) is None
    (tmp_path / CONFIG_FILENAME).write_text("", encoding="utf-8")
    assert find_config(None, tmp_path) == tmp_path / CONFIG_FILENAME


def test_find_config_explicit_is_returned_as_given(tmp_path: Path) -> None:
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "build.yaml").write_text("", encoding="utf-8")
    (tmp_path / CONFIG_FILENAME).write_text("", encoding="utf-8")
    assert find_config("ci/build.yaml", tmp_path) == Path("ci/build.yaml")
    absolute = str(tmp_path / "ci" / "build.yaml")
    assert find_config(absolute, Path("/")) == Path(absolute)


def test_find_config_explicit_missing(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILENAME).write_text("", encoding="utf-8")
    with pytest.raises(UsageError) as caught:
        find_config("nope.yaml", tmp_path)
    assert str(caught.value) == "nope.yaml: config file not found (given by --config)"


def test_find_config_explicit_empty(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        find_config("", tmp_path)
    assert str(caught.value) == "--config: the path is empty"


def test_find_config_explicit_directory(tmp_path: Path) -> None:
    (tmp_path / "examples").mkdir()
    with pytest.raises(UsageError) as caught:
        find_config("examples", tmp_path)
    assert str(caught.value) == (
        "examples: --config names a directory, not a file (try examples/dagger-stages.yaml)"
    )


# -- the JSON Schema -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, object]:
    loaded: dict[str, object] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def test_schema_is_draft7_and_describes_every_key(schema: dict[str, object]) -> None:
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    properties = schema["properties"]
    assert isinstance(properties, dict)
    assert tuple(properties) == config_module.KEYS
    for name, prop in properties.items():
        assert prop.get("title"), name
        assert prop.get("description"), name


def test_schema_enum_matches_engine(schema: dict[str, object]) -> None:
    properties = schema["properties"]
    assert isinstance(properties, dict)
    assert tuple(properties["engine"]["enum"]) == config_module.ENGINES


AGREEMENT = [
    # (document, valid?) -- what both the schema and load_config must say.
    ("", True),
    ("targets: web\n", True),
    ("targets: [web, worker]\nplatforms: [linux/arm/v7]\n", True),
    ("dockerfile: Dockerfile\ncontext: .\nengine: auto\n", True),
    ('build_args:\n  PHP_VERSION: "8.10"\n  NODE: 20\n  EMPTY: ""\n', True),
    ("cache_repo: localhost:5000/shop/cache\n", True),
    ("secrets:\n  - id=npm,env=NPM_TOKEN\n  - id=n,type=env,src=V\n", True),
    ("secrets:\n  - {id: netrc, src: .netrc}\n  - {id: k, source: key}\n", True),
    ("publish:\n  web: ['ghcr.io/acme/shop:{branch}']\n", True),
    ("targetz: web\n", False),
    ("engine: podman\n", False),
    ("engine: [docker]\n", False),
    ("build_args:\n  PHP_VERSION: 8.10\n", False),
    ("build_args:\n  DEBUG: yes\n", False),
    ("build_args:\n  A:\n", False),
    ("build_args:\n  A B: x\n", False),
    ("targets: 3\n", False),
    ("targets: [web, web]\n", False),
    ("targets: web,api\n", False),
    ("platforms: linux\n", False),
    ("platforms: [linux/amd64, 64]\n", False),
    ("cache_repo: ghcr.io/acme/shop:cache\n", False),
    ("cache_repo: https://ghcr.io/acme\n", False),
    ("image_repo: Acme/App\n", False),
    ("cache_repo: ghcr.io/acme/.github/cache\n", False),
    ("cache_repo: 'a//b'\n", False),
    ("image_repo: ghcr.io/acme/shop\n", True),
    ("platforms: linux/amd64,linux/arm64\n", False),
    ("platforms: [linux/amd64, linux/arm64]\n", True),
    ("platforms: [linux/arm64]\n", True),
    ("publish:\n  Web: [latest]\n", True),
    ('dockerfile: ""\n', False),
    ("dockerfile:\n", False),
    ("secrets: id=a,env=A\n", False),
    ("secrets: [id=a]\n", False),
    ("secrets: ['id=a,env=A,src=f']\n", False),
    ("secrets:\n  - {id: a, env: A, src: f}\n", False),
    ("secrets:\n  - {env: A}\n", False),
    ("secrets:\n  - {id: a, value: x}\n", False),
    ("test:\n  stage: t\n  command: x\n  secrets: [npm_token, netrc]\n", True),
    ("test:\n  stage: t\n  command: x\n  secrets: npm_token\n", False),
    ("test:\n  stage: t\n  command: x\n  secrets: [a/b]\n", False),
    ("test:\n  stage: t\n  command: x\n  secrets: [a, a]\n", False),
    ("publish: [web]\n", False),
    ("publish:\n  web: latest\n", False),
    ("publish:\n  web: []\n", False),
    ("publish:\n  web app: [x]\n", False),
    ("- web\n", False),
    ("just a string\n", False),
]


@pytest.mark.usefixtures("project")
@pytest.mark.parametrize(("text", "valid"), AGREEMENT)
def test_schema_agrees_with_load_config(schema: dict[str, object], text: str, valid: bool) -> None:
    validator = jsonschema.Draft7Validator(schema)
    schema_valid = validator.is_valid(yaml.safe_load(text))
    try:
        load_config(write(text))
    except UsageError:
        loader_valid = False
    else:
        loader_valid = True
    assert (schema_valid, loader_valid) == (valid, valid)


def test_the_test_stage(tmp_path: Path) -> None:
    path = tmp_path / "dagger-stages.yaml"
    path.write_text(
        "test:\n  stage: test\n  command: vendor/bin/phpunit\n  artifacts: [/app/junit.xml]\n"
    )
    test = TestSpec("test", "vendor/bin/phpunit", ("/app/junit.xml",))
    assert load_config(path).values["test"] == test
    path.write_text("test:\n  stage: test\n  command: [make, check]\n")
    assert load_config(path).values["test"] == TestSpec("test", ("make", "check"))
    path.write_text("test:\n  stage: test\n  command: x\n  artifacts: relative.xml\n")
    with pytest.raises(UsageError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}:4: test.artifacts: an artifact is an absolute path in the container"
    )
    path.write_text("test:\n  command: x\n")
    with pytest.raises(UsageError, match=r":2: test: stage is required"):
        load_config(path)


def test_the_test_command_is_granted_secrets_by_id(tmp_path: Path) -> None:
    path = tmp_path / "dagger-stages.yaml"
    path.write_text("test:\n  stage: test\n  command: x\n  secrets: [npm_token]\n")
    assert load_config(path).values["test"] == TestSpec("test", "x", secrets=("npm_token",))
    path.write_text("test:\n  stage: test\n  command: x\n  secrets: [npm/token]\n")
    with pytest.raises(UsageError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:4: test.secrets[0]: a secret id has no '/' and no space"
