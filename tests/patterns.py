"""The suite's real-world Dockerfile patterns (tests/fixtures/patterns) and what each must give.

Each folder is a build context with its Dockerfile(s) and an `expected.yaml` worked out by hand
from BuildKit's rules, never copied from our output. A case is one way to build it (Dockerfile,
targets, build args, platform) and says:

- `stages`: exactly the needed stages, each with its `depends_on` in index order;
- `waves`: the needed stages by level;
- `details`: other `plan --json` fields of some stages (`base`, `base_stage`, `platform`,
  `images`); `{build_platform}` stands for the builder's own platform;
- `changes`: a context file, and the stages whose key changes when it is edited (or created);
- `real_build`: a real build on dockerd 20.10, then one change, an `edit` of a context file or
  another target `platform`, and the stages that the second build builds.

A pattern's `across_cases` each name two cases and the stages whose keys must be the same in both,
or different (a stage on the build platform that reads no target ARG serves every target).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PATTERNS = Path(__file__).parent / "fixtures" / "patterns"


@dataclass(frozen=True)
class RealBuild:
    built: frozenset[str]
    edit: str | None = None
    platform: str | None = None


@dataclass(frozen=True)
class Case:
    pattern: str
    name: str
    dockerfile: str
    targets: tuple[str, ...]
    build_args: dict[str, str]
    platform: str | None
    stages: dict[str, list[str]]
    waves: list[list[str]]
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    changes: dict[str, frozenset[str]] = field(default_factory=dict)
    real_build: RealBuild | None = None

    @property
    def id(self) -> str:
        return f"{self.pattern}/{self.name}"

    @property
    def source(self) -> Path:
        return PATTERNS / self.pattern

    def options(self) -> list[str]:
        """The flags `plan` and `build` take for this case, beside the Dockerfile and context."""
        flags = [f"--target={target}" for target in self.targets]
        flags += [f"--build-arg={name}={value}" for name, value in self.build_args.items()]
        if self.platform is not None:
            flags.append(f"--platform={self.platform}")
        return flags

    def copy_to(self, directory: Path) -> Path:
        """A copy of the pattern's context to edit, without the expectations."""
        project = directory / self.pattern
        shutil.copytree(self.source, project, ignore=shutil.ignore_patterns("expected.yaml"))
        return project


def edit(project: Path, path: str) -> None:
    """A change to one context file, made the way a commit would; a missing file is created."""
    target = project / path
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a") as file:
        file.write("edited\n")


@dataclass(frozen=True)
class AcrossCases:
    cases: tuple[Case, Case]
    same: frozenset[str]
    different: frozenset[str]

    @property
    def id(self) -> str:
        return f"{self.cases[0].pattern}/{self.cases[0].name}+{self.cases[1].name}"


def load_cases() -> list[Case]:
    return [case for cases, _ in _load() for case in cases]


def load_across_cases() -> list[AcrossCases]:
    return [across for _, compared in _load() for across in compared]


def _load() -> list[tuple[list[Case], list[AcrossCases]]]:
    patterns = []
    for folder in sorted(p for p in PATTERNS.iterdir() if p.is_dir()):
        document = yaml.safe_load((folder / "expected.yaml").read_text())
        cases = [_case(folder.name, entry) for entry in document["cases"]]
        by_name = {case.name: case for case in cases}
        compared = [
            AcrossCases(
                (by_name[entry["cases"][0]], by_name[entry["cases"][1]]),
                frozenset(entry.get("same", ())),
                frozenset(entry.get("different", ())),
            )
            for entry in document.get("across_cases", ())
        ]
        patterns.append((cases, compared))
    return patterns


def _case(pattern: str, entry: dict[str, Any]) -> Case:
    target = entry.get("target", [])
    real = entry.get("real_build")
    return Case(
        pattern=pattern,
        name=entry["name"],
        dockerfile=entry.get("dockerfile", "Dockerfile"),
        targets=tuple([target] if isinstance(target, str) else target),
        build_args=dict(entry.get("build_args", {})),
        platform=entry.get("platform"),
        stages={name: list(deps) for name, deps in entry["stages"].items()},
        waves=[list(wave) for wave in entry["waves"]],
        details=dict(entry.get("details", {})),
        changes={path: frozenset(names) for path, names in entry.get("changes", {}).items()},
        real_build=(
            RealBuild(frozenset(real["built"]), real.get("edit"), real.get("platform"))
            if real
            else None
        ),
    )
