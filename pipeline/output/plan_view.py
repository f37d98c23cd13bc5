"""The plan shown two ways: a table for people, and `plan --json` (docs/plan-json.md).

With several target platforms, a row is a stage and the platforms it serves: one, or all of
them for a stage they share (`cache.multi`), which is planned once.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from pipeline.cache.explain import always_built

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipeline.cache.multi import MultiPlan, PlatformPlan
    from pipeline.cache.plan import Plan
    from pipeline.dockerfile.stages import Stage
    from pipeline.engines.dagger_rules import Finding
    from pipeline.oci.reference import Reference, Repository
    from pipeline.settings.resolve import Settings

__all__ = ["dumps", "plan_json", "plan_table"]


def plan_json(
    plans: MultiPlan,
    settings: Settings,
    refusals: Sequence[Finding] = (),
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """`refusals` are what the Dagger engine would refuse: warnings here, `build` stops.
    `notes` are other warnings of no line, such as a missing emulator.

    Names alone are ambiguous when two stages share one (the later wins in BuildKit, but both
    are listed), so every list of stages has an index-based twin (`*_index`, `*_indices`).
    With several platforms, `stages[]` holds a stage once per platform that plans it: a
    stage is told apart by `index` and `target_platform`.
    """
    plan = plans.first
    graph = plan.graph
    names = {stage.index: stage.name for stage in graph.stages}
    stages = []
    for stage in graph.stages:
        for position, item in enumerate(plans.plans):
            if stage.index in item.shared or (position and stage.index not in item.plan.forecasts):
                continue
            stages.append(_stage_json(plans, position, stage, names))
    warnings = [{"line": w.line, "message": w.message} for w in graph.dockerfile.warnings]
    warnings += [
        {"line": f.line, "message": f"the Dagger engine would refuse this build: {f.message}"}
        for f in refusals
    ]
    messages = dict.fromkeys(m for item in plans.plans for m in item.plan.warnings)
    warnings += [{"line": None, "message": message} for message in [*messages, *notes]]
    return {
        "dockerfile": settings.dockerfile,
        "context": settings.context,
        "targets": [stage.name for stage in graph.targets],
        "target_indices": [stage.index for stage in graph.targets],
        "platform": None if settings.platform is None else str(settings.platform),
        "platforms": [str(item.platform) for item in plans.plans],
        "ci": settings.ci.to_json(),
        "cache_repo": _text(plan.cache_repo),
        "stages": stages,
        "waves": [[names[i] for i in wave] for wave in graph.waves],
        "wave_indices": [list(wave) for wave in graph.waves],
        "warnings": warnings,
    }


def _stage_json(
    plans: MultiPlan, position: int, stage: Stage, names: dict[int, str]
) -> dict[str, Any]:
    item = plans.plans[position]
    plan = item.plan
    graph = plan.graph
    key = plan.keys.get(stage.index)
    forecast = plan.forecasts.get(stage.index)
    needed = stage.index in graph.needed
    return {
        "name": stage.name,
        "index": stage.index,
        "line": stage.line,
        "base": stage.base,
        "base_stage": None if stage.base_stage is None else names[stage.base_stage],
        "base_stage_index": stage.base_stage,
        "platform": stage.platform,
        "target_platform": str(item.platform),
        "target_platforms": [str(p) for p in plans.serves(position, stage.index)] if needed else [],
        "depends_on": [names[i] for i in stage.depends_on],
        "depends_on_indices": list(stage.depends_on),
        "images": list(stage.images),
        "needed": needed,
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


def plan_table(plans: MultiPlan) -> str:
    """A row per needed stage and platform (a PLATFORM column with several), unneeded last."""
    plan = plans.first
    graph = plan.graph
    names = _labels(graph.stages)
    header: tuple[str, ...] = ("STAGE", "INDEX", "BASE", "DEPENDS ON", "WAVE", "KEY", "CACHE")
    header += ("ACTION",)
    rows = []
    for stage in graph.stages:
        for position, item in enumerate(plans.plans):
            if stage.index in item.shared or (position and stage.index not in item.plan.forecasts):
                continue
            row = _row(item.plan, stage, names)
            if plans.several:
                shown = plans.shown(position, stage.index) if stage.index in graph.needed else "-"
                row = (row[0], shown, *row[1:])
            rows.append(row)
    if plans.several:
        header = (header[0], "PLATFORM", *header[1:])
    widths = [max(len(row[c]) for row in (header, *rows)) for c in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    targets = ", ".join(names[stage.index] for stage in graph.targets)
    counts = ", ".join(
        f"{sum(_owned(item, action) for item in plans.plans)} to {action}"
        for action in ("build", "restore", "skip")
    )
    summary = (
        f"{len(graph.needed)} of {len(graph.stages)} stages needed for {targets}, "
        f"in {len(graph.waves)} waves: {counts}"
    )
    if plans.several:
        platforms = ", ".join(str(item.platform) for item in plans.plans)
        shared = len(plans.plans[-1].shared)
        summary += (
            f"\nfor {len(plans.plans)} platforms ({platforms}); {shared} planned once for all"
        )
    waves = [
        f"  wave {n}: {', '.join(names[i] for i in wave)}" for n, wave in enumerate(graph.waves)
    ]
    cache = f"cache repo: {_text(plan.cache_repo) or 'none (keys only)'}"
    why = [
        f"  {_where(plans, position, index, names)}: {reason}"
        for position, item in enumerate(plans.plans)
        for index, reasons in item.plan.why.items()
        if index not in item.shared
        for reason in reasons
    ]
    volatile = [
        f"  {_where(plans, position, index, names)}: {reason}"
        for position, item in enumerate(plans.plans)
        for index in item.owned()
        if (reason := _always_built(item.plan, index, names)) is not None
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


def _row(plan: Plan, stage: Stage, names: dict[int, str]) -> tuple[str, ...]:
    graph = plan.graph
    key = plan.keys.get(stage.index)
    forecast = plan.forecasts.get(stage.index)
    wave = graph.wave_of(stage.index)
    return (
        stage.name,
        str(stage.index),
        _base(stage, names),
        ", ".join(names[i] for i in stage.depends_on) or "-",
        "-" if wave is None else str(wave),
        "-" if key is None else key.key[:12],
        "-" if forecast is None or forecast.cache is None else forecast.cache,
        "not needed" if forecast is None else forecast.action,
    )


def _owned(item: PlatformPlan, action: str) -> int:
    return sum(1 for i in item.plan.indices(action) if i not in item.shared)


def _where(plans: MultiPlan, position: int, index: int, names: dict[int, str]) -> str:
    """A stage as reasons name it: with its platforms when there are several."""
    name = names[index]
    return f"{name} ({plans.shown(position, index)})" if plans.several else name


def _base(stage: Stage, names: dict[int, str]) -> str:
    base = stage.base if stage.base_stage is None else names[stage.base_stage]
    return base if stage.platform is None else f"{base} ({stage.platform})"


def _text(value: Reference | Repository | None) -> str | None:
    return None if value is None else str(value)
