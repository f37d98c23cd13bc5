from __future__ import annotations

import pytest

from pipeline.dockerfile.platforms import platform_error


@pytest.mark.parametrize(
    "specifier",
    [
        "linux",
        "windows",
        "macos",
        "amd64",
        "x86_64",
        "aarch64",
        "linux/amd64",
        "linux/arm/v7",
        "windows(10.0.17763)/amd64",
        "Linux/AMD64",
    ],
)
def test_specifiers_containerd_parses(specifier: str) -> None:
    assert platform_error(specifier) is None


@pytest.mark.parametrize(
    ("specifier", "reason"),
    [
        ("", '"" is an invalid OS component of ""'),
        ("linux/", '"" is an invalid component of "linux/"'),
        ("linux/am d64", '"am d64" is an invalid component of "linux/am d64"'),
        ("a/b/c/d", '"a/b/c/d": cannot parse platform specifier'),
        ("toaster", '"toaster": unknown operating system or architecture'),
    ],
)
def test_specifiers_containerd_refuses(specifier: str, reason: str) -> None:
    error = platform_error(specifier)
    assert error is not None
    assert error.startswith(reason)
    assert error.endswith(": invalid argument")
