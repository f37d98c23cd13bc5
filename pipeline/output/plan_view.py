"""The plan shown two ways: a table for people, and `plan --json` (docs/plan-json.md)."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from pipeline.cache.explain import always_built

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipeline.cache.plan import Plan
    from pipeline.dockerfile.stages import Stage
    from pipeline.engines.dagger_rules import Finding
    from pipeline.oci.reference import Reference, Repository
    from pipeline.settings.resolve import Settings

__all__ = ["dumps", "plan_json", "plan_table"]


def plan_json(plan: Plan, settings: Settings, refusals: Sequence[Finding] = ()) -> dict[str, Any]:
    """`refusals` are what the Dagger engine would refuse: warnings here, `build` stops.

    Names alone are ambiguous when two stages share one (the later wins in BuildKit, but both
    are listed), so every list of stages has an index-based twin (`*_index`, `*_indices`).
    """
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
                "base_stage_index": stage.base_stage,
                "platform": stage.platform,
                "depends_on": [names[i] for i in stage.depends_on],
                "depends_on_indices": list(stage.depends_on),
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
                "always_built": _always_built(plan, stage.index, names),
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
        "target_indices": [stage.index for stage in graph.targets],
        "platform": None if settings.platform is None else str(settings.platform),
        "ci": settings.ci.to_json(),
        "cache_repo": _text(plan.cache_repo),
        "stages": stages,
        "waves": [[names[i] for i in wave] for wave in graph.waves],
        "wave_indices": [list(wave) for wave in graph.waves],
        "warnings": warnings,
    }


def _always_built(plan: Plan, index: int, names: dict[int, str]) -> str | None:
    forecast = plan.forecasts.get(index)
    if forecast is None or forecast.volatile is None:
        return None
    return always_built(forecast.volatile, index, names)


def dumps(document: dict[str, Any]) -> str:
    """Readable JSON; text that is not valid Unicode (bytes from argv) stays valid JSON escaped."""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(document, indent=2)
    return text


def _labels(stages: Sequence[Stage]) -> dict[int, str]:
    """Each stage's name, as `name (index)` where stages share it, so a reader can tell which."""
    counts = Counter(stage.name for stage in stages)
    return {
        stage.index: stage.name if counts[stage.name] == 1 else f"{stage.name} ({stage.index})"
        for stage in stages
    }


def plan_table(plan: Plan) -> str:
    graph = plan.graph
    names = _labels(graph.stages)
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
                _base(stage, names),
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
    targets = ", ".join(names[stage.index] for stage in graph.targets)
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
    volatile = [
        f"  {names[index]}: {reason}"
        for index in sorted(plan.forecasts)
        if (reason := _always_built(plan, index, names)) is not None
    ]
    return "\n".join(
        [
            *lines,
            "",
            summary,
            *waves,
            cache,
            *(["why missed:", *why] if why else []),
            *(["always built (content known only once fetched):", *volatile] if volatile else []),
        ]
    )


def _base(stage: Stage, names: dict[int, str]) -> str:
    base = stage.base if stage.base_stage is None else names[stage.base_stage]
    return base if stage.platform is None else f"{base} ({stage.platform})"


def _text(value: Reference | Repository | None) -> str | None:
    return None if value is None else str(value)
