"""Fuzzing the inputs a user writes: Dockerfiles, config files and flags.

Whatever they contain, `plan` answers 0 with one JSON object, or 2 with `path[:line]: reason`;
never a traceback, never the internal-error exit 70. Each example is a real file in a fresh
folder, run through `pipeline.cli.main` in-process. Examples are derandomized, so a run is
reproducible, and few enough that the file takes seconds.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from tests.cli import cli_command

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
EXIT_BAD_INPUT = 2


@pytest.fixture(autouse=True)
def _crash_logs_stay_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An internal error writes its traceback to a temp file: keep those out of /tmp."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


def run(*argv: str) -> Outcome:
    """`main(argv)` with stdout and stderr as CPython sets them up for a real process.

    capsys's streams fail on what cannot be encoded, also on stderr, where CPython writes
    backslash escapes; lone surrogates (argv bytes that are not UTF-8) would then crash here
    and nowhere else. stdout is strict UTF-8, as with PYTHONIOENCODING=utf-8.
    """
    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", errors="strict", write_through=True)
    stderr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", stdout)
        patch.setattr(sys, "stderr", stderr)
        try:
            code = main(list(argv))
        except SystemExit as exit:  # argparse's own usage errors
            code = exit.code if isinstance(exit.code, int) else 1
        stdout.flush()
        stderr.flush()
    return Outcome(code, out.getvalue().decode(), err.getvalue().decode())


def tally(outcome: Outcome) -> None:
    """For `--hypothesis-show-statistics`: how the examples ended."""
    first = outcome.err.splitlines()[0] if outcome.err and outcome.code else ""
    reason = re.sub(r"\S*(Dockerfile|\.yaml)(:\d+)?: ", "", first)[:40]
    event(f"exit {outcome.code} {reason}")


def fresh(tmp_path: Path) -> Path:
    """A folder of its own for one example (function-scoped tmp_path is shared by examples)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


def check_sane(outcome: Outcome) -> None:
    """The outcome is 0 or 2, and nothing looks like a crash."""
    assert "Traceback" not in outcome.err, outcome.err
    assert "internal error" not in outcome.err, outcome.err
    assert outcome.code in (0, EXIT_BAD_INPUT), outcome
    if outcome.code == 0:
        document = json.loads(outcome.out)
        assert isinstance(document, dict)
        for stage in document["stages"]:
            assert stage["key"] is None or re.fullmatch(r"[0-9a-f]{64}", stage["key"]), stage
    else:
        assert outcome.out == "", outcome
        assert outcome.err.strip(), outcome


def line_numbers(text: str, path: str) -> list[int]:
    """The line numbers of every `path:N:` that opens a line of `text`."""
    return [int(n) for n in re.findall(rf"^{re.escape(path)}:(\d+): ", text, re.MULTILINE)]


# --- (a) Dockerfiles ------------------------------------------------------------------------

GOOD_NAMES = st.sampled_from(["base", "build", "app", "a-b.c_d", "test", "x", "Base"])
NAMES = st.one_of(GOOD_NAMES, st.sampled_from(["9lives", "Ünï", "a b"]))
VARIABLES = st.sampled_from(["BASE", "TAG", "X", "TARGETARCH", "BUILDPLATFORM", "ünï", "1X"])
EXPANSIONS = st.one_of(
    VARIABLES.map(lambda v: f"${v}"),
    VARIABLES.map(lambda v: f"${{{v}}}"),
    st.tuples(
        VARIABLES, st.sampled_from([":-", "-", ":+", "+", ":?", "?", "#", "##", "%", "%%"])
    ).map(lambda t: f"${{{t[0]}{t[1]}busybox}}"),
    st.sampled_from(["$", "${", "${X", "${}", "${X/a/b}", "${X:1}", "$$", "\\$X", "${X:?}"]),
)
GOOD_IMAGES = st.sampled_from(["busybox", "busybox:1", "scratch", "base", "build", "$BASE"])
IMAGES = st.one_of(
    st.sampled_from(
        [
            "busybox",
            "busybox:1",
            "scratch",
            "docker.io/library/alpine:3.20",
            "localhost:5000/x/y:z",
            "a@sha256:" + "0" * 64,
            "a@sha256:xyz",
            "UPPER/case",
            "a:b:c",
            "0",
            "1",
            "99",
            "-1",
        ]
    ),
    NAMES,
    EXPANSIONS,
    st.tuples(st.sampled_from(["", "busybox:", "repo/"]), EXPANSIONS).map("".join),
)
WORDS = st.one_of(
    st.sampled_from(["/x", ".", "src/", "*.txt", "a b", '"quoted"', "'single'", "\\", "\t"]),
    EXPANSIONS,
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12),
)
MOUNTS = st.one_of(
    st.sampled_from(
        [
            "type=cache,target=/root/.cache",
            "type=secret,id=token",
            "type=secret,id=token,required=true",
            "type=ssh",
            "type=tmpfs,target=/t",
            "type=bind,target=/src",
            "type=bind,source=src,target=/src",
            "type=bind,source=../..,target=/x",
            "type=nope",
            "target",
            "type=cache,target",
            'type=bind,"target=/x',
            "",
        ]
    ),
    st.tuples(st.sampled_from(["bind", "cache"]), IMAGES).map(
        lambda t: f"type={t[0]},from={t[1]},target=/m"
    ),
)
FLAGS = {
    "FROM": st.one_of(
        st.sampled_from(["--platform=linux/amd64", "--platform=$BUILDPLATFORM", "--platform="]),
        EXPANSIONS.map(lambda e: f"--platform={e}"),
    ),
    "COPY": st.one_of(
        IMAGES.map(lambda i: f"--from={i}"),
        st.sampled_from(
            [
                "--link",
                "--link=false",
                "--link=maybe",
                "--chown=1:1",
                "--chmod=755",
                "--exclude=*.md",
                "--parents",
                "--from",
                "--frm=x",
                "-from=x",
            ]
        ),
    ),
    "RUN": st.one_of(
        MOUNTS.map(lambda m: f"--mount={m}"),
        st.sampled_from(["--network=none", "--security=insecure", "--mount", "--net=host"]),
    ),
    "ADD": st.sampled_from(
        ["--checksum=sha256:" + "0" * 64, "--keep-git-dir", "--unpack=true", "--link", "--x"]
    ),
}


def _flag_name(flag: str) -> str:
    """Flags that may repeat (`--mount`, `--exclude`) are told apart by value."""
    name = flag.split("=", 1)[0]
    return flag if name in ("--mount", "--exclude") else name


@st.composite
def from_lines(draw: st.DrawFn) -> str:
    flags = draw(st.lists(FLAGS["FROM"], max_size=2, unique_by=_flag_name))
    image = draw(st.one_of(GOOD_IMAGES, IMAGES))
    name = draw(st.one_of(st.none(), GOOD_NAMES, GOOD_NAMES, NAMES, EXPANSIONS))
    keyword = draw(st.sampled_from(["FROM", "from", "From"]))
    alias = "" if name is None else f" {draw(st.sampled_from(['AS', 'as', 'As']))} {name}"
    return " ".join([keyword, *flags, image]) + alias


@st.composite
def instructions(draw: st.DrawFn) -> str:
    kind = draw(
        st.sampled_from(
            [
                *("FROM", "FROM", "ARG", "RUN", "RUN", "COPY", "COPY", "ADD", "ENV"),
                *("OTHER", "ONBUILD", "HEREDOC", "BROKEN"),
            ]
        )
    )
    if kind == "FROM":
        return draw(from_lines())
    if kind == "ARG":
        name = draw(VARIABLES)
        value = draw(st.one_of(st.none(), IMAGES, WORDS))
        return f"ARG {name}" if value is None else f"ARG {name}={value}"
    if kind in ("RUN", "COPY", "ADD"):
        flags = draw(st.lists(FLAGS[kind], max_size=3, unique_by=_flag_name))
        words = draw(st.lists(WORDS, min_size=1, max_size=3))
        if kind != "RUN" and draw(st.booleans()):
            return " ".join([kind, *flags, json.dumps(words)])
        return " ".join([kind, *flags, *words])
    if kind == "ENV":
        return f"ENV {draw(VARIABLES)}={draw(WORDS)}"
    if kind == "ONBUILD":
        inner = draw(st.sampled_from(["COPY", "RUN", "ONBUILD", "FROM", "", "MAINTAINER"]))
        source = draw(IMAGES)
        return f"ONBUILD {inner} --from={source} /a /b" if inner == "COPY" else f"ONBUILD {inner}"
    if kind == "HEREDOC":
        return draw(
            st.sampled_from(
                [
                    "RUN <<EOF\necho hi > /x\nEOF",
                    "COPY <<EOF /x\n$X\nEOF",
                    "RUN <<-EOT bash\n\techo ${X}\nEOT",
                    "RUN <<EOF\nnever closed",
                ]
            )
        )
    if kind == "BROKEN":
        return draw(
            st.sampled_from(
                [
                    "FROOM busybox",
                    "COPY onlyone",
                    'COPY ["a", "b"',
                    "RUN",
                    "ARG =x",
                    "ENV",
                    "HEALTHCHECK --interval=1s CMD true",
                    "HEALTHCHECK --bogus=1 CMD true",
                    "SHELL not-json",
                    "ONBUILD",
                    "EXPOSE",
                    "CMD <<EOF\nx\nEOF",
                    "\\",
                    "FROM a AS b AS c",
                    "FROM a b",
                    "FROM ",
                    "FROM busybox AS",
                    "ARG A=1 B=2",
                    "ENV A B",
                    "EXPOSE 80/tcp",
                    "COPY --from=${X} /a /b",
                    "FROM base",
                    "COPY --from=later /a /b",
                ]
            )
        )
    keyword = draw(
        st.sampled_from(["WORKDIR", "USER", "LABEL", "EXPOSE", "CMD", "ENTRYPOINT", "VOLUME"])
    )
    return f"{keyword} {draw(WORDS)}"


CLEAN_INSTRUCTIONS = st.one_of(
    st.tuples(GOOD_IMAGES, GOOD_NAMES).map(lambda t: f"FROM {t[0]} AS {t[1]}"),
    GOOD_IMAGES.map(lambda image: f"FROM {image}"),
    GOOD_NAMES.map(lambda name: f"COPY --from={name} /out /in/{name}"),
    st.sampled_from(["0", "1", "busybox:1"]).map(lambda ref: f"COPY --from={ref} /a /b"),
    GOOD_NAMES.map(lambda name: f"RUN --mount=type=bind,from={name},target=/m ls /m"),
    GOOD_NAMES.map(lambda name: f"ONBUILD COPY --from={name} /a /b"),
    st.sampled_from(
        [
            "RUN echo hi > /hi",
            "RUN --mount=type=cache,target=/root/.cache --network=none make",
            "RUN --mount=type=secret,id=token cat /run/secrets/token",
            "ARG X=1",
            "ARG TAG",
            "ENV PATH=/bin:$PATH",
            "WORKDIR /app",
            "LABEL org.example=${X:-none}",
            "USER 1000:1000",
            "EXPOSE 8080",
            'CMD ["sh", "-c", "echo $X"]',
            "COPY --link --chmod=644 <<EOF /etc/motd\nhello\nEOF",
        ]
    ),
)
DIRECTIVES = st.sampled_from(
    [
        "# syntax=docker/dockerfile:1",
        "# check=skip=all",
        "#syntax = foo",
        "#!/usr/bin/env dockerfile",
        "# just a comment",
    ]
)
FILLER = st.sampled_from(["", "   ", "# comment", "\t", "# ünïcödé ✓", "  # indented comment"])


def _directive(line: str) -> str:
    return re.sub(r"[#!\s]", "", line.split("=")[0]).lower()


@st.composite
def dockerfiles(draw: st.DrawFn) -> str:
    escape = draw(st.sampled_from(["\\", "\\", "`"]))
    lines = [f"# escape={escape}"] if escape == "`" or draw(st.booleans()) else []
    if draw(st.integers(0, 9)) == 0:
        lines = [draw(st.sampled_from(["# escape=x", "# escape=\\\\", "# ESCAPE = `"]))]
    lines += draw(st.lists(DIRECTIVES, max_size=2, unique_by=_directive))
    if draw(st.booleans()):
        lines.append(f"ARG BASE={draw(st.one_of(GOOD_IMAGES, IMAGES))}")
    lines.append(draw(from_lines()))
    pieces = (
        CLEAN_INSTRUCTIONS if draw(st.booleans()) else st.one_of(CLEAN_INSTRUCTIONS, instructions())
    )
    body = st.one_of(pieces.map(lambda t: (True, t)), FILLER.map(lambda t: (False, t)))
    for splittable, line in draw(st.lists(body, max_size=10)):
        if splittable and " " in line and draw(st.integers(0, 4)) == 0:
            head, _, tail = line.partition(" ")
            line = f"{head} {escape}\n{draw(FILLER)}\n  {tail}"
        lines.append(line)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines) + draw(st.sampled_from(["", newline, newline * 2]))


@pytest.mark.slow
@FUZZ
@given(text=dockerfiles())
@example(text="FROM busybox AS a\nCOPY --from=a / /\n")
@example(text="FROM busybox\nRUN --mount=type=bind,from=0,target=/x true\n")
@example(text="# escape=`\nFROM busybox AS a\nRUN echo `\n  hi\n")
@example(text="\ufeffFROM busybox\n")
@example(text="FROM ${BASE:?no base given}\n")
def test_any_dockerfile_plans_or_is_a_located_error(tmp_path: Path, text: str) -> None:
    directory = fresh(tmp_path)
    path = directory / "Dockerfile"
    path.write_text(text, encoding="utf-8")
    outcome = run("plan", "--offline", "--json", "--context", str(directory))
    tally(outcome)
    check_sane(outcome)
    located = re.compile(rf"^{re.escape(str(path))}(:\d+)?: .+")
    first = outcome.err.splitlines()[0] if outcome.err else ""
    if outcome.code == EXIT_BAD_INPUT:
        assert located.match(first), outcome.err
    else:
        for line in outcome.err.splitlines():
            assert located.match(line), outcome.err
    count = len(text.splitlines()) or 1
    for number in line_numbers(outcome.err, str(path)):
        assert 1 <= number <= count, (number, outcome.err)


@pytest.mark.parametrize(
    "text",
    ["FROM busybox\n\\\n", "FROM busybox\n\\", "FROM busybox\n \\\n\n    "],
    ids=["escape line", "escape at the end", "escape then blank lines"],
)
def test_a_line_of_only_the_escape_character_is_a_located_error(tmp_path: Path, text: str) -> None:
    """Found by the fuzzer: BuildKit's parser gives such a line an instruction without a
    keyword (BuildKit says `unknown instruction: `), which crashed parse.py (exit 70)."""
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    outcome = run("plan", "--offline", "--json", "--context", str(tmp_path))
    check_sane(outcome)
    assert outcome.code == EXIT_BAD_INPUT
    assert outcome.err.startswith(f"{path}:2: "), outcome.err


@pytest.mark.parametrize(
    ("instruction", "reason"),
    [
        ("ENV =x", "ENV names can not be blank"),
        ("SHELL x", "SHELL requires the arguments to be in JSON form"),
        ("HEALTHCHECK --interval=x CMD true", 'time: invalid duration "x"'),
    ],
)
def test_what_buildkit_refuses_to_parse_is_a_located_error(
    tmp_path: Path, instruction: str, reason: str
) -> None:
    """BuildKit 20.10 says `dockerfile parse error line 2: <reason>`; `plan` used to exit 0."""
    path = tmp_path / "Dockerfile"
    path.write_text(f"FROM busybox\n{instruction}\n")
    outcome = run("plan", "--offline", "--json", "--context", str(tmp_path))
    check_sane(outcome)
    assert outcome.code == EXIT_BAD_INPUT
    assert outcome.err.startswith(f"{path}:2: {reason}"), outcome.err


@pytest.mark.parametrize(
    "text",
    ["FROM busybox\nLABEL x\n", "FROM busybox\nENV x\n", "FROM busybox\nRUN <<EOF\nnever closed\n"],
    ids=["LABEL", "ENV", "heredoc"],
)
def test_a_parse_error_names_its_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    outcome = run("plan", "--offline", "--json", "--context", str(tmp_path))
    check_sane(outcome)
    assert outcome.code == EXIT_BAD_INPUT
    assert outcome.err.startswith(f"{path}:2: "), outcome.err


# --- (b) config files -----------------------------------------------------------------------

CONFIG_DOCKERFILE = "FROM busybox AS a\nRUN --mount=type=secret,id=x true\nFROM a AS b\n"


@dataclass(frozen=True)
class Entry:
    """A piece of a config file: its lines, and whether it is valid (None: cannot tell)."""

    key: str | None
    lines: tuple[str, ...]
    valid: bool | None


def entry(key: str | None, text: str, valid: bool | None) -> Entry:
    return Entry(key, tuple(text.split("\n")), valid)


VALID_ENTRIES = [
    entry("dockerfile", "dockerfile: Dockerfile", True),
    entry("context", "context: .", True),
    entry("targets", "targets: [a, b]", True),
    entry("targets", "targets: b", True),
    entry("targets", "targets:\n  - a", True),
    entry("build_args", "build_args:\n  X: '1.10'\n  MODE: 0755", True),
    entry("build_args", "build_args: {}", True),
    entry("cache_repo", "cache_repo: registry.example/team/app/cache", True),
    entry("image_repo", "image_repo: registry.example/team/app", True),
    entry("engine", "engine: docker", True),
    entry("platforms", "platforms: [linux/arm64/v8]", True),
    entry("platforms", "platforms: [linux/amd64, linux/arm64/v8]", True),
    entry("secrets", "secrets:\n  - id=x,env=X_TOKEN", True),
    entry("secrets", "secrets:\n  - id: x\n    src: token.txt", True),
    entry("publish", "publish:\n  b: ['{sha}', latest]", True),
    entry("test", "test:\n  stage: a\n  command: [make, check]\n  artifacts: [/out]", True),
    entry("test", "test: {stage: b, command: 'true'}", True),
    entry(None, "# a comment", True),
    entry(None, "", True),
]
INVALID_ENTRIES = [
    entry("targetz", "targetz: [a]", False),
    entry("Targets", "Targets: [a]", False),
    entry("targets", "targets: 1.5", False),
    entry("targets", "targets: [a, a]", False),
    entry("targets", "targets: [9lives]", False),
    entry("targets", "targets: a b", False),
    entry("engine", "engine: podman", False),
    entry("engine", "engine: [docker]", False),
    entry("build_args", "build_args: [1]", False),
    entry("build_args", "build_args:\n  X: 1.5", False),
    entry("build_args", "build_args:\n  X: yes", False),
    entry("build_args", "build_args:\n  'A B': x", False),
    entry("cache_repo", "cache_repo: https://registry.example/cache", False),
    entry("cache_repo", "cache_repo: repo:tag", False),
    entry("cache_repo", "cache_repo: ''", False),
    entry("platforms", "platforms: linux", False),
    entry("platforms", "platforms: [linux/amd64/v8/x]", False),
    entry("secrets", "secrets: id=x,env=Y", False),
    entry("secrets", "secrets:\n  - id: x", False),
    entry("secrets", "secrets:\n  - id=x,env=Y,src=z", False),
    entry("secrets", "secrets:\n  - id=x,env=A\n  - id=x,env=B", False),
    entry("secrets", "secrets:\n  - {id: x, env: Y, color: red}", False),
    entry("publish", "publish:\n  b: []", False),
    entry("publish", "publish: [b]", False),
    entry("test", "test: {stage: a}", False),
    entry("test", "test:\n  stage: a\n  command: []", False),
    entry("test", "test:\n  stage: a\n  command: x\n  artifacts: [relative]", False),
    entry("dockerfile", "dockerfile: 3", False),
    entry("context", "context: ''", False),
    entry("context", "context: null", False),
    entry(None, "? [complex, key]\n: value", False),
    entry(None, "<<: {engine: docker}", False),
    entry(None, "1: one", False),
    entry(None, "!!python/object:os.system x: y", False),
]
BROKEN_YAML = [
    entry(None, "targets: [a", False),
    entry(None, 'cache_repo: "unterminated', False),
    entry(None, "\tengine: docker", False),
    entry(None, "engine: docker: docker", False),
    entry(None, "- a list at the top", False),
    entry(None, "targets: *undefined", False),
    entry(None, "engine: &a docker\nimage_repo: *a", None),
    entry(None, "%YAML 1.1", False),
    entry(None, "---\nengine: docker\n---\nengine: dagger", False),
    entry(None, "engine: !custom docker", False),
    entry(None, "engine: \x07", False),
    entry(None, "key with no value", False),
]
GARBAGE = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters=":\r\n\t "),
    min_size=1,
    max_size=15,
).map(lambda text: entry(None, text, None))


FAULTS = st.one_of(st.sampled_from(INVALID_ENTRIES), st.sampled_from(BROKEN_YAML), GARBAGE)


@st.composite
def configs(draw: st.DrawFn) -> list[Entry]:
    """A valid config; or one with a single fault put anywhere in it; or anything at all."""
    valid = draw(st.lists(st.sampled_from(VALID_ENTRIES), max_size=6, unique_by=_entry_key))
    mode = draw(st.sampled_from(["valid", "one fault", "chaos"]))
    if mode == "valid":
        return valid
    if mode == "one fault":
        where = draw(st.integers(0, len(valid)))
        return [*valid[:where], draw(FAULTS), *valid[where:]]
    pieces = st.one_of(st.sampled_from(VALID_ENTRIES), FAULTS)
    return draw(st.lists(pieces, max_size=6))


def _entry_key(item: Entry) -> object:
    return item.key if item.key is not None else item


def layout(entries: list[Entry]) -> tuple[str, dict[int, Entry]]:
    """The file's text, and which entry each (1-based) line belongs to."""
    lines: list[str] = []
    owner: dict[int, Entry] = {}
    for item in entries:
        for line in item.lines:
            lines.append(line)
            owner[len(lines)] = item
    return "\n".join(lines) + "\n", owner


def validity(entries: list[Entry]) -> bool | None:
    keys = [item.key for item in entries if item.key is not None]
    if any(item.valid is False for item in entries) or len(keys) != len(set(keys)):
        return False
    if any(item.valid is None for item in entries):
        return None
    return True


@pytest.mark.slow
@FUZZ
@given(entries=configs())
def test_any_config_plans_or_is_a_located_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    entries: list[Entry],
) -> None:
    directory = fresh(tmp_path)
    (directory / "Dockerfile").write_text(CONFIG_DOCKERFILE)
    (directory / "token.txt").write_text("t")
    text, owner = layout(entries)
    (directory / "dagger-stages.yaml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(directory)
    outcome = run("plan", "--offline", "--json")
    tally(outcome)
    check_sane(outcome)
    valid = validity(entries)
    if valid is True:
        assert outcome.code == 0, (text, outcome.err)
        return
    if valid is False:
        assert outcome.code == EXIT_BAD_INPUT, (text, outcome.out)
    if outcome.code == 0:
        return
    assert re.match(r"^dagger-stages\.yaml:\d+: .+", outcome.err), (text, outcome.err)
    numbers = line_numbers(outcome.err.splitlines()[0] + "\n", "dagger-stages.yaml")
    count = len(text.splitlines())
    for number in numbers:
        assert 1 <= number <= count + 1, (text, outcome.err)
    try:
        yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return  # the YAML itself is broken: the line is where the parser noticed
    if valid is False and numbers:
        assert owner[numbers[0]].valid is not True or _duplicate(owner[numbers[0]], entries), (
            text,
            outcome.err,
        )


def _duplicate(item: Entry, entries: list[Entry]) -> bool:
    return item.key is not None and [e.key for e in entries].count(item.key) > 1


# --- (c) flags ------------------------------------------------------------------------------

FLAG_DOCKERFILE = (
    "ARG BASE=busybox\nFROM ${BASE} AS a\nARG X\nRUN --mount=type=secret,id=s echo $X\n"
    "FROM a AS b\n"
)
# Linux argv is bytes: what is not UTF-8 reaches Python as lone surrogates (\udc80-\udcff).
ARGV_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
        st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),
    ),
    max_size=20,
)
BUILD_ARGS = st.one_of(
    st.tuples(st.sampled_from(["BASE", "X", "UNUSED", "", "A B", "=", "ünï"]), ARGV_TEXT).map(
        lambda t: f"{t[0]}={t[1]}"
    ),
    st.sampled_from(["BASE", "X", "=x", "BASE=", "BASE=${X}", "BASE=a@sha256:1", "X==="]),
    ARGV_TEXT,
)
SECRETS = st.one_of(
    st.sampled_from(
        [
            "id=s,env=S",
            "id=s,src=token.txt",
            "id=s",
            "env=S",
            "id=,env=S",
            "id=s,env=",
            "id=s,env=S,src=x",
            "type=file,id=s,env=S",
            "type=env,id=s,src=S",
            "type=bogus,id=s,src=x",
            'id="s,env=S',
            "id=s,color=red",
            "source=token.txt,id=s",
            "",
            ",",
        ]
    ),
    ARGV_TEXT,
)
TARGETS = st.one_of(st.sampled_from(["a", "b", "A", "0", "1", "2", "-1", "nope", ""]), ARGV_TEXT)
REPOSITORIES = st.one_of(
    st.sampled_from(
        [
            "registry.example/team/cache",
            "localhost:5000/x/cache",
            "UPPER/cache",
            "x/cache:tag",
            "http://x/cache",
            "x@sha256:" + "0" * 64,
            "a//b",
            "",
        ]
    ),
    ARGV_TEXT,
)
PLATFORMS = st.one_of(
    st.sampled_from(
        ["linux/amd64", "linux/arm64/v8", "LINUX/AMD64", "linux", "/", "a/b/c/d", " / ", "x//y"]
    ),
    ARGV_TEXT,
)


@pytest.mark.slow
@FUZZ
@given(
    build_args=st.lists(BUILD_ARGS, max_size=3),
    secrets=st.lists(SECRETS, max_size=2),
    targets=st.lists(TARGETS, max_size=2),
    platforms=st.lists(PLATFORMS, max_size=2),
    cache_repo=st.one_of(st.none(), REPOSITORIES),
)
def test_any_flag_values_plan_or_are_a_usage_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    build_args: list[str],
    secrets: list[str],
    targets: list[str],
    platforms: list[str],
    cache_repo: str | None,
) -> None:
    directory = fresh(tmp_path)
    (directory / "Dockerfile").write_text(FLAG_DOCKERFILE)
    (directory / "token.txt").write_text("t")
    monkeypatch.chdir(directory)
    argv = ["plan", "--offline", "--json"]
    argv += [f"--build-arg={value}" for value in build_args]
    argv += [f"--secret={value}" for value in secrets]
    argv += [f"--target={value}" for value in targets]
    argv += [f"--platform={value}" for value in platforms]
    argv += [] if cache_repo is None else [f"--cache-repo={cache_repo}"]
    outcome = run(*argv)
    tally(outcome)
    check_sane(outcome)
    if outcome.code == EXIT_BAD_INPUT:
        first = outcome.err.splitlines()[0]
        assert re.match(r"^(dagger-stages: |Dockerfile(:\d+)?: |usage: )", first), outcome.err


@pytest.mark.parametrize(
    "flag", [b"--build-arg=BASE=busybox\xff", b"--platform=linux/amd\xff"], ids=["arg", "platform"]
)
def test_a_flag_value_with_bytes_that_are_not_utf8(tmp_path: Path, flag: bytes) -> None:
    """argv bytes that are not UTF-8 reach Python as lone surrogates; they crashed the key
    hash, then the JSON print where stdout is strict UTF-8 (PYTHONIOENCODING=utf-8)."""
    (tmp_path / "Dockerfile").write_text(FLAG_DOCKERFILE)
    result = subprocess.run(
        [*cli_command("plan", "--offline", "--json"), flag],
        cwd=tmp_path,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", "TMPDIR": str(tmp_path)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode in (0, EXIT_BAD_INPUT), result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize(
    "flag",
    [
        "--cache-repo=x/cache:tag",
        "--cache-repo=http://registry.example/cache",
        "--cache-repo=Bad Repo/cache",
        "--image-repo=registry.example/app:latest",
    ],
)
def test_a_bad_repository_flag_is_a_usage_error(chdir: Path, flag: str) -> None:
    """Unchecked, these reached Reference.parse inside a task group: exit 70."""
    (chdir / "Dockerfile").write_text("FROM scratch AS a\n")  # nothing to resolve: no network
    outcome = run("plan", "--json", flag)
    check_sane(outcome)
    assert outcome.code == EXIT_BAD_INPUT
    assert outcome.err.startswith(f"dagger-stages: {flag.split('=')[0]}"), outcome.err
