from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cache.context import BuildContext
from pipeline.cache.ignore import IgnoreRules
from pipeline.cache.keys import compute_keys, external_images, normalized_text
from pipeline.dockerfile.graph import select
from pipeline.dockerfile.parse import parse_dockerfile, parse_text
from pipeline.dockerfile.platforms import Platform
from pipeline.dockerfile.stages import Dockerfile, build_stages
from pipeline.errors import UsageError
from tests.conftest import FIXTURES
from tests.dockerfile.test_graph_property import Node, dags, write

AMD64 = Platform("linux", "amd64")


def keys_of(
    root: Path,
    *,
    build_args: dict[str, str] | None = None,
    digests: dict[str, str | None] | None = None,
    platform: Platform = AMD64,
    targets: tuple[str, ...] = (),
) -> dict[str, str]:
    df = build_stages(
        parse_dockerfile(root / "Dockerfile"), build_args=build_args, platform=platform
    )
    stages = select(df, targets).needed if targets else range(len(df.stages))
    keys = compute_keys(
        df,
        stages,
        build_args=build_args or {},
        platform=platform,
        image_digests=digests or {},
        context=BuildContext(root, IgnoreRules.load(root, root / "Dockerfile")),
    )
    return {df.stages[i].name: k.key for i, k in keys.items()}


@pytest.fixture
def php(tmp_path: Path) -> Path:
    root = tmp_path / "php"
    shutil.copytree(FIXTURES / "php", root)
    return root


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    assert before.keys() == after.keys()
    return {name for name in before if before[name] != after[name]}


def test_keys_are_stable_and_distinct(php: Path) -> None:
    first = keys_of(php)
    assert first == keys_of(php)
    assert len(set(first.values())) == len(first)
    assert all(len(key) == 64 for key in first.values())


def test_a_copied_file_changes_its_stage_and_dependents_only(php: Path) -> None:
    before = keys_of(php)
    (php / "src" / "index.php").write_text("<?php echo 1;")
    assert changed(before, keys_of(php)) == {"app", "release", "dev-back", "test", "8"}


def test_a_file_read_by_a_leaf_stage_changes_everything_downstream(php: Path) -> None:
    before = keys_of(php)
    (php / "composer.lock").write_text('{"packages": []}')
    assert changed(before, keys_of(php)) == {
        "composer-build",
        "app",
        "release",
        "dev-back",
        "test",
        "8",
    }


def test_a_file_no_stage_reads_changes_nothing(php: Path) -> None:
    before = keys_of(php)
    (php / "README.md").write_text("hello")
    assert changed(before, keys_of(php)) == set()


@pytest.mark.parametrize(
    ("path", "before", "after", "moved"),
    [
        ("src/index.php", 0o644, 0o600, {"app", "release", "dev-back", "test", "8"}),
        ("src/index.php", 0o755, 0o4755, {"app", "release", "dev-back", "test", "8"}),
        ("src", 0o755, 0o700, {"app", "release", "dev-back", "test", "8"}),
        ("tests", 0o755, 0o2755, {"test"}),
        (
            "assets/app.css",
            0o644,
            0o664,
            {"npm-build", "dev-front", "app", "release", "dev-back", "test", "8"},
        ),
    ],
)
def test_a_permission_change_moves_its_stage_and_dependents_only(
    php: Path, path: str, before: int, after: int, moved: set[str]
) -> None:
    """BuildKit copies the mode of every file and directory, so a chmod changes the image."""
    (php / path).chmod(before)
    keys = keys_of(php)
    (php / path).chmod(after)
    assert changed(keys, keys_of(php)) == moved


def test_a_permission_change_outside_what_is_copied_moves_nothing(php: Path) -> None:
    (php / "README.md").write_text("hello")
    (php / "README.md").chmod(0o644)
    keys = keys_of(php)
    (php / "README.md").chmod(0o600)
    assert changed(keys, keys_of(php)) == set()


def test_an_octal_chmod_copy_ignores_the_source_rwx_bits(tmp_path: Path) -> None:
    """`COPY --chmod=<octal>` sets them in the image; a symbolic or variable one keeps them."""
    (tmp_path / "run.sh").write_text("echo\n")
    for flag, counts in [("--chmod=0755", False), ("--chmod=u+x", True), ("", True)]:
        (tmp_path / "Dockerfile").write_text(f"FROM scratch AS s\nCOPY {flag} run.sh /run.sh\n")
        (tmp_path / "run.sh").chmod(0o644)
        keys = keys_of(tmp_path)
        (tmp_path / "run.sh").chmod(0o600)
        assert (keys_of(tmp_path) != keys) is counts, flag
        (tmp_path / "run.sh").chmod(0o4644)
        assert keys_of(tmp_path) != keys, flag


def test_dockerignore_decides_what_counts(php: Path) -> None:
    (php / ".dockerignore").write_text("src/*.log\n")
    (php / "src" / "debug.log").write_text("1")
    before = keys_of(php)
    (php / "src" / "debug.log").write_text("2")
    assert changed(before, keys_of(php)) == set()


def test_layout_only_edits_keep_keys(php: Path) -> None:
    before = keys_of(php)
    text = (php / "Dockerfile").read_text()
    text = text.replace(
        "FROM composer:2 AS composer-build\n",
        "# the PHP dependencies\n\nFROM composer:2 AS composer-build\n\n",
    )
    text = text.replace(
        "RUN --mount=type=cache,target=/tmp/cache composer install --no-dev --no-scripts",
        "run --mount=type=cache,target=/tmp/cache \\\n"
        "        # a comment inside the continuation\n"
        "\n"
        "    composer install \\\n      --no-dev --no-scripts",
    )
    (php / "Dockerfile").write_text(text)
    assert changed(before, keys_of(php)) == set()


def test_instruction_edits_change_keys(php: Path) -> None:
    before = keys_of(php)
    text = (php / "Dockerfile").read_text().replace("ENV APP_ENV=prod", "ENV APP_ENV=production")
    (php / "Dockerfile").write_text(text)
    assert changed(before, keys_of(php)) == {"release"}


def test_build_args_count_only_when_declared(php: Path) -> None:
    before = keys_of(php)
    assert changed(before, keys_of(php, build_args={"UNDECLARED": "1"})) == set()
    assert changed(before, keys_of(php, build_args={"NODE_VERSION": "22"})) == {
        "npm-build",
        "dev-front",
        "app",
        "release",
        "dev-back",
        "test",
        "8",
    }


def test_stage_arg_value_from_build_arg(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM scratch AS a\nARG MODE=dev\nFROM scratch AS b\nARG OTHER\n"
    )
    before = keys_of(tmp_path, targets=("a", "b"))
    assert changed(before, keys_of(tmp_path, targets=("a", "b"), build_args={"MODE": "prod"})) == {
        "a"
    }
    assert changed(before, keys_of(tmp_path, targets=("a", "b"), build_args={"OTHER": "x"})) == {
        "b"
    }


def test_base_digest_pins_the_key(php: Path) -> None:
    unpinned = keys_of(php)
    pinned = keys_of(php, digests={"composer:2": "sha256:" + "a" * 64})
    assert changed(unpinned, pinned) == {
        "composer-build",
        "app",
        "release",
        "dev-back",
        "test",
        "8",
    }
    moved = keys_of(php, digests={"composer:2": "sha256:" + "b" * 64})
    assert changed(pinned, moved) == changed(unpinned, pinned)


def test_platform_is_an_input(php: Path) -> None:
    before = keys_of(php)
    after = keys_of(php, platform=Platform("linux", "arm64"))
    assert changed(before, after) == set(before)


def test_stages_on_the_build_platform_have_one_key_for_every_target(tmp_path: Path) -> None:
    """A stage FROM a stage runs where its parent runs, whatever its own --platform says."""
    (tmp_path / "Dockerfile").write_text(
        "FROM --platform=$BUILDPLATFORM golang AS go\n"
        "FROM go AS deps\nRUN go mod download\n"
        "FROM --platform=linux/s390x deps AS tools\nRUN go install tool\n"
        "FROM deps AS build\nARG TARGETPLATFORM\nRUN go build\n"
        "FROM alpine AS runtime\nRUN apk add tzdata\n"
        "FROM runtime AS release\nCOPY --from=build /app /app\n"
    )
    native = keys_of(tmp_path, platform=Platform("linux", "amd64"))
    arm = keys_of(tmp_path, platform=Platform("linux", "arm64"))
    assert changed(native, arm) == {"build", "runtime", "release"}


def test_secret_ids_count_but_values_are_never_read(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM scratch\nRUN --mount=type=secret,id=token --mount=type=ssh cat /run/secrets/token\n"
    )
    df = build_stages(parse_dockerfile(tmp_path / "Dockerfile"))
    keys = compute_keys(
        df,
        [0],
        build_args={},
        platform=AMD64,
        image_digests={},
        context=BuildContext(tmp_path, IgnoreRules.load(tmp_path, tmp_path / "Dockerfile")),
    )
    assert keys[0].inputs["secrets"] == ["token"]
    assert keys[0].inputs["ssh"] == ["default"]


def test_add_url_and_checksum(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        f"FROM scratch\nADD --checksum=sha256:{'a' * 64} https://example.com/a.tgz /a\n"
    )
    before = keys_of(tmp_path)
    (tmp_path / "Dockerfile").write_text(
        f"FROM scratch\nADD --checksum=sha256:{'b' * 64} https://example.com/a.tgz /a\n"
    )
    assert changed(before, keys_of(tmp_path)) == {"0"}


def test_onbuild_trigger_reads_context_in_the_child(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM scratch AS base\nONBUILD COPY app.txt /app/\nFROM base AS child\n"
    )
    (tmp_path / "app.txt").write_text("1")
    before = keys_of(tmp_path, targets=("child",))
    (tmp_path / "app.txt").write_text("2")
    assert changed(before, keys_of(tmp_path, targets=("child",))) == {"child"}


def test_onbuild_heredoc_body_reaches_the_child_key(tmp_path: Path) -> None:
    def dockerfile(body: str) -> None:
        (tmp_path / "Dockerfile").write_text(
            f"FROM scratch AS base\nONBUILD RUN <<EOF\n{body}\nEOF\nFROM base AS child\n"
        )

    dockerfile("echo one")
    before = keys_of(tmp_path, targets=("child",))
    dockerfile("echo two")
    after = keys_of(tmp_path, targets=("child",))
    assert changed(before, after) == {"base", "child"}
    dockerfile("echo two\n# a comment is part of the script")
    assert changed(after, keys_of(tmp_path, targets=("child",))) == {"base", "child"}


def test_bind_mount_of_the_context(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM scratch AS a\nRUN --mount=type=bind,source=src,target=/src make\nFROM scratch AS b\n"
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.c").write_text("int main;")
    before = keys_of(tmp_path, targets=("a", "b"))
    (tmp_path / "src" / "main.c").write_text("int main();")
    assert changed(before, keys_of(tmp_path, targets=("a", "b"))) == {"a"}


def test_missing_copy_source_is_a_located_error(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY missing.txt /\n")
    with pytest.raises(UsageError) as info:
        keys_of(tmp_path)
    assert info.value.line == 2
    assert "missing.txt" in info.value.message


def test_external_images_of_needed_stages() -> None:
    df = build_stages(parse_dockerfile(FIXTURES / "php" / "Dockerfile"))
    graph = select(df, ["test"])
    assert external_images(df, graph.needed) == ("composer:2", "node:20-alpine", "php:8.3-apache")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run   echo  a", "RUN echo  a"),
        ("RUN a \\\n      b \\\n  # c\n\n   c", "RUN a b c"),
        ('RUN echo "a \\\n   b"', 'RUN echo "a    b"'),
        ("RUN echo 'it''s' \\\n  done", "RUN echo 'it''s' done"),
        ('RUN ["a", \\\n   "b"]', 'RUN ["a", "b"]'),
    ],
)
def test_normalized_text(text: str, expected: str) -> None:
    parsed = parse_text(f"FROM scratch\n{text}\n")
    assert normalized_text(parsed, parsed.instructions[1]) == expected


def descendants(nodes: list[Node], root: int) -> set[int]:
    found = {root}
    for index in range(root + 1, len(nodes)):
        node = nodes[index]
        deps = {*node.copies, *node.mounts, *([node.base] if node.base is not None else [])}
        if deps & found:
            found.add(index)
    return found


@pytest.mark.slow
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(dags(), st.data())
def test_changing_one_stage_changes_exactly_its_descendants(
    tmp_path: Path, nodes: list[Node], data: st.DataObject
) -> None:
    text = write(nodes)
    changed_index = data.draw(st.integers(min_value=0, max_value=len(nodes) - 1))

    def all_keys(dockerfile_text: str) -> dict[int, str]:
        df: Dockerfile = build_stages(parse_text(dockerfile_text))
        keys = compute_keys(
            df,
            range(len(df.stages)),
            build_args={},
            platform=AMD64,
            image_digests={},
            context=BuildContext(tmp_path, IgnoreRules.parse("")),
        )
        return {index: key.key for index, key in keys.items()}

    marker = "RUN echo done # not a dependency: --from=s0-x.y_z"
    parts = text.split(marker)
    assert len(parts) == len(nodes) + 1
    parts[changed_index] += "RUN echo changed\n"
    edited = marker.join(parts)
    before, after = all_keys(text), all_keys(edited)
    assert {i for i in before if before[i] != after[i]} == descendants(nodes, changed_index)
