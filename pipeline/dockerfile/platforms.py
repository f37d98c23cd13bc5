"""Platform specifiers, checked as containerd's `platforms.Parse` checks them.

BuildKit parses a `FROM --platform` value with it once the value is expanded, and fails the
build on what it refuses, so `plan` refuses the same. Only the syntax is judged here; the
platform a stage builds for stays the string the Dockerfile gave. `Platform` is the value type
of a build's target platform, normalised as that same parser normalises it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pipeline.dockerfile.gostrings import go_quote

__all__ = ["Platform", "native_platform", "platform_error"]

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


@dataclass(frozen=True)
class Platform:
    """A target platform, normalised as BuildKit's `platforms.Parse` normalises it, so that two
    spellings of one platform are equal and the TARGET* ARGs are what BuildKit would set."""

    os: str
    arch: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Normalised as BuildKit's `platforms.Parse` does, since the TARGET* ARGs that a
        `FROM build_${TARGETARCH}${TARGETVARIANT}` expands are its result: `linux/arm` is
        arm/v7, `linux/arm64/v8` has no variant, `linux/x86_64` is amd64."""
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant]")
        os_name, arch, variant = parts[0], parts[1], parts[2] if len(parts) == 3 else ""
        arch, variant = _normalize_arch(arch, variant)
        return cls("darwin" if os_name == "macos" else os_name, arch, variant)

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.arch, self.variant) if part)

    def args(self, prefix: str) -> dict[str, str]:
        return {
            f"{prefix}PLATFORM": str(self),
            f"{prefix}OS": self.os,
            f"{prefix}ARCH": self.arch,
            f"{prefix}VARIANT": self.variant,
        }


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's normalizeArch (platforms/database.go), which BuildKit's parsing applies."""
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", {"8": "", "v8": "", "v8.0": "", "9": "v9", "9.0": "v9", "v9.0": "v9"}.get(
            variant, variant
        )
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        return "arm", {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}.get(variant, variant)
    return arch, variant


def native_platform() -> Platform:
    """The builder's own platform, as BuildKit reports it for a Linux worker on this machine.

    The machine comes from `os.uname`, as `platform.machine` has it, without the import of the
    `platform` module (2 ms of start-up)."""
    machine = os.uname().machine.lower()
    arch, variant = {
        "x86_64": ("amd64", ""),
        "amd64": ("amd64", ""),
        "aarch64": ("arm64", ""),
        "arm64": ("arm64", ""),
        "armv7l": ("arm", "v7"),
        "armv6l": ("arm", "v6"),
        "i386": ("386", ""),
        "i686": ("386", ""),
        "ppc64le": ("ppc64le", ""),
        "s390x": ("s390x", ""),
        "riscv64": ("riscv64", ""),
    }.get(machine, (machine, ""))
    return Platform("linux", arch, variant)
