"""The plan shown two ways: a table for people, and `plan --json` (docs/plan-json.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipeline.cache.plan import Plan
    from pipeline.engines.dagger_rules import Finding
    from pipeline.oci.reference import Reference, Repository
    from pipeline.settings.resolve import Settings

__all__ = ["dumps", "plan_json", "plan_table"]


def plan_json(plan: Plan, settings: Settings, refusals: Sequence[Finding] = ()) -> dict[str, Any]:
    """`refusals` are what the Dagger engine would refuse: warnings here, `build` stops."""
    graph = plan.graph
    names = {stage.index: stage.name for stage in graph.stages}
    stages = []
    for stage in graph.stages:
        key = plan.keys.get(stage.index)
        forecast = plan.forecasts.get(stage.index)
        stages.append(
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
                "key": None if key is None else key.key,
                "cache_ref": _text(plan.refs.get(stage.index)),
                "cache": None if forecast is None else forecast.cache,
                "action": None if forecast is None else forecast.action,
                "unpinned": [] if key is None else list(key.unpinned),
                "hint": _text(plan.hints.get(stage.index)),
                "why": list(plan.why.get(stage.index, ())),
            }
        )
    warnings = [{"line": w.line, "message": w.message} for w in graph.dockerfile.warnings]
    warnings += [
        {"line": f.line, "message": f"the Dagger engine would refuse this build: {f.message}"}
        for f in refusals
    ]
    warnings += [{"line": None, "message": message} for message in plan.warnings]
    return {
        "dockerfile": settings.dockerfile,
        "context": settings.context,
        "targets": [stage.name for stage in graph.targets],
        "platform": None if settings.platform is None else str(settings.platform),
        "ci": settings.ci.to_json(),
        "cache_repo": _text(plan.cache_repo),
        "stages": stages,
        "waves": [[names[i] for i in wave] for wave in graph.waves],
        "warnings": warnings,
    }


def dumps(document: dict[str, Any]) -> str:
    """Readable JSON; text that is not valid Unicode (bytes from argv) stays valid JSON escaped."""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(document, indent=2)
    return text


def plan_table(plan: Plan) -> str:
    graph = plan.graph
    names = {stage.index: stage.name for stage in graph.stages}
    header = ("STAGE", "INDEX", "BASE", "DEPENDS ON", "WAVE", "KEY", "CACHE", "ACTION")
    rows = []
    for stage in graph.stages:
        key = plan.keys.get(stage.index)
        forecast = plan.forecasts.get(stage.index)
        wave = graph.wave_of(stage.index)
        rows.append(
            (
                stage.name,
                str(stage.index),
                stage.base if stage.platform is None else f"{stage.base} ({stage.platform})",
                ", ".join(names[i] for i in stage.depends_on) or "-",
                "-" if wave is None else str(wave),
                "-" if key is None else key.key[:12],
                "-" if forecast is None or forecast.cache is None else forecast.cache,
                "not needed" if forecast is None else forecast.action,
            )
        )
    widths = [max(len(row[c]) for row in (header, *rows)) for c in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    targets = ", ".join(stage.name for stage in graph.targets)
    counts = ", ".join(
        f"{len(plan.indices(action))} to {action}" for action in ("build", "restore", "skip")
    )
    summary = (
        f"{len(graph.needed)} of {len(graph.stages)} stages needed for {targets}, "
        f"in {len(graph.waves)} waves: {counts}"
    )
    waves = [
        f"  wave {n}: {', '.join(names[i] for i in wave)}" for n, wave in enumerate(graph.waves)
    ]
    cache = f"cache repo: {_text(plan.cache_repo) or 'none (keys only)'}"
    why = [
        f"  {names[index]}: {reason}" for index, reasons in plan.why.items() for reason in reasons
    ]
    return "\n".join([*lines, "", summary, *waves, cache, *(["why missed:", *why] if why else [])])


def _text(value: Reference | Repository | None) -> str | None:
    return None if value is None else str(value)
