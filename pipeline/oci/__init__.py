"""Talking to OCI registries: image references, credentials, and the distribution API client.

`import httpx` also imports httpx's command-line client (click, rich, pygments) when they are
installed: 50 ms of every run's start-up for a tool we never call. Marked missing here, before
any module of this package imports httpx, httpx falls back to its stub for it.
"""

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
