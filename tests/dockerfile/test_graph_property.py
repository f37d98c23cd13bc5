"""A random stage DAG, written as a Dockerfile, reads back as exactly that DAG."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.dockerfile.graph import select
from pipeline.dockerfile.parse import parse_text
from pipeline.dockerfile.stages import build_stages


@dataclass(frozen=True)
class Node:
    named: bool
    base: int | None
    copies: frozenset[int]
    mounts: frozenset[int]
    copy_style: str


@st.composite
def dags(draw: st.DrawFn) -> list[Node]:
    count = draw(st.integers(min_value=1, max_value=12))
    nodes: list[Node] = []
    for index in range(count):
        earlier = list(range(index))
        named_earlier = [i for i in earlier if nodes[i].named]
        subset = st.sets(st.sampled_from(earlier)) if earlier else st.just(set())
        named_subset = st.sets(st.sampled_from(named_earlier)) if named_earlier else st.just(set())
        base_choices = st.none() | st.sampled_from(named_earlier) if named_earlier else st.none()
        nodes.append(
            Node(
                named=draw(st.booleans()) or index == 0,
                base=draw(base_choices),
                copies=frozenset(draw(subset)),
                mounts=frozenset(draw(named_subset)),
                copy_style=draw(st.sampled_from(["name", "index", "upper"])),
            )
        )
    return nodes


def name(index: int) -> str:
    return f"s{index}-x.y_z"


def write(nodes: list[Node]) -> str:
    lines = ["ARG BASE=busybox"]
    for index, node in enumerate(nodes):
        base = name(node.base) if node.base is not None else "${BASE}:1"
        lines.append(f"FROM {base}" + (f" AS {name(index)}" if node.named else ""))
        for source in sorted(node.copies):
            ref = str(source)
            if nodes[source].named and node.copy_style != "index":
                ref = name(source).upper() if node.copy_style == "upper" else name(source)
            lines.append(f"COPY --from={ref} /out /in/{source}")
        if node.mounts:
            mounts = " ".join(
                f"--mount=type=bind,from={name(m)},target=/m/{m}" for m in sorted(node.mounts)
            )
            lines.append(f"RUN {mounts} \\\n    cat /m/*")
        lines.append("RUN echo done # not a dependency: --from=s0-x.y_z")
    return "\n".join(lines) + "\n"


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(dags(), st.data())
def test_random_dag_round_trips(nodes: list[Node], data: st.DataObject) -> None:
    df = build_stages(parse_text(write(nodes)))
    expected = [
        tuple(sorted({*node.copies, *node.mounts, *([node.base] if node.base is not None else [])}))
        for node in nodes
    ]
    assert [stage.depends_on for stage in df.stages] == expected
    assert [stage.base_stage for stage in df.stages] == [node.base for node in nodes]
    assert all(
        s.base == "busybox:1" for s, n in zip(df.stages, nodes, strict=True) if n.base is None
    )

    named = [i for i, node in enumerate(nodes) if node.named]
    targets = data.draw(st.lists(st.sampled_from(named), min_size=1, max_size=3))
    graph = select(df, [name(t) for t in targets])

    @cache
    def level(index: int) -> int:
        return 1 + max((level(d) for d in expected[index]), default=-1)

    needed: set[int] = set()
    pending = list(targets)
    while pending:
        index = pending.pop()
        if index not in needed:
            needed.add(index)
            pending.extend(expected[index])
    assert graph.needed == needed
    for index in needed:
        assert graph.wave_of(index) == level(index)
    assert [list(w) for w in graph.waves] == [
        sorted(i for i in needed if level(i) == n) for n in range(len(graph.waves))
    ]
