"""A fake Dagger engine: the real dagger-io SDK talks to it as it would under `dagger run`.

It serves POST /query on 127.0.0.1 with the session's Basic auth, validates every query
against Dagger's real schema (`../shared/dagger/schema-v0.21.8.graphqls`; where that file is
absent, against the one `tests.sdk_schema` generates from the installed SDK, which is no
validation against the real engine's schema) and answers by
executing it with graphql-core: the default resolvers serve introspection, `_resolve`
synthesizes the rest. Object IDs are opaque strings that encode the call chain that made
the object, so `node(id:)` can bring it back. Every query is recorded for tests to inspect.

Commands (`withExec`) answer as `execs` says for their argv, honouring `expect`; a command is
run (recorded in `ran`, with the secrets mounted in its container) only the first time its
inputs are seen, as the engine memoizes `withExec` results (core/schema/container.go). A login
registered by `withRegistryAuth` lasts for the session (core/schema/container.go, a per-session
input); a `dockerBuild` that pulls from a host in `private_pulls` fails with 401 unless a
login for that host was registered in an earlier query (core/container_image.go). The upload
of a host directory is measured, after its `exclude` patterns, in `uploads`. Every
container shares one pretend filesystem, `files` and `directories`, that `exists` consults and
that `file(path).export` / `directory(path).export` really write to the host path they are
given (which must be absolute), as the real engine does.

Import `fake_dagger_fixture` into a test module (or list this module in `pytest_plugins`) for
the `fake_dagger` fixture. The SDK builds its queries from the schema the engine serves; the
real one is this workplace's data in ../shared and is not copied into this repository, so a
fresh clone elsewhere runs these tests on the SDK's own schema rather than skipping them.
`serve` and the helpers in `__all__` are the GraphQL plumbing `tests.engine_double` shares.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import functools
import hashlib
import json
import os
import posixpath
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import graphql
import pytest

from tests.sdk_schema import sdk_schema

__all__ = [
    "SCHEMA_PATH",
    "Call",
    "EngineGone",
    "ExecFailure",
    "ExecResult",
    "ExecRun",
    "FakeDagger",
    "Obj",
    "RecordedQuery",
    "decode_id",
    "encode_id",
    "execute_query",
    "fake_dagger_fixture",
    "load_schema",
    "record_call",
    "resolve_type",
    "root_fields",
    "run_fake_dagger",
    "serve",
]

SCHEMA_PATH = Path(
    os.environ.get("DAGGER_STAGES_DAGGER_SCHEMA")
    or Path(__file__).resolve().parents[1].parent / "shared/dagger/schema-v0.21.8.graphqls"
)
ENGINE_VERSION = "v0.21.8"
SENSITIVE_ARGS = frozenset({"plaintext"})
EXEC_OUTPUTS = frozenset({"exitCode", "stdout", "stderr", "combinedOutput"})


@dataclass(frozen=True)
class Call:
    """One field the engine resolved: `type.field(args)`."""

    type: str
    field: str
    args: Mapping[str, Any]


@dataclass(frozen=True)
class Obj:
    """An engine object: its GraphQL type and the calls that made it, as in a Dagger ID."""

    type: str
    chain: tuple[Call, ...] = ()

    def then(self, call: Call, type_name: str) -> Obj:
        return Obj(type_name, (*self.chain, call))

    def find(self, field_name: str) -> Call | None:
        """The last call of that field in the chain."""
        return next((c for c in reversed(self.chain) if c.field == field_name), None)


@dataclass(frozen=True)
class ExecFailure:
    """How a build fails with Dagger's EXEC_ERROR shape (a plain string fails it without)."""

    stderr: str
    stdout: str = ""
    exit_code: int = 1
    cmd: tuple[str, ...] = ("/bin/sh", "-c", "false")

    def error(self) -> graphql.GraphQLError:
        command = " ".join(self.cmd)
        message = f'process "{command}" did not complete successfully: exit code: {self.exit_code}'
        return graphql.GraphQLError(
            message,
            extensions={
                "_type": "EXEC_ERROR",
                "exitCode": self.exit_code,
                "stdout": self.stdout,
                "stderr": self.stderr,
                "cmd": list(self.cmd),
            },
        )


@dataclass(frozen=True)
class ExecResult:
    """What a command does when it runs to its end: a failing exit code fails it unless
    `withExec(expect:)` allows it, as in the engine."""

    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""

    def output(self, field_name: str) -> Any:
        """What `exitCode`, `stdout`, `stderr` or `combinedOutput` answers."""
        return {
            "exitCode": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "combinedOutput": self.stdout + self.stderr,
        }[field_name]

    def allowed(self, expect: str) -> bool:
        if self.exit_code == 0:
            return expect in ("SUCCESS", "ANY")
        ran = self.exit_code < 128 or self.exit_code >= 192  # not killed by a signal
        return ran and expect in ("FAILURE", "ANY")


class EngineGone(Exception):
    """Raised by `answer` for a query the engine dies in: the server hangs up on it."""


@dataclass(frozen=True)
class ExecRun:
    """A command the engine really ran, with the secret paths and variables its container had."""

    argv: tuple[str, ...]
    secret_paths: tuple[str, ...]
    secret_variables: tuple[str, ...]
    env: Mapping[str, str]


@dataclass
class RecordedQuery:
    text: str
    variables: dict[str, Any]
    started: float
    ended: float = 0.0
    root_fields: tuple[str, ...] = ()
    calls: list[Call] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeDagger:
    """The engine's state and configuration; tests read and set it between requests."""

    schema: graphql.GraphQLSchema
    token: str
    port: int = 0
    delays: dict[str, float] = field(default_factory=dict)
    # by `dockerBuild` target or `from` address: how that build or pull fails
    failures: dict[str, ExecFailure | str] = field(default_factory=dict)
    # by argv: what a `withExec` does (an ExecResult by default, exit code 0 and no output)
    execs: dict[tuple[str, ...], ExecResult | ExecFailure | str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # container path: contents
    # container path: {relative path: contents}
    directories: dict[str, dict[str, str]] = field(default_factory=dict)
    export_failures: dict[str, str] = field(default_factory=dict)  # container path: error
    hang_up_on: set[str] = field(default_factory=set)  # fields the engine dies in
    queries: list[RecordedQuery] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    published: dict[str, str] = field(default_factory=dict)
    # by `dockerBuild` target: the registry hosts its FROM / COPY --from images come from
    private_pulls: dict[str, tuple[str, ...]] = field(default_factory=dict)
    logins: dict[str, str] = field(default_factory=dict)  # host: username, for the session
    ran: list[ExecRun] = field(default_factory=list)
    uploads: list[int] = field(default_factory=list)  # bytes of each host directory sent
    _memo: set[str] = field(default_factory=set)
    max_in_flight: int = 0
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, field_name: str) -> list[Call]:
        """Every resolved call of that field, in the order the queries arrived."""
        return [c for q in self.queries for c in q.calls if c.field == field_name]

    def queries_with(self, field_name: str) -> list[RecordedQuery]:
        return [q for q in self.queries if any(c.field == field_name for c in q.calls)]

    def object_of(self, id_value: str) -> Obj:
        return decode_id(id_value)

    def answer(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validate, execute and record one GraphQL request."""
        text = str(body.get("query", ""))
        variables = dict(body.get("variables") or {})
        record = RecordedQuery(text, variables, started=time.monotonic())
        with self._lock:
            self.queries.append(record)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            result = self._execute(record)
        finally:
            with self._lock:
                self._in_flight -= 1
            record.ended = time.monotonic()
        record.errors = list(result.get("errors", []))
        if any(c.field in self.hang_up_on for c in record.calls):
            raise EngineGone(record.text)
        return result

    def kind_of(self, path: str) -> str | None:
        """ "file", "directory" or None for a container path in the pretend filesystem."""
        path = _normal(path)
        if path in self.files:
            return "file"
        if path in self.directories:
            return "directory"
        for top, entries in self.directories.items():
            for name in entries:
                inner = posixpath.join(top, name)
                if inner == path:
                    return "file"
                if inner.startswith(path + "/"):
                    return "directory"
        return None

    def _execute(self, record: RecordedQuery) -> dict[str, Any]:
        resolver = functools.partial(_resolve, self)
        return execute_query(self.schema, record, resolver, self.invalid)


def execute_query(
    schema: graphql.GraphQLSchema,
    record: RecordedQuery,
    resolver: Callable[..., Any],
    invalid: list[str],
) -> dict[str, Any]:
    """Parse, validate and execute a recorded query from the root of the engine's objects;
    a query the schema rejects is answered with its errors and kept in `invalid`."""
    try:
        document = graphql.parse(record.text)
        errors = graphql.validate(schema, document)
    except graphql.GraphQLError as exc:
        errors = [exc]
    if errors:
        invalid.extend(f"{e.message}\nin query:\n{record.text}" for e in errors)
        return {"errors": [e.formatted for e in errors]}
    record.root_fields = root_fields(document)
    result = graphql.execute_sync(
        schema,
        document,
        root_value=Obj("Query"),
        context_value=record,
        variable_values=record.variables,
        field_resolver=resolver,
        type_resolver=resolve_type,
    )
    return dict(result.formatted)


def root_fields(document: graphql.DocumentNode) -> tuple[str, ...]:
    return tuple(
        selection.name.value
        for definition in document.definitions
        if isinstance(definition, graphql.OperationDefinitionNode)
        for selection in definition.selection_set.selections
        if isinstance(selection, graphql.FieldNode)
    )


def _resolve(
    fake: FakeDagger, obj: Any, info: graphql.GraphQLResolveInfo[Any], /, **args: Any
) -> Any:
    """Synthesize a field of an engine object; anything else resolves the default way."""
    if not isinstance(obj, Obj):
        return graphql.default_field_resolver(obj, info, **args)
    source = obj
    call = record_call(info, args, fake._lock)
    record: RecordedQuery = info.context
    if delay := fake.delays.get(info.field_name):
        time.sleep(delay)
    _maybe_fail(fake, source, record)
    _effects(fake, source, call)
    return _value(fake, source, call, graphql.get_nullable_type(info.return_type))


def record_call(
    info: graphql.GraphQLResolveInfo[Any], args: Mapping[str, Any], lock: threading.Lock
) -> Call:
    """The field being resolved, as a call added to the query's record (`info.context`)."""
    call = Call(info.parent_type.name, info.field_name, args)
    record: RecordedQuery = info.context
    with lock:
        record.calls.append(call)
    return call


def _effects(fake: FakeDagger, source: Obj, call: Call) -> None:
    """What resolving a call does to the engine: logins, uploads, commands run."""
    if call.field == "withRegistryAuth":
        with fake._lock:
            fake.logins[call.args["address"]] = call.args["username"]
    elif call.field == "directory" and source.type == "Host":
        sent = _upload_size(Path(call.args["path"]), call.args.get("exclude") or [])
        with fake._lock:
            fake.uploads.append(sent)
    elif call.field == "withExec":
        key = encode_id(source.then(call, "Container"))
        with fake._lock:
            if key in fake._memo:
                return
            fake._memo.add(key)
            paths, variables, env = _container_state(source)
            fake.ran.append(ExecRun(tuple(call.args["args"]), paths, variables, env))


def _container_state(source: Obj) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str]]:
    """The secret mounts, secret variables and env a container has, from the calls that made it.

    core/container.go (DockerBuild) mounts every secret given at /run/secrets/<name>;
    `withoutMount` drops the last mount at a path, `withoutSecretVariable` the variable.
    """
    paths: list[str] = []
    variables: list[str] = []
    env: dict[str, str] = {}
    for call in source.chain:
        if call.field == "dockerBuild":
            ids = call.args.get("secrets") or []
            paths += [f"/run/secrets/{_secret_name(i)}" for i in ids]
        elif call.field == "withMountedSecret":
            paths.append(call.args["path"])
        elif call.field == "withoutMount" and call.args["path"] in paths:
            del paths[len(paths) - 1 - paths[::-1].index(call.args["path"])]
        elif call.field == "withSecretVariable":
            variables.append(call.args["name"])
        elif call.field == "withoutSecretVariable" and call.args["name"] in variables:
            variables.remove(call.args["name"])
        elif call.field == "withEnvVariable":
            env[call.args["name"]] = call.args["value"]
    return tuple(paths), tuple(variables), env


def _secret_name(secret_id: str) -> str:
    made = decode_id(secret_id).find("setSecret")
    return "?" if made is None else str(made.args["name"])


def _upload_size(root: Path, exclude: list[str]) -> int:
    """Bytes of the files under `root` that the patterns leave, read as .dockerignore rules:
    the last pattern matching a path or one of its parents decides, `!` re-includes."""
    total = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            relative = path.relative_to(root).as_posix()
            if not _excluded(relative, exclude):
                total += path.stat().st_size
    return total


def _excluded(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        text = pattern.removeprefix("!")
        if any(fnmatch.fnmatchcase(prefix, text) for prefix in prefixes):
            excluded = not negated
    return excluded


def _maybe_fail(fake: FakeDagger, source: Obj, record: RecordedQuery) -> None:
    """Every field of an object fails whose making failed: a build, a pull or a command."""
    for call in source.chain:
        failure = _failure(fake, call) or _unauthorized(fake, call, record)
        if isinstance(failure, ExecFailure):
            raise failure.error()
        if failure is not None:
            raise graphql.GraphQLError(failure)


def _unauthorized(fake: FakeDagger, call: Call, record: RecordedQuery) -> str | None:
    """A build's pull from a private host with no login registered before this query."""
    if call.field != "dockerBuild":
        return None
    earlier = {
        c.args["address"]
        for q in list(fake.queries)
        if q is not record
        for c in list(q.calls)
        if c.field == "withRegistryAuth"
    }
    for host in fake.private_pulls.get(call.args.get("target", ""), ()):
        if host not in earlier:
            return (
                f"failed to resolve source metadata for {host}/app/base:1: unexpected status "
                "from HEAD request: 401 Unauthorized"
            )
    return None


def _failure(fake: FakeDagger, call: Call) -> ExecFailure | str | None:
    if call.field == "dockerBuild":
        return fake.failures.get(call.args.get("target", ""))
    if call.field == "from":
        return fake.failures.get(call.args["address"])
    if call.field != "withExec":
        return None
    argv = tuple(call.args["args"])
    result = fake.execs.get(argv, ExecResult())
    if not isinstance(result, ExecResult):
        return result
    if result.allowed(call.args["expect"]):
        return None
    return ExecFailure(result.stderr, result.stdout, result.exit_code, argv)


def _value(fake: FakeDagger, source: Obj, call: Call, type_: Any) -> Any:
    if call.field == "node":
        return decode_id(call.args["id"])
    if isinstance(type_, graphql.GraphQLList):
        return []
    if isinstance(type_, graphql.GraphQLObjectType):
        return source.then(call, type_.name)
    if isinstance(type_, graphql.GraphQLEnumType):
        return next(iter(type_.values.values())).value
    return _scalar(fake, source, call, type_.name)


def _scalar(fake: FakeDagger, source: Obj, call: Call, type_name: str) -> Any:
    if type_name == "ID":
        return encode_id(source)
    if call.field == "version":
        return ENGINE_VERSION
    if call.field == "publish":
        address = call.args["address"]
        digest = hashlib.sha256(encode_id(source).encode()).hexdigest()
        fake.published[address] = f"sha256:{digest}"
        return f"{address}@sha256:{digest}"
    if call.field == "name" and (made := source.find("setSecret")):
        return made.args["name"]
    if call.field in EXEC_OUTPUTS and source.type == "Container":
        return _exec_output(fake, source, call.field)
    if call.field == "exists" and source.type == "Container":
        kind = fake.kind_of(call.args["path"])
        expected = call.args.get("expectedType")
        wanted = {None: kind, "REGULAR_TYPE": "file", "DIRECTORY_TYPE": "directory"}
        return kind is not None and kind == wanted.get(expected)
    if call.field == "export" and source.type in ("Directory", "File"):
        return _export(fake, source, call.args["path"])
    return {
        "Boolean": False,
        "Int": 0,
        "Float": 0.0,
        "Platform": "linux/amd64",
        "Void": None,
    }.get(type_name, f"fake {source.type}.{call.field}")


def _exec_output(fake: FakeDagger, source: Obj, field_name: str) -> Any:
    made = source.find("withExec")
    if made is None:
        raise graphql.GraphQLError(f"{field_name}: no command has been executed")
    result = fake.execs.get(tuple(made.args["args"]), ExecResult())
    assert isinstance(result, ExecResult), "a failed command fails before its outputs"
    return result.output(field_name)


def _export(fake: FakeDagger, source: Obj, host_path: str) -> str:
    """Write a container's file or directory to the host, as the engine would."""
    made = source.chain[-1] if source.chain else None
    if made is None or made.type != "Container" or made.field not in ("file", "directory"):
        return host_path  # nothing this fake knows how to write
    if not os.path.isabs(host_path):
        raise graphql.GraphQLError(f"export to {host_path}: the fake wants an absolute path")
    path = _normal(made.args["path"])
    if failure := fake.export_failures.get(path):
        raise graphql.GraphQLError(failure)
    kind = fake.kind_of(path)
    if kind is None:
        raise graphql.GraphQLError(f"lstat {path}: no such file or directory")
    target = Path(host_path)
    if made.field == "file":
        if kind != "file":
            raise graphql.GraphQLError(f"path {path} is a directory, not a file")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_contents_of(fake, path))
        return host_path
    if kind != "directory":
        raise graphql.GraphQLError(f"path {path} is a file, not a directory")
    target.mkdir(parents=True, exist_ok=True)
    for name, contents in _entries_under(fake, path).items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(contents)
    return host_path


def _contents_of(fake: FakeDagger, path: str) -> str:
    if path in fake.files:
        return fake.files[path]
    return next(
        contents
        for top, entries in fake.directories.items()
        for name, contents in entries.items()
        if posixpath.join(top, name) == path
    )


def _entries_under(fake: FakeDagger, path: str) -> dict[str, str]:
    entries = {
        posixpath.relpath(posixpath.join(top, name), path): contents
        for top, inner in fake.directories.items()
        for name, contents in inner.items()
        if posixpath.join(top, name).startswith(path + "/")
    }
    entries.update(
        {posixpath.relpath(f, path): c for f, c in fake.files.items() if f.startswith(path + "/")}
    )
    return entries


def _normal(path: str) -> str:
    return posixpath.normpath(posixpath.join("/", path))


def resolve_type(value: Any, _info: graphql.GraphQLResolveInfo[Any], _type: Any) -> str | None:
    return value.type if isinstance(value, Obj) else None


def encode_id(obj: Obj) -> str:
    """An opaque ID of the call chain, without sensitive arguments, as Dagger's IDs are."""
    chain = [[c.type, c.field, _redacted(c.args)] for c in obj.chain]
    raw = json.dumps({"type": obj.type, "chain": chain}, sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_id(value: str) -> Obj:
    data = json.loads(base64.urlsafe_b64decode(value.encode()))
    chain = tuple(Call(t, f, a) for t, f, a in data["chain"])
    return Obj(data["type"], chain)


def _redacted(args: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: hashlib.sha256(str(v).encode()).hexdigest() if k in SENSITIVE_ARGS else v
        for k, v in args.items()
    }


@functools.cache
def load_schema() -> graphql.GraphQLSchema:
    """The real schema where ../shared has it, so the doubles reject what the engine would;
    elsewhere the schema the installed SDK implies, which lets the SDK build its queries but
    validates them only against the SDK's own view: no validation against the real schema."""
    if SCHEMA_PATH.is_file():
        return graphql.build_schema(SCHEMA_PATH.read_text(encoding="utf-8"))
    return sdk_schema()


class Answering(Protocol):
    """An engine the HTTP server serves: its session token, and its answer to a request."""

    token: str

    def answer(self, body: Mapping[str, Any]) -> dict[str, Any]: ...


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        fake = self.server.fake
        if self.path != "/query":
            self._send(404, {"errors": [{"message": f"no route {self.path}"}]})
        elif self.headers.get("Authorization") != _basic_auth(fake.token):
            self._send(401, {"errors": [{"message": "unauthorized"}]})
        else:
            length = int(self.headers.get("Content-Length", "0"))
            try:
                answer = fake.answer(json.loads(self.rfile.read(length)))
            except EngineGone:
                self.close_connection = True  # hang up without an answer
                return
            self._send(200, answer)

    def _send(self, status: int, payload: Mapping[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)  # a cancelled client has hung up

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the recorded queries say what happened."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: Answering) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


def _basic_auth(token: str) -> str:
    return "Basic " + base64.b64encode(f"{token}:".encode()).decode()


@contextmanager
def serve(engine: Answering) -> Iterator[int]:
    """Serve an engine on a free port of 127.0.0.1 until the block ends; yields the port."""
    server = _Server(engine)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="engine", daemon=True
    )
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def run_fake_dagger(token: str = "fake-session-token") -> Iterator[FakeDagger]:
    """Serve a fake engine on a free port until the block ends."""
    fake = FakeDagger(schema=load_schema(), token=token)
    with serve(fake) as port:
        fake.port = port
        yield fake


@pytest.fixture(name="fake_dagger")
def fake_dagger_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDagger]:
    """A fake engine in the environment as `dagger run` sets it; fails on any invalid query."""
    with run_fake_dagger() as fake:
        monkeypatch.setenv("DAGGER_SESSION_PORT", str(fake.port))
        monkeypatch.setenv("DAGGER_SESSION_TOKEN", fake.token)
        yield fake
    assert not fake.invalid, "queries the schema rejects:\n" + "\n\n".join(fake.invalid)
