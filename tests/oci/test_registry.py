"""The registry client: unit tests on httpx.MockTransport, then against a real registry."""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from pipeline.oci.credentials import Credentials, Secret
from pipeline.oci.reference import Reference, Repository
from pipeline.oci.registry import (
    MANIFEST_MEDIA_TYPES,
    ManifestInfo,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryNotFound,
    RegistryProtocolError,
    RegistryUnavailable,
    RegistryUnsupported,
)
from tests.registry_server import (
    TEST_PASSWORD,
    TEST_USER,
    RegistryServer,
    free_port,
    push_image,
    sha256_digest,
)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST}).encode()
MANIFEST_DIGEST = sha256_digest(MANIFEST)
PASSWORD = "wr0ng-or-right-but-never-printed"
TOKEN = "bearer-token-value-0123456789"
REF = Reference.parse("ghcr.io/acme/app:main")

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def manifest_response(request: httpx.Request, *, digest_header: bool = True) -> httpx.Response:
    headers = {"Content-Type": DOCKER_MANIFEST, "Content-Length": str(len(MANIFEST))}
    if digest_header:
        headers["Docker-Content-Digest"] = MANIFEST_DIGEST
    content = b"" if request.method == "HEAD" else MANIFEST
    return httpx.Response(200, headers=headers, content=content)


def error(status: int, code: str, **headers: str) -> httpx.Response:
    body = {"errors": [{"code": code, "message": code.lower().replace("_", " ")}]}
    return httpx.Response(status, json=body, headers=headers)


def client_for(handler: Handler, **options: Any) -> RegistryClient:
    return RegistryClient(transport=httpx.MockTransport(handler), backoff=0.0, **options)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- the API on a mock transport ----------------------------------------------------------


@pytest.mark.anyio
async def test_head_manifest_is_one_request_with_the_accept_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return manifest_response(request)

    async with client_for(handler) as client:
        info = await client.head_manifest(REF)
    assert info == ManifestInfo(MANIFEST_DIGEST, DOCKER_MANIFEST, len(MANIFEST))
    [request] = seen
    assert request.method == "HEAD"
    assert str(request.url) == "https://ghcr.io/v2/acme/app/manifests/main"
    assert [item.strip() for item in request.headers["Accept"].split(",")] == list(
        MANIFEST_MEDIA_TYPES
    )
    assert client.stats.requests == 1


@pytest.mark.anyio
async def test_heads_of_one_ref_at_once_share_a_request_and_a_later_one_asks_again() -> None:
    """A multi-platform plan asks for a base image and a shared stage's tag once per platform;
    the first-writer check before a push must still see a tag written since."""
    async with client_for(manifest_response) as client:
        found: list[ManifestInfo | None] = []

        async def head() -> None:
            found.append(await client.head_manifest(REF))

        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(head)
        assert client.stats.requests == 1
        assert found == [ManifestInfo(MANIFEST_DIGEST, DOCKER_MANIFEST, len(MANIFEST))] * 3
        await client.head_manifest(REF)
        assert client.stats.requests == 2


@pytest.mark.anyio
async def test_plain_http_for_loopback_and_listed_hosts_and_hub_api_host() -> None:
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return manifest_response(request)

    async with client_for(handler, insecure=["registry.lan:5000"]) as client:
        for text in ("localhost:5000/x:1", "registry.lan:5000/y:2", "composer:2"):
            await client.head_manifest(Reference.parse(text))
    assert urls == [
        "http://localhost:5000/v2/x/manifests/1",
        "http://registry.lan:5000/v2/y/manifests/2",
        "https://registry-1.docker.io/v2/library/composer/manifests/2",
    ]


@pytest.mark.anyio
async def test_head_miss_is_none_and_resolve_raises_lookup_error() -> None:
    async with client_for(lambda request: httpx.Response(404)) as client:
        assert await client.head_manifest(REF) is None
        with pytest.raises(
            RegistryNotFound, match=re.escape("ghcr.io/acme/app:main not found")
        ) as caught:
            await client.resolve(REF)
    assert isinstance(caught.value, LookupError)


@pytest.mark.anyio
async def test_resolve_a_digest_without_a_request() -> None:
    async with client_for(lambda request: httpx.Response(500)) as client:
        assert await client.resolve(REF.with_digest(MANIFEST_DIGEST)) == MANIFEST_DIGEST
    assert client.stats.requests == 0


@pytest.mark.anyio
async def test_head_without_digest_header_falls_back_to_get() -> None:
    methods: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        methods.append(request.method)
        return manifest_response(request, digest_header=False)

    async with client_for(handler) as client:
        info = await client.head_manifest(REF)
    assert info is not None
    assert info.digest == MANIFEST_DIGEST
    assert methods == ["HEAD", "GET"]


@pytest.mark.anyio
async def test_get_manifest_checks_a_pinned_digest() -> None:
    async with client_for(manifest_response) as client:
        body, info = await client.get_manifest(REF)
        assert (body, info.digest) == (MANIFEST, MANIFEST_DIGEST)
        with pytest.raises(RegistryProtocolError, match=re.escape("ghcr.io sent a manifest")):
            await client.get_manifest(REF.with_digest("sha256:" + "0" * 64))


@pytest.mark.anyio
async def test_get_blob_checks_the_digest() -> None:
    blob = b'{"architecture": "amd64"}'
    async with client_for(lambda request: httpx.Response(200, content=blob)) as client:
        assert await client.get_blob(REF, sha256_digest(blob)) == blob
        with pytest.raises(RegistryProtocolError, match="other content"):
            await client.get_blob(REF, sha256_digest(b"other"))
    async with client_for(lambda request: error(404, "BLOB_UNKNOWN")) as client:
        with pytest.raises(RegistryNotFound, match="BLOB_UNKNOWN"):
            await client.get_blob(REF, sha256_digest(blob))


@pytest.mark.anyio
async def test_list_tags_follows_link_pages() -> None:
    pages = {
        None: (["a", "b"], '</v2/acme/app/tags/list?n=2&last=b>; rel="next"'),
        "b": (["c", "d"], '</v2/acme/app/tags/list?n=2&last=d>; rel="next"'),
        "d": (["e"], None),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["n"] == "2"
        tags, link = pages[request.url.params.get("last")]
        headers = {"Link": link} if link else {}
        return httpx.Response(200, json={"name": "acme/app", "tags": tags}, headers=headers)

    async with client_for(handler) as client:
        assert await client.list_tags(REF.repo, page_size=2) == ["a", "b", "c", "d", "e"]
    async with client_for(lambda request: error(404, "NAME_UNKNOWN")) as client:
        assert await client.list_tags(REF.repo) == []


@pytest.mark.anyio
async def test_list_tags_stops_on_a_looping_link() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        link = '</v2/acme/app/tags/list?last=a>; rel="next"'
        return httpx.Response(200, json={"tags": ["a"]}, headers={"Link": link})

    async with client_for(handler) as client:
        with pytest.raises(RegistryProtocolError, match="endless"):
            await client.list_tags(REF.repo)


@pytest.mark.anyio
async def test_delete_resolves_the_tag_then_deletes_the_digest() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return manifest_response(request) if request.method == "HEAD" else httpx.Response(202)

    async with client_for(handler) as client:
        await client.delete_manifest(REF)
    assert seen == [
        "HEAD /v2/acme/app/manifests/main",
        f"DELETE /v2/acme/app/manifests/{MANIFEST_DIGEST}",
    ]


@pytest.mark.anyio
async def test_delete_unsupported_says_so() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return manifest_response(request)
        return error(405, "UNSUPPORTED")

    async with client_for(handler) as client:
        with pytest.raises(
            RegistryUnsupported, match=re.escape("ghcr.io does not allow deleting")
        ) as caught:
            await client.delete_manifest(REF)
    assert "UNSUPPORTED" in str(caught.value)


@pytest.mark.anyio
async def test_put_manifest_sends_the_media_type_and_returns_the_digest() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, headers={"Docker-Content-Digest": MANIFEST_DIGEST})

    async with client_for(handler) as client:
        digest = await client.put_manifest(REF.with_tag("hint"), MANIFEST, DOCKER_MANIFEST)
    assert digest == MANIFEST_DIGEST
    [request] = seen
    assert (request.method, request.url.path) == ("PUT", "/v2/acme/app/manifests/hint")
    assert request.headers["Content-Type"] == DOCKER_MANIFEST
    assert request.content == MANIFEST
    assert client.stats.bytes_out == len(MANIFEST)


@pytest.mark.anyio
async def test_bad_request_is_a_protocol_error_with_the_registry_codes() -> None:
    async with client_for(lambda request: error(400, "MANIFEST_INVALID")) as client:
        with pytest.raises(RegistryProtocolError, match="MANIFEST_INVALID: manifest invalid"):
            await client.put_manifest(REF, b"{}", DOCKER_MANIFEST)


@pytest.mark.anyio
async def test_stats_count_requests_and_body_bytes() -> None:
    async with client_for(manifest_response) as client:
        await client.head_manifest(REF)
        await client.get_manifest(REF)
    assert (client.stats.requests, client.stats.bytes_in) == (2, len(MANIFEST))


# -- retries, timeouts, concurrency ----------------------------------------------------------


@pytest.mark.anyio
async def test_retries_503_then_succeeds() -> None:
    answers = iter([503, 503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        return manifest_response(request) if status == 200 else httpx.Response(status)

    async with client_for(handler) as client:
        assert await client.head_manifest(REF) is not None
    assert client.stats.requests == 3


@pytest.mark.anyio
async def test_gives_up_after_the_retries() -> None:
    async with client_for(lambda request: httpx.Response(500), retries=2) as client:
        with pytest.raises(RegistryUnavailable, match=re.escape("ghcr.io answered 500")) as caught:
            await client.head_manifest(REF)
    assert client.stats.requests == 3
    assert "gave up after 3 attempts" in str(caught.value)


@pytest.mark.anyio
async def test_honours_a_short_retry_after_and_stops_on_a_long_one() -> None:
    answers = iter([error(429, "TOOMANYREQUESTS", **{"Retry-After": "0"}), None])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers) or manifest_response(request)

    async with client_for(handler) as client:
        assert await client.head_manifest(REF) is not None
    long_wait = error(503, "UNAVAILABLE", **{"Retry-After": "3600"})
    async with client_for(lambda request: long_wait) as client:
        with pytest.raises(RegistryUnavailable, match="503"):
            await client.head_manifest(REF)
    assert client.stats.requests == 1


@pytest.mark.anyio
async def test_timeouts_and_transport_errors_are_registry_errors() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with client_for(timeout, retries=1, timeout=2.5) as client:
        with pytest.raises(
            RegistryUnavailable, match=re.escape("ghcr.io did not answer within 2.5 s")
        ):
            await client.head_manifest(REF)
    assert client.stats.requests == 2

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.UnsupportedProtocol("no", request=request)

    async with client_for(broken) as client:
        with pytest.raises(RegistryProtocolError, match=re.escape("ghcr.io")) as caught:
            await client.head_manifest(REF)
    assert isinstance(caught.value.__cause__, httpx.UnsupportedProtocol)


@pytest.mark.anyio
async def test_connection_refused_is_unavailable() -> None:
    closed = Reference.parse(f"127.0.0.1:{free_port()}/x:1")
    with anyio.fail_after(10):
        async with RegistryClient(retries=2, backoff=0.01) as client:
            with pytest.raises(
                RegistryUnavailable, match=re.escape("cannot reach registry 127.0.0.1")
            ):
                await client.head_manifest(closed)
    assert client.stats.requests == 3


@pytest.mark.anyio
async def test_concurrency_limit_is_honoured() -> None:
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.01)
        in_flight -= 1
        return manifest_response(request)

    transport = httpx.MockTransport(handler)
    async with (
        RegistryClient(transport=transport, max_concurrency=3) as client,
        anyio.create_task_group() as group,
    ):
        for index in range(12):
            group.start_soon(client.head_manifest, REF.with_tag(f"t{index}"))
    assert peak == 3
    assert client.stats.requests == 12


# -- authentication on a mock transport --------------------------------------------------------


@pytest.mark.anyio
async def test_basic_challenge_then_basic_up_front() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != basic("me", PASSWORD):
            return error(401, "UNAUTHORIZED", **{"WWW-Authenticate": 'Basic realm="r"'})
        return manifest_response(request)

    credentials = Credentials([("ghcr.io", "me", PASSWORD)], docker_config=False)
    async with client_for(handler, credentials=credentials) as client:
        assert await client.head_manifest(REF) is not None
        assert await client.head_manifest(REF.with_tag("other")) is not None
    assert seen == [None, basic("me", PASSWORD), basic("me", PASSWORD)]


@pytest.mark.anyio
async def test_credentials_are_looked_up_only_when_a_registry_asks() -> None:
    lookups: list[str] = []

    class Counting(Credentials):
        async def lookup(self, host: str) -> Secret | None:
            lookups.append(host)
            return Secret("me", PASSWORD)

    async with client_for(manifest_response, credentials=Counting()) as client:
        await client.head_manifest(REF)
    assert lookups == []


def bearer_handler(
    token_answers: list[httpx.Response], token_requests: list[httpx.Request]
) -> Handler:
    """A registry on ghcr.io whose realm is auth.example/token; each token answer used once."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            token_requests.append(request)
            return token_answers.pop(0)
        if request.headers.get("Authorization") == f"Bearer {TOKEN}":
            return manifest_response(request)
        challenge = 'Bearer realm="https://auth.example/token",service="ghcr.io"'
        return error(401, "UNAUTHORIZED", **{"WWW-Authenticate": challenge})

    return handler


@pytest.mark.anyio
async def test_bearer_anonymous_token_with_access_token_field() -> None:
    requests: list[httpx.Request] = []
    answers = [httpx.Response(200, json={"access_token": TOKEN})]
    async with client_for(bearer_handler(answers, requests)) as client:
        assert await client.head_manifest(REF) is not None
    [token_request] = requests
    assert "Authorization" not in token_request.headers
    assert token_request.url.params["scope"] == "repository:acme/app:pull"
    assert token_request.url.params["service"] == "ghcr.io"


@pytest.mark.anyio
async def test_bearer_scopes_for_push_and_delete() -> None:
    requests: list[httpx.Request] = []
    answers = [httpx.Response(200, json={"token": TOKEN}) for _ in range(3)]
    handler = bearer_handler(answers, requests)

    def registry(request: httpx.Request) -> httpx.Response:
        response = handler(request)
        if response.status_code == 200 and request.method == "PUT":
            return httpx.Response(201)
        return (
            httpx.Response(202)
            if response.status_code == 200 and request.method == "DELETE"
            else response
        )

    async with client_for(registry) as client:
        await client.put_manifest(REF, MANIFEST, DOCKER_MANIFEST)
        await client.delete_manifest(REF.with_digest(MANIFEST_DIGEST))
    assert [request.url.params["scope"] for request in requests] == [
        "repository:acme/app:pull,push",
        "repository:acme/app:delete",
    ]


@pytest.mark.anyio
async def test_bearer_token_expiry_is_honoured() -> None:
    requests: list[httpx.Request] = []
    answers = [httpx.Response(200, json={"token": TOKEN, "expires_in": 1}) for _ in range(2)]
    async with client_for(bearer_handler(answers, requests)) as client:
        await client.head_manifest(REF)
        await client.head_manifest(REF)
    assert len(requests) == 2


@pytest.mark.anyio
async def test_identity_token_uses_the_oauth2_refresh_flow() -> None:
    requests: list[httpx.Request] = []
    answers = [httpx.Response(200, json={"access_token": TOKEN, "expires_in": 300})]

    class Identity(Credentials):
        async def lookup(self, host: str) -> Secret | None:
            return Secret("<token>", PASSWORD, identity_token=True)

    async with client_for(bearer_handler(answers, requests), credentials=Identity()) as client:
        assert await client.head_manifest(REF) is not None
    [token_request] = requests
    assert token_request.method == "POST"
    form = parse_qs(token_request.content.decode())
    assert form["grant_type"] == ["refresh_token"]
    assert form["refresh_token"] == [PASSWORD]
    assert form["scope"] == ["repository:acme/app:pull"]


@pytest.mark.anyio
async def test_concurrent_requests_share_one_token_request() -> None:
    requests: list[httpx.Request] = []
    answers = [httpx.Response(200, json={"token": TOKEN, "expires_in": 300})]
    async with (
        client_for(bearer_handler(answers, requests)) as client,
        anyio.create_task_group() as group,
    ):
        for index in range(8):
            group.start_soon(client.head_manifest, REF.with_tag(f"t{index}"))
    assert len(requests) == 1


@pytest.mark.anyio
async def test_forbidden_is_an_auth_error() -> None:
    async with client_for(lambda request: error(403, "DENIED")) as client:
        with pytest.raises(
            RegistryAuthError, match=re.escape("ghcr.io denied HEAD ghcr.io/acme/app")
        ):
            await client.head_manifest(REF)


@pytest.mark.anyio
@pytest.mark.parametrize("scheme", ["basic", "bearer"])
async def test_rejected_password_never_shows(scheme: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    challenge = (
        'Basic realm="r"'
        if scheme == "basic"
        else 'Bearer realm="https://auth.example/token",service="s"'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return error(401, "UNAUTHORIZED")
        return error(401, "UNAUTHORIZED", **{"WWW-Authenticate": challenge})

    credentials = Credentials([("ghcr.io", "me", PASSWORD)], docker_config=False)
    async with client_for(handler, credentials=credentials) as client:
        with pytest.raises(RegistryAuthError) as caught:
            await client.head_manifest(REF)
    encoded = base64.b64encode(f"me:{PASSWORD}".encode()).decode()
    for text in (str(caught.value), repr(caught.value), caplog.text):
        assert PASSWORD not in text
        assert encoded not in text
    assert "ghcr.io" in str(caught.value)


# -- a Bearer challenge server on 127.0.0.1 ------------------------------------------------


class ChallengeServer(ThreadingHTTPServer):
    """Distribution's token flow in miniature: 401 with a Bearer challenge, a token realm."""

    daemon_threads = True

    def __init__(self, credentials: tuple[str, str] | None) -> None:
        super().__init__(("127.0.0.1", 0), _ChallengeHandler)
        self.credentials = credentials
        self.token_requests = 0
        self.lock = threading.Lock()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _ChallengeHandler(BaseHTTPRequestHandler):
    server: ChallengeServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._manifest(body=False)

    def do_GET(self) -> None:
        if self.path.startswith("/token"):
            self._token()
        else:
            self._manifest(body=True)

    def _manifest(self, *, body: bool) -> None:
        if self.path != "/v2/x/manifests/latest":
            self._send(404, b"")
        elif self.headers.get("Authorization") != f"Bearer {TOKEN}":
            realm = f"http://{self.server.host}/token"
            challenge = f'Bearer realm="{realm}",service="test",scope="repository:x:pull"'
            self._send(401, b"{}", {"WWW-Authenticate": challenge})
        else:
            headers = {"Content-Type": DOCKER_MANIFEST, "Docker-Content-Digest": MANIFEST_DIGEST}
            self._send(200, MANIFEST, headers, body=body)

    def _token(self) -> None:
        with self.server.lock:
            self.server.token_requests += 1
        query = parse_qs(urlsplit(self.path).query)
        expected = self.server.credentials
        authorized = expected is None or self.headers.get("Authorization") == basic(*expected)
        if query != {"service": ["test"], "scope": ["repository:x:pull"]} or not authorized:
            self._send(401, b"{}")
        else:
            self._send(200, json.dumps({"token": TOKEN, "expires_in": 300}).encode())

    def _send(
        self,
        status: int,
        content: bytes,
        headers: dict[str, str] | None = None,
        *,
        body: bool = True,
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if body:
            self.wfile.write(content)


@contextmanager
def challenge_server(credentials: tuple[str, str] | None) -> Iterator[ChallengeServer]:
    server = ChallengeServer(credentials)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.anyio
async def test_bearer_flow_against_a_token_server() -> None:
    with challenge_server(("robot", PASSWORD)) as server:
        ref = Reference.parse(f"{server.host}/x:latest")
        credentials = Credentials([(server.host, "robot", PASSWORD)], docker_config=False)
        async with RegistryClient(credentials=credentials) as client:
            for _ in range(3):
                info = await client.head_manifest(ref)
                assert info is not None
                assert info.digest == MANIFEST_DIGEST
        assert server.token_requests == 1
        assert client.stats.requests == 5


@pytest.mark.anyio
async def test_bearer_flow_with_wrong_or_no_credentials() -> None:
    with challenge_server(("robot", PASSWORD)) as server:
        ref = Reference.parse(f"{server.host}/x:latest")
        wrong = Credentials([(server.host, "robot", "nope")], docker_config=False)
        async with RegistryClient(credentials=wrong) as client:
            with pytest.raises(RegistryAuthError, match="refused the credentials"):
                await client.head_manifest(ref)
        async with RegistryClient() as client:
            with pytest.raises(RegistryAuthError, match="refused anonymous access"):
                await client.head_manifest(ref)


@pytest.mark.anyio
async def test_bearer_flow_with_an_anonymous_token() -> None:
    with challenge_server(None) as server:
        async with RegistryClient() as client:
            assert await client.head_manifest(Reference.parse(f"{server.host}/x:latest"))
        assert server.token_requests == 1


# -- a real registry -----------------------------------------------------------------------


def unique_repository(server: RegistryServer, tag: str = "latest") -> Reference:
    return Reference.parse(f"{server.host}/tests/r{uuid.uuid4().hex[:12]}:{tag}")


@pytest.mark.anyio
async def test_real_registry_round_trip(registry: RegistryServer) -> None:
    ref = unique_repository(registry, "v1")
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}
    digest = push_image(registry.url, ref.repository, "v1", config=config, layers=[b"layer"])
    async with RegistryClient() as client:
        info = await client.head_manifest(ref)
        assert info is not None
        assert (info.digest, info.media_type) == (digest, DOCKER_MANIFEST)
        assert await client.head_manifest(ref.with_tag("missing")) is None
        assert await client.head_manifest(Reference.parse(f"{registry.host}/no/such:1")) is None
        assert await client.resolve(ref) == digest
        body, got = await client.get_manifest(ref)
        assert got == info
        assert sha256_digest(body) == digest
        manifest = json.loads(body)
        blob = await client.get_blob(ref, manifest["config"]["digest"])
        assert json.loads(blob) == config
        asked = client.stats.requests
        pinned = await client.get_manifest(ref.with_digest(digest))
        assert pinned == (body, info)
        assert client.stats.requests == asked  # content by digest never changes: not asked again
    assert client.stats.bytes_in >= len(body) + len(blob)


@pytest.mark.anyio
async def test_real_registry_tags_retag_and_delete(registry: RegistryServer) -> None:
    ref = unique_repository(registry)
    for tag in ("a", "b", "c", "d", "e"):
        push_image(registry.url, ref.repository, tag, config={"tag": tag})
    async with RegistryClient() as client:
        assert sorted(await client.list_tags(ref.repo, page_size=2)) == ["a", "b", "c", "d", "e"]
        assert await client.list_tags(Repository.parse(f"{registry.host}/no/such")) == []

        body, info = await client.get_manifest(ref.with_tag("a"))
        hint = ref.with_tag("hint")
        assert await client.put_manifest(hint, body, info.media_type) == info.digest
        assert await client.resolve(hint) == info.digest

        await client.delete_manifest(ref.with_tag("b"))
        assert await client.head_manifest(ref.with_tag("b")) is None
        assert await client.head_manifest(ref.with_tag("c")) is not None
        with pytest.raises(RegistryNotFound):
            await client.delete_manifest(ref.with_tag("b"))


@pytest.mark.anyio
async def test_real_registry_with_htpasswd(auth_registry: RegistryServer) -> None:
    ref = unique_repository(auth_registry)
    digest = push_image(
        auth_registry.url, ref.repository, "latest", config={}, auth=auth_registry.auth
    )
    right = Credentials([(auth_registry.host, TEST_USER, TEST_PASSWORD)], docker_config=False)
    async with RegistryClient(credentials=right) as client:
        assert await client.resolve(ref) == digest
        body, info = await client.get_manifest(ref)
        assert await client.put_manifest(ref.with_tag("copy"), body, info.media_type) == digest
        assert sorted(await client.list_tags(ref.repo)) == ["copy", "latest"]
    wrong = Credentials([(auth_registry.host, TEST_USER, "wrong")], docker_config=False)
    for credentials, reason in ((wrong, "rejected"), (None, "no credentials")):
        async with RegistryClient(credentials=credentials) as client:
            with pytest.raises(RegistryAuthError, match=reason) as caught:
                await client.head_manifest(ref)
        assert isinstance(caught.value, RegistryError)
        assert TEST_PASSWORD not in str(caught.value)


@pytest.mark.anyio
async def test_concurrent_requests_to_a_basic_auth_registry_all_authenticate(
    auth_registry: RegistryServer,
) -> None:
    """The requests sent anonymously before the first 401 taught the client to use Basic."""
    ref = unique_repository(auth_registry)
    push_image(auth_registry.url, ref.repository, "latest", config={}, auth=auth_registry.auth)
    right = Credentials([(auth_registry.host, TEST_USER, TEST_PASSWORD)], docker_config=False)
    async with RegistryClient(credentials=right) as client:
        found: list[object] = []

        async def head(tag: str) -> None:
            found.append(await client.head_manifest(ref.with_tag(tag)))

        async with anyio.create_task_group() as group:
            for tag in ("latest", "missing-1", "missing-2", "latest", "missing-3"):
                group.start_soon(head, tag)
    assert sum(info is not None for info in found) == 2
    assert len(found) == 5


@pytest.mark.anyio
async def test_copy_image_within_and_across_repositories(registry: RegistryServer) -> None:
    source_digest = push_image(
        registry.url,
        "copy/source",
        "v1",
        config={"os": "linux", "marker": "copy"},
        layers=[b"layer one", b"layer two"],
    )
    async with RegistryClient() as client:
        source = Reference.parse(f"{registry.host}/copy/source:v1")
        same_repo = await client.copy_image(source, source.with_tag("v1-again"))
        other_repo = await client.copy_image(
            source, Reference.parse(f"{registry.host}/copy/target:x")
        )
        assert same_repo == other_repo == source_digest
        assert (
            await client.resolve(Reference.parse(f"{registry.host}/copy/target:x")) == source_digest
        )
        body, _ = await client.get_manifest(Reference.parse(f"{registry.host}/copy/target:x"))
        layers = [layer["digest"] for layer in json.loads(body)["layers"]]
        target = Reference.parse(f"{registry.host}/copy/target:x")
        assert [await client.get_blob(target, d) for d in layers] == [b"layer one", b"layer two"]
