from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.dockerfile.parse import parse_dockerfile, parse_text
from pipeline.errors import UsageError


def error_of(text: str) -> UsageError:
    with pytest.raises(UsageError) as info:
        parse_text(text)
    return info.value


def test_instructions_keep_lines_flags_and_json_form() -> None:
    parsed = parse_text(
        "FROM alpine AS a\n"
        "\n"
        "# a comment\n"
        "RUN --mount=type=cache,target=/c \\\n"
        "    --mount=type=secret,id=t \\\n"
        "    echo hi\n"
        'COPY ["a b", "/c/"]\n'
    )
    run = parsed.instructions[1]
    assert (run.cmd, run.line, run.end_line) == ("RUN", 4, 6)
    assert run.flags == {"mount": ("type=cache,target=/c", "type=secret,id=t")}
    copy = parsed.instructions[2]
    assert copy.json
    assert copy.args == ("a b", "/c/")


def test_directives_are_read_only_at_the_top() -> None:
    parsed = parse_text("# syntax=docker/dockerfile:1.7\n# escape=`\n\n# check=skip=all\nFROM a\n")
    assert parsed.directives.syntax == "docker/dockerfile:1.7"
    assert parsed.directives.escape == "`"
    assert parsed.directives.check is None


def test_a_shebang_line_is_skipped_before_directives() -> None:
    parsed = parse_text("#!/usr/bin/env dockerfile\n# syntax=x\nFROM a\n")
    assert parsed.directives.syntax == "x"


def test_bom_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_bytes(b"\xef\xbb\xbf# syntax=s\nFROM a\n")
    assert parse_dockerfile(path).directives.syntax == "s"


@pytest.mark.parametrize(
    ("keyword", "hint"),
    [
        ("FROOM", " (did you mean FROM?)"),
        ("froom", " (did you mean from?)"),
        ("Copyy", " (did you mean copy?)"),
        ("BADCMD", ""),
    ],
)
def test_unknown_instruction_with_suggestion(keyword: str, hint: str) -> None:
    error = error_of(f"FROM a\n{keyword} x\n")
    assert (error.line, error.message) == (2, f"unknown instruction: {keyword}{hint}")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("FROM\n", 1, "FROM requires either one or three arguments"),
        ("FROM a AS\n", 1, "FROM requires either one or three arguments"),
        ("FROM a FOR b\n", 1, "FROM requires either one or three arguments"),
        ("FROM --platfrom=x a\n", 1, "unknown flag: --platfrom (did you mean platform?)"),
        (
            "FROM a\nCOPY onlyone\n",
            2,
            "COPY requires at least two arguments, but only one was "
            "provided. Destination could not be determined",
        ),
        ("FROM a\nCOPY --chown=1 --chown=2 a b\n", 2, "duplicate flag specified: --chown"),
        (
            "FROM a\nCOPY --link=maybe a b\n",
            2,
            "expecting boolean value for flag --link, not: maybe",
        ),
        ("FROM a\nENV\n", 2, "ENV requires at least one argument"),
        ("FROM a\nONBUILD FROM b\n", 2, "FROM isn't allowed as an ONBUILD trigger"),
        (
            "FROM a\nONBUILD ONBUILD RUN x\n",
            2,
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        ("# escape=x\nFROM a\n", 1, "invalid escape token 'x' does not match ` or \\"),
        ("# syntax=a\n# Syntax=b\nFROM a\n", 2, "only one syntax parser directive can be used"),
        ("FROM a\nARG =x\n", 2, "ARG names can not be blank"),
    ],
)
def test_instruction_errors(text: str, line: int, message: str) -> None:
    error = error_of(text)
    assert (error.line, error.message) == (line, message)


def test_onbuild_trigger_is_parsed_as_an_instruction() -> None:
    parsed = parse_text("FROM a\nONBUILD copy --from=b /x /y\n")
    trigger = parsed.instructions[1].trigger
    assert trigger is not None
    assert (trigger.cmd, trigger.flag("from"), trigger.args, trigger.line) == (
        "COPY",
        "b",
        ("/x", "/y"),
        2,
    )


def test_onbuild_trigger_keeps_its_heredoc() -> None:
    parsed = parse_text("FROM a\nONBUILD RUN <<EOF\necho hi\n# kept\nEOF\nFROM b\n")
    onbuild = parsed.instructions[1]
    trigger = onbuild.trigger
    assert trigger is not None
    assert (trigger.cmd, trigger.heredocs, trigger.line, trigger.end_line) == (
        "RUN",
        ("echo hi\n# kept\n",),
        2,
        5,
    )
    assert onbuild.original == "ONBUILD RUN <<EOF\necho hi\n# kept\nEOF"
    assert parsed.instructions[2].cmd == "FROM"


def test_onbuild_trigger_with_continuation_is_one_instruction() -> None:
    trigger = parse_text("FROM a\nONBUILD RUN echo \\\n  hi\n").instructions[1].trigger
    assert trigger is not None
    assert (trigger.args, trigger.heredocs, trigger.end_line) == (("echo   hi",), (), 3)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        parse_dockerfile(tmp_path / "Dockerfile")
    assert str(info.value) == f"{tmp_path / 'Dockerfile'}: Dockerfile not found"
    (tmp_path / "Dockerfile").write_text("")
    with pytest.raises(UsageError, match="the Dockerfile cannot be empty"):
        parse_dockerfile(tmp_path / "Dockerfile")
    (tmp_path / "Dockerfile").write_text("# only a comment\n\n")
    with pytest.raises(UsageError, match="file with no instructions"):
        parse_dockerfile(tmp_path / "Dockerfile")


def test_binary_junk_never_crashes(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_bytes(b"FROM a\n\xff\xfe RUN x\n")
    with pytest.raises(UsageError):
        parse_dockerfile(path)
