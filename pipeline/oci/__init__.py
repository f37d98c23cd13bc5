"""Talking to OCI registries: image references, credentials, and the distribution API client.

`import httpx` also imports httpx's command-line client (click, rich, pygments) when they are
installed: 50 ms of every run's start-up for a tool we never call. Marked missing here, before
any module of this package imports httpx, httpx falls back to its stub for it.

httpcore tries `import sniffio` for every lock and event it makes, some 80 times in a warm
build. Where sniffio is not installed, each try searches sys.path again, 3 ms in all; marked
missing once, each fails at once, and httpcore assumes asyncio, which is what anyio runs on.
"""

import sys
from importlib.util import find_spec

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
if find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]
