"""The plan shown two ways: a table for people, and `plan --json` (docs/plan-json.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.graph import Graph
    from pipeline.settings import Settings

__all__ = ["dumps", "plan_json", "plan_table"]


def plan_json(graph: Graph, settings: Settings) -> dict[str, Any]:
    names = {stage.index: stage.name for stage in graph.stages}
    return {
        "dockerfile": settings.dockerfile,
        "context": settings.context,
        "targets": [stage.name for stage in graph.targets],
        "platform": None if settings.platform is None else str(settings.platform),
        "ci": settings.ci.to_json(),
        "cache_repo": settings.cache_repo,
        "stages": [
            {
                "name": stage.name,
                "index": stage.index,
                "line": stage.line,
                "base": stage.base,
                "base_stage": None if stage.base_stage is None else names[stage.base_stage],
                "platform": stage.platform,
                "depends_on": [names[i] for i in stage.depends_on],
                "images": list(stage.images),
                "needed": stage.index in graph.needed,
                "wave": graph.wave_of(stage.index),
            }
            for stage in graph.stages
        ],
        "waves": [[names[i] for i in wave] for wave in graph.waves],
        "warnings": [{"line": w.line, "message": w.message} for w in graph.dockerfile.warnings],
    }


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def plan_table(graph: Graph, settings: Settings) -> str:
    names = {stage.index: stage.name for stage in graph.stages}
    header = ("STAGE", "INDEX", "BASE", "DEPENDS ON", "NEEDED", "WAVE")
    rows = [
        (
            stage.name,
            str(stage.index),
            stage.base if stage.platform is None else f"{stage.base} ({stage.platform})",
            ", ".join(names[i] for i in stage.depends_on) or "-",
            "yes" if stage.index in graph.needed else "no",
            "-" if (wave := graph.wave_of(stage.index)) is None else str(wave),
        )
        for stage in graph.stages
    ]
    widths = [max(len(row[c]) for row in (header, *rows)) for c in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    targets = ", ".join(stage.name for stage in graph.targets)
    summary = (
        f"{len(graph.needed)} of {len(graph.stages)} stages needed for {targets}, "
        f"in {len(graph.waves)} waves"
    )
    waves = [
        f"  wave {n}: {', '.join(names[i] for i in wave)}" for n, wave in enumerate(graph.waves)
    ]
    cache = f"cache repo: {settings.cache_repo or 'none'}"
    return "\n".join([*lines, "", summary, *waves, cache])
