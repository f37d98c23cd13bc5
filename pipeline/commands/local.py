"""What a build leaves on this machine besides the cache: `--load` and `--output`.

A developer reproducing CI wants the result where their tools are: the target in the local
Docker image store under a name they can type (`docker run myproject/app:dev`), and files
copied out of a stage (`--output STAGE:PATH=DIR`, as `docker buildx build --output
type=local`). Both read a stage built in the run or restored from the cache alike; the
executor's session does the moving (`Session.load`, `Session.copy_out`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.errors import UsageError

__all__ = ["DEFAULT_LOAD_TAG", "LocalCopies", "Output", "load_name", "parse_output", "project_name"]

DEFAULT_LOAD_TAG = "{project}/{target}:dev"
_NOT_IN_A_NAME = re.compile(r"[^a-z0-9._-]+")
_FIELDS = re.compile(r"\{(\w*)\}")


@dataclass(frozen=True)
class Output:
    """`--output STAGE:PATH=DIR`: `path` in the stage's image, copied to `dest` on the host."""

    stage: str
    path: str
    dest: Path


@dataclass(frozen=True)
class LocalCopies:
    """What `build` puts on this machine: `load_tag` is None without `--load`."""

    load_tag: str | None = None
    outputs: tuple[Output, ...] = ()
    # say how to run each loaded image; not for an image that is gone once the run ends
    announce: bool = True

    @property
    def wanted(self) -> bool:
        return self.load_tag is not None or bool(self.outputs)


def project_name(context: Path) -> str:
    """The context directory's name as a repository path component: Docker takes only
    lowercase letters, digits and `._-` inside, and a letter or digit at each end."""
    name = _NOT_IN_A_NAME.sub("-", context.resolve().name.lower()).strip("._-")
    return name or "project"


def load_name(template: str, *, project: str, target: str) -> str:
    """The `--load-tag` template with `{project}` and `{target}` filled in."""
    unknown = sorted(set(_FIELDS.findall(template)) - {"project", "target"})
    if unknown:
        raise UsageError(
            f"--load-tag {template}: unknown field {{{unknown[0]}}}; use {{project}} and {{target}}"
        )
    target = _NOT_IN_A_NAME.sub("-", target.lower()).strip("._-") or "stage"
    return template.replace("{project}", project).replace("{target}", target)


def parse_output(text: str) -> Output:
    """`STAGE:PATH=DIR`; PATH is absolute in the image, as Docker's paths are."""
    stage, colon, rest = text.partition(":")
    path, equals, dest = rest.partition("=")
    if not (colon and equals and stage and path and dest):
        raise UsageError(
            f"--output {text}: expected STAGE:PATH=DIR, e.g. --output app:/app/dist=./dist"
        )
    if not PurePosixPath(path).is_absolute():
        raise UsageError(f"--output {text}: the path in the image must be absolute, e.g. /{path}")
    return Output(stage=stage, path=path, dest=Path(dest))
