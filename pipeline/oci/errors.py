"""What a registry made go wrong, apart from the client that talks to it: the plan and the
runner catch these, and a plan made offline never loads the HTTP client (`oci.registry`).

RegistryError (ToolError)        anything a registry made go wrong; names the registry
├── RegistryUnavailable          connect error, timeout, 5xx or 429 after the retries
├── RegistryAuthError            401 or 403 with whatever credentials we had
├── RegistryProtocolError        an answer the API does not allow (bad digest, bad JSON, 400)
├── RegistryUnsupported          405: the registry does not offer the operation (DELETE)
└── RegistryNotFound             also a LookupError: no such manifest, blob or repository
"""

from __future__ import annotations

from pipeline.errors import ToolError

__all__ = [
    "RegistryAuthError",
    "RegistryError",
    "RegistryNotFound",
    "RegistryProtocolError",
    "RegistryUnavailable",
    "RegistryUnsupported",
]


class RegistryError(ToolError):
    pass


class RegistryUnavailable(RegistryError):
    """`timed_out`: the registry took the connection or request and did not answer in time."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, timed_out: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.timed_out = timed_out


class RegistryAuthError(RegistryError):
    pass


class RegistryProtocolError(RegistryError):
    pass


class RegistryUnsupported(RegistryError):
    pass


class RegistryNotFound(RegistryError, LookupError):
    pass
