"""Registries that misbehave on purpose, on 127.0.0.1, for the fault-injection tests.

- `ErrorRegistry`: a threaded HTTP server that answers 500 to every request, and records them.
- `CuttingProxy`: a TCP proxy in front of a real registry that forwards every byte both ways,
  except that it cuts the connection (a TCP reset) once `cut_after` bytes of the body of a
  blob upload (a PATCH or PUT to `/blobs/uploads/`) have gone through.
- `SilentRegistry`: a socket that accepts connections, reads what comes, and never answers.

Docker talks plain HTTP to both, since 127.0.0.0/8 is an insecure registry for dockerd.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import socketserver
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "Cut",
    "CuttingProxy",
    "ErrorRegistry",
    "Request",
    "SilentRegistry",
    "cutting_proxy",
    "error_registry",
    "silent_registry",
]

_HEAD_LIMIT = 64 * 1024
_TLS_HANDSHAKE = b"\x16\x03"  # a TLS record: handshake, protocol 3.x


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    user_agent: str
    authorized: bool = False  # it carried an Authorization header


@dataclass(frozen=True)
class Cut:
    method: str
    path: str
    forwarded: int


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class ErrorRegistry:
    """A "registry" that fails every request with a 500 and a distribution-style error body.

    With `delay`, each answer waits that many seconds first (or until `stop`): a registry that
    hangs.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.requests: list[Request] = []
        self.delay = delay
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _fail(self) -> None:
                with owner._lock:
                    owner.requests.append(
                        Request(self.command, self.path, self.headers.get("User-Agent", ""))
                    )
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if owner._stopping.wait(owner.delay):
                    return
                body = b'{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}'
                self.send_response(500)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _fail

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def error_registry(delay: float = 0.0) -> Iterator[ErrorRegistry]:
    server = ErrorRegistry(delay)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class SilentRegistry:
    """A registry host that takes every connection and never sends a byte back.

    `connections` counts accepted connections: what a client that stops asking a dead
    host saves is measured in them rather than in seconds.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._accepted: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._accepted)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._accepted.append(connection)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._listener.close()
        with self._lock:
            for connection in self._accepted:
                _close(connection)


@contextlib.contextmanager
def silent_registry() -> Iterator[SilentRegistry]:
    server = SilentRegistry()
    try:
        yield server
    finally:
        server.close()


@dataclass
class CuttingProxy:
    """Forwards 127.0.0.1:<port> to `upstream`, cutting blob uploads after `cut_after` bytes."""

    upstream: tuple[str, int]
    cut_after: int
    cuts: list[Cut] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self._stopped = threading.Event()
        self._sockets: set[socket.socket] = set()

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            _close(client)
            return
        server.settimeout(None)
        with self._lock:
            self._sockets |= {client, server}
        answers = threading.Thread(target=_pipe, args=(server, client), daemon=True)
        answers.start()
        cut = True  # a connection that broke off is dropped like a cut one
        with contextlib.suppress(OSError, ValueError):
            cut = self._requests(_Reader(client), server)
        if cut:
            _reset(client)
            _reset(server)
        else:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_WR)
        answers.join(timeout=30)
        _close(client)
        _close(server)
        with self._lock:
            self._sockets -= {client, server}

    def _requests(self, reader: _Reader, server: socket.socket) -> bool:
        """Forward request after request, reading each body by its framing to find the next.

        True when it cut the connection, False when the client closed it.
        """
        while True:
            head = reader.head()
            if head is None:
                return False
            method, path, headers = _parse_head(head)
            with self._lock:
                agent, authorized = headers.get("user-agent", ""), "authorization" in headers
                self.requests.append(Request(method, path, agent, authorized))
            server.sendall(head)
            cutting = method in ("PATCH", "PUT") and "/blobs/uploads/" in path
            budget = self.cut_after if cutting else None
            if headers.get("transfer-encoding", "").lower() == "chunked":
                sent = _forward_chunked(reader, server, budget)
            else:
                length = int(headers.get("content-length") or 0)
                sent = _forward(reader, server, length, budget)
            if budget is not None and sent >= budget:
                with self._lock:
                    self.cuts.append(Cut(method, path, sent))
                return True


@contextlib.contextmanager
def cutting_proxy(upstream: tuple[str, int], *, cut_after: int) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(upstream, cut_after)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


class _Reader:
    """Buffered reads from a socket: a request head, exact byte counts, one line."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def _fill(self) -> bool:
        data = self._sock.recv(65536)
        self._buffer += data
        return bool(data)

    def head(self) -> bytes | None:
        """The next request's head; None at the end, or for a TLS handshake (dockerd tries
        HTTPS first even on an insecure registry): closed at once, as a plain-HTTP registry
        does, it falls back to HTTP, where a proxy waiting for a request head would hold it
        for Go's 10 s handshake timeout."""
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > _HEAD_LIMIT or not self._fill():
                return None
            if self._buffer.startswith(_TLS_HANDSHAKE):
                return None
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            if not self._fill():
                raise ValueError("connection closed inside a chunked body")
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line + b"\r\n"

    def take(self, limit: int) -> bytes:
        if not self._buffer and not self._fill():
            raise ValueError("connection closed inside a body")
        data, self._buffer = self._buffer[:limit], self._buffer[limit:]
        return data


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method, path, headers


def _forward(reader: _Reader, server: socket.socket, length: int, budget: int | None) -> int:
    """Up to `length` body bytes, stopping once `budget` bytes went through; the count sent."""
    sent = 0
    while sent < length and (budget is None or sent < budget):
        room = length - sent if budget is None else min(length, budget) - sent
        data = reader.take(room)
        server.sendall(data)
        sent += len(data)
    return sent


def _forward_chunked(reader: _Reader, server: socket.socket, budget: int | None) -> int:
    sent = 0
    while True:
        size_line = reader.line()
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        server.sendall(size_line)
        if size == 0:
            while (trailer := reader.line()) != b"\r\n":
                server.sendall(trailer)
            server.sendall(b"\r\n")
            return sent
        sent += _forward(reader, server, size, None if budget is None else budget - sent)
        if budget is not None and sent >= budget:
            return sent
        end = reader.line()
        if end != b"\r\n":
            raise ValueError("malformed chunked body")
        server.sendall(end)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a dropped connection looks to the other side."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
