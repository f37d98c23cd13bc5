"""Which stages would run a RUN step of a foreign platform, and whether this host can.

BuildKit runs a RUN step in the stage's own platform; one whose CPU is not the engine host's
runs only under QEMU, registered with the kernel's binfmt_misc (`qemu-aarch64` and so on, as
`tonistiigi/binfmt` or Debian's `qemu-user-static` register them). Without it the step fails
with `exec format error`, minutes into a build. `plan` says so up front: for each needed stage
to build whose platform is foreign and that runs a RUN step (its own or an inherited ONBUILD
trigger), unless this host has a handler for that CPU. The engine's host is this one on the
docker executor; a remote Dagger engine's is not, so the note says "this host".

A stage on `FROM --platform=$BUILDPLATFORM` runs natively whatever the target: that is how a
cross build avoids emulation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.dockerfile.platforms import Platform

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pipeline.cache.multi import MultiPlan
    from pipeline.cache.plan import Plan

__all__ = ["BINFMT", "QEMU_NAMES", "emulation_notes", "foreign_runs", "registered"]

BINFMT = Path("/proc/sys/fs/binfmt_misc")

# GOARCH (BuildKit's spelling) -> the CPU name of QEMU's binfmt handler (`qemu-<name>`)
QEMU_NAMES = {
    "amd64": "x86_64",
    "386": "i386",
    "arm64": "aarch64",
    "arm": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64le": "mips64el",
    "mips64": "mips64",
    "loong64": "loongarch64",
}


def foreign_runs(plan: Plan, native: Platform) -> Iterator[tuple[int, Platform]]:
    """Each stage to build that runs a RUN step on another CPU than `native`'s, with its
    platform (the one its key was made for)."""
    for index in plan.indices("build"):
        try:
            platform = Platform.parse(plan.keys[index].inputs["platform"])
        except ValueError:
            continue  # a FROM --platform BuildKit refuses: the plan has said so already
        if platform.arch == native.arch or not _runs(plan, index):
            continue
        yield index, platform


def _runs(plan: Plan, index: int) -> bool:
    stage = plan.stage(index)
    instructions = list(stage.instructions[1:])
    if stage.base_stage is not None:
        parent = plan.stage(stage.base_stage)
        instructions += [i.trigger for i in parent.instructions if i.trigger is not None]
    return any(instruction.cmd == "RUN" for instruction in instructions)


def registered(arch: str, root: Path = BINFMT) -> bool:
    """Whether the kernel has an enabled binfmt_misc handler for the CPU `arch` (GOARCH)."""
    name = QEMU_NAMES.get(arch, arch)
    entry = root / f"qemu-{name}"
    try:
        return entry.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


def emulation_notes(plans: MultiPlan, native: Platform, root: Path = BINFMT) -> list[str]:
    """One warning per stage and platform that needs an emulator this host lacks."""
    notes = []
    for position, item in enumerate(plans.plans):
        for index, platform in foreign_runs(item.plan, native):
            if index in item.shared or registered(platform.arch, root):
                continue
            name = item.plan.stage(index).name
            if plans.several:
                name = f"{name} ({plans.shown(position, index)})"
            qemu = QEMU_NAMES.get(platform.arch, platform.arch)
            notes.append(
                f"{name}: its RUN steps run on {platform}, which this host ({native}) runs "
                f"only under QEMU, and binfmt_misc has no qemu-{qemu} handler here: register "
                f"one (docker run --privileged --rm tonistiigi/binfmt --install {platform.arch};"
                " on GitHub Actions, docker/setup-qemu-action), or build that stage on "
                "$BUILDPLATFORM (docs/multi-platform.md)"
            )
    return notes
