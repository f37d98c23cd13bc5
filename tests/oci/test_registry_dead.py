"""A registry that accepts connections and never answers: after one request has timed out
on its every try, the client stops asking that host for the rest of the run."""

from __future__ import annotations

import anyio
import pytest

from pipeline.oci.reference import Reference
from pipeline.oci.registry import RegistryClient, RegistryUnavailable
from tests.faulty_proxy import error_registry, silent_registry

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def hanging_client(**options: float) -> RegistryClient:
    """Short timeouts through the constructor: the behaviour, not the 10 s default, is tested."""
    settings = {"timeout": 0.2, "retries": 1, "backoff": 0.01, **options}
    return RegistryClient(
        timeout=settings["timeout"],
        retries=int(settings["retries"]),
        backoff=settings["backoff"],
        max_concurrency=int(settings.get("max_concurrency", 16)),
    )


async def test_a_timeout_after_the_retries_marks_the_host_dead() -> None:
    with silent_registry() as silent:
        async with hanging_client() as client:
            ref = Reference.parse(f"{silent.host}/dead/cache:first")
            with pytest.raises(RegistryUnavailable) as first:
                await client.head_manifest(ref)
            assert "did not answer within 0.2 s" in first.value.message
            assert "gave up after 2 attempts" in first.value.message
            assert client.dead(ref.registry) is first.value
            connections, requests = silent.connections, client.stats.requests
            assert requests == 2

            for tag in ("a", "b", "c"):
                later = Reference.parse(f"{silent.host}/dead/cache:{tag}")
                with pytest.raises(RegistryUnavailable) as again:
                    await client.head_manifest(later)
                assert again.value is first.value
            with pytest.raises(RegistryUnavailable) as blob:
                await client.get_blob(ref, "sha256:" + "0" * 64)
            assert blob.value is first.value

            assert client.stats.requests == requests, "a dead host was sent a request"
            assert silent.connections == connections, "a dead host was connected to"


async def test_queued_requests_fail_at_once_once_the_host_is_dead() -> None:
    with silent_registry() as silent:
        async with hanging_client(max_concurrency=1, retries=0) as client:
            errors: list[RegistryUnavailable] = []

            async def head(tag: str) -> None:
                try:
                    await client.head_manifest(Reference.parse(f"{silent.host}/q/cache:{tag}"))
                except RegistryUnavailable as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as group:
                for n in range(8):
                    group.start_soon(head, f"t{n}")
            assert len(errors) == 8
            dead = client.dead(silent.host)
            assert dead is not None
            assert all(error is dead for error in errors[1:])
            assert client.stats.requests == 1, "only the first request went out"


async def test_other_hosts_are_still_asked() -> None:
    with silent_registry() as silent, error_registry() as failing:
        async with hanging_client(retries=0) as client:
            with pytest.raises(RegistryUnavailable):
                await client.head_manifest(Reference.parse(f"{silent.host}/x/cache:a"))
            assert client.dead(silent.host) is not None
            with pytest.raises(RegistryUnavailable) as other:
                await client.head_manifest(Reference.parse(f"{failing.host}/x/cache:a"))
            assert "500" in other.value.message
            assert len(failing.requests) == 1


async def test_a_registry_answering_500_is_not_marked_dead() -> None:
    with error_registry() as failing:
        async with hanging_client() as client:
            ref = Reference.parse(f"{failing.host}/x/cache:a")
            for _ in range(2):
                with pytest.raises(RegistryUnavailable):
                    await client.head_manifest(ref)
            assert client.dead(ref.registry) is None
            assert len(failing.requests) == 4, "each request was sent with its retry"
