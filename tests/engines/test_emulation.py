from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.dockerfile.platforms import Platform
from pipeline.engines.emulation import emulation_notes, foreign_runs, registered
from tests.cache.test_multi import plans_of
from tests.conftest import WriteDockerfile

AMD64, ARM64 = Platform.parse("linux/amd64"), Platform.parse("linux/arm64")

DOCKERFILE = """\
FROM --platform=$BUILDPLATFORM alpine AS tools
RUN make-tools
FROM alpine AS runs
RUN apk add curl
FROM alpine AS copies
COPY --from=tools /t /t
FROM alpine AS base-with-trigger
ONBUILD RUN echo triggered
FROM base-with-trigger AS inherits
FROM alpine AS release
COPY --from=runs /a /a
COPY --from=copies /b /b
COPY --from=inherits /c /c
"""


@pytest.fixture
def binfmt(tmp_path: Path) -> Path:
    root = tmp_path / "binfmt_misc"
    root.mkdir()
    return root


def test_only_foreign_stages_with_run_steps_need_emulation(
    dockerfile: WriteDockerfile, tmp_path: Path
) -> None:
    plans = plans_of(dockerfile, tmp_path, DOCKERFILE, AMD64, ARM64)
    arm64 = plans.plans[1].plan
    names = {arm64.stage(index).name: str(p) for index, p in foreign_runs(arm64, AMD64)}
    assert names == {"runs": "linux/arm64", "inherits": "linux/arm64"}
    assert list(foreign_runs(plans.first, AMD64)) == []
    assert list(foreign_runs(arm64, ARM64)) == [(0, AMD64)]


def test_a_note_per_stage_unless_a_handler_is_registered(
    dockerfile: WriteDockerfile, tmp_path: Path, binfmt: Path
) -> None:
    plans = plans_of(dockerfile, tmp_path, DOCKERFILE, AMD64, ARM64)
    notes = emulation_notes(plans, AMD64, binfmt)
    assert [note.split(":", 1)[0] for note in notes] == [
        "runs (linux/arm64)",
        "inherits (linux/arm64)",
    ]
    assert "no qemu-aarch64 handler here" in notes[0]
    assert "tonistiigi/binfmt --install arm64" in notes[0]
    (binfmt / "qemu-aarch64").write_text("enabled\ninterpreter /usr/bin/qemu-aarch64-static\n")
    assert emulation_notes(plans, AMD64, binfmt) == []


def test_a_disabled_or_missing_handler_is_not_registered(binfmt: Path) -> None:
    assert not registered("arm64", binfmt)
    (binfmt / "qemu-aarch64").write_text("disabled\n")
    assert not registered("arm64", binfmt)
    (binfmt / "qemu-arm").write_text("enabled\n")
    assert registered("arm", binfmt)
    assert not registered("riscv64", binfmt.parent / "absent")
