"""Credentials come from explicit entries, CI variables or Docker's config, read when asked."""

from __future__ import annotations

import base64
import json
import logging
import sys
from pathlib import Path

import pytest

from pipeline.oci.credentials import (
    Credentials,
    CredentialSource,
    Secret,
    canonical_host,
    docker_config_path,
)

PASSWORD = "pa55-w0rd-that-must-never-show"
HUB_KEY = "https://index.docker.io/v1/"

HELPER = """\
#!{python}
import json, os, sys
server = sys.stdin.read()
with open(os.environ["FAKE_HELPER_LOG"], "a") as log:
    log.write(server + "\\n")
store = json.load(open(os.environ["FAKE_HELPER_STORE"]))
if sys.argv[1:] != ["get"] or server not in store:
    print("credentials not found in native keychain", store.get("*"))
    sys.exit(1)
user, secret = store[server]
json.dump({{"ServerURL": server, "Username": user, "Secret": secret}}, sys.stdout)
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    (path / ".docker").mkdir(parents=True)
    return path


@pytest.fixture
def env(tmp_path: Path, home: Path) -> dict[str, str]:
    """An environment whose PATH holds only fake credential helpers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return {
        "HOME": str(home),
        "PATH": str(bin_dir),
        "FAKE_HELPER_LOG": str(tmp_path / "helper.log"),
        "FAKE_HELPER_STORE": str(tmp_path / "store.json"),
    }


def write_config(home: Path, config: dict[str, object]) -> Path:
    path = home / ".docker" / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def install_helper(
    env: dict[str, str], name: str, store: dict[str, object], body: str = HELPER
) -> None:
    Path(env["FAKE_HELPER_STORE"]).write_text(json.dumps(store), encoding="utf-8")
    helper = Path(env["PATH"]) / f"docker-credential-{name}"
    helper.write_text(body.format(python=sys.executable), encoding="utf-8")
    helper.chmod(0o755)


def helper_calls(env: dict[str, str]) -> list[str]:
    log = Path(env["FAKE_HELPER_LOG"])
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("index.docker.io", "docker.io"),
        (HUB_KEY, "docker.io"),
        ("https://GHCR.io", "ghcr.io"),
        ("http://localhost:5000/v2/", "localhost:5000"),
    ],
)
def test_canonical_host(host: str, canonical: str) -> None:
    assert canonical_host(host) == canonical


def test_docker_config_path(tmp_path: Path) -> None:
    assert docker_config_path({"HOME": "/h"}) == "/h/.docker/config.json"
    assert docker_config_path({"HOME": "/h", "DOCKER_CONFIG": "/d"}) == "/d/config.json"
    assert docker_config_path({}) is None


@pytest.mark.anyio
async def test_explicit_entries_come_first(env: dict[str, str], home: Path) -> None:
    env |= {"REGISTRY_USER": "env-user", "REGISTRY_PASSWORD": "env-password"}
    write_config(home, {"auths": {"ghcr.io": {"auth": b64("file-user:file-password")}}})
    source = CredentialSource(
        "*", "env", username_env="REGISTRY_USER", password_env="REGISTRY_PASSWORD"
    )
    credentials = Credentials([("ghcr.io", "me", PASSWORD)], sources=[source], env=env)
    assert await credentials.lookup("ghcr.io") == Secret("me", PASSWORD)
    assert await credentials.lookup("quay.io") == Secret("env-user", "env-password")


@pytest.mark.anyio
async def test_env_sources_are_read_at_lookup(env: dict[str, str]) -> None:
    source = CredentialSource(
        "ghcr.io", "env", username_env="GITHUB_ACTOR", password_env="GITHUB_TOKEN"
    )
    credentials = Credentials(sources=[source], env=env)
    assert await credentials.lookup("ghcr.io") is None
    env |= {"GITHUB_ACTOR": "octocat", "GITHUB_TOKEN": PASSWORD}
    assert await credentials.lookup("ghcr.io") == Secret("octocat", PASSWORD)
    assert await credentials.lookup("GHCR.IO") == Secret("octocat", PASSWORD)
    assert await credentials.lookup("quay.io") is None


@pytest.mark.anyio
async def test_env_source_with_a_literal_username(env: dict[str, str]) -> None:
    env["CI_JOB_TOKEN"] = PASSWORD
    source = CredentialSource(
        "registry.gitlab.com", "env", username="gitlab-ci-token", password_env="CI_JOB_TOKEN"
    )
    credentials = Credentials(sources=[source], env=env)
    assert await credentials.lookup("registry.gitlab.com") == Secret("gitlab-ci-token", PASSWORD)


@pytest.mark.anyio
async def test_env_sources_before_docker_config(env: dict[str, str], home: Path) -> None:
    write_config(home, {"auths": {"ghcr.io": {"auth": b64("file-user:file-password")}}})
    first = CredentialSource("ghcr.io", "env", username_env="MISSING", password_env="ALSO_MISSING")
    second = CredentialSource("*", "env", username_env="U", password_env="P")
    credentials = Credentials(sources=[first, second], env=env)
    assert await credentials.lookup("ghcr.io") == Secret("file-user", "file-password")
    env |= {"U": "env-user", "P": "env-password"}
    assert await credentials.lookup("ghcr.io") == Secret("env-user", "env-password")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"auth": b64(f"user:{PASSWORD}")}, Secret("user", PASSWORD)),
        ({"auth": b64("user:with:colons")}, Secret("user", "with:colons")),
        ({"username": "user", "password": PASSWORD}, Secret("user", PASSWORD)),
        ({"identitytoken": PASSWORD}, Secret("<token>", PASSWORD, identity_token=True)),
        (
            {"auth": b64("user:"), "identitytoken": PASSWORD},
            Secret("user", PASSWORD, identity_token=True),
        ),
        ({}, None),
        ({"auth": "%%% not base64"}, None),
    ],
)
async def test_docker_config_auths(
    env: dict[str, str], home: Path, entry: dict[str, str], expected: Secret | None
) -> None:
    write_config(home, {"auths": {"https://ghcr.io": entry}})
    assert await Credentials(env=env).lookup("ghcr.io") == expected


@pytest.mark.anyio
@pytest.mark.parametrize("host", ["docker.io", "index.docker.io", "registry-1.docker.io"])
async def test_docker_hub_uses_its_config_key(env: dict[str, str], home: Path, host: str) -> None:
    write_config(home, {"auths": {HUB_KEY: {"auth": b64(f"hubuser:{PASSWORD}")}}})
    assert await Credentials(env=env).lookup(host) == Secret("hubuser", PASSWORD)


@pytest.mark.anyio
async def test_docker_config_env_var_and_source_paths(
    env: dict[str, str], tmp_path: Path, home: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_text(
        json.dumps({"auths": {"ghcr.io": {"auth": b64("moved:pw")}}}), encoding="utf-8"
    )
    write_config(home, {"auths": {"quay.io": {"auth": b64("home:pw")}}})
    assert await Credentials(env={**env, "DOCKER_CONFIG": str(elsewhere)}).lookup("ghcr.io")
    source = CredentialSource("*", "docker-config", path=str(elsewhere / "config.json"))
    credentials = Credentials(sources=[source], env=env)
    assert await credentials.lookup("ghcr.io") == Secret("moved", "pw")
    assert await credentials.lookup("quay.io") == Secret("home", "pw")
    assert await Credentials(env=env, docker_config=False).lookup("quay.io") is None


@pytest.mark.anyio
async def test_credential_helper_for_a_host(env: dict[str, str], home: Path) -> None:
    install_helper(env, "fake", {"ghcr.io": ["helper-user", PASSWORD], HUB_KEY: ["hub", "hubpw"]})
    write_config(home, {"credHelpers": {"ghcr.io": "fake", "docker.io": "fake"}})
    credentials = Credentials(env=env)
    assert await credentials.lookup("ghcr.io") == Secret("helper-user", PASSWORD)
    assert await credentials.lookup("registry-1.docker.io") == Secret("hub", "hubpw")
    assert await credentials.lookup("quay.io") is None
    assert helper_calls(env) == ["ghcr.io", HUB_KEY]


@pytest.mark.anyio
async def test_creds_store_gets_the_auths_key(env: dict[str, str], home: Path) -> None:
    install_helper(env, "store", {"https://ghcr.io": ["<token>", PASSWORD]})
    write_config(home, {"credsStore": "store", "auths": {"https://ghcr.io": {}}})
    secret = await Credentials(env=env).lookup("ghcr.io")
    assert secret == Secret("<token>", PASSWORD, identity_token=True)
    assert helper_calls(env) == ["https://ghcr.io"]


@pytest.mark.anyio
async def test_missing_helper_means_no_credential(env: dict[str, str], home: Path) -> None:
    write_config(home, {"credsStore": "desktop", "credHelpers": {"ghcr.io": "gcloud"}})
    assert await Credentials(env=env).lookup("ghcr.io") is None


@pytest.mark.anyio
async def test_missing_helper_falls_back_to_inline_auth(env: dict[str, str], home: Path) -> None:
    write_config(home, {"credsStore": "desktop", "auths": {"ghcr.io": {"auth": b64("u:p")}}})
    assert await Credentials(env=env).lookup("ghcr.io") == Secret("u", "p")


@pytest.mark.anyio
async def test_helper_that_hangs_is_stopped(env: dict[str, str], home: Path) -> None:
    install_helper(env, "slow", {}, body="#!{python}\nimport time\ntime.sleep(60)\n")
    write_config(home, {"credsStore": "slow"})
    credentials = Credentials(env=env, helper_timeout=0.3)
    assert await credentials.lookup("ghcr.io") is None


@pytest.mark.anyio
async def test_helper_with_garbage_output(env: dict[str, str], home: Path) -> None:
    install_helper(env, "odd", {}, body=f"#!{{python}}\nprint('not json {PASSWORD}')\n")
    write_config(home, {"credsStore": "odd"})
    assert await Credentials(env=env).lookup("ghcr.io") is None


@pytest.mark.anyio
async def test_broken_config_is_ignored(
    env: dict[str, str], home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (home / ".docker" / "config.json").write_text('{"auths": {', encoding="utf-8")
    assert await Credentials(env=env).lookup("ghcr.io") is None
    assert "not valid JSON" in caplog.text


@pytest.mark.anyio
async def test_passwords_never_show(
    env: dict[str, str], home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not in repr or str, not in any log line, whatever the helpers print."""
    caplog.set_level(logging.DEBUG)
    secret = Secret("user", PASSWORD)
    token = Secret("<token>", PASSWORD, identity_token=True)
    for text in (repr(secret), str(secret), f"{secret}", repr([secret]), repr(token)):
        assert PASSWORD not in text
        assert "******" in text
    credentials = Credentials([("ghcr.io", "user", PASSWORD)], env=env)
    assert PASSWORD not in repr(credentials)
    install_helper(env, "leaky", {"*": PASSWORD})
    write_config(home, {"credsStore": "leaky", "credHelpers": {"odd.io": "odd"}})
    install_helper(env, "odd", {"*": PASSWORD}, body=f"#!{{python}}\nprint('{PASSWORD}')\n")
    assert await Credentials(env=env).lookup("quay.io") is None
    assert await Credentials(env=env).lookup("odd.io") is None
    assert "leaky" in caplog.text
    assert "odd" in caplog.text
    assert PASSWORD not in caplog.text
