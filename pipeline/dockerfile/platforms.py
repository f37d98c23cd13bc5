"""Platform specifiers, checked as containerd's `platforms.Parse` checks them.

BuildKit parses a `FROM --platform` value with it once the value is expanded, and fails the
build on what it refuses, so `plan` refuses the same. Only the syntax is judged here; the
platform a stage builds for stays the string the Dockerfile gave.
"""

from __future__ import annotations

import re

from pipeline.dockerfile.gostrings import go_quote

__all__ = ["platform_error"]

_OS = re.compile(r"^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?$")
_COMPONENT = re.compile(r"^[A-Za-z0-9_.-]+$")
_KNOWN_OS = frozenset(
    [
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "hurd",
        "illumos",
        "ios",
        "js",
        "linux",
        "nacl",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "windows",
        "zos",
    ]
)
_KNOWN_ARCH = frozenset(
    [
        "386",
        "amd64",
        "amd64p32",
        "arm",
        "armbe",
        "arm64",
        "arm64be",
        "ppc64",
        "ppc64le",
        "loong64",
        "mips",
        "mipsle",
        "mips64",
        "mips64le",
        "mips64p32",
        "mips64p32le",
        "ppc",
        "riscv",
        "riscv64",
        "s390",
        "s390x",
        "sparc",
        "sparc64",
        "wasm",
    ]
)
_ARCH_ALIASES = {
    "i386": "386",
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
}
_INVALID = "invalid argument"


def platform_error(specifier: str) -> str | None:
    """Why containerd would refuse the specifier, in its words, or None when it parses."""
    quoted = go_quote(specifier)
    if "*" in specifier:
        return f"{quoted}: wildcards not yet supported: {_INVALID}"
    parts = specifier.split("/", 3)
    if not _OS.match(parts[0]):
        return (
            f"{go_quote(parts[0])} is an invalid OS component of {quoted}: OSAndVersion "
            f"specifier component must match {go_quote(_OS.pattern)}: {_INVALID}"
        )
    for part in parts[1:]:
        if not _COMPONENT.match(part):
            return (
                f"{go_quote(part)} is an invalid component of {quoted}: platform specifier "
                f"component must match {go_quote(_COMPONENT.pattern)}: {_INVALID}"
            )
    if len(parts) == 4:
        return f"{quoted}: cannot parse platform specifier: {_INVALID}"
    if len(parts) == 1:
        word = _OS.match(parts[0])
        name = (word.group(1) if word else parts[0]).lower()
        known = name in _KNOWN_OS or name == "macos" or _ARCH_ALIASES.get(name, name) in _KNOWN_ARCH
        if not known:
            return f"{quoted}: unknown operating system or architecture: {_INVALID}"
    return None
