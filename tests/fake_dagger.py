"""A fake Dagger engine: the real dagger-io SDK talks to it as it would under `dagger run`.

It serves POST /query on 127.0.0.1 with the session's Basic auth, validates every query
against Dagger's real schema (`../shared/dagger/schema-v0.21.8.graphqls`) and answers by
executing it with graphql-core: the default resolvers serve introspection, `_resolve`
synthesizes the rest. Object IDs are opaque strings that encode the call chain that made
the object, so `node(id:)` can bring it back. Every query is recorded for tests to inspect.

Import `fake_dagger_fixture` into a test module (or list this module in `pytest_plugins`) for
the `fake_dagger` fixture. Without the schema file (outside this workspace) it skips, unless
DAGGER_STAGES_REQUIRE_SERVICES=1 (CI sets it), when it fails: CI must not pass by testing nothing.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import graphql
import pytest

__all__ = [
    "SCHEMA_PATH",
    "Call",
    "ExecFailure",
    "FakeDagger",
    "Obj",
    "RecordedQuery",
    "fake_dagger_fixture",
    "run_fake_dagger",
]

SCHEMA_PATH = Path(__file__).resolve().parents[1].parent / "shared/dagger/schema-v0.21.8.graphqls"
REQUIRE_SERVICES = "DAGGER_STAGES_REQUIRE_SERVICES"
ENGINE_VERSION = "v0.21.8"
SENSITIVE_ARGS = frozenset({"plaintext"})


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
    failures: dict[str, ExecFailure | str] = field(default_factory=dict)
    queries: list[RecordedQuery] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    published: dict[str, str] = field(default_factory=dict)
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
        return result

    def _execute(self, record: RecordedQuery) -> dict[str, Any]:
        try:
            document = graphql.parse(record.text)
        except graphql.GraphQLError as exc:
            return self._reject(record, [exc])
        errors = graphql.validate(self.schema, document)
        if errors:
            return self._reject(record, errors)
        record.root_fields = _root_fields(document)
        result = graphql.execute_sync(
            self.schema,
            document,
            root_value=Obj("Query"),
            context_value=record,
            variable_values=record.variables,
            field_resolver=functools.partial(_resolve, self),
            type_resolver=_resolve_type,
        )
        return dict(result.formatted)

    def _reject(self, record: RecordedQuery, errors: list[graphql.GraphQLError]) -> dict[str, Any]:
        self.invalid.extend(f"{e.message}\nin query:\n{record.text}" for e in errors)
        return {"errors": [e.formatted for e in errors]}


def _root_fields(document: graphql.DocumentNode) -> tuple[str, ...]:
    return tuple(
        selection.name.value
        for definition in document.definitions
        if isinstance(definition, graphql.OperationDefinitionNode)
        for selection in definition.selection_set.selections
        if isinstance(selection, graphql.FieldNode)
    )


def _resolve(
    fake: FakeDagger, source: Any, info: graphql.GraphQLResolveInfo[Any], **args: Any
) -> Any:
    """Synthesize a field of an engine object; anything else resolves the default way."""
    if not isinstance(source, Obj):
        return graphql.default_field_resolver(source, info, **args)
    call = Call(info.parent_type.name, info.field_name, args)
    record: RecordedQuery = info.context
    with fake._lock:
        record.calls.append(call)
    if delay := fake.delays.get(info.field_name):
        time.sleep(delay)
    _maybe_fail(fake, source)
    return _value(fake, source, call, graphql.get_nullable_type(info.return_type))


def _maybe_fail(fake: FakeDagger, source: Obj) -> None:
    build = source.find("dockerBuild")
    failure = None if build is None else fake.failures.get(build.args.get("target", ""))
    if isinstance(failure, ExecFailure):
        raise failure.error()
    if failure is not None:
        raise graphql.GraphQLError(failure)


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
    return {
        "Boolean": False,
        "Int": 0,
        "Float": 0.0,
        "Platform": "linux/amd64",
        "Void": None,
    }.get(type_name, f"fake {source.type}.{call.field}")


def _resolve_type(value: Any, _info: graphql.GraphQLResolveInfo[Any], _type: Any) -> str | None:
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
def load_schema(path: Path = SCHEMA_PATH) -> graphql.GraphQLSchema:
    return graphql.build_schema(path.read_text(encoding="utf-8"))


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
            self._send(200, fake.answer(json.loads(self.rfile.read(length))))

    def _send(self, status: int, payload: Mapping[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the recorded queries say what happened."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeDagger) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


def _basic_auth(token: str) -> str:
    return "Basic " + base64.b64encode(f"{token}:".encode()).decode()


@contextmanager
def run_fake_dagger(token: str = "fake-session-token") -> Iterator[FakeDagger]:
    """Serve a fake engine on a free port until the block ends; skips without the schema."""
    _require_schema()
    fake = FakeDagger(schema=load_schema(), token=token)
    server = _Server(fake)
    fake.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-dagger", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _require_schema() -> None:
    if SCHEMA_PATH.is_file():
        return
    reason = f"Dagger's schema is not at {SCHEMA_PATH} (it ships only with this workspace)"
    if os.environ.get(REQUIRE_SERVICES) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_SERVICES}=1 requires it")
    pytest.skip(reason)


@pytest.fixture(name="fake_dagger")
def fake_dagger_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDagger]:
    """A fake engine in the environment as `dagger run` sets it; fails on any invalid query."""
    with run_fake_dagger() as fake:
        monkeypatch.setenv("DAGGER_SESSION_PORT", str(fake.port))
        monkeypatch.setenv("DAGGER_SESSION_TOKEN", fake.token)
        yield fake
    assert not fake.invalid, "queries the schema rejects:\n" + "\n\n".join(fake.invalid)
