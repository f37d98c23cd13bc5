"""A small client for the OCI distribution API: what the stage cache needs, no more.

Every httpx exception is translated here, at the boundary, into the `oci.errors` it raises.
Requests go through one `httpx.AsyncClient` whose transport can be injected, anonymous first;
`RegistryAuth` answers a 401's `WWW-Authenticate` challenge (Basic, or a Bearer token from the
realm, as distribution's token spec describes) and caches tokens per host and scope.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from pipeline.oci.errors import (
    RegistryAuthError,
    RegistryError,
    RegistryNotFound,
    RegistryProtocolError,
    RegistryUnavailable,
    RegistryUnsupported,
)
from pipeline.oci.reference import Reference, Repository, is_insecure_host

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping
    from types import TracebackType

    from pipeline.oci.credentials import Credentials, Secret

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "ManifestInfo",
    "RegistryAuth",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryError",
    "RegistryNotFound",
    "RegistryProtocolError",
    "RegistryStats",
    "RegistryUnavailable",
    "RegistryUnsupported",
    "sha256_digest",
]

logger = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)
_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)

PULL, PUSH, DELETE = "pull", "pull,push", "delete"
_SCOPE = "dagger_stages.scope"
DEFAULT_TOKEN_LIFETIME = 60.0
TOKEN_MARGIN = 5.0
MAX_RETRY_AFTER = 10.0
MAX_TAG_PAGES = 10_000
CLIENT_ID = "dagger-stages"


@dataclass(frozen=True)
class ManifestInfo:
    """A manifest as a descriptor names it, the fields an image index lists it by; a HEAD
    answers them without the body."""

    digest: str
    media_type: str
    size: int


@dataclass
class RegistryStats:
    """Every HTTP exchange, token requests, 401s and retries included; body bytes only.

    `fastest`: by API host, the quickest exchange seen, until the answer's headers: what a
    round trip to that registry costs at least.
    """

    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    fastest: dict[str, float] = field(default_factory=dict)


class RegistryClient:
    """The distribution API over one `httpx.AsyncClient`; use as `async with RegistryClient()`.

    `retries` is how many times a request is repeated after a transient failure, so
    a request is sent at most `retries + 1` times. `max_concurrency` bounds requests
    in flight across all callers of this client.

    A registry that accepts connections and never answers would cost every request its
    timeout times its tries. So the first request to time out on its last try marks the
    host dead for the client's life: every later or queued request to it raises that same
    RegistryUnavailable at once, without opening a connection.
    """

    def __init__(
        self,
        *,
        credentials: Credentials | None = None,
        insecure: Collection[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        max_concurrency: int = 16,
        backoff: float = 0.5,
    ) -> None:
        self.stats = RegistryStats()
        self._insecure = frozenset(insecure)
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._auth = RegistryAuth(credentials)
        self._dead: dict[str, RegistryUnavailable] = {}
        self._suspect: dict[str, anyio.Event] = {}
        self._heads: dict[str, _Flight] = {}
        # manifests this client wrote or read, by repository and digest: content never changes
        self._manifests: dict[str, tuple[bytes, ManifestInfo]] = {}
        inner = transport or _SchemeTransport()
        self._client = httpx.AsyncClient(
            transport=_CountingTransport(inner, self.stats),
            auth=self._auth,
            timeout=timeout,
            follow_redirects=True,
            trust_env=False,
            headers={"User-Agent": CLIENT_ID},
        )

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def round_trip(self, where: Reference | Repository) -> float | None:
        """The least a request to `where`'s registry has taken so far, None if none was
        answered: what each round of requests to it costs, which decides what is worth
        sending early or sparing."""
        return self.stats.fastest.get(where.api_host)

    def dead(self, host: str) -> RegistryUnavailable | None:
        """Why `host` is no longer asked, if a request to it timed out after its retries."""
        return self._dead.get(host)

    async def head_manifest(self, ref: Reference) -> ManifestInfo | None:
        """The manifest's digest, type and size, or None if the tag or digest is unknown.

        One HEAD request; a GET only for a registry that leaves out a header we need. Callers
        asking for one ref at the same time share that request: a multi-platform plan asks for
        its base images and its shared stages' tags once per platform. A later ask sends anew,
        as a tag can move (the first-writer check before a push relies on it).
        """
        key = str(ref)
        while (shared := self._heads.get(key)) is not None:
            await shared.done.wait()
            if shared.error is not None:
                raise shared.error
            if shared.answered:
                return shared.info
        flight = self._heads[key] = _Flight()
        try:
            flight.info = await self._head_manifest(ref)
            flight.answered = True
            return flight.info
        except RegistryError as exc:
            flight.error = exc
            raise
        finally:
            if self._heads.get(key) is flight:
                del self._heads[key]
            flight.done.set()

    async def _head_manifest(self, ref: Reference) -> ManifestInfo | None:
        response = await self._send("HEAD", ref, _manifest_path(ref), PULL, accept=_ACCEPT)
        if response.status_code == httpx.codes.NOT_FOUND:
            return None
        self._check(response, ref)
        digest = response.headers.get("Docker-Content-Digest") or ref.digest
        media_type = _media_type(response)
        size = response.headers.get("Content-Length")
        if digest and media_type and size and size.isdigit():
            return ManifestInfo(digest, media_type, int(size))
        _, info = await self.get_manifest(ref)
        return info

    async def resolve(self, ref: Reference) -> str:
        """The digest a tag points to; RegistryNotFound (a LookupError) if it points nowhere."""
        if ref.digest is not None:
            return ref.digest
        info = await self.head_manifest(ref)
        if info is None:
            raise RegistryNotFound(f"{ref} not found on registry {ref.registry}")
        return info.digest

    async def get_manifest(self, ref: Reference) -> tuple[bytes, ManifestInfo]:
        """The manifest's bytes as stored (digests are over these) and its description.

        By digest, one this client wrote or read before is not asked for again.
        """
        known = self._manifests.get(_pinned(ref, ref.digest)) if ref.digest else None
        if known is not None:
            return known
        response = await self._send("GET", ref, _manifest_path(ref), PULL, accept=_ACCEPT)
        self._check(response, ref, missing=f"{ref} not found on registry {ref.registry}")
        body = response.content
        computed = sha256_digest(body)
        if ref.digest is not None and ref.digest.startswith("sha256:") and ref.digest != computed:
            raise RegistryProtocolError(
                f"registry {ref.registry} sent a manifest for {ref} whose digest is {computed}"
            )
        digest = response.headers.get("Docker-Content-Digest") or ref.digest or computed
        media_type = _media_type(response) or _body_media_type(body)
        info = ManifestInfo(digest, media_type, len(body))
        if digest == computed:
            self._manifests[_pinned(ref, digest)] = body, info
        return body, info

    async def get_blob(self, ref: Reference, digest: str) -> bytes:
        """A small blob such as an image config, read into memory and checked against `digest`."""
        response = await self._send("GET", ref, f"blobs/{digest}", PULL)
        self._check(response, ref, missing=f"blob {digest} not found in {ref.name}")
        body = response.content
        if digest.startswith("sha256:") and sha256_digest(body) != digest:
            raise RegistryProtocolError(
                f"registry {ref.registry} sent blob {digest} of {ref.name} with other content"
            )
        return body

    async def list_tags(self, repo: Repository, *, page_size: int | None = None) -> list[str]:
        """All tags of the repository, following `Link` pages; [] if the repository is unknown."""
        repository = Reference(repo.registry, repo.path)
        params = {"n": str(page_size)} if page_size else None
        url: str | None = self._url(repository, "tags/list")
        seen: set[str] = set()
        tags: list[str] = []
        while url is not None:
            if url in seen or len(seen) >= MAX_TAG_PAGES:
                raise RegistryProtocolError(
                    f"registry {repository.registry} sent endless tag pages for {repository.name}"
                )
            seen.add(url)
            response = await self._request("GET", repository, url, PULL, params=params)
            if response.status_code == httpx.codes.NOT_FOUND:
                return tags
            self._check(response, repository)
            tags.extend(_tags(response, repository))
            url = _next_page(response)
            params = None
        return tags

    async def delete_manifest(self, ref: Reference) -> None:
        """Delete the manifest `ref` points to, which removes every tag pointing to it too."""
        digest = await self.resolve(ref)
        target = ref.with_digest(digest)
        response = await self._send("DELETE", target, f"manifests/{digest}", DELETE)
        if response.status_code == httpx.codes.METHOD_NOT_ALLOWED:
            raise RegistryUnsupported(
                f"registry {ref.registry} does not allow deleting manifests "
                f"({_error_codes(response)}); on distribution, set storage.delete.enabled"
            )
        self._check(response, target, missing=f"{target} not found on registry {ref.registry}")

    async def put_manifest(self, ref: Reference, body: bytes, media_type: str) -> str:
        """Store `body` under `ref`'s tag (or digest) and return its digest.

        Re-tagging an existing manifest needs no blob upload: the blobs are already there.
        """
        response = await self._send(
            "PUT",
            ref,
            _manifest_path(ref),
            PUSH,
            content=body,
            headers={"Content-Type": media_type},
        )
        self._check(response, ref)
        computed = sha256_digest(body)
        digest = response.headers.get("Docker-Content-Digest") or computed
        if digest == computed:
            info = ManifestInfo(digest, media_type, len(body))
            self._manifests[_pinned(ref, digest)] = body, info
        return digest

    async def upload_blob(
        self, ref: Reference, digest: str, content: bytes, opened: str | None = None
    ) -> bool:
        """Put a blob into `ref`'s repository; returns whether its bytes were sent.

        The POST that opens the upload asks to mount the blob from this same repository, so
        one request both finds a blob the registry has and starts the upload of one it lacks:
        one round trip for a blob that is there, two for one that is not. A registry that
        does not mount answers as if the blob were missing (the OCI spec's 202).

        `opened`: the location of an upload `open_upload` opened ahead, which the bytes go to
        at once, one round trip in all; if that upload is gone or its PUT breaks off, the blob
        is put as above.
        """
        if opened is not None:
            try:
                await self._finish_upload(ref, opened, digest, content, retries=0)
                return True
            except (RegistryUnavailable, RegistryProtocolError, RegistryNotFound):
                pass
        attempt = 0
        while True:
            location = await self._open_upload(ref, digest, ref.repository)
            if location is None:
                return False
            try:
                await self._finish_upload(ref, location, digest, content, retries=0)
                return True
            except RegistryUnavailable as error:
                # a registry drops an upload whose PUT broke off: a retry opens another
                delay = self._delay(attempt, error.retry_after)
                if attempt >= self._retries or delay is None or self.dead(ref.registry):
                    raise
            attempt += 1
            await anyio.sleep(delay)

    async def copy_image(self, source: Reference, target: Reference) -> str:
        """Point `target` at the image `source` names, without an engine; returns its digest.

        Blobs are mounted from the source repository when both live on one registry (no bytes
        move), else copied through; an index brings its platform manifests along.
        """
        body, info = await self.get_manifest(source)
        try:
            manifest = json.loads(body)
        except ValueError:
            raise RegistryProtocolError(f"registry {source.registry} sent a bad manifest") from None
        if info.media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST):
            for child in manifest.get("manifests", []):
                digest = child["digest"]
                await self.copy_image(source.with_digest(digest), target.with_digest(digest))
        else:
            for blob in [manifest["config"], *manifest.get("layers", [])]:
                await self._ensure_blob(source, target, blob["digest"])
        return await self.put_manifest(target, body, info.media_type)

    async def _ensure_blob(self, source: Reference, target: Reference, digest: str) -> None:
        if source.registry == target.registry and source.repository == target.repository:
            return
        head = await self._send("HEAD", target, f"blobs/{digest}", PUSH)
        if head.status_code == httpx.codes.OK:
            return
        same_registry = source.registry == target.registry
        location = await self._open_upload(
            target, digest, source.repository if same_registry else None
        )
        if location is not None:
            await self._finish_upload(target, location, digest, await self.get_blob(source, digest))

    async def mount_blob(self, ref: Reference, digest: str, source: str) -> str | None:
        """Mount the blob into `ref`'s repository from the `source` repository of the same
        registry: None once mounted, else the location of the upload the registry opened
        instead (`upload_blob`'s `opened`), as one that cannot mount it answers."""
        return await self._open_upload(ref, digest, source)

    async def open_upload(self, ref: Reference) -> str:
        """The location of a new, empty upload in `ref`'s repository, for a blob whose digest
        is not known yet (`upload_blob`'s `opened`); `cancel_upload` closes one left unused."""
        location = await self._open_upload(ref, None)
        if location is None:
            raise RegistryProtocolError(f"registry {ref.registry} gave no upload location")
        return location

    async def cancel_upload(self, ref: Reference, location: str) -> None:
        """Close an upload that `open_upload` opened, so the registry keeps nothing of it."""
        url = httpx.URL(self._url(ref, "")).join(location)
        done = await self._request("DELETE", ref, str(url), PUSH, retries=0)
        if done.status_code != httpx.codes.NOT_FOUND:
            self._check(done, ref)

    async def _open_upload(
        self, ref: Reference, digest: str | None, mount_from: str | None = None
    ) -> str | None:
        """The location of a new upload of the blob, or None when the registry mounted it
        (`mount_from`, with its `digest`)."""
        query = f"?mount={digest}&from={mount_from}" if digest and mount_from else ""
        started = await self._send("POST", ref, f"blobs/uploads/{query}", PUSH)
        if started.status_code == httpx.codes.CREATED:
            return None
        self._check(started, ref)
        location: str | None = started.headers.get("Location")
        if not location:
            raise RegistryProtocolError(f"registry {ref.registry} gave no upload location")
        return location

    async def _finish_upload(
        self,
        ref: Reference,
        location: str,
        digest: str,
        content: bytes,
        *,
        retries: int | None = None,
    ) -> None:
        """The blob's bytes, in one PUT that closes the upload under its digest."""
        url = httpx.URL(self._url(ref, "")).join(location).copy_merge_params({"digest": digest})
        done = await self._request(
            "PUT",
            ref,
            str(url),
            PUSH,
            content=content,
            headers={"Content-Type": "application/octet-stream"},
            retries=retries,
        )
        self._check(done, ref)

    def _url(self, ref: Reference, path: str) -> str:
        scheme = "http" if is_insecure_host(ref.api_host, self._insecure) else "https"
        return f"{scheme}://{ref.api_host}/v2/{ref.repository}/{path}"

    async def _send(
        self,
        method: str,
        ref: Reference,
        path: str,
        action: str,
        *,
        accept: str | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if accept is not None:
            all_headers["Accept"] = accept
        return await self._request(
            method, ref, self._url(ref, path), action, content=content, headers=all_headers
        )

    async def _request(
        self,
        method: str,
        ref: Reference,
        url: str,
        action: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        retries: int | None = None,
    ) -> httpx.Response:
        """Send with bounded retries (`retries`, else the client's) on transient failures,
        exponential backoff and jitter."""
        retries = self._retries if retries is None else retries
        build = functools.partial(
            self._client.build_request,
            method,
            url,
            content=content,
            headers=headers,
            params=params,
            extensions={_SCOPE: f"repository:{ref.repository}:{action}"},
        )
        host = ref.registry
        owner = False
        attempt = 0
        try:
            while True:
                try:
                    return await self._attempt(build(), ref, retrying_timeout=owner)
                except RegistryUnavailable as error:
                    if error is self._dead.get(host):
                        raise
                    if error.timed_out and not owner and host not in self._suspect:
                        self._suspect[host] = anyio.Event()
                        owner = True
                    delay = self._delay(attempt, error.retry_after)
                    if attempt >= retries or delay is None:
                        raise self._give_up(host, error, attempt) from error
                    logger.debug("%s %s: %s; retrying in %.2f s", method, url, error.message, delay)
                attempt += 1
                await anyio.sleep(delay)
        finally:
            if owner:
                self._suspect.pop(host).set()

    def _give_up(self, host: str, error: RegistryUnavailable, attempt: int) -> RegistryUnavailable:
        """The error a request ends with; a timeout on its last try marks `host` dead."""
        final = error
        if attempt > 0:
            final = RegistryUnavailable(
                f"{error.message} (gave up after {attempt + 1} attempts)",
                timed_out=error.timed_out,
            )
        if final.timed_out:
            self._dead.setdefault(host, final)
        return final

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """How long to wait before the next attempt; None when the registry asks for too long."""
        if retry_after is not None:
            return retry_after if retry_after <= MAX_RETRY_AFTER else None
        base = self._backoff * 2.0**attempt
        return base + random.uniform(0, base / 2)

    async def _attempt(
        self, request: httpx.Request, ref: Reference, *, retrying_timeout: bool = False
    ) -> httpx.Response:
        """One exchange (with its auth round trips); transient failures as RegistryUnavailable.

        While one request retries after a timeout, the others to that host wait for its
        outcome instead of each spending a timeout of their own; `retrying_timeout` says
        that this is that request.
        """
        host = ref.registry
        try:
            await self._slot(host, retrying_timeout=retrying_timeout)
            try:
                if (dead := self._dead.get(host)) is not None:
                    raise dead
                response = await self._client.send(request)
            finally:
                self._limiter.release()
        except httpx.TimeoutException as exc:
            raise RegistryUnavailable(
                f"registry {host} did not answer within {self._timeout:g} s ({type(exc).__name__})",
                timed_out=True,
            ) from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
            raise RegistryUnavailable(f"cannot reach registry {host}: {_describe(exc)}") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise RegistryProtocolError(
                f"request to registry {host} failed: {_describe(exc)}"
            ) from exc
        status = response.status_code
        logger.debug("%s %s -> %d", request.method, request.url, status)
        if status == httpx.codes.TOO_MANY_REQUESTS or status >= httpx.codes.INTERNAL_SERVER_ERROR:
            retry_after = _retry_after(response)
            wait = f", asking to wait {retry_after:g} s" if retry_after is not None else ""
            raise RegistryUnavailable(
                f"registry {host} answered {status} {response.reason_phrase}"
                f" to {request.method} {ref.repository}{wait}",
                retry_after=retry_after,
            )
        return response

    async def _slot(self, host: str, *, retrying_timeout: bool) -> None:
        """A place under the concurrency limit, taken only while no timeout on `host` is being
        retried: a waiter holding one could starve the very retry it waits for."""
        while True:
            while not retrying_timeout and (waiting := self._suspect.get(host)) is not None:
                await waiting.wait()
            await self._limiter.acquire()
            if retrying_timeout or host not in self._suspect:
                return
            self._limiter.release()

    def _check(self, response: httpx.Response, ref: Reference, *, missing: str = "") -> None:
        """Raise the RegistryError for a non-2xx answer that the caller did not handle."""
        status = response.status_code
        if status < httpx.codes.MULTIPLE_CHOICES:
            return
        what = f"{response.request.method} {ref.name}"
        codes = _error_codes(response)
        if status == httpx.codes.UNAUTHORIZED:
            reason = (
                "the credentials were rejected"
                if self._auth.had_credentials(ref.api_host)
                else "no credentials were found for it"
            )
            raise RegistryAuthError(
                f"registry {ref.registry} requires authentication for {what} ({codes}); {reason}"
            )
        if status == httpx.codes.FORBIDDEN:
            raise RegistryAuthError(f"registry {ref.registry} denied {what} ({codes})")
        if status == httpx.codes.NOT_FOUND and missing:
            raise RegistryNotFound(f"{missing} ({codes})")
        raise RegistryProtocolError(
            f"registry {ref.registry} answered {status} {response.reason_phrase} to {what}"
            f" ({codes})"
        )


@dataclass(frozen=True)
class _Token:
    """A Bearer token and when to stop sending it: `TOKEN_MARGIN` before it expires, so that a
    request is not refused for a token that lapsed in flight."""

    value: str
    expires_at: float


@dataclass(frozen=True)
class _Challenge:
    """A `WWW-Authenticate` challenge, names lower-cased: a Bearer one's `realm`, `service` and
    `scope` say where to ask for a token, and for what."""

    scheme: str
    params: dict[str, str]


class RegistryAuth(httpx.Auth):
    """Anonymous first; on 401, Basic credentials or a Bearer token from the challenge's realm.

    Tokens are cached per (host, scope) until `expires_in` and sent up front on later
    requests, so a run of HEADs costs one token request. Credentials are looked up once
    per host, when a registry first asks.
    """

    def __init__(self, credentials: Credentials | None) -> None:
        self._credentials = credentials
        self._secrets: dict[str, Secret | None] = {}
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._pending: dict[tuple[str, str], anyio.Event] = {}
        self._basic_hosts: set[str] = set()

    def had_credentials(self, host: str) -> bool:
        return self._secrets.get(host) is not None

    def sync_auth_flow(self, request: httpx.Request) -> Any:
        raise RuntimeError("RegistryAuth works with httpx.AsyncClient only")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        host = request.url.netloc.decode("ascii")
        key = (host, str(request.extensions.get(_SCOPE, "")))
        sent_token = self._cached_token(key)
        if sent_token is not None:
            request.headers["Authorization"] = f"Bearer {sent_token}"
        elif host in self._basic_hosts:
            await self._add_basic(request, host)
        response = yield request
        challenge = _challenge(response)
        if response.status_code != httpx.codes.UNAUTHORIZED or challenge is None:
            return
        if challenge.scheme == "basic":
            # a request sent before a concurrent one learned the host wants Basic went
            # without it: retry it with the credentials; one sent with them was refused
            sent_basic = request.headers.get("Authorization", "").startswith("Basic ")
            if not sent_basic and await self._add_basic(request, host):
                self._basic_hosts.add(host)
                yield request
            return
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            return
        secret = await self._secret(host)
        token = await self._wait_for_token(key, sent_token)
        if token is None:
            self._pending[key] = event = anyio.Event()
            try:
                token_response = yield _token_request(challenge, key[1], secret)
                await token_response.aread()
                token = self._store_token(key, challenge, token_response, secret)
            finally:
                del self._pending[key]
                event.set()
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def _cached_token(self, key: tuple[str, str]) -> str | None:
        token = self._tokens.get(key)
        return token.value if token is not None and token.expires_at > time.monotonic() else None

    async def _wait_for_token(self, key: tuple[str, str], rejected: str | None) -> str | None:
        """A token another request is fetching or has fetched, unless it is the one refused."""
        while (pending := self._pending.get(key)) is not None:
            await pending.wait()
        token = self._cached_token(key)
        return token if token != rejected else None

    async def _secret(self, host: str) -> Secret | None:
        if host not in self._secrets:
            found = await self._credentials.lookup(host) if self._credentials else None
            self._secrets[host] = found
        return self._secrets[host]

    async def _add_basic(self, request: httpx.Request, host: str) -> bool:
        secret = await self._secret(host)
        if secret is None:
            return False
        request.headers["Authorization"] = _basic(secret)
        return True

    def _store_token(
        self,
        key: tuple[str, str],
        challenge: _Challenge,
        response: httpx.Response,
        secret: Secret | None,
    ) -> str:
        realm = httpx.URL(challenge.params["realm"]).host
        status = response.status_code
        if status in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
            who = "the credentials" if secret is not None else "anonymous access"
            raise RegistryAuthError(
                f"token server {realm} for registry {key[0]} refused {who} ({status})"
            )
        if status == httpx.codes.TOO_MANY_REQUESTS or status >= httpx.codes.INTERNAL_SERVER_ERROR:
            raise RegistryUnavailable(
                f"token server {realm} for registry {key[0]} answered {status}",
                retry_after=_retry_after(response),
            )
        token, lifetime = _parse_token(response)
        if token is None or status != httpx.codes.OK:
            raise RegistryProtocolError(
                f"token server {realm} for registry {key[0]} sent no token ({status})"
            )
        self._tokens[key] = _Token(token, time.monotonic() + lifetime - TOKEN_MARGIN)
        return token


_KEEPALIVE = 120.0  # seconds an idle registry connection stays open
_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=20, keepalive_expiry=_KEEPALIVE
)


class _SchemeTransport(httpx.AsyncBaseTransport):
    """TLS set up on the first HTTPS request: loading the CA bundle takes about 20 ms, which
    a build against a plain-HTTP registry (local, or a CI service) need not wait for.

    An idle connection is kept for a run's length (`_KEEPALIVE`), not httpx's 5 s: the hint
    moves and publishing come after seconds of building, and a new connection to a distant
    registry costs a round trip more, two more with TLS.
    """

    def __init__(self) -> None:
        self._plain = httpx.AsyncHTTPTransport(retries=0, verify=False, limits=_LIMITS)
        self._tls: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":
            return await self._plain.handle_async_request(request)
        if self._tls is None:
            self._tls = httpx.AsyncHTTPTransport(retries=0, limits=_LIMITS)
        return await self._tls.handle_async_request(request)

    async def aclose(self) -> None:
        await self._plain.aclose()
        if self._tls is not None:
            await self._tls.aclose()


class _CountingTransport(httpx.AsyncBaseTransport):
    """Counts requests and body bytes for `RegistryClient.stats`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, stats: RegistryStats) -> None:
        self._inner = inner
        self._stats = stats

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._stats.requests += 1
        length = request.headers.get("Content-Length", "0")
        self._stats.bytes_out += int(length) if length.isdigit() else 0
        started = time.monotonic()
        response = await self._inner.handle_async_request(request)
        host = request.url.netloc.decode("ascii")
        seconds = time.monotonic() - started
        self._stats.fastest[host] = min(seconds, self._stats.fastest.get(host, seconds))
        if not isinstance(response.stream, httpx.AsyncByteStream):
            return response
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CountingStream(response.stream, self._stats),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CountingStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, stats: RegistryStats) -> None:
        self._inner = inner
        self._stats = stats

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._stats.bytes_in += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _manifest_path(ref: Reference) -> str:
    reference = ref.digest or ref.tag
    if reference is None:
        raise ValueError(f"{ref.name} has neither a tag nor a digest")
    return f"manifests/{reference}"


def _pinned(ref: Reference, digest: str) -> str:
    return f"{ref.name}@{digest}"


def sha256_digest(data: bytes) -> str:
    """The `sha256:…` digest of `data`: what names a blob or manifest."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _media_type(response: httpx.Response) -> str:
    content_type: str = response.headers.get("Content-Type", "")
    return content_type.split(";", 1)[0].strip()


def _body_media_type(body: bytes) -> str:
    try:
        document = httpx.Response(200, content=body).json()
    except ValueError:
        return ""
    media_type = document.get("mediaType") if isinstance(document, dict) else None
    return media_type if isinstance(media_type, str) else ""


def _tags(response: httpx.Response, repository: Reference) -> list[str]:
    try:
        document = response.json()
    except ValueError:
        document = None
    tags = document.get("tags", []) if isinstance(document, dict) else None
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise RegistryProtocolError(
            f"registry {repository.registry} sent an unreadable tag list for {repository.name}"
        )
    return tags


def _next_page(response: httpx.Response) -> str | None:
    link = response.links.get("next", {}).get("url")
    return str(response.url.join(link)) if link else None


def _error_codes(response: httpx.Response) -> str:
    """The distribution error codes of a response, such as `MANIFEST_UNKNOWN: manifest unknown`."""
    try:
        document = response.json()
    except ValueError:
        document = None
    errors = document.get("errors") if isinstance(document, dict) else None
    parts = [
        f"{error.get('code')}: {error.get('message')}"
        for error in errors or []
        if isinstance(error, dict)
    ]
    return "; ".join(parts)[:300] or f"HTTP {response.status_code}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_CHALLENGE_RE = re.compile(r"^\s*(\w+)\s*(.*)$")
_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def _challenge(response: httpx.Response) -> _Challenge | None:
    """The response's Bearer challenge if it offers one, else its Basic one."""
    challenges = []
    for header in response.headers.get_list("WWW-Authenticate"):
        match = _CHALLENGE_RE.match(header)
        if match is not None:
            params = {
                name.lower(): quoted if quoted else bare
                for name, quoted, bare in _PARAM_RE.findall(match.group(2))
            }
            challenges.append(_Challenge(match.group(1).lower(), params))
    bearer = [item for item in challenges if item.scheme == "bearer" and "realm" in item.params]
    found = bearer or challenges
    return found[0] if found else None


def _token_request(challenge: _Challenge, scope: str, secret: Secret | None) -> httpx.Request:
    """GET the realm with Basic credentials, or POST an identity token (OAuth2 refresh)."""
    realm = challenge.params["realm"]
    wanted = {"service": challenge.params.get("service"), "scope": challenge.params.get("scope")}
    wanted["scope"] = wanted["scope"] or scope
    fields = {name: value for name, value in wanted.items() if value}
    if secret is not None and secret.identity_token:
        form = {**fields, "grant_type": "refresh_token", "refresh_token": secret.password}
        return httpx.Request("POST", realm, data={**form, "client_id": CLIENT_ID})
    headers = {"Authorization": _basic(secret)} if secret is not None else {}
    return httpx.Request("GET", realm, params=fields, headers=headers)


def _parse_token(response: httpx.Response) -> tuple[str | None, float]:
    """The token (`token` or `access_token`) and its lifetime in seconds."""
    try:
        document = response.json()
    except ValueError:
        return None, 0.0
    if not isinstance(document, dict):
        return None, 0.0
    token = document.get("token") or document.get("access_token")
    lifetime = document.get("expires_in")
    if not isinstance(lifetime, int | float) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    return (token if isinstance(token, str) else None), float(lifetime)


def _basic(secret: Secret) -> str:
    pair = f"{secret.username}:{secret.password}".encode()
    return f"Basic {base64.b64encode(pair).decode('ascii')}"


@dataclass
class _Flight:
    """One HEAD in flight, and what it found, for the callers that asked at the same time.

    Unanswered (the asker was cancelled), a waiting caller sends its own.
    """

    done: anyio.Event = field(default_factory=anyio.Event)
    answered: bool = False
    info: ManifestInfo | None = None
    error: RegistryError | None = None
