"""CI serialisers: Mermaid diagrams, the GitHub step summary, log markers, dotenv and JUnit."""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import anyio
import pytest

from pipeline.cache.context import BuildContext
from pipeline.cache.forecast import decide
from pipeline.cache.ignore import IgnoreRules
from pipeline.cache.plan import Plan, make_plan
from pipeline.dockerfile.graph import select
from pipeline.dockerfile.parse import parse_text
from pipeline.dockerfile.platforms import Platform
from pipeline.dockerfile.stages import build_stages
from pipeline.engines.results import StageResult
from pipeline.oci.reference import Repository
from pipeline.output import ci_formats as ci_report
from pipeline.output.ci_formats import (
    DOTENV_MAX_BYTES,
    DOTENV_MAX_VARIABLES,
    dotenv,
    github_error,
    github_group_end,
    github_group_start,
    github_summary,
    github_warning,
    gitlab_section_end,
    gitlab_section_start,
    junit_xml,
    mermaid_gantt,
    mermaid_graph,
)
from pipeline.settings.secrets import Masker

SECRET = "hunter2-secret"
DIGEST = {n: "sha256:" + c * 64 for n, c in enumerate("abcdef")}

# 0 tools.v2 <-mount- 1 deps_base <-FROM- 2 (unnamed) <-COPY- 3 app-final -COPY,mount-> 1
# 4 unused is not needed for app-final.
DOCKERFILE = """\
FROM golang:1.22 AS tools.v2
FROM alpine:3.20 AS deps_base
RUN --mount=type=cache,from=tools.v2,target=/c true
FROM deps_base
COPY --from=busybox:1 /bin/sh /sh
FROM scratch AS app-final
COPY --from=2 /y /y
COPY --from=deps_base /z /z
RUN --mount=type=bind,from=deps_base,target=/m true
FROM busybox AS unused
"""

NODE = re.compile(r'^    ([sx]\d+)(?:\["|\(\[")(.*?)(?:"\]|"\]\))$')
EDGE = re.compile(r"^    ([sx]\d+) (==>|-->|-\.->)\|([^|]*)\| (s\d+)$")
CLASS = re.compile(r"^    class ((?:[sx]\d+,?)+) (\w+)$")
GITLAB_SECTION = re.compile(
    r"section_((?:start)|(?:end)):(\d+):([a-zA-Z0-9_.-]+)"
    r"(\[(?:\w+=\w+)(?:, ?(?:\w+=\w+))*\])?"
    r"\r\033\[0K"
)


def make(tmp_path: Path, *, hits: tuple[int, ...] = (1,)) -> Plan:
    """The plan offline, then forecast as if the registry held the stages in `hits`."""
    df = build_stages(parse_text(DOCKERFILE))
    plan = anyio.run(
        lambda: make_plan(
            select(df, ("app-final",)),
            cache_repo=Repository.parse("registry.test/x/cache"),
            build_args={},
            platform=Platform("linux", "amd64"),
            context=BuildContext(tmp_path, IgnoreRules.parse("")),
            client=None,
        )
    )
    forecasts = decide(plan.graph, dict.fromkeys(hits, "hit"), {i: DIGEST[i] for i in hits})
    return dataclasses.replace(plan, forecasts=forecasts)


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    return make(tmp_path)


def results() -> dict[int, StageResult]:
    """deps_base restored, tools.v2 skipped, stage 2 built, app-final failed, with a secret."""
    return {
        0: StageResult(0, "tools.v2", "skipped", "k0", "registry.test/x/cache:tools.v2-k0"),
        1: StageResult(
            1, "deps_base", "cached", "k1", "registry.test/x/cache:deps_base-k1", DIGEST[1]
        ),
        2: StageResult(
            2,
            "2",
            "built",
            "k2",
            "registry.test/x/cache:stage-2-k2",
            DIGEST[2],
            seconds=2.5,
            started=100.25,
        ),
        3: StageResult(
            3,
            "app-final",
            "failed",
            "k3",
            None,
            seconds=1.0,
            error=f"RUN echo {SECRET} | exit 1",
            tail=f"step 1\n```\n\x1b[31mtoken={SECRET}\x1b[0m\x00\n",
            started=101.0,
        ),
    }


Edge = tuple[str, str, str, str]


def parse_flowchart(text: str) -> tuple[dict[str, str], list[Edge], dict[str, set[str]]]:
    nodes: dict[str, str] = {}
    edges: list[Edge] = []
    classes: dict[str, set[str]] = {}
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    for line in lines[1:]:
        if node := NODE.match(line):
            nodes[node[1]] = node[2]
        elif edge := EDGE.match(line):
            edges.append((edge[1], edge[2], edge[3], edge[4]))
        elif klass := CLASS.match(line):
            for name in klass[1].split(","):
                classes.setdefault(name, set()).add(klass[2])
        else:
            assert line.startswith("    classDef "), line
    return nodes, edges, classes


# --- flowchart ---------------------------------------------------------------------------------


def test_flowchart_has_one_node_per_stage_and_one_edge_per_dependency(plan: Plan) -> None:
    nodes, edges, _ = parse_flowchart(mermaid_graph(plan, images=False))
    assert nodes == {
        "s0": "tools.v2",
        "s1": "deps_base",
        "s2": "2",
        "s3": "app-final",
        "s4": "unused",
    }
    between_stages = [(source, target) for source, _, _, target in edges]
    expected = [(f"s{d}", f"s{s.index}") for s in plan.graph.stages for d in s.depends_on]
    assert between_stages == expected
    assert len(between_stages) == len(set(between_stages)) == 4


def test_flowchart_edges_say_how_a_stage_is_used(plan: Plan) -> None:
    _, edges, _ = parse_flowchart(mermaid_graph(plan, images=False))
    assert edges == [
        ("s0", "-.->", "mount", "s1"),
        ("s1", "==>", "FROM", "s2"),
        ("s1", "-->", "COPY, mount", "s3"),
        ("s2", "-->", "COPY", "s3"),
    ]


def test_flowchart_classes_follow_the_forecast_and_mark_targets(plan: Plan) -> None:
    text = mermaid_graph(plan, images=False)
    _, _, classes = parse_flowchart(text)
    assert classes == {
        "s0": {"skip"},
        "s1": {"cached"},
        "s2": {"build"},
        "s3": {"build", "target"},
        "s4": {"unneeded"},
    }
    defined = set(re.findall(r"^    classDef (\w+) ", text, re.MULTILINE))
    assert defined >= {"skip", "cached", "build", "target", "unneeded"}


def test_flowchart_external_images_are_small_nodes(plan: Plan) -> None:
    nodes, edges, classes = parse_flowchart(mermaid_graph(plan))
    images = {node: label for node, label in nodes.items() if node.startswith("x")}
    assert images == {"x0": "golang:1.22", "x1": "alpine:3.20", "x2": "busybox:1", "x3": "busybox"}
    assert [e for e in edges if e[0].startswith("x")] == [
        ("x0", "-.->", "FROM", "s0"),
        ("x1", "-.->", "FROM", "s1"),
        ("x2", "-.->", "COPY", "s2"),
        ("x3", "-.->", "FROM", "s4"),
    ]
    assert all(classes[node] == {"external"} for node in images)
    assert "scratch" not in mermaid_graph(plan)


def test_flowchart_ids_and_labels_are_safe_for_any_stage_name(plan: Plan) -> None:
    names = ['a"b', "end", "x[y]{z}", "grüß", "a;b#c%%d", "<br>", "click", "8"]
    df = plan.graph.dockerfile
    stages = tuple(
        dataclasses.replace(stage, declared_name=names[stage.index]) for stage in df.stages
    )
    graph = dataclasses.replace(plan.graph, dockerfile=dataclasses.replace(df, stages=stages))
    text = mermaid_graph(dataclasses.replace(plan, graph=graph), images=False)
    nodes, edges, _ = parse_flowchart(text)
    assert list(nodes) == ["s0", "s1", "s2", "s3", "s4"]
    assert nodes == {
        "s0": "a#34;b",
        "s1": "end",
        "s2": "x#91;y#93;#123;z#125;",
        "s3": "gr#252;#223;",
        "s4": "a#59;b#35;c#37;#37;d",
    }
    assert len(edges) == 4
    for label in nodes.values():
        assert re.fullmatch(r"[A-Za-z0-9 _.\-/:@+=,*#;]*", label)


def test_flowchart_masks_names_before_escaping(plan: Plan) -> None:
    secret = 'to"ken'
    df = plan.graph.dockerfile
    stages = (dataclasses.replace(df.stages[0], declared_name=f"x-{secret}"), *df.stages[1:])
    graph = dataclasses.replace(plan.graph, dockerfile=dataclasses.replace(df, stages=stages))
    text = mermaid_graph(dataclasses.replace(plan, graph=graph), masker=Masker([secret]))
    assert 's0["x-***"]' in text
    assert "to#34;ken" not in text


# --- gantt -------------------------------------------------------------------------------------


def test_gantt_lists_built_and_failed_stages_relative_to_the_start() -> None:
    text = mermaid_gantt(results(), start=100.0)
    assert text == (
        "gantt\n"
        "    title Stage builds, seconds from the start\n"
        "    dateFormat x\n"
        "    axisFormat %s\n"
        "    todayMarker off\n"
        "    2 :done, s2, 250, 2750\n"
        "    app-final :crit, s3, 1000, 2000\n"
    )


def test_gantt_leaves_out_restored_cancelled_and_untimed_stages() -> None:
    found = {
        0: StageResult(0, "restored", "cached", "k", "r:t", DIGEST[0]),
        1: StageResult(1, "gone", "cancelled", "k", None, error="x failed", started=5.0),
        2: StageResult(2, "tiny", "built", "k", None, seconds=0.0001, started=4.0),
    }
    tasks = mermaid_gantt(found, start=5.0).splitlines()[5:]
    # started before `start` clamps to 0; a task is never shorter than a millisecond
    assert tasks == ["    tiny :done, s2, 0, 1"]


def test_gantt_with_nothing_built_is_a_milestone() -> None:
    text = mermaid_gantt({0: StageResult(0, "a", "cached", "k", "r:t", DIGEST[0])}, start=0.0)
    assert text.splitlines()[-1] == "    nothing was built :milestone, m0, 0, 0"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("section", "stage section"),
        ("title", "stage title"),
        ("gantt-tools", "stage gantt-tools"),
        ("topaxis", "stage topaxis"),
        ("a:b#c;d", "a_b_c_d"),
        ("8", "8"),
    ],
)
def test_gantt_task_text_cannot_be_read_as_a_keyword(name: str, text: str) -> None:
    found = {0: StageResult(0, name, "built", "k", None, seconds=1.0, started=0.0)}
    assert mermaid_gantt(found, start=0.0).splitlines()[-1] == f"    {text} :done, s0, 0, 1000"


# --- GitHub summary ----------------------------------------------------------------------------


def test_summary_heading_table_and_failure_tail(plan: Plan) -> None:
    text = github_summary(results(), plan, start=100.0, seconds=3.25, masker=Masker([SECRET]))
    lines = text.splitlines()
    assert lines[0] == "## ❌ dagger-stages: build failed in 3.2s"
    assert lines[2] == (
        "Targets: `app-final`. Stages: 1 built, 1 restored from cache, 1 skipped, 1 failed."
    )
    table = lines[lines.index("| Stage | Status | Time | Cache ref | Details |") :][:6]
    assert table == [
        "| Stage | Status | Time | Cache ref | Details |",
        "| --- | --- | --- | --- | --- |",
        "| `tools.v2` | ⏭️ skipped | — | `registry.test/x/cache:tools.v2-k0` "
        "| needed only by restored stages |",
        "| `deps_base` | ♻️ cached | — | `registry.test/x/cache:deps_base-k1` | restored |",
        "| `2` | ✅ built | 2.5s | `registry.test/x/cache:stage-2-k2` | cache pushed |",
        "| `app-final` | ❌ failed | 1.0s | — | RUN echo *** \\| exit 1 |",
    ]
    start = lines.index("<details>")
    assert lines[start : start + 10] == [
        "<details>",
        "<summary>❌ <code>app-final</code> failed: RUN echo *** | exit 1</summary>",
        "",
        "````text",
        "step 1",
        "```",
        "token=***",
        "````",
        "",
        "</details>",
    ]


def test_summary_ends_with_the_flowchart_and_the_gantt(plan: Plan) -> None:
    text = github_summary(results(), plan, start=100.0, seconds=3.25, masker=Masker([SECRET]))
    blocks = re.findall(r"^```mermaid\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert blocks == [mermaid_graph(plan), mermaid_gantt(results(), start=100.0)]
    assert text.index("### Stage graph") < text.index("### Timeline")


def test_summary_of_a_run_from_cache_succeeds_without_a_timeline(tmp_path: Path) -> None:
    plan = make(tmp_path, hits=(3,))
    found = {3: StageResult(3, "app-final", "cached", "k3", "r/c:app-k3", DIGEST[3])}
    text = github_summary(found, plan, start=0.0, seconds=0.4, masker=Masker())
    assert text.startswith("## ✅ dagger-stages: build succeeded in 0.4s\n")
    assert text.count("```mermaid") == 1
    assert "Nothing was built: every needed stage came from the cache." in text


def test_summary_masks_secrets_hidden_by_escaping(plan: Plan) -> None:
    secret = "p<a|s`s&"
    found = results()
    found[3] = dataclasses.replace(found[3], error=f"bad {secret}", tail=f"x {secret}\n")
    text = github_summary(found, plan, start=100.0, seconds=1.0, masker=Masker([secret]))
    assert secret not in text
    for escaped in ("p&lt;a", "p<a\\|s", "s&amp;"):
        assert escaped not in text


# --- GitHub workflow commands ------------------------------------------------------------------


def test_github_group_lines_escape_the_message() -> None:
    assert github_group_start("build app") == "::group::build app"
    assert github_group_start("50% a\r\nb::c,d") == "::group::50%25 a%0D%0Ab::c,d"
    assert github_group_end() == "::endgroup::"


def test_github_warning_is_the_same_annotation_as_a_warning() -> None:
    assert github_warning("cache not filled\n", title="dagger-stages") == (
        "::warning title=dagger-stages::cache not filled%0A"
    )
    assert github_warning(SECRET, masker=Masker([SECRET])) == "::warning::***"


def test_github_error_escapes_message_and_title_and_masks_first() -> None:
    assert github_error("stage app failed") == "::error::stage app failed"
    assert github_error("a\nb%", title="app: x,y") == "::error title=app%3A x%2Cy::a%0Ab%25"
    masked = github_error(f"x\n{SECRET}%", title=SECRET, masker=Masker([SECRET]))
    assert masked == "::error title=***::x%0A***%25"


# --- GitLab sections ---------------------------------------------------------------------------


def test_gitlab_section_lines_are_byte_exact() -> None:
    start = gitlab_section_start("deps", "Building deps", now=1700000000)
    assert start == "\x1b[0Ksection_start:1700000000:deps[collapsed=true]\r\x1b[0KBuilding deps"
    opened = gitlab_section_start("deps", "Building deps", collapsed=False, now=1700000000)
    assert opened == "\x1b[0Ksection_start:1700000000:deps\r\x1b[0KBuilding deps"
    assert gitlab_section_end("deps", now=1700000042) == (
        "\x1b[0Ksection_end:1700000042:deps\r\x1b[0K"
    )


@pytest.mark.parametrize(
    ("name", "section"),
    [("tools.v2", "tools.v2"), ("deps_base", "deps_base"), ("a b/c:d", "a_b_c_d"), ("", "_")],
)
def test_gitlab_section_names_use_only_allowed_characters(name: str, section: str) -> None:
    line = gitlab_section_start(name, "header\nsecond line", now=1)
    match = GITLAB_SECTION.search(line)
    assert match is not None
    assert match[3] == section
    assert line.endswith("\r\x1b[0Kheader second line")
    end = GITLAB_SECTION.search(gitlab_section_end(name, now=2))
    assert end is not None
    assert end[3] == section


def test_gitlab_section_refuses_a_negative_time() -> None:
    with pytest.raises(ValueError, match="Unix time"):
        gitlab_section_end("a", now=-1)


# --- dotenv ------------------------------------------------------------------------------------


def test_dotenv_lists_published_refs_then_stage_refs_and_digests() -> None:
    text = dotenv({"registry.test/app:1.0": DIGEST[5]}, results())
    assert text.splitlines() == [
        f"DAGGER_STAGES_PUBLISHED_1=registry.test/app:1.0@{DIGEST[5]}",
        "DAGGER_STAGES_DEPS_BASE_REF=registry.test/x/cache:deps_base-k1",
        f"DAGGER_STAGES_DEPS_BASE_DIGEST={DIGEST[1]}",
        "DAGGER_STAGES_2_REF=registry.test/x/cache:stage-2-k2",
        f"DAGGER_STAGES_2_DIGEST={DIGEST[2]}",
    ]


def test_dotenv_follows_gitlabs_rules() -> None:
    found = {
        i: StageResult(i, name, "built", "k", f"r.test/c:{i}", DIGEST[i % 6])
        for i, name in enumerate(["a-b", "a.b", "a_b", "x" * 400, "8"])
    }
    text = dotenv({"r.test/app:1": DIGEST[0], "r.test/app:latest": ""}, found)
    assert text.endswith("\n")
    lines = text.splitlines()
    keys = [line.partition("=")[0] for line in lines]
    assert len(keys) == len(set(keys)) == 2 + 2 * len(found)
    for line in lines:
        key, sep, value = line.partition("=")
        assert sep
        assert re.fullmatch(r"[A-Za-z0-9_]{1,255}", key)
        assert value
        assert value == value.strip()
    assert "\r" not in text
    assert "\n\n" not in text
    assert len(text.encode()) < 5 * 1024
    assert keys[:2] == ["DAGGER_STAGES_PUBLISHED_1", "DAGGER_STAGES_PUBLISHED_2"]
    assert lines[1] == "DAGGER_STAGES_PUBLISHED_2=r.test/app:latest"
    assert keys[2:8] == [
        "DAGGER_STAGES_A_B_REF",
        "DAGGER_STAGES_A_B_DIGEST",
        "DAGGER_STAGES_A_B_1_REF",
        "DAGGER_STAGES_A_B_1_DIGEST",
        "DAGGER_STAGES_A_B_2_REF",
        "DAGGER_STAGES_A_B_2_DIGEST",
    ]
    assert keys[-2:] == ["DAGGER_STAGES_8_REF", "DAGGER_STAGES_8_DIGEST"]


def test_dotenv_leaves_out_stages_with_nothing_to_pass_on() -> None:
    found = {
        0: StageResult(0, "unpushed", "built", "k", None, None, seconds=1.0),
        1: StageResult(1, "broken", "failed", "k", "r/c:t", None, error="x"),
        2: StageResult(2, "later", "cancelled", "k", "r/c:t"),
        3: StageResult(3, "skipped", "skipped", "k", "r/c:t"),
    }
    assert dotenv({}, found) == ""


def test_dotenv_stays_within_the_variable_limit() -> None:
    found = {
        i: StageResult(i, f"s{i}", "built", "k", f"r.test/c:s{i}", DIGEST[0]) for i in range(30)
    }
    lines = dotenv({"r.test/app:1": DIGEST[1]}, found).splitlines()
    assert len(lines) == DOTENV_MAX_VARIABLES
    # the published ref, 9 stages' pairs, then how many were left out: 42 of 61
    assert lines[0].startswith("DAGGER_STAGES_PUBLISHED_1=")
    assert lines[-2] == f"DAGGER_STAGES_S8_DIGEST={DIGEST[0]}"
    assert lines[-1] == "DAGGER_STAGES_OMITTED=42"
    assert len(dotenv({}, found, max_variables=100).splitlines()) == 60


def test_dotenv_stays_within_the_size_limit() -> None:
    found = {
        i: StageResult(i, f"s{i}", "built", "k", f"r.test/c:{'t' * 100}", DIGEST[0])
        for i in range(60)
    }
    text = dotenv({}, found, max_variables=1000)
    assert len(text.encode()) <= DOTENV_MAX_BYTES < 5 * 1024
    assert text.splitlines()[-1].startswith("DAGGER_STAGES_OMITTED=")
    assert dotenv({}, found, max_variables=1000, max_bytes=100) == "DAGGER_STAGES_OMITTED=120\n"


def test_dotenv_refuses_a_value_on_two_lines() -> None:
    with pytest.raises(ValueError, match="one line"):
        dotenv({"r.test/app:1\nEVIL=1": DIGEST[0]}, {})


# --- JUnit -------------------------------------------------------------------------------------


def test_junit_parses_back_with_matching_counts() -> None:
    text = junit_xml(cancelled_too(), masker=Masker([SECRET]), seconds=3.5)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    (suite,) = root
    for element in (root, suite):
        assert element.attrib == {
            "name": "dagger-stages",
            "tests": "5",
            "failures": "1",
            "errors": "0",
            "skipped": "1",
            "time": "3.500",
        }
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["tools.v2", "deps_base", "2", "app-final", "last"]
    assert {c.get("classname") for c in cases} == {"dagger-stages"}
    assert [c.get("time") for c in cases] == ["0.000", "0.000", "2.500", "1.000", "0.000"]
    assert len(suite.findall("testcase/failure")) == 1
    assert len(suite.findall("testcase/skipped")) == 1
    assert len(suite.findall("testcase/error")) == 0


def cancelled_too() -> dict[int, StageResult]:
    found = results()
    found[4] = StageResult(4, "last", "cancelled", "k4", None, error="app-final failed")
    return found


def test_junit_failure_carries_the_masked_tail_and_cancelled_is_skipped() -> None:
    root = ET.fromstring(junit_xml(cancelled_too(), masker=Masker([SECRET])))
    failure = root.find("testsuite/testcase[@name='app-final']/failure")
    assert failure is not None
    assert failure.get("message") == "RUN echo *** | exit 1"
    assert failure.text == "step 1\n```\ntoken=***\n"
    skipped = root.find("testsuite/testcase[@name='last']/skipped")
    assert skipped is not None
    assert skipped.get("message") == "cancelled: app-final failed"
    outs = {case.get("name"): case.findtext("system-out") for case in root.iter("testcase")}
    assert outs == {
        "tools.v2": "skipped: only stages restored from the cache need it",
        "deps_base": "cached: restored from registry.test/x/cache:deps_base-k1",
        "2": "built in 2.5s, cache pushed to registry.test/x/cache:stage-2-k2",
        "app-final": None,
        "last": None,
    }


def test_junit_time_defaults_to_the_sum_and_output_is_deterministic() -> None:
    first = junit_xml(results(), suite="ci", masker=Masker())
    assert first == junit_xml(results(), suite="ci", masker=Masker())
    root = ET.fromstring(first)
    assert root.get("time") == "3.500"
    assert root.get("name") == "ci"
    assert {c.get("classname") for c in root.iter("testcase")} == {"ci"}


def test_junit_has_the_shape_of_the_common_junit_schema() -> None:
    """The Jenkins/Ant JUnit XSD shape that GitLab and the GitHub reporters read."""
    allowed = {
        "testsuites": ({"name", "tests", "failures", "errors", "skipped", "time"}, {"testsuite"}),
        "testsuite": (
            {"name", "tests", "failures", "errors", "skipped", "time"},
            {"testcase", "properties", "system-out", "system-err"},
        ),
        "testcase": (
            {"name", "classname", "time"},
            {"skipped", "error", "failure", "system-out", "system-err"},
        ),
        "failure": ({"message", "type"}, set()),
        "skipped": ({"message"}, set()),
        "system-out": (set(), set()),
    }
    root = ET.fromstring(junit_xml(cancelled_too(), masker=Masker()))
    for element in root.iter():
        attributes, children = allowed[element.tag]
        assert set(element.attrib) <= attributes, element.tag
        assert {child.tag for child in element} <= children, element.tag
    for case in root.iter("testcase"):
        assert len(case) <= 1
        float(case.get("time", "x"))


# --- secrets -----------------------------------------------------------------------------------


def test_masked_secrets_never_appear_in_any_output(plan: Plan) -> None:
    masker = Masker([SECRET])
    found = results()
    found[2] = dataclasses.replace(found[2], name=f"n-{SECRET}")
    outputs = [
        github_summary(found, plan, start=100.0, seconds=1.0, masker=masker),
        junit_xml(found, masker=masker),
        junit_xml(found, suite=SECRET, masker=masker),
        github_error(f"{found[3].error}\n{found[3].tail}", masker=masker),
    ]
    for text in outputs:
        assert SECRET not in text
        assert "***" in text


def test_exported_names() -> None:
    assert sorted(ci_report.__all__) == [
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


def test_junit_failure_message_says_how_to_reproduce_it_locally() -> None:
    results = {
        0: StageResult(
            0, "app", "failed", "k0", None, error="RUN make failed",
            reproduce="dagger-stages shell app --secret id=token,env=TOKEN",
        )
    }  # fmt: skip
    root = ET.fromstring(junit_xml(results, masker=Masker()))
    failure = root.find("testsuite/testcase[@name='app']/failure")
    assert failure is not None
    assert failure.get("message") == (
        "RUN make failed; reproduce locally: dagger-stages shell app --secret id=token,env=TOKEN"
    )
