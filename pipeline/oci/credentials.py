"""Registry credentials, read only when a registry asks for them.

A `Credentials` object holds where passwords come from, never the values it has
not been given: explicit entries first, then `CredentialSource` environment
variables, then Docker config files (inline `auths`, `credHelpers`, `credsStore`).
`lookup` is async because a Docker credential helper is a subprocess, which must
not block the event loop that runs the other stages' registry calls.

Passwords stay inside `Secret`, whose repr and str hide them; nothing here logs a
helper's output or puts a value in an exception message.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


__all__ = [
    "DOCKER_HUB_CONFIG_KEY",
    "CredentialSource",
    "Credentials",
    "Secret",
    "canonical_host",
    "docker_config_path",
]

logger = logging.getLogger(__name__)

DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
IDENTITY_TOKEN_USER = "<token>"
ANY_REGISTRY = "*"
HELPER_TIMEOUT = 10.0
_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


@dataclass(frozen=True)
class CredentialSource:
    """Where a registry credential comes from: names of env vars or a file, never the values.

    `registry` is a host, or `*` when the source is not tied to one (`REGISTRY_USER`
    outside CI, or a Docker config file, which maps hosts to credentials itself).
    `username` is a literal user name for tokens that come with a fixed one
    (GitLab's `gitlab-ci-token`); otherwise `username_env` names the variable.
    """

    registry: str
    kind: Literal["env", "docker-config"]
    username_env: str | None = None
    password_env: str | None = None
    path: str | None = None
    username: str | None = None


@dataclass(frozen=True, repr=False)
class Secret:
    """A user name and password; `identity_token` marks an OAuth2 refresh token instead."""

    username: str
    password: str
    identity_token: bool = False

    def __repr__(self) -> str:
        kind = "identity_token" if self.identity_token else "password"
        return f"Secret(username={self.username!r}, {kind}='******')"

    __str__ = __repr__


def canonical_host(host: str) -> str:
    """Lower-case host, with Docker Hub's several names (and config key) as `docker.io`."""
    host = host.strip().lower()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    host = host.split("/", 1)[0]
    return "docker.io" if host in _HUB_HOSTS else host


class Credentials:
    """Credentials for registries, in the order explicit, CI/env sources, Docker config."""

    def __init__(
        self,
        entries: Iterable[tuple[str, str, str]] = (),
        *,
        sources: Iterable[CredentialSource] = (),
        env: Mapping[str, str] | None = None,
        docker_config: bool = True,
        helper_timeout: float = HELPER_TIMEOUT,
    ) -> None:
        """`entries` are (host, user, password); `env` defaults to os.environ, read at lookup.

        `docker_config=False` skips the default `$DOCKER_CONFIG` or `~/.docker` file;
        config files named by `sources` are still read.
        """
        self._explicit = [
            (canonical_host(host), Secret(user, password)) for host, user, password in entries
        ]
        self._sources = tuple(sources)
        self._env = env
        self._docker_config = docker_config
        self._helper_timeout = helper_timeout

    def __repr__(self) -> str:
        hosts = [host for host, _ in self._explicit]
        return f"Credentials(explicit={hosts!r}, sources={len(self._sources)})"

    async def lookup(self, host: str) -> Secret | None:
        """The first credential for `host`, or None for anonymous access."""
        wanted = canonical_host(host)
        for entry_host, explicit in self._explicit:
            if entry_host == wanted:
                return explicit
        env = self._environment()
        for source in self._sources:
            if source.kind == "env" and _matches(source.registry, wanted):
                secret = _from_env(source, env)
                if secret is not None:
                    return secret
        for path in self._config_paths(env):
            secret = await self._from_docker_config(path, wanted, env)
            if secret is not None:
                return secret
        return None

    def _environment(self) -> Mapping[str, str]:
        return os.environ if self._env is None else self._env

    def _config_paths(self, env: Mapping[str, str]) -> list[str]:
        paths = [
            source.path
            for source in self._sources
            if source.kind == "docker-config" and source.path is not None
        ]
        default = docker_config_path(env) if self._docker_config else None
        if default is not None:
            paths.append(default)
        return list(dict.fromkeys(paths))

    async def _from_docker_config(
        self, path: str, host: str, env: Mapping[str, str]
    ) -> Secret | None:
        config = await _read_config(path)
        if config is None:
            return None
        auths = _dict(config.get("auths"))
        key = next((key for key in auths if canonical_host(key) == host), None)
        helpers = _dict(config.get("credHelpers"))
        helper = next(
            (str(name) for key, name in helpers.items() if canonical_host(key) == host), None
        )
        store = config.get("credsStore")
        for name in (helper, store if isinstance(store, str) and store else None):
            if name is not None:
                server_url = key or (DOCKER_HUB_CONFIG_KEY if host == "docker.io" else host)
                secret = await self._from_helper(name, server_url, env)
                if secret is not None:
                    return secret
        return _from_auth_entry(auths.get(key), path) if key is not None else None

    async def _from_helper(
        self, name: str, server_url: str, env: Mapping[str, str]
    ) -> Secret | None:
        """Ask `docker-credential-<name> get`; any failure means no credential, reason logged.

        The helper's output is never logged: on failure it may echo what it was given.
        """
        program = f"docker-credential-{name}"
        executable = shutil.which(program, path=env.get("PATH", os.defpath))
        if executable is None:
            logger.debug("credential helper %s is not installed", program)
            return None
        result = None
        try:
            with anyio.move_on_after(self._helper_timeout):
                result = await anyio.run_process(
                    [executable, "get"], input=server_url.encode(), check=False, env=dict(env)
                )
        except OSError as exc:
            logger.warning("credential helper %s could not run: %s", program, exc.strerror)
            return None
        if result is None:
            logger.warning(
                "credential helper %s gave no answer for %s within %g s",
                program,
                server_url,
                self._helper_timeout,
            )
            return None
        if result.returncode != 0:
            logger.debug("credential helper %s has no credential for %s", program, server_url)
            return None
        return _from_helper_output(result.stdout, program, server_url)


def docker_config_path(env: Mapping[str, str]) -> str | None:
    """$DOCKER_CONFIG/config.json, else $HOME/.docker/config.json, whether or not it exists."""
    directory = env.get("DOCKER_CONFIG") or None
    if directory is None:
        home = env.get("HOME") or None
        if home is None:
            return None
        directory = os.path.join(home, ".docker")
    return os.path.join(directory, "config.json")


def _matches(registry: str, host: str) -> bool:
    return registry == ANY_REGISTRY or canonical_host(registry) == host


def _from_env(source: CredentialSource, env: Mapping[str, str]) -> Secret | None:
    username = source.username or (env.get(source.username_env) if source.username_env else None)
    password = env.get(source.password_env) if source.password_env else None
    return Secret(username, password) if username and password else None


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


async def _read_config(path: str) -> dict[str, object] | None:
    """The config file's JSON object; a missing file is silent, a broken one a warning."""
    try:
        text = await anyio.Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("cannot read Docker config %s: %s", path, exc.strerror)
        return None
    try:
        config = json.loads(text)
    except ValueError:
        logger.warning("Docker config %s is not valid JSON; ignoring it", path)
        return None
    return config if isinstance(config, dict) else None


def _from_auth_entry(entry: object, path: str) -> Secret | None:
    """An `auths` entry: `identitytoken`, base64 `auth`, or `username`/`password`."""
    fields = _dict(entry)
    username, password = fields.get("username"), fields.get("password")
    auth = fields.get("auth")
    if isinstance(auth, str) and auth:
        try:
            username, _, password = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            logger.warning("Docker config %s has an unreadable `auth` entry; ignoring it", path)
            return None
    token = fields.get("identitytoken")
    if isinstance(token, str) and token:
        name = username if isinstance(username, str) and username else IDENTITY_TOKEN_USER
        return Secret(name, token, identity_token=True)
    if isinstance(username, str) and isinstance(password, str) and username and password:
        return Secret(username, password)
    return None


def _from_helper_output(stdout: bytes, program: str, server_url: str) -> Secret | None:
    """The helper's `{"Username": …, "Secret": …}`; user `<token>` marks an identity token."""
    try:
        answer = json.loads(stdout)
    except ValueError:
        answer = None
    fields = _dict(answer)
    username, secret = fields.get("Username"), fields.get("Secret")
    if not (isinstance(username, str) and isinstance(secret, str) and username and secret):
        logger.warning("credential helper %s gave an unusable answer for %s", program, server_url)
        return None
    return Secret(username, secret, identity_token=username == IDENTITY_TOKEN_USER)
