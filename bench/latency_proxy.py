"""A TCP proxy in front of the local registry that adds latency and counts the traffic.

It only ever connects to 127.0.0.1:5000. Each connection is classed by the User-Agent of its
first request: `dagger-stages` (our registry client) or `docker` (the daemon, BuildKit and
anything else). A chunk from the client that starts with an HTTP method is a new request: it is
counted and held for `delay` seconds before it goes on, one simulated round trip per request.
Bytes are counted raw each way (headers and bodies); `uploaded` is what the client sent in
POST, PUT and PATCH requests, i.e. blobs and manifests pushed.

    python bench/latency_proxy.py [--port 5050] [--delay-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

UPSTREAM = ("127.0.0.1", 5000)
METHODS = re.compile(rb"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) ")
UPLOADS = {b"POST", b"PUT", b"PATCH"}
CHUNK = 64 * 1024


@dataclass
class Traffic:
    connections: int = 0
    requests: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    uploaded: int = 0

    def plus(self, other: Traffic) -> Traffic:
        return Traffic(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def minus(self, earlier: Traffic) -> Traffic:
        return Traffic(
            *(now - then for now, then in zip(astuple(self), astuple(earlier), strict=True))
        )


def astuple(traffic: Traffic) -> tuple[int, ...]:
    return tuple(asdict(traffic).values())


def client_kind(first_chunk: bytes) -> str:
    agent = re.search(rb"(?im)^user-agent:\s*(\S+)", first_chunk)
    return "dagger-stages" if agent and agent.group(1).startswith(b"dagger-stages") else "docker"


class LatencyProxy:
    """`start()` serves on a thread of its own; `snapshot()` reads the counters by client kind."""

    def __init__(self, delay: float = 0.0, port: int = 0) -> None:
        self.delay = delay
        self.traffic: defaultdict[str, Traffic] = defaultdict(Traffic)
        # (time.monotonic() when the request arrived, client kind, its request line), for
        # bench/timeline.py
        self.requests: list[tuple[float, str, str]] = []
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> int:
        self._thread.start()
        self._ready.wait(10)
        return self.port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._thread.join(10)

    def snapshot(self) -> dict[str, Traffic]:
        return {kind: Traffic(*astuple(t)) for kind, t in self.traffic.items()}

    def _serve(self) -> None:
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", self.port)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self) -> None:
        """Stop listening, cut open connections, let their tasks end, stop the loop."""
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self._loop.call_soon(self._loop.stop)

    async def _connection(
        self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter
    ) -> None:
        self._writers.add(to_client)
        try:
            with contextlib.suppress(OSError):
                await self._relay(client, to_client)
        finally:
            self._writers.discard(to_client)
            to_client.close()

    async def _relay(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        first = await client.read(CHUNK)
        if not first:
            return
        kind = client_kind(first)
        traffic = self.traffic[kind]
        traffic.connections += 1
        upstream, to_upstream = await asyncio.open_connection(*UPSTREAM)
        self._writers.add(to_upstream)
        down = asyncio.ensure_future(self._pump_down(upstream, to_client, traffic))
        try:
            with contextlib.suppress(OSError):
                await self._pump_up(first, client, to_upstream, traffic, kind)
            await down
        finally:
            self._writers.discard(to_upstream)
            to_upstream.close()

    async def _pump_up(
        self,
        chunk: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        traffic: Traffic,
        kind: str,
    ) -> None:
        method = b""
        while chunk:
            if match := METHODS.match(chunk):
                method = match.group(1)
                traffic.requests += 1
                line = chunk.split(b"\r\n", 1)[0].decode(errors="replace")
                self.requests.append((time.monotonic(), kind, line))
                if self.delay:
                    await asyncio.sleep(self.delay)
            traffic.bytes_up += len(chunk)
            if method in UPLOADS:
                traffic.uploaded += len(chunk)
            writer.write(chunk)
            await writer.drain()
            chunk = await reader.read(CHUNK)
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def _pump_down(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, traffic: Traffic
    ) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(CHUNK):
                traffic.bytes_down += len(chunk)
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="default: any free port")
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args()
    proxy = LatencyProxy(args.delay_ms / 1000, args.port)
    port = proxy.start()
    print(f"127.0.0.1:{port} -> {UPSTREAM[0]}:{UPSTREAM[1]}, +{args.delay_ms:g} ms per request")
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    for kind, traffic in proxy.snapshot().items():
        print(kind, asdict(traffic))


if __name__ == "__main__":
    main()
