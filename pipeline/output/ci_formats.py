"""What a run leaves for a CI system: diagrams, a step summary, log markers, dotenv and JUnit.

Pure serialisers over the same `StageResult`s and `Plan` the terminal reporters and
`output.report` read: each returns text and does no I/O; the caller writes it where it belongs
(`$GITHUB_STEP_SUMMARY`, a GitLab `artifacts:reports` file, stdout).

- `mermaid_graph`: the stage graph as a Mermaid `flowchart TD`, coloured by forecast (backs
  `plan --format mermaid`). Node ids are generated (`s<index>`, `x<n>` for external images);
  names only ever appear in quoted, entity-escaped labels, so any stage name is safe.
- `mermaid_gantt`: when each stage that was built, or failed, ran. Times are milliseconds from
  the start of the run (`dateFormat x`), and the axis shows whole seconds from the start
  (`axisFormat %s`, seconds since the epoch, which the timestamps start at): this needs no time
  zone, where `%M:%S` would shift by the viewer's offset. Restored (`cached`) stages are left
  out, since no work of theirs ran, and so are cancelled ones, whose end is not known; a run
  that built nothing yields a single "nothing was built" milestone.
- `github_summary`: Markdown for `$GITHUB_STEP_SUMMARY`, masked as a whole.
- `github_group_start`/`github_group_end`/`github_error`: workflow command lines, with `%`,
  CR and LF escaped in the message, and `:` and `,` too in properties.
- `gitlab_section_start`/`gitlab_section_end`: collapsible job-log sections; the section name is
  reduced to GitLab's `[A-Za-z0-9_.-]`.
- `dotenv`: `artifacts:reports:dotenv` for GitLab, within its limits (see `dotenv`).
- `junit_xml`: one testcase per needed stage; a cancelled stage is `<skipped>`, not an error:
  it did not fail on its own, and GitLab and the common GitHub reporters show skipped tests
  apart from failures, so only the stage that broke counts as failed.

Single-line helpers return the line without its newline; documents end with one.
"""

from __future__ import annotations

import html
import re
from dataclasses import replace
from typing import TYPE_CHECKING

from pipeline.engines.results import Status

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from pipeline.cache.plan import Plan
    from pipeline.dockerfile.stages import Stage
    from pipeline.engines.results import StageResult

    Mask = Callable[[str], str]  # hides secret values in text

__all__ = [
    "DOTENV_MAX_BYTES",
    "DOTENV_MAX_VARIABLES",
    "dotenv",
    "github_error",
    "github_group_end",
    "github_group_start",
    "github_summary",
    "github_warning",
    "gitlab_section_end",
    "gitlab_section_start",
    "junit_xml",
    "mermaid_gantt",
    "mermaid_graph",
]

# --- Mermaid flowchart -------------------------------------------------------------------------

_EDGE_WORDS = {"base": "FROM", "copy": "COPY", "mount": "mount"}
_EDGE_ORDER = ("base", "copy", "mount")
_ACTION_CLASS = {"restore": "cached", "build": "build", "skip": "skip"}
_CLASS_DEFS = (
    ("cached", "fill:#dcfce7,stroke:#16a34a,color:#14532d"),
    ("build", "fill:#dbeafe,stroke:#2563eb,color:#1e3a8a"),
    ("skip", "fill:#f3f4f6,stroke:#9ca3af,color:#6b7280"),
    ("unneeded", "fill:#ffffff,stroke:#d1d5db,color:#9ca3af,stroke-dasharray:4 3"),
    ("target", "stroke-width:3px,font-weight:bold"),
    ("external", "fill:#fafafa,stroke:#d4d4d8,color:#71717a,font-size:11px"),
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# What XML 1.0 cannot hold; the same control characters are noise in Markdown too. Spelled as
# the characters it matches, not as the negation of what XML allows, which takes 5-12 ms to
# compile: the class spans all of Unicode.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_LABEL_SAFE = re.compile(r"[A-Za-z0-9 _.\-/:@+=,*]")


def mermaid_graph(plan: Plan, *, images: bool = True, masker: Mask | None = None) -> str:
    """Every stage of the Dockerfile as a node, an edge from each stage to each that uses it.

    Classes: `cached`, `build` or `skip` from the forecast of a needed stage, `unneeded` for the
    rest, `target` on the targets as well. A `FROM` parent is a thick edge, `COPY --from` a plain
    one and a mount a dotted one, each labelled; several references merge into one edge. With
    `images`, external images a stage starts from or reads become small `external` nodes.
    `masker` hides secrets in names before they are escaped, where it could no longer see them.
    """
    mask = masker or _no_mask
    stages = plan.graph.stages
    lines = ["flowchart TD"]
    for stage in stages:
        lines.append(f'    s{stage.index}["{_mermaid_label(mask(stage.name))}"]')
    external: dict[str, str] = {}
    if images:
        for stage in stages:
            for image in _external_edges(stage):
                if image not in external:
                    external[image] = f"x{len(external)}"
        for image, node in external.items():
            lines.append(f'    {node}(["{_mermaid_label(mask(image))}"])')
    for stage in stages:
        kinds: dict[int, set[str]] = {}
        for edge in stage.edges:
            if edge.stage is not None:
                kinds.setdefault(edge.stage, set()).add(edge.kind)
        for parent in sorted(kinds):
            lines.append(_mermaid_edge(f"s{parent}", f"s{stage.index}", kinds[parent]))
        if images:
            for image, image_kinds in _external_edges(stage).items():
                label = _edge_label(image_kinds)
                lines.append(f"    {external[image]} -.->|{label}| s{stage.index}")
    lines.extend(f"    classDef {name} {style}" for name, style in _CLASS_DEFS)
    classes: dict[str, list[str]] = {name: [] for name, _ in _CLASS_DEFS}
    for stage in stages:
        forecast = plan.forecasts.get(stage.index)
        group = "unneeded" if forecast is None else _ACTION_CLASS[forecast.action]
        classes[group].append(f"s{stage.index}")
    classes["target"] = [f"s{target.index}" for target in plan.graph.targets]
    classes["external"] = list(external.values())
    for name, nodes in classes.items():
        if nodes:
            lines.append(f"    class {','.join(nodes)} {name}")
    return "\n".join(lines) + "\n"


def _printable(text: str) -> str:
    """Without terminal escape sequences and control characters other than tab and newlines."""
    return _NOT_XML.sub("", _ANSI.sub("", text))


def _no_mask(text: str) -> str:
    return text


def _mermaid_label(text: str) -> str:
    """Inside `["…"]`: anything but plain characters becomes an entity code, `#35;` style."""
    return "".join(c if _LABEL_SAFE.fullmatch(c) else f"#{ord(c)};" for c in text)


def _edge_label(kinds: Iterable[str]) -> str:
    present = set(kinds)
    return ", ".join(_EDGE_WORDS[kind] for kind in _EDGE_ORDER if kind in present)


def _mermaid_edge(source: str, target: str, kinds: set[str]) -> str:
    arrow = "==>" if "base" in kinds else "-->" if "copy" in kinds else "-.->"
    return f"    {source} {arrow}|{_edge_label(kinds)}| {target}"


def _external_edges(stage: Stage) -> dict[str, set[str]]:
    """External images a stage reads, in order of use; `scratch` is no image."""
    found: dict[str, set[str]] = {}
    if stage.base_stage is None and stage.base != "scratch":
        found[stage.base] = {"base"}
    for edge in stage.edges:
        if edge.stage is None and edge.kind != "base":
            found.setdefault(edge.ref, set()).add(edge.kind)
    return found


# --- Mermaid gantt -----------------------------------------------------------------------------

_GANTT_TAGS = {Status.BUILT: "done", Status.FAILED: "crit"}
# Lexer rules of Mermaid's gantt grammar that would swallow a task text starting with them.
_GANTT_KEYWORD = re.compile(
    r"(gantt|dateformat|inclusiveenddates|topaxis|axisformat|tickinterval|includes|excludes"
    r"|todaymarker|weekday|weekend|title|acctitle|accdescr|section|click|href|call|vert"
    r"|\d{4}-\d{2}-\d{2})",
    re.IGNORECASE,
)
_GANTT_UNSAFE = re.compile(r"[^A-Za-z0-9 _.\-()]")


def mermaid_gantt(results: Mapping[int, StageResult], *, start: float) -> str:
    """Each built (`done`) or failed (`crit`) stage from when it started to when it ended.

    `start` is the `time.monotonic()` of the start of the run, the clock `started` uses.
    Tasks are named by the results' keys: a stage has one per platform it is built for.
    """
    lines = [
        "gantt",
        "    title Stage builds, seconds from the start",
        "    dateFormat x",
        "    axisFormat %s",
        "    todayMarker off",
    ]
    ran = False
    for key in sorted(results):
        result = results[key]
        span = _span(result, start)
        if span is not None:
            ran = True
            tag = _GANTT_TAGS[result.status]
            task = f"{_gantt_text(result.name)} :{tag}, s{key}"
            lines.append(f"    {task}, {span[0]}, {span[1]}")
    if not ran:
        lines.append("    nothing was built :milestone, m0, 0, 0")
    return "\n".join(lines) + "\n"


def _span(result: StageResult, start: float) -> tuple[int, int] | None:
    """Milliseconds from `start` to when a built or failed stage began and ended; at least 1."""
    if result.status not in _GANTT_TAGS or result.started is None or result.seconds is None:
        return None
    begin = max(0, round((result.started - start) * 1000))
    return begin, begin + max(1, round(result.seconds * 1000))


def _timed(result: StageResult) -> bool:
    return _span(result, 0.0) is not None


def _gantt_text(name: str) -> str:
    text = _GANTT_UNSAFE.sub("_", name).strip() or "_"
    return f"stage {text}" if _GANTT_KEYWORD.match(text) else text


# --- GitHub ------------------------------------------------------------------------------------

_EMOJI = {
    Status.BUILT: "✅",
    Status.CACHED: "♻️",
    Status.SKIPPED: "⏭️",
    Status.FAILED: "❌",
    Status.CANCELLED: "🚫",
    Status.PENDING: "⏳",
    Status.RUNNING: "⏳",
}
_TALLY_WORDS = {Status.CACHED: "restored from cache"}
_TAIL_CHARS = 20_000


def github_summary(
    results: Mapping[int, StageResult],
    plan: Plan,
    *,
    start: float,
    seconds: float,
    masker: Mask,
) -> str:
    """Outcome, a table of stages, each failure's log tail, then the graph and the timeline.

    Everything is masked twice: each text before it is escaped for Markdown or HTML (which
    would hide a secret from the masker), and the whole document at the end.
    """
    ordered = [_masked(r, masker) for r in _ordered(results)]
    ok = all(r.status.ok for r in ordered)
    outcome = "✅ dagger-stages: build succeeded" if ok else "❌ dagger-stages: build failed"
    statuses = [r.status for r in ordered]
    tally = ", ".join(
        f"{statuses.count(status)} {_TALLY_WORDS.get(status, status)}"
        for status in _EMOJI
        if status in statuses
    )
    targets = ", ".join(_code(masker(t.name)) for t in plan.graph.targets)
    lines = [
        f"## {outcome} in {seconds:.1f}s",
        "",
        f"Targets: {targets}. Stages: {tally or 'none'}.",
        "",
        "| Stage | Status | Time | Cache ref | Details |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in ordered:
        time_cell = "—" if r.seconds is None else f"{r.seconds:.1f}s"
        ref = "—" if r.cache_ref is None else _code(r.cache_ref)
        cells = [_code(r.name), f"{_EMOJI[r.status]} {r.status}", time_cell, ref, _details(r)]
        lines.append("| " + " | ".join(cells) + " |")
    for r in ordered:
        if r.status is Status.FAILED:
            lines.extend(["", *_failure_block(r)])
    graph = mermaid_graph(plan, masker=masker).rstrip("\n")
    lines.extend(["", "### Stage graph", "", "```mermaid", graph, "```"])
    lines.extend(["", "### Timeline", ""])
    if any(_timed(r) for r in ordered):
        gantt = mermaid_gantt(dict(zip(sorted(results), ordered, strict=True)), start=start)
        gantt = gantt.rstrip("\n")
        lines.extend(["```mermaid", gantt, "```"])
    else:
        lines.append("Nothing was built: every needed stage came from the cache.")
    return masker("\n".join(lines) + "\n")


def _masked(result: StageResult, masker: Mask) -> StageResult:
    return replace(
        result,
        name=masker(result.name),
        cache_ref=None if result.cache_ref is None else masker(result.cache_ref),
        error=None if result.error is None else masker(_printable(masker(result.error))),
        tail=masker(_printable(masker(result.tail))),
    )


def _details(result: StageResult) -> str:
    if result.status is Status.CACHED:
        return "restored"
    if result.status is Status.BUILT:
        return "cache pushed" if result.digest else "cache not pushed"
    if result.status is Status.SKIPPED:
        return "needed only by restored stages"
    if result.status in (Status.FAILED, Status.CANCELLED) and result.error:
        return _cell(result.error)
    return ""


def _failure_block(result: StageResult) -> list[str]:
    error = f": {html.escape(_one_line(result.error))}" if result.error else ""
    summary = f"❌ <code>{html.escape(result.name)}</code> failed{error}"
    tail = result.tail.rstrip("\n")
    if len(tail) > _TAIL_CHARS:
        tail = tail[-_TAIL_CHARS:].partition("\n")[2]
    fence = "`" * max(3, _longest_run(tail, "`") + 1)
    return [
        "<details>",
        f"<summary>{summary}</summary>",
        "",
        f"{fence}text",
        tail or "(no log output)",
        fence,
        "",
        "</details>",
    ]


def _longest_run(text: str, char: str) -> int:
    runs = re.findall(f"{re.escape(char)}+", text)
    return max((len(run) for run in runs), default=0)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    """Table cell text: one line, pipes escaped, HTML-looking text shown as typed."""
    return html.escape(_one_line(text), quote=False).replace("|", "\\|")


def _code(text: str) -> str:
    """A code span that holds any text, even backticks; pipes escaped for GFM tables."""
    text = _one_line(text).replace("|", "\\|")
    fence = "`" * (_longest_run(text, "`") + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _command_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _command_property(text: str) -> str:
    return _command_data(text).replace(":", "%3A").replace(",", "%2C")


def github_group_start(name: str) -> str:
    """`::group::<name>`: the log lines after it fold under `name` until `::endgroup::`."""
    return f"::group::{_command_data(name)}"


def github_group_end() -> str:
    return "::endgroup::"


def github_error(message: str, *, title: str | None = None, masker: Mask | None = None) -> str:
    """`::error::<message>`, an annotation on the run; masked before it is escaped."""
    return _github_annotation("error", message, title, masker)


def github_warning(message: str, *, title: str | None = None, masker: Mask | None = None) -> str:
    """`::warning::<message>`: shown on the run's page, though the run passes."""
    return _github_annotation("warning", message, title, masker)


def _github_annotation(kind: str, message: str, title: str | None, masker: Mask | None) -> str:
    if masker is not None:
        message = masker(message)
        title = None if title is None else masker(title)
    properties = "" if title is None else f" title={_command_property(title)}"
    return f"::{kind}{properties}::{_command_data(message)}"


# --- GitLab ------------------------------------------------------------------------------------

_SECTION_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _section_name(name: str) -> str:
    return _SECTION_UNSAFE.sub("_", name) or "_"


def _section_time(now: int) -> int:
    if now < 0:
        raise ValueError(f"section timestamp must be a Unix time, got {now}")
    return now


def gitlab_section_start(name: str, header: str, *, collapsed: bool = True, now: int) -> str:
    """Opens a collapsible job-log section; `now` is the Unix time in seconds."""
    options = "[collapsed=true]" if collapsed else ""
    header = header.replace("\r", " ").replace("\n", " ")
    return (
        f"\x1b[0Ksection_start:{_section_time(now)}:{_section_name(name)}{options}\r\x1b[0K{header}"
    )


def gitlab_section_end(name: str, *, now: int) -> str:
    return f"\x1b[0Ksection_end:{_section_time(now)}:{_section_name(name)}\r\x1b[0K"


DOTENV_MAX_VARIABLES = 20
DOTENV_MAX_BYTES = 5 * 1024 - 1
_DOTENV_PREFIX = "DAGGER_STAGES_"
_DOTENV_UNSAFE = re.compile(r"[^A-Z0-9]")
_DOTENV_NAME_CHARS = 200


def dotenv(
    published: Mapping[str, str],
    results: Mapping[int, StageResult],
    *,
    max_variables: int = DOTENV_MAX_VARIABLES,
    max_bytes: int = DOTENV_MAX_BYTES,
) -> str:
    """`KEY=value` lines for GitLab's `artifacts:reports:dotenv`.

    In this order:
    - `DAGGER_STAGES_PUBLISHED_<N>=<repo:tag>@<digest>`, N from 1 in the order of `published`
      (ref → digest): one variable each, pullable as it is and pinned;
    - for each stage built or restored, in index order, `DAGGER_STAGES_<STAGE>_REF` (its cache
      ref) and `DAGGER_STAGES_<STAGE>_DIGEST`, whichever it has. `<STAGE>` is the name
      upper-cased with anything but `A-Z0-9` turned into `_`; a name that would repeat one
      already used gets `_<index>` appended.

    GitLab's rules: a line per variable, no blank line or comment, values on one line and used
    as written (quotes are kept, whitespace around them stripped), names of ASCII letters,
    digits and `_` up to 255 characters, fewer than 5 KiB in all, and at most 20 variables on
    the smallest plans (50 to 150 elsewhere: raise `max_variables` to match). What does not fit
    is left out whole (a stage's pair together), and the last line is then
    `DAGGER_STAGES_OMITTED=<how many variables were left out>`. A value with a line break or
    surrounding whitespace raises ValueError: refs and digests never have one.
    """
    groups: list[list[tuple[str, str]]] = []
    for number, (ref, digest) in enumerate(published.items(), start=1):
        value = f"{ref}@{digest}" if digest else ref
        groups.append([(f"{_DOTENV_PREFIX}PUBLISHED_{number}", value)])
    used: set[str] = set()
    for result in _ordered(results):
        if not result.status.has_image:
            continue
        present: list[tuple[str, str]] = []
        for suffix, found in (("REF", result.cache_ref), ("DIGEST", result.digest)):
            if found:
                present.append((suffix, found))
        if present:
            name = _dotenv_stage(result, used)
            groups.append([(f"{_DOTENV_PREFIX}{name}_{suffix}", v) for suffix, v in present])
    lines: list[str] = []
    size = 0
    total = sum(len(group) for group in groups)
    for group in groups:
        rendered = [_dotenv_line(key, value) for key, value in group]
        added = sum(len(line.encode()) + 1 for line in rendered)
        rest = total - len(lines) - len(rendered)
        reserve = len(_omitted_line(rest).encode()) + 1 if rest else 0
        too_many = len(lines) + len(rendered) + (1 if rest else 0) > max_variables
        if too_many or size + added + reserve > max_bytes:
            lines.append(_omitted_line(total - len(lines)))
            break
        lines.extend(rendered)
        size += added
    return "".join(line + "\n" for line in lines)


def _omitted_line(count: int) -> str:
    return f"{_DOTENV_PREFIX}OMITTED={count}"


def _dotenv_stage(result: StageResult, used: set[str]) -> str:
    base = _DOTENV_UNSAFE.sub("_", result.name.upper())[:_DOTENV_NAME_CHARS] or "_"
    name = base
    extra = 0
    while name in used:
        name = f"{base}_{result.index}" + ("_" * extra)
        extra += 1
    used.add(name)
    return name


def _dotenv_line(key: str, value: str) -> str:
    if "\n" in value or "\r" in value or value != value.strip():
        raise ValueError(f"{key}: a dotenv value must be one line without surrounding spaces")
    return f"{key}={value}"


# --- JUnit -------------------------------------------------------------------------------------


def junit_xml(
    results: Mapping[int, StageResult],
    *,
    suite: str = "dagger-stages",
    masker: Mask,
    seconds: float | None = None,
) -> str:
    """One `<testcase>` per needed stage, in index order.

    `failed` carries `<failure>` with the masked log tail; `cancelled` (and a stage that never
    finished) is `<skipped>` with the reason; `built`, `cached` and `skipped` pass, with a
    `<system-out>` line saying what happened. The suite's `time` is `seconds`, the run's wall
    time, when given, else the sum of the stages' times.

    ElementTree is imported here: only a run that writes JUnit needs it.
    """
    import xml.etree.ElementTree as ET

    ordered = _ordered(results)
    failures = sum(1 for r in ordered if r.status is Status.FAILED)
    skipped = sum(1 for r in ordered if not r.status.ok and r.status is not Status.FAILED)
    total = sum(r.seconds or 0.0 for r in ordered) if seconds is None else seconds
    counts = {
        "tests": str(len(ordered)),
        "failures": str(failures),
        "errors": "0",
        "skipped": str(skipped),
        "time": f"{total:.3f}",
    }

    def clean(text: str) -> str:
        """Masked, without terminal escapes or what XML 1.0 cannot hold, masked again."""
        return masker(_printable(masker(text)))

    root = ET.Element("testsuites", {"name": clean(suite), **counts})
    testsuite = ET.SubElement(root, "testsuite", {"name": clean(suite), **counts})
    for r in ordered:
        case = ET.SubElement(
            testsuite,
            "testcase",
            {"classname": clean(suite), "name": clean(r.name), "time": f"{r.seconds or 0.0:.3f}"},
        )
        if r.status is Status.FAILED:
            again = f"; reproduce locally: {r.reproduce}" if r.reproduce else ""
            message = clean(_one_line(r.error or "failed") + again)
            failure = ET.SubElement(case, "failure", {"message": message, "type": "failed"})
            failure.text = clean(r.tail) or message
        elif r.status.ok:
            ET.SubElement(case, "system-out").text = clean(_junit_note(r))
        else:
            reason = r.error or "did not finish"
            message = clean(_one_line(f"{r.status}: {reason}"))
            ET.SubElement(case, "skipped", {"message": message})
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def _junit_note(result: StageResult) -> str:
    if result.status.has_image:
        return result.describe()
    return "skipped: only stages restored from the cache need it"


def _ordered(results: Mapping[int, StageResult]) -> list[StageResult]:
    return [results[index] for index in sorted(results)]
