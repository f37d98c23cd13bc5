"""An engine double that builds for real: the real dagger-io SDK drives it as it would drive
a Dagger 0.21 engine under `dagger run`, and it executes on the local dockerd and registry.

It serves GraphQL with `tests.fake_dagger`'s plumbing (the real schema from ../shared, else the
SDK's own from `tests.sdk_schema`, which is no validation against the real one; IDs that
encode their call chain; the HTTP server) and validates every query.
Objects are lazy as in Dagger: a chain runs when a query needs a value from it (`sync`,
`publish`, command outputs, `exists`, `export`), once per session:

- `Host.directory(path, exclude)` snapshots the files into a temp dir and counts the bytes;
- `Directory.dockerBuild` runs `DOCKER_BUILDKIT=1 docker build` on exactly that snapshot,
  with the target, build args, secrets (0600 files) and platform, never `--no-cache` (the
  engine has no such argument): dockerd's BuildKit replays the steps of the same inputs, as
  the engine caches them; `withLabel` relabels;
- `Container.publish` tags and pushes; `Container.from` pulls;
- `Container.withExec` runs the command (`docker run`, then `docker commit`), its result
  memoized by its inputs engine-wide;
- `Container.file/directory(…).export` copy out with `docker create` and `docker cp`;
  `Container.export` writes the image as a tarball (`docker save`).

It enforces the engine's rules in `/work/shared/dagger/ENGINE-NOTES.md`, each citing in a
comment the engine source it comes from: pulls need a login registered earlier in the session;
its loopback is its own unless `host_network` is set; secrets passed to a build stay mounted on
later RUNs and on the result's commands; refused frontends and instructions fail conversion;
the default platform is the engine's (`platform`). A new session (the SDK introspects first)
forgets uploads, secrets and logins; exec results stay, as in a warm engine. Images it makes
are tagged `engine-double-<id>/…` and removed when it stops, with what it still runs.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import ipaddress
import json
import os
import platform as host_platform
import posixpath
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import graphql
import httpx
import pytest

from pipeline.cache.ignore import IgnoreRules
from pipeline.dockerfile.parse import parse_dockerfile
from pipeline.dockerfile.stages import Stage, build_stages
from pipeline.errors import UsageError
from tests.docker_env import DockerEnv
from tests.fake_dagger import (
    ENGINE_VERSION,
    EXEC_OUTPUTS,
    Call,
    ExecFailure,
    ExecResult,
    Obj,
    RecordedQuery,
    decode_id,
    encode_id,
    execute_query,
    load_schema,
    record_call,
    serve,
)

__all__ = ["BuildRecord", "EngineDouble", "engine_double_fixture", "run_engine_double"]

DOCKER = os.environ.get("DAGGER_STAGES_DOCKER", "/usr/bin/docker")
OUTPUT_CAP = 100 * 1024  # engine/engineutil/ref.go: exec output is capped at 100 KiB
ACCEPTED_SYNTAX = ("docker/dockerfile", "moby/dockerfile")
_SYNTAX = re.compile(r"^#\s*syntax\s*=\s*(\S+)", re.IGNORECASE)
_ADD_CHECKSUM = re.compile(r"^\s*ADD\s+(?:--\S+\s+)*--checksum", re.IGNORECASE | re.MULTILINE)
_SSH_MOUNT = re.compile(r"--mount=\S*type=ssh\S*", re.IGNORECASE)
_EXIT_CODE = re.compile(r"exit code: (\d+)")
_RUN = re.compile(r"^(\s*RUN)\b", re.IGNORECASE)
_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")


@dataclass(frozen=True)
class BuildRecord:
    """One `docker build` the double ran for a `dockerBuild`: what the engine was asked for."""

    target: str | None
    platform: str
    build_args: Mapping[str, str]
    secret_ids: tuple[str, ...]
    images: tuple[str, ...]


@dataclass(frozen=True)
class Container:
    """A realized container: a local image and what later steps inherit from its making."""

    image: str | None
    platform: str
    env: tuple[tuple[str, str], ...] = ()
    secrets: tuple[str, ...] = ()  # secret names mounted at /run/secrets/<name>
    labels: tuple[tuple[str, str], ...] = ()
    result: ExecResult | None = None


@dataclass
class EngineDouble:
    """The engine's state and settings; tests set the settings before a session starts."""

    schema: graphql.GraphQLSchema
    token: str
    port: int = 0
    docker: str = DOCKER
    # the engine's own platform, its default for builds (not the client's)
    platform: str = field(default_factory=lambda: _native_platform())
    # whether the engine shares the host's network (its loopback is then the host's)
    host_network: bool = False
    queries: list[RecordedQuery] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    builds: list[BuildRecord] = field(default_factory=list)
    uploaded_bytes: int = 0
    execs_run: int = 0
    published: dict[str, str] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: f"engine-double-{uuid.uuid4().hex[:10]}")
    _workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="engine-double-")))
    _secrets: dict[str, str] = field(default_factory=dict)
    _logins: dict[str, tuple[str, str]] = field(default_factory=dict)
    _realized: dict[str, Any] = field(default_factory=dict)
    _exec_cache: dict[tuple[Any, ...], Container] = field(default_factory=dict)
    _key_locks: dict[str, threading.Lock] = field(default_factory=dict)
    _images: list[str] = field(default_factory=list)
    _running: set[subprocess.Popen[bytes]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, body: Mapping[str, Any]) -> dict[str, Any]:
        text = str(body.get("query", ""))
        record = RecordedQuery(text, dict(body.get("variables") or {}), started=time.monotonic())
        with self._lock:
            self.queries.append(record)
        result = execute_query(self.schema, record, functools.partial(_resolve, self), self.invalid)
        if "__schema" in record.root_fields:
            self._new_session()  # the SDK introspects first thing in every session
        record.ended = time.monotonic()
        record.errors = list(result.get("errors", []))
        return result

    def _new_session(self) -> None:
        """A client connected: what a session holds goes; the exec cache stays."""
        with self._lock:
            self._secrets.clear()
            self._logins.clear()
            self._realized.clear()

    def calls(self, field_name: str) -> list[Call]:
        return [c for q in self.queries for c in q.calls if c.field == field_name]

    def close(self) -> None:
        """Stop what still runs (a cancelled client does not stop the engine's work, but the
        engine going away does) and remove the images this double made."""
        with self._lock:
            running = list(self._running)
        for process in running:
            process.kill()
        if self._images:
            self._docker("rmi", "-f", *self._images, check=False)
        shutil.rmtree(self._workdir, ignore_errors=True)

    # --- realizing the call chain -------------------------------------------------------------

    def realize(self, obj: Obj) -> Any:
        """The value of an object, made once per session by its ID."""
        key = encode_id(obj)
        with self._lock:
            if key in self._realized:
                return self._realized[key]
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._realized:
                    return self._realized[key]
            value = self._make(obj)
            with self._lock:
                self._realized[key] = value
            return value

    def _make(self, obj: Obj) -> Any:
        if not obj.chain:
            return None
        call = obj.chain[-1]
        parent = Obj(call.type, obj.chain[:-1])
        maker = getattr(self, f"_make_{call.type}_{call.field}", None)
        if maker is None:
            raise graphql.GraphQLError(f"the engine double does not run {call.type}.{call.field}")
        if call.type == "Query":
            return maker(call.args)
        return maker(self.realize(parent), call.args)

    def _make_Query_host(self, _args: Mapping[str, Any]) -> str:
        return "host"

    def _make_Query_container(self, args: Mapping[str, Any]) -> Container:
        return Container(None, args.get("platform") or self.platform)

    def _make_Query_setSecret(self, args: Mapping[str, Any]) -> str:
        return str(args["name"])

    def _make_Host_directory(self, _host: str, args: Mapping[str, Any]) -> Path:
        """The upload: only what `exclude` leaves, counted byte by byte."""
        source = Path(args["path"])
        rules = IgnoreRules.for_excludes(list(args.get("exclude") or []))
        target = self._new_dir("upload")
        uploaded = 0
        for root, dirs, files in os.walk(source):
            rel_root = Path(root).relative_to(source)
            dirs[:] = [d for d in dirs if not rules.excluded(str(rel_root / d))]
            for name in files:
                rel = rel_root / name
                if rules.excluded(str(rel)):
                    continue
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / rel, target / rel, follow_symlinks=False)
                uploaded += (source / rel).lstat().st_size
        with self._lock:
            self.uploaded_bytes += uploaded
        return target

    def _make_Directory_withNewFile(self, directory: Path, args: Mapping[str, Any]) -> Path:
        target = self._new_dir("dir")
        shutil.copytree(directory, target, symlinks=True, dirs_exist_ok=True)
        path = target / str(args["path"]).lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(args["contents"])
        return target

    def _make_Directory_dockerBuild(self, context: Path, args: Mapping[str, Any]) -> Container:
        dockerfile = context / args.get("dockerfile", "Dockerfile")
        text = dockerfile.read_text()
        _check_conversion(text)
        build_args = {a["name"]: a["value"] for a in args.get("buildArgs") or []}
        target = args.get("target") or None
        # core/schema/directory.go (~1692-1696): no platform means the engine's own
        platform = args.get("platform") or self.platform
        secrets = tuple(self._secret_name(s) for s in args.get("secrets") or [])
        stages = _stages(dockerfile, build_args)
        images = _external_images(stages, target)
        # the build's own copy: builds of one context run in parallel
        own = self._new_dir("dockerfile") / dockerfile.name
        # core/container.go (~5106-5108): the built-in parser, whatever `# syntax=` says
        first, newline, rest = text.partition("\n")
        built_text = f"#{newline}{rest}" if _SYNTAX.match(first) else text
        if secrets:
            built_text = _secrets_kept_on_later_runs(built_text, stages, secrets)
        own.write_text(built_text)
        ignore = dockerfile.with_name(f"{dockerfile.name}.dockerignore")
        if ignore.is_file():
            shutil.copy(ignore, own.with_name(ignore.name))
        self._check_pulls(images)
        self.builds.append(BuildRecord(target, platform, build_args, secrets, images))
        tag = self._new_tag()
        command = ["build", "--progress=plain", "-f", str(own), "-t", tag]
        command += ["--platform", platform]
        if target:
            command += ["--target", target]
        for name, value in build_args.items():
            command += ["--build-arg", f"{name}={value}"]
        for name in secrets:
            command += ["--secret", f"id={name},src={self._secret_file(name)}"]
        built = self._run_docker([*command, str(context)], env={"DOCKER_BUILDKIT": "1"})
        if built.returncode != 0:
            raise _build_failure(built.stdout + built.stderr)
        # core/container.go (~5129-5151, 5198): every secret passed in stays mounted on the
        # result at /run/secrets/<id>; util/llbtodagger/exec.go (~105-110) keeps the mounts
        return Container(tag, platform, secrets=secrets)

    def _make_Container_withLabel(self, container: Container, args: Mapping[str, Any]) -> Container:
        return replace(container, labels=(*container.labels, (args["name"], args["value"])))

    def _make_Container_withEnvVariable(
        self, container: Container, args: Mapping[str, Any]
    ) -> Container:
        return replace(container, env=(*container.env, (args["name"], args["value"])))

    def _make_Container_withoutMount(
        self, container: Container, args: Mapping[str, Any]
    ) -> Container:
        """core/schema/container.go: drops the last mount at that path, a secret's included."""
        path = str(args["path"])
        names = list(container.secrets)
        for index in range(len(names) - 1, -1, -1):
            if f"/run/secrets/{names[index]}" == path:
                del names[index]
                break
        return replace(container, secrets=tuple(names))

    def _make_Container_withoutSecretVariable(
        self, container: Container, _args: Mapping[str, Any]
    ) -> Container:
        """The double mounts secrets as files only; no secret variable is ever set."""
        return container

    def _make_Container_withMountedSecret(
        self, container: Container, args: Mapping[str, Any]
    ) -> Container:
        name = self._secret_name(str(args["source"]))
        if str(args["path"]) != f"/run/secrets/{name}":
            raise graphql.GraphQLError("the engine double mounts secrets at /run/secrets/<name>")
        return replace(container, secrets=(*container.secrets, name))

    def _make_Container_withRegistryAuth(
        self, container: Container, args: Mapping[str, Any]
    ) -> Container:
        self._register_login(args)
        return container

    def _make_Container_from(self, container: Container, args: Mapping[str, Any]) -> Container:
        address = args["address"]
        self._check_pulls((address,))
        pulled = self._run_docker(["pull", "--platform", container.platform, address])
        if pulled.returncode != 0:
            raise graphql.GraphQLError(
                f"failed to resolve source metadata for {address}: " + _last_line(pulled.stderr)
            )
        tag = self._new_tag()  # a name of its own: the pulled name may be others' too
        self._docker("tag", address, tag)
        return Container(tag, container.platform)

    def _make_Container_withExec(self, container: Container, args: Mapping[str, Any]) -> Container:
        """Run the command, or replay the result of the same inputs (cached exec results)."""
        base = self._materialize(container)
        argv = tuple(args["args"])
        image_id = self._docker("image", "inspect", "--format", "{{.Id}}", base).stdout.strip()
        # core/schema/container.go (~593-594): withExec results are cached by their inputs;
        # with expect ANY a failing exit is a result like any other (core/container.go ~7054)
        key = (image_id, argv, container.env, container.secrets, container.platform)
        with self._lock:
            cached = self._exec_cache.get(key)
        if cached is None:
            cached = self._exec(base, argv, container)
            with self._lock:
                self._exec_cache[key] = cached
        result = cached.result
        assert result is not None
        if not result.allowed(args.get("expect") or "SUCCESS"):
            raise ExecFailure(
                _capped(result.stderr), _capped(result.stdout), result.exit_code, argv
            ).error()
        return replace(cached, env=container.env, secrets=container.secrets)

    def _exec(self, image: str, argv: tuple[str, ...], container: Container) -> Container:
        name = f"{self.prefix}-exec-{uuid.uuid4().hex[:8]}"
        command = ["run", "--name", name, "--platform", container.platform]
        for key, value in container.env:
            command += ["-e", f"{key}={value}"]
        # core/container_exec.go (~888-905): the exec mounts the container's secrets
        for secret in container.secrets:
            command += ["-v", f"{self._secret_file(secret)}:/run/secrets/{secret}:ro"]
        command += ["--entrypoint", argv[0], image, *argv[1:]]
        ran = self._run_docker(command)
        with self._lock:
            self.execs_run += 1
        tag = self._new_tag()
        committed = self._docker("commit", name, tag, check=False)
        self._docker("rm", "-f", name, check=False)
        if committed.returncode != 0:
            raise graphql.GraphQLError(f"exec {argv[0]}: {_last_line(ran.stderr)}")
        result = ExecResult(ran.returncode, ran.stdout, ran.stderr)
        return Container(tag, container.platform, result=result)

    def _make_Container_file(
        self, container: Container, args: Mapping[str, Any]
    ) -> tuple[str, str]:
        return (self._materialize(container), args["path"])

    _make_Container_directory = _make_Container_file

    # --- values -------------------------------------------------------------------------------

    def exec_output(self, obj: Obj, field_name: str) -> Any:
        container = self.realize(obj)
        if container.result is None:
            raise graphql.GraphQLError(f"{field_name}: no command has been executed")
        return container.result.output(field_name)

    def publish(self, obj: Obj, address: str) -> str:
        container = self.realize(obj)
        image = self._materialize(container)
        self._check_reachable(address)
        self._docker("tag", image, address)
        self._images.append(address)
        pushed = self._run_docker(["push", address])
        if pushed.returncode != 0:
            raise graphql.GraphQLError(f"failed to export: {_last_line(pushed.stderr)}")
        match = _PUSHED_DIGEST.search(pushed.stdout)
        assert match is not None, pushed.stdout
        self.published[address] = match.group(1)
        # core/container.go (~6395-6408): publish answers ref@sha256:…
        return f"{address}@{match.group(1)}"

    def exists(self, obj: Obj, path: str, expected: str | None) -> bool:
        kind = self._kind(self._materialize(self.realize(obj)), path)
        wanted = {None: kind, "REGULAR_TYPE": "file", "DIRECTORY_TYPE": "directory"}
        return kind is not None and kind == wanted.get(expected)

    def export(self, obj: Obj, host_path: str) -> str:
        realized = self.realize(obj)
        if isinstance(realized, Container):
            return self._export_image(realized, host_path)
        image, path = realized
        made = obj.chain[-1].field
        kind = self._kind(image, path)
        if kind is None:
            raise graphql.GraphQLError(f"lstat {path}: no such file or directory")
        if (made == "file") != (kind == "file"):
            raise graphql.GraphQLError(f"path {path} is a {kind}, not a {made}")
        target = Path(host_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._created(image) as name:
            source = f"{name}:{path.rstrip('/')}" + ("/." if made == "directory" else "")
            if made == "directory":
                target.mkdir(parents=True, exist_ok=True)
            self._docker("cp", "-L", source, str(target))
        return host_path

    def _export_image(self, container: Container, host_path: str) -> str:
        """`Container.export`: the image as a tarball on the host (`docker save`, which a
        daemon loads back under this double's tag, as it loads the engine's archive)."""
        Path(host_path).parent.mkdir(parents=True, exist_ok=True)
        self._docker("save", "-o", host_path, self._materialize(container))
        return host_path

    # --- engine rules -------------------------------------------------------------------------

    def _register_login(self, args: Mapping[str, Any]) -> None:
        """core/schema/container.go (~3999-4026): a login is session-wide once registered."""
        address = str(args["address"])
        host = address.split("/", 1)[0]
        # auth/registry.go (parseAuthAddress): a host needs a dot or a port
        if "." not in host and ":" not in host:
            raise graphql.GraphQLError(f"invalid registry address {address!r}: no dot or port")
        password = self._secrets.get(self._secret_name(args["secret"]), "")
        with self._lock:
            self._logins[host] = (str(args["username"]), password)

    def _check_pulls(self, images: Sequence[str]) -> None:
        """A pull needs a registered login where the registry asks for one."""
        for image in images:
            host = _registry_host(image)
            self._check_reachable(image)
            if host in self._logins or not _needs_auth(host):
                continue
            # core/schema/container.go (~3999-4026) and engine/resolver/resolver.go
            # (~684-717): only logins registered in the session (or the CLI host's docker
            # config, empty here) authenticate a pull
            raise graphql.GraphQLError(
                f"failed to resolve source metadata for {image}: pull access denied: "
                "401 Unauthorized"
            )

    def _check_reachable(self, ref: str) -> None:
        """engine/client/drivers/docker.go (~64-106): the engine is a container on a bridge, so
        its loopback is its own; engine/resolver/resolver.go (~749) speaks plain HTTP only
        to that localhost or to hosts set insecure in engine/config/config.go (~87-88)."""
        host = _registry_host(ref)
        if self.host_network or not _is_loopback(host):
            return
        port = host.rsplit(":", 1)[1] if ":" in host else "443"
        raise graphql.GraphQLError(
            f'failed to do request: Head "https://{host}/v2/": dial tcp 127.0.0.1:{port}: '
            "connect: connection refused"
        )

    # --- helpers ------------------------------------------------------------------------------

    def _secret_name(self, secret_id: str) -> str:
        made = decode_id(secret_id).find("setSecret")
        if made is None:
            raise graphql.GraphQLError("the engine double knows only secrets from setSecret")
        return str(made.args["name"])

    def _secret_file(self, name: str) -> Path:
        """The plaintext in a file of its own that only its owner reads, as a mount source."""
        path = self._new_dir("secret") / "value"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(self._secrets.get(name, ""))
        return path

    def _materialize(self, container: Container) -> str:
        """The container as a local image, with its labels applied."""
        if container.image is None:
            raise graphql.GraphQLError("the container has no image: call from or dockerBuild")
        if not container.labels:
            return container.image
        tag = self._new_tag()
        command = ["build", "-q", "-t", tag]
        for name, value in container.labels:
            command += ["--label", f"{name}={value}"]
        made = self._run_docker([*command, "-"], stdin=f"FROM {container.image}\n")
        if made.returncode != 0:
            raise graphql.GraphQLError(f"withLabel: {_last_line(made.stderr)}")
        return tag

    def _kind(self, image: str, path: str) -> str | None:
        with self._created(image) as name:
            copied = subprocess.run(
                [self.docker, "cp", "-L", f"{name}:{path}", "-"],
                capture_output=True,
                check=False,
                timeout=120,
            )
        if copied.returncode != 0:
            return None
        with tarfile.open(fileobj=io.BytesIO(copied.stdout)) as archive:
            first = archive.next()
        return None if first is None else "directory" if first.isdir() else "file"

    @contextlib.contextmanager
    def _created(self, image: str) -> Iterator[str]:
        name = f"{self.prefix}-cp-{uuid.uuid4().hex[:8]}"
        self._docker("create", "--name", name, image, "true")
        try:
            yield name
        finally:
            self._docker("rm", "-f", name, check=False)

    def _new_dir(self, kind: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self._workdir))

    def _new_tag(self) -> str:
        tag = f"{self.prefix}/image:{uuid.uuid4().hex[:12]}"
        with self._lock:
            self._images.append(tag)
        return tag

    def _run_docker(
        self, args: list[str], env: Mapping[str, str] | None = None, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A docker command the engine runs, with the session's logins only; `close` stops it."""
        env = {**(env or {}), "DOCKER_CONFIG": str(self._docker_config_with_logins())}
        process = subprocess.Popen(
            [self.docker, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env},
        )
        with self._lock:
            self._running.add(process)
        try:
            out, err = process.communicate(stdin.encode() if stdin is not None else None, 600)
        finally:
            with self._lock:
                self._running.discard(process)
        return subprocess.CompletedProcess(
            args, process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )

    def _docker_config_with_logins(self) -> Path:
        """A private docker config that holds only the session's logins."""
        config = self._new_dir("docker-config")
        auths = {
            host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
            for host, (user, password) in self._logins.items()
        }
        (config / "config.json").write_text(json.dumps({"auths": auths}))
        return config

    def _docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.docker, *args], capture_output=True, text=True, check=False, timeout=300
        )
        if check and done.returncode != 0:
            raise graphql.GraphQLError(f"docker {args[0]}: {_last_line(done.stderr)}")
        return done


def _check_conversion(text: str) -> None:
    """What the engine's own Dockerfile conversion refuses, with its wording."""
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    # core/container.go (~5028-5053): only docker/dockerfile and moby/dockerfile frontends
    if (syntax := _SYNTAX.match(first)) is not None:
        ref = syntax.group(1).split("@", 1)[0].split(":", 1)[0]
        ref = ref.removeprefix("docker.io/")
        if ref not in ACCEPTED_SYNTAX:
            raise graphql.GraphQLError(
                f"failed to convert Dockerfile: unsupported syntax {syntax.group(1)!r}: "
                "only docker/dockerfile and moby/dockerfile are supported"
            )
    # util/llbtodagger/source.go (~209-212): ADD --checksum does not convert
    if _ADD_CHECKSUM.search(text):
        raise graphql.GraphQLError(
            "failed to convert Dockerfile: failed to convert LLB to Dagger: "
            "ADD --checksum is not supported"
        )
    # util/llbtodagger/exec.go (~19-41): SSH mounts (required by default) do not convert
    for mount in _SSH_MOUNT.findall(text):
        if "required=false" not in mount.lower():
            raise graphql.GraphQLError(
                "failed to convert Dockerfile: failed to convert LLB to Dagger: "
                "required SSH mounts are not supported"
            )


def _stages(dockerfile: Path, build_args: Mapping[str, str]) -> tuple[Stage, ...]:
    try:
        return build_stages(parse_dockerfile(dockerfile), build_args=build_args).stages
    except UsageError as exc:
        raise graphql.GraphQLError(f"failed to parse Dockerfile: {exc}") from exc


def _secrets_kept_on_later_runs(text: str, stages: Sequence[Stage], secrets: Sequence[str]) -> str:
    """util/llbtodagger/exec.go (~105-110, 208-212): once a RUN mounts a secret, every later
    RUN of that stage, and of the stages built from it, has it mounted too."""
    lines = text.splitlines(keepends=True)
    kept: dict[int, set[str]] = {}
    for stage in stages:
        mounted = set(kept.get(stage.base_stage, ())) if stage.base_stage is not None else set()
        for instruction in stage.instructions:
            if instruction.cmd != "RUN":
                continue
            own = _secret_mounts(instruction.flags.get("mount", ()))
            if extra := sorted(mounted - own):
                flags = "".join(f" --mount=type=secret,id={name}" for name in extra)
                index = instruction.line - 1
                lines[index] = _RUN.sub(rf"\g<1>{flags}", lines[index], count=1)
            mounted |= own & set(secrets)
        kept[stage.index] = mounted
    return "".join(lines)


def _secret_mounts(mounts: Sequence[str]) -> set[str]:
    ids = set()
    for mount in mounts:
        options = dict(part.partition("=")[::2] for part in mount.split(","))
        if options.get("type") == "secret":
            ids.add(options.get("id") or posixpath.basename(options.get("target", "")))
    return ids


def _external_images(stages: Sequence[Stage], target: str | None) -> tuple[str, ...]:
    """The images a build of `target` pulls: external bases and COPY --from images."""
    wanted = next((s.index for s in stages if s.name == target), len(stages) - 1)
    todo, seen, images = [wanted], set(), []
    while todo:
        stage = stages[todo.pop()]
        if stage.index in seen:
            continue
        seen.add(stage.index)
        if stage.base_stage is None and stage.base != "scratch":
            images.append(stage.base)
        images.extend(stage.images)
        todo.extend(stage.depends_on)
    return tuple(dict.fromkeys(images))


def _build_failure(log: str) -> graphql.GraphQLError:
    """A failed build as the engine reports it: an exec error ending in `exit code: N`."""
    codes = _EXIT_CODE.findall(log)
    if not codes:
        return graphql.GraphQLError(f"failed to build: {_last_line(log)}")
    return ExecFailure(_capped(log), "", int(codes[-1])).error()


def _capped(text: str) -> str:
    data = text.encode()
    return text if len(data) <= OUTPUT_CAP else data[-OUTPUT_CAP:].decode(errors="replace")


def _registry_host(ref: str) -> str:
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    return False


@functools.cache
def _needs_auth(host: str) -> bool:
    if host == "docker.io":
        return False
    try:
        answer = httpx.get(f"http://{host}/v2/", timeout=5)
    except httpx.HTTPError:
        return False
    return answer.status_code == 401


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _native_platform() -> str:
    machine = host_platform.machine().lower()
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _resolve(
    double: EngineDouble, source: Any, info: graphql.GraphQLResolveInfo, **args: Any
) -> Any:
    """Objects stay lazy as call chains; a scalar that needs a value realizes its chain."""
    if not isinstance(source, Obj):
        return graphql.default_field_resolver(source, info, **args)
    call = record_call(info, args, double._lock)
    if call.field == "setSecret":
        with double._lock:
            double._secrets[args["name"]] = args["plaintext"]
    if call.field == "withRegistryAuth":
        double._register_login(args)
    if call.field == "node":
        return decode_id(args["id"])
    type_ = graphql.get_nullable_type(info.return_type)
    if isinstance(type_, graphql.GraphQLObjectType):
        return source.then(call, type_.name)
    return _scalar(double, source, call)


def _scalar(double: EngineDouble, source: Obj, call: Call) -> Any:
    name = call.field
    if name == "version":
        return ENGINE_VERSION
    if name in ("id", "sync"):
        if name == "sync":
            double.realize(source)
        return encode_id(source)
    if name == "name" and (made := source.find("setSecret")):
        return made.args["name"]
    if name in EXEC_OUTPUTS:
        return double.exec_output(source, name)
    if name == "publish":
        return double.publish(source, call.args["address"])
    if name == "exists":
        return double.exists(source, call.args["path"], call.args.get("expectedType"))
    if name == "export":
        return double.export(source, call.args["path"])
    if name == "platform":
        return double.realize(source).platform
    raise graphql.GraphQLError(f"the engine double does not answer {call.type}.{name}")


@contextlib.contextmanager
def run_engine_double(
    token: str = "engine-double-token", *, docker: str = DOCKER, host_network: bool = False
) -> Iterator[EngineDouble]:
    """Serve an engine double on a free port until the block ends."""
    double = EngineDouble(load_schema(), token, docker=docker, host_network=host_network)
    try:
        with serve(double) as port:
            double.port = port
            yield double
    finally:
        double.close()


@pytest.fixture(name="engine_double")
def engine_double_fixture(
    monkeypatch: pytest.MonkeyPatch, docker_env: DockerEnv
) -> Iterator[EngineDouble]:
    """An engine double in the environment as `dagger run` sets it, on the daemon `docker_env`
    checked; it fails the test on an invalid query. Its network is its own (a bridge)."""
    with run_engine_double(docker=docker_env.docker) as double:
        monkeypatch.setenv("DAGGER_SESSION_PORT", str(double.port))
        monkeypatch.setenv("DAGGER_SESSION_TOKEN", double.token)
        yield double
    assert not double.invalid, "queries the schema rejects:\n" + "\n\n".join(double.invalid)
