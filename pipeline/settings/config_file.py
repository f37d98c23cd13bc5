"""Where the config file is, `dagger-stages.yaml` by default: found without reading it.

Apart from `settings.config`, which reads it: that needs the YAML parser, about 14 ms of
start-up that a run without a config file need not pay.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import UsageError

__all__ = ["CONFIG_FILENAME", "find_config"]

CONFIG_FILENAME = "dagger-stages.yaml"


def find_config(explicit: str | None, cwd: Path) -> Path | None:
    """The config file to load, or None when there is none.

    An explicit path is returned as given, so relative paths (and the messages
    that quote them) stay relative; the default is `cwd / CONFIG_FILENAME`.
    """
    if explicit == "":
        raise UsageError("--config: the path is empty")
    if explicit is not None:
        candidate = cwd / explicit
        if candidate.is_dir():
            raise UsageError(
                f"--config names a directory, not a file (try {Path(explicit, CONFIG_FILENAME)})",
                path=explicit,
            )
        if not candidate.is_file():
            raise UsageError("config file not found (given by --config)", path=explicit)
        return Path(explicit)
    default = cwd / CONFIG_FILENAME
    return default if default.is_file() else None
