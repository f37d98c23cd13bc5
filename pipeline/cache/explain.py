"""Why did a stage miss? Its key inputs, kept on its cache image, compared with today's.

Every cache image carries a label with the inputs of its key (docs/cache-keys.md): names, values
of build args, digests and file hashes, never a secret's value. On a miss, the image under the
stage's hint tag (the last one built on this branch, else on the default branch) is read back
and compared, input by input, which names what changed:

    app: COPY src/ changed: 3 files (src/a.php, src/b.php, src/c.php)
    deps: build arg PHP_VERSION 7.3 → 8.3
    base: base php:8.3-apache moved to sha256:…

A volatile stage (`keys.Volatile`) has nothing to compare: it is always built, and
`always_built` says why.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pipeline.cache.context import BuildContext
    from pipeline.cache.keys import StageKey, Volatile

__all__ = ["LABEL", "always_built", "explain", "key_label"]

LABEL = "dev.dagger-stages.key-inputs"
MAX_FILES = 300
SHOWN = 3


def key_label(key: StageKey, context: BuildContext) -> str:
    """The label value: the key, its inputs, and short hashes of the files each input selects."""
    files: dict[str, dict[str, str]] = {}
    for entry in key.inputs.get("context", []):
        sources = [entry["bind"]] if "bind" in entry else entry["sources"]
        selected = context.select(
            sources, excludes=entry.get("excludes", ()), parents=entry.get("parents", False)
        )
        if len(selected) <= MAX_FILES:
            files[str(entry["at"])] = {
                e.path: e.digest.removeprefix("sha256:")[:16] for e in selected if e.kind != "dir"
            }
    document = {"key": key.key, "inputs": key.inputs, "files": files}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def always_built(volatile: Volatile, index: int, names: Mapping[int, str]) -> str:
    """Why stage `index` is built whatever the cache holds; `names` maps indices to names."""
    if volatile.stage == index:
        return f"line {volatile.line}: ADD {volatile.source} {volatile.reason}"
    return (
        f"built on {names[volatile.stage]}, whose ADD {volatile.source} (line {volatile.line})"
        f" {volatile.reason}"
    )


def explain(
    key: StageKey, label: str | None, names: Mapping[str, str], context: BuildContext
) -> list[str]:
    """What differs from the image whose label this is; `names` maps stage keys to stage names."""
    if not label:
        return ["no earlier build of this stage to compare with"]
    try:
        before = json.loads(label)
        old: dict[str, Any] = before["inputs"]
    except (ValueError, KeyError, TypeError):
        return ["the earlier build's label cannot be read"]
    new = key.inputs
    if old.get("version") != new.get("version"):
        return ["the key format changed"]
    reasons: list[str] = []
    if old.get("platform") != new.get("platform"):
        reasons.append(f"platform {old.get('platform')} → {new.get('platform')}")
    reasons += _base(old.get("base", {}), new.get("base", {}), names)
    reasons += _values("build arg", _args(old), _args(new))
    reasons += _instructions(old.get("instructions", []), new.get("instructions", []))
    reasons += _references(old, new, names)
    reasons += _context(old, new, before.get("files", {}), context)
    for field, label_text in (("urls", "ADD url"), ("secrets", "secret ids"), ("ssh", "ssh ids")):
        if old.get(field) != new.get(field):
            reasons.append(f"{label_text} {old.get(field)} → {new.get(field)}")
    return reasons or ["inputs look the same; the key format or an unlisted input changed"]


def _args(inputs: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(inputs.get("from_args", {}))
    values.update(dict(inputs.get("args", [])))
    return values


def _values(what: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [
        f"{what} {name} {old.get(name)} → {new.get(name)}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]


def _base(old: Mapping[str, Any], new: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    if old == new:
        return []
    if "stage" in new:
        return [f"base stage {names.get(new['stage'], '?')} changed"]
    if old.get("ref") != new.get("ref"):
        return [f"base {old.get('ref', 'stage')} → {new.get('ref')}"]
    digest = new.get("digest") or "an unknown digest (unpinned)"
    return [f"base {new.get('ref')} moved to {digest}"]


def _instructions(old: list[str], new: list[str]) -> list[str]:
    if old == new:
        return []
    for position, (before, after) in enumerate(zip(old, new, strict=False)):
        if before != after:
            return [f"instruction {position + 2} changed: `{_short(before)}` → `{_short(after)}`"]
    if len(new) > len(old):
        return [f"instruction added: `{_short(new[len(old)])}`"]
    return [f"instruction removed: `{_short(old[len(new)])}`"]


def _references(
    old: Mapping[str, Any], new: Mapping[str, Any], names: Mapping[str, str]
) -> list[str]:
    reasons = []
    for ref, key in new.get("stages", {}).items():
        if old.get("stages", {}).get(ref) != key:
            reasons.append(f"--from={ref}: stage {names.get(key, ref)} changed")
    for ref, image in new.get("images", {}).items():
        if old.get("images", {}).get(ref) != image:
            reasons.append(f"--from={ref}: image moved to {image.get('digest') or 'unpinned'}")
    return reasons


def _context(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    old_files: Mapping[str, Mapping[str, str]],
    context: BuildContext,
) -> list[str]:
    before = {_where(entry): entry for entry in old.get("context", [])}
    reasons = []
    for entry in new.get("context", []):
        previous = before.get(_where(entry))
        if previous is not None and previous["digest"] == entry["digest"]:
            continue
        if "bind" in entry:
            what = f"--mount bind {entry['bind'] or '.'}"
        else:
            what = "COPY " + " ".join(entry["sources"])
        known = old_files.get(str(previous["at"])) if previous else None
        files = _changed_files(known, entry, context)
        reasons.append(f"{what} changed" + (f": {files}" if files else ""))
    return reasons


def _where(entry: Mapping[str, Any]) -> str:
    if "bind" in entry:
        return f"bind:{entry['bind']}"
    return "copy:" + "\0".join(entry["sources"])


def _changed_files(
    old: Mapping[str, str] | None, entry: Mapping[str, Any], context: BuildContext
) -> str:
    if old is None:
        return ""
    sources = [entry["bind"]] if "bind" in entry else entry["sources"]
    now = {
        e.path: e.digest.removeprefix("sha256:")[:16]
        for e in context.select(
            sources, excludes=entry.get("excludes", ()), parents=entry.get("parents", False)
        )
        if e.kind != "dir"
    }
    changed = sorted(path for path in set(old) | set(now) if old.get(path) != now.get(path))
    if not changed:
        return "file modes or links"
    shown = ", ".join(changed[:SHOWN]) + (", …" if len(changed) > SHOWN else "")
    return f"{len(changed)} file{'s' if len(changed) != 1 else ''} ({shown})"


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "…"
