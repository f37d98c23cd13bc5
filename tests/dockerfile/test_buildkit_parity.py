"""BuildKit's own tests as the oracle for `plan`'s static verdicts (issue 17).

Each test states what BuildKit does with a Dockerfile, for a target and build args: accept it,
or reject it before running any step, and then with which words. It names the BuildKit test or
code it mirrors. They are read from moby/buildkit at 73ed6825c4b7569379ef89df0aedcdbe64473d31
(paths under frontend/dockerfile/); after a bump of the BuildKit we follow, re-read those.

`plan --offline` runs whole, on real files: an accepted Dockerfile exits 0 (maybe with located
warnings), a rejected one exits 2 with `Dockerfile:line: reason`. BuildKit dispatches only the
stages the target needs, so what it finds while dispatching fails only those; elsewhere `plan`
warns, at the line, and says why it is not an error there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.cli import main

NOT_NEEDED = '(not an error here: stage "{}" is not needed by the target)'


@dataclass(frozen=True)
class Verdict:
    code: int
    error: str  # the first line of stderr when rejected
    warnings: tuple[tuple[int, str], ...]
    plan: dict[str, object]

    def stage(self, name: str) -> dict[str, object]:
        stages = self.plan["stages"]
        assert isinstance(stages, list)
        return next(s for s in stages if s["name"] == name)


Plan = Callable[..., Verdict]


@pytest.fixture
def plan(chdir: Path, capsys: pytest.CaptureFixture[str]) -> Plan:
    """Write the Dockerfile (and context files), run `plan --offline --json` with the flags."""

    def run(text: str, *flags: str, files: tuple[str, ...] = ()) -> Verdict:
        (chdir / "Dockerfile").write_text(text)
        for name in files:
            (chdir / name).write_text(name)
        code = main(["plan", "--offline", "--json", *flags])
        captured = capsys.readouterr()
        if code != 0:
            assert "Traceback" not in captured.err
            return Verdict(code, captured.err.splitlines()[0], (), {})
        document = json.loads(captured.out)
        warnings = tuple((w["line"], w["message"]) for w in document["warnings"])
        return Verdict(code, "", warnings, document)

    return run


# -- valid Dockerfiles that plan used to reject ---------------------------------------------------


def test_mount_type_from_an_arg(plan: Plan) -> None:
    """dockerfile_mount_test.go testMountArg: BuildKit expands every --mount value but `from`
    before checking it, so a type from an ARG builds."""
    verdict = plan(
        "FROM busybox\nARG MNT_TYPE=cache\n"
        "RUN --mount=type=$MNT_TYPE,target=/mycache2 touch /mycache2/foo\n"
        "RUN --mount=type=cache,target=/mycache2 [ -f /mycache2/foo ]\n"
    )
    assert (verdict.code, verdict.warnings) == (0, ())


def test_mount_type_from_an_env_the_child_stage_inherits(plan: Plan) -> None:
    """dockerfile_mount_test.go testMountEnvAcrossStages: a child stage sees its parent's ENV in
    its mounts' type and id."""
    verdict = plan(
        "FROM busybox as stage1\n"
        "ENV MNT_ID=mycache\nENV MNT_TYPE2=cache\n"
        "RUN --mount=type=cache,id=mycache,target=/abcabc touch /abcabc/foo\n"
        "RUN --mount=type=$MNT_TYPE2,id=$MNT_ID,target=/cbacba [ -f /cbacba/foo ]\n"
        "FROM stage1\n"
        "RUN --mount=type=$MNT_TYPE2,id=$MNT_ID,target=/whatever [ -f /whatever/foo ]\n"
    )
    assert (verdict.code, verdict.warnings) == (0, ())
    assert verdict.stage("1")["depends_on"] == ["stage1"]


def test_a_mount_type_is_checked_once_expanded(plan: Plan) -> None:
    """instructions/commands_runmount.go parseMount: the expanded value is what BuildKit checks,
    so an ARG naming no mount type fails where the RUN is dispatched, and a build arg mends it."""
    text = "FROM busybox\nARG KIND=volume\nRUN --mount=type=$KIND,target=/c true\n"
    assert plan(text).error == 'Dockerfile:3: unsupported mount type "volume"'
    assert plan(text, "--build-arg", "KIND=cache").code == 0


def test_an_invalid_mount_fails_only_a_stage_the_target_needs(plan: Plan) -> None:
    """dockerfile2llb/convert.go dispatchStages: only the stages reachable from the target are
    dispatched, and a RUN's mounts are checked (setMountState with an expander) only then."""
    text = (
        "FROM busybox AS other\nRUN --mount=type=volume,target=/c true\n"
        "FROM busybox AS app\nRUN true\n"
    )
    verdict = plan(text, "--target", "app")
    message = 'unsupported mount type "volume"'
    assert verdict.code == 0
    assert verdict.warnings == ((2, f"{message} {NOT_NEEDED.format('other')}"),)
    assert plan(text, "--target", "other").error == f"Dockerfile:2: {message}"


def test_a_broken_onbuild_trigger_nothing_inherits_is_no_error(plan: Plan) -> None:
    """dockerfile2llb/convert.go initOnBuildTriggers: a trigger is parsed as an instruction only in
    the stage built FROM its stage; instructions/parse.go parseOnBuild checks just its keyword."""
    verdict = plan("FROM busybox AS base\nONBUILD FROOM x\nFROM busybox AS app\n")
    assert verdict.code == 0
    assert verdict.warnings == (
        (
            2,
            "unknown instruction: FROOM (did you mean FROM?) (not an error here: the ONBUILD "
            'trigger runs only in a build FROM stage "base", and none in this file is)',
        ),
    )


def test_a_broken_onbuild_trigger_fails_only_a_needed_child(plan: Plan) -> None:
    """dockerfile2llb/convert.go initOnBuildTriggers, run for reachable stages only: the child
    built FROM the stage fails; where the target does not need it, nothing does."""
    text = (
        "FROM busybox AS base\nONBUILD RUN --mount=type=cahce,target=/c true\n"
        "FROM base AS child\nFROM busybox AS app\n"
    )
    message = 'unsupported mount type "cahce" (did you mean cache?)'
    verdict = plan(text, "--target", "app")
    assert verdict.code == 0
    assert verdict.warnings == ((2, f"{message} {NOT_NEEDED.format('child')}"),)
    assert plan(text, "--target", "base").code == 0
    assert plan(text, "--target", "child").error == f"Dockerfile:2: {message}"


def test_an_onbuild_trigger_with_an_unknown_instruction_fails_its_child(plan: Plan) -> None:
    """dockerfile_onbuild_test.go testOnBuildInheritedStageRun runs a same-file parent's triggers
    in the child; there a trigger BuildKit cannot parse is the child's error."""
    verdict = plan("FROM busybox AS base\nONBUILD RUNN true\nFROM base AS child\n")
    assert verdict.error == "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)"


def test_an_onbuild_copy_from_a_variable_fails_only_a_needed_child(plan: Plan) -> None:
    """dockerfile2llb/convert.go initOnBuildTriggers calls toCommand, which refuses a variable in
    --from, only for a reachable child."""
    text = (
        "FROM busybox AS base\nONBUILD COPY --from=$SRC /a /a\nFROM base AS child\nFROM busybox\n"
    )
    message = "variable expansion is not supported for --from"
    verdict = plan(text)
    assert verdict.code == 0
    assert [line for line, _ in verdict.warnings] == [2]
    assert plan(text, "--target", "child").error.startswith(f"Dockerfile:2: {message}")


def test_onbuild_keywords_are_checked_in_every_stage(plan: Plan) -> None:
    """instructions/parse.go parseOnBuild rejects ONBUILD ONBUILD, FROM and MAINTAINER while
    parsing, whatever the target."""
    verdict = plan("FROM busybox AS base\nONBUILD MAINTAINER me\nFROM busybox AS app\n")
    assert verdict.error == "Dockerfile:2: MAINTAINER isn't allowed as an ONBUILD trigger"


def test_a_mount_from_any_type_is_a_dependency(plan: Plan) -> None:
    """dockerfile2llb/convert_runmount.go detectRunMount: the source of a mount's `from` becomes
    a dependency before its type is known, since the type may be a variable."""
    verdict = plan(
        "FROM busybox AS tools\nFROM busybox\nARG KIND=bind\n"
        "RUN --mount=type=$KIND,from=tools,target=/t true\n"
    )
    assert verdict.code == 0
    assert verdict.stage("1")["depends_on"] == ["tools"]


# -- did you mean ---------------------------------------------------------------------------------


def test_a_mistyped_mount_flag_says_what_was_meant(plan: Plan) -> None:
    """dockerfile_mount_test.go testMountInvalid: `RUN --mont=…`."""
    verdict = plan("FROM scratch\nRUN --mont=target=/mytmp,type=tmpfs /bin/true\n")
    assert verdict.error == "Dockerfile:2: unknown flag: --mont (did you mean mount?)"


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        # dockerfile_mount_test.go testMountInvalid
        ("typ=tmpfs", "unexpected key 'typ' in 'typ=tmpfs' (did you mean type?)"),
        ("type=tmp", 'unsupported mount type "tmp" (did you mean tmpfs?)'),
        # instructions/commands_runmount.go parseMount, the same search for sharing values
        (
            "type=cache,target=/c,sharing=lockd",
            'unsupported sharing value "lockd" (did you mean locked?)',
        ),
        ("type=cache,target=/c,sharing=weird", 'unsupported sharing value "weird"'),
        ("type=volume", 'unsupported mount type "volume"'),
    ],
)
def test_mount_keys_and_types_say_what_was_meant(plan: Plan, mount: str, message: str) -> None:
    assert (
        plan(f"FROM scratch\nRUN --mount={mount} /bin/true\n").error == f"Dockerfile:2: {message}"
    )


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        ("type=cache,target=/c,required", "unexpected key 'required' for mount type 'cache'"),
        ("required,type=secret,id=a", "unexpected key 'required' for mount type 'bind'"),
        ("type=cache,target=/c,size=1m", "unexpected key 'size' for mount type 'cache'"),
        ("type=tmpfs,target=/t,size=lots", "invalid value for size: lots"),
        ("type=bind,target=/c,mode=0755", 'mode not allowed for "bind" type mounts'),
        ("type=cache,target=/c,mode=0999", "invalid value 0999 for mode"),
        ("type=cache,target=/c,uid=-1", "invalid value -1 for uid"),
        ("type=bind,target=/c,ro=maybe", "invalid value for ro: maybe"),
        ("type=cache,target=/c,nocopy", "invalid field 'nocopy' must be a key=value pair"),
        ("type=secret,id=a,sharing=locked", "secret mount should not define sharing"),
        ("type=tmpfs,target=/t,sharing=locked", "invalid cache sharing set for tmpfs mount"),
    ],
)
def test_mount_values_are_checked_as_buildkit_checks_them(
    plan: Plan, mount: str, message: str
) -> None:
    """instructions/commands_runmount.go parseMount, field by field in order: a `required` read
    before the `type` is judged against the default bind type."""
    verdict = plan(f"FROM busybox\nRUN --mount={mount} true\n")
    assert verdict.error == f"Dockerfile:2: {message}"


def test_valid_mount_values_plan(plan: Plan) -> None:
    """dockerfile_mount_test.go testMountTmpfsSize and parseMount's accepted forms."""
    verdict = plan(
        "FROM busybox\n"
        "RUN --mount=type=tmpfs,target=/dev/shm,size=128m "
        "--mount=type=cache,target=/c,sharing=locked,mode=0700,uid=1000,gid=1000,rw=true "
        "--mount=type=secret,id=s,required=true --mount=type=ssh true\n"
    )
    assert (verdict.code, verdict.warnings) == (0, ())


# -- invalid Dockerfiles that plan used to accept: what BuildKit's parser refuses in any stage ----


@pytest.mark.parametrize("keyword", ["MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL"])
def test_instructions_that_take_exactly_one_argument(plan: Plan, keyword: str) -> None:
    """instructions/parse_test.go TestCommandsExactlyOneArgument."""
    verdict = plan(f"FROM busybox AS other\n{keyword}\nFROM busybox\n")
    assert verdict.error == f"Dockerfile:2: {keyword} requires exactly one argument"


@pytest.mark.parametrize("keyword", ["ENV", "LABEL", "ONBUILD", "HEALTHCHECK", "EXPOSE", "VOLUME"])
def test_instructions_that_take_at_least_one_argument(plan: Plan, keyword: str) -> None:
    """instructions/parse_test.go TestCommandsAtLeastOneArgument."""
    verdict = plan(f"FROM busybox AS other\n{keyword}\nFROM busybox\n")
    assert verdict.error == f"Dockerfile:2: {keyword} requires at least one argument"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # instructions/parse_test.go TestParseOptInterval: under 1ms fails, 0 means the default
        ("HEALTHCHECK --interval=50ns CMD true", 'Interval "interval" cannot be less than 1ms'),
        ("HEALTHCHECK --timeout=999us CMD true", 'Interval "timeout" cannot be less than 1ms'),
        (
            "HEALTHCHECK --start-period=-1s CMD true",
            'Interval "start-period" cannot be less than 1ms',
        ),
        # instructions/parse.go parseHealthcheck
        ("HEALTHCHECK NONE true", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK RUN true", 'Unknown type "RUN" in HEALTHCHECK (try CMD)'),
        ("HEALTHCHECK --retries=-1 CMD true", "--retries cannot be negative (-1)"),
    ],
)
def test_healthcheck_is_checked_as_buildkit_parses_it(plan: Plan, line: str, message: str) -> None:
    assert plan(f"FROM busybox\n{line}\n").error == f"Dockerfile:2: {message}"


def test_healthcheck_intervals_of_zero_and_one_millisecond_plan(plan: Plan) -> None:
    """instructions/parse_test.go TestParseOptInterval: "0ms" and "1ms" are accepted."""
    verdict = plan("FROM busybox\nHEALTHCHECK --interval=0ms --timeout=1ms CMD true\n")
    assert verdict.code == 0


@pytest.mark.parametrize("keyword", ["COPY", "ADD"])
def test_a_heredoc_is_no_destination(plan: Plan, keyword: str) -> None:
    """instructions/parse_heredoc_test.go TestErrorCasesHeredoc: "COPY /foo <<EOF"."""
    verdict = plan(f"FROM busybox\n{keyword} /foo <<EOF\nEOF\n")
    assert verdict.error == f"Dockerfile:2: {keyword} cannot accept a heredoc as a destination"


# -- FROM --platform ------------------------------------------------------------------------------


def test_a_platform_that_expands_to_nothing_fails_with_the_arg_meant(plan: Plan) -> None:
    """dockerfile_check_test.go testUndeclaredArg: `FROM --platform=$BULIDPLATFORM` fails the build
    at its FROM, in any stage, naming the platform ARG it resembles."""
    verdict = plan("FROM --platform=$BULIDPLATFORM scratch AS other\nFROM busybox\n")
    assert verdict.error == (
        "Dockerfile:1: empty platform value from expression $BULIDPLATFORM "
        "(did you mean BUILDPLATFORM?)"
    )


def test_a_platform_with_an_empty_component_fails_with_the_arg_meant(plan: Plan) -> None:
    """dockerfile_check_test.go testUndeclaredArg: `linux/${MYARCH}` beside `ARG MY_ARCH`."""
    verdict = plan(
        "ARG MY_OS=linux\nARG MY_ARCH=amd64\nFROM --platform=linux/${MYARCH} busybox\n"
        "COPY Dockerfile .\n"
    )
    assert verdict.error == (
        'Dockerfile:3: failed to parse platform linux/${MYARCH}: "" is an invalid component of '
        '"linux/": platform specifier component must match "^[A-Za-z0-9_.-]+$": invalid argument '
        "(did you mean MY_ARCH?)"
    )


@pytest.mark.parametrize(
    ("platform", "reason"),
    [
        ("linux/amd64/v2/x", '"linux/amd64/v2/x": cannot parse platform specifier'),
        ("plan10", '"plan10": unknown operating system or architecture'),
        ("linux/*", '"linux/*": wildcards not yet supported'),
    ],
)
def test_a_platform_containerd_cannot_parse_fails(plan: Plan, platform: str, reason: str) -> None:
    """dockerfile2llb/convert.go buildDispatchStates parses every FROM's platform with containerd's
    platforms.Parse, and wraps its error."""
    verdict = plan(f"FROM --platform={platform} busybox\n")
    assert verdict.error == (
        f"Dockerfile:1: failed to parse platform {platform}: {reason}: invalid argument"
    )


@pytest.mark.parametrize("platform", ["linux", "arm64", "linux/arm64/v8", "$BUILDPLATFORM"])
def test_platforms_containerd_parses_plan(plan: Plan, platform: str) -> None:
    """containerd's platforms.Parse takes an OS or an architecture alone, and os/arch/variant."""
    assert plan(f"FROM --platform={platform} busybox\n").code == 0


# -- COPY and ADD, as dispatchCopy judges them in a needed stage ----------------------------------

SHA256 = "sha256:" + "24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d"


@pytest.mark.parametrize("keyword", ["COPY", "ADD"])
@pytest.mark.parametrize("mode", ["64a", "10000", "9"])
def test_a_chmod_neither_octal_nor_under_07777_fails(plan: Plan, keyword: str, mode: str) -> None:
    """dockerfile_copy_test.go testCopyInvalidChmod, dockerfile_add_test.go testAddInvalidChmod."""
    verdict = plan(f"FROM scratch\n{keyword} --chmod={mode} foo /\n", files=("foo",))
    assert verdict.error == (
        f"Dockerfile:2: invalid chmod parameter: '{mode}'. "
        "it should be octal string and between 0 and 07777"
    )


@pytest.mark.parametrize("mode", ["0755", "7777", "u+x", "go-w,a+rX", "u=rw,g=u"])
def test_octal_and_symbolic_chmods_plan(plan: Plan, mode: str) -> None:
    """dockerfile_copy_test.go testCopyChmod: octal up to 07777 and symbolic modes (1.14)."""
    assert plan(f"FROM scratch\nCOPY --chmod={mode} foo /\n", files=("foo",)).code == 0


def test_a_symbolic_chmod_with_bad_syntax_fails(plan: Plan) -> None:
    """dockerfile2llb/convert_copy.go dispatchCopy returns dchapes-mode's syntax error."""
    verdict = plan("FROM scratch\nCOPY --chmod=u*x foo /\n", files=("foo",))
    assert verdict.error.startswith("Dockerfile:2: invalid syntax (--chmod=u*x: ")


def test_a_chmod_from_an_arg_is_checked_once_expanded(plan: Plan) -> None:
    """dockerfile2llb/convert.go dispatch expands --chmod before dispatchCopy checks it."""
    text = "FROM scratch\nARG MODE=0644\nCOPY --chmod=$MODE foo /\n"
    assert plan(text, files=("foo",)).code == 0
    verdict = plan(text, "--build-arg", "MODE=0999", files=("foo",))
    assert verdict.error.startswith("Dockerfile:3: invalid chmod parameter: '0999'")


def test_a_bad_chmod_fails_only_a_stage_the_target_needs(plan: Plan) -> None:
    """dockerfile2llb/convert.go dispatchStages dispatches only stages the target reaches."""
    text = "FROM scratch AS other\nCOPY --chmod=64a foo /\nFROM scratch\nCOPY foo /\n"
    verdict = plan(text, files=("foo",))
    assert verdict.code == 0
    assert verdict.warnings[0][0] == 2
    assert verdict.warnings[0][1].endswith(NOT_NEEDED.format("other"))


@pytest.mark.parametrize(
    ("checksum", "source", "message"),
    [
        # dockerfile_add_test.go testAddChecksum/DigestWithKnownButUnsupportedAlgoName
        (
            "md5:7e55db001d319a94b0b713529a756623",
            "https://example.com/f",
            "unsupported digest algorithm",
        ),
        # …/DigestWithUnknownAlgoName
        ("unknown:" + SHA256[7:], "https://example.com/f", "unsupported digest algorithm"),
        # …/DigestWithoutAlgoName
        (SHA256[7:], "https://example.com/f", "invalid checksum digest format"),
        ("sha256:abc", "https://example.com/f", "invalid checksum digest length"),
        # …/NonHTTPSource
        (SHA256, "foo", "checksum requires HTTP(S) or Git sources"),
    ],
)
def test_add_checksum_is_checked_as_buildkit_checks_it(
    plan: Plan, checksum: str, source: str, message: str
) -> None:
    verdict = plan(f"FROM scratch\nADD --checksum={checksum} {source} /tmp/foo\n", files=("foo",))
    assert verdict.error.startswith(f"Dockerfile:2: {message}")


def test_add_checksum_of_a_url_plans(plan: Plan) -> None:
    """dockerfile_add_test.go testAddChecksum/Valid and /DigestFromEnv."""
    assert plan(f"FROM scratch\nADD --checksum={SHA256} https://example.com/f /tmp/foo\n").code == 0
    verdict = plan(
        f"FROM scratch\nENV DIGEST={SHA256}\nENV LINK=https://example.com/f\n"
        "ADD --checksum=${DIGEST} ${LINK} /tmp/foo\n"
    )
    assert verdict.code == 0


def test_add_checksum_of_several_sources_fails(plan: Plan) -> None:
    """dockerfile2llb/convert_copy.go dispatchCopy: one source only."""
    verdict = plan(
        f"FROM scratch\nADD --checksum={SHA256} https://example.com/a https://example.com/b /\n"
    )
    assert verdict.error == "Dockerfile:2: checksum can't be specified for multiple sources"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        # dockerfile_addgit_test.go testGitQueryString
        (
            "https://example.com/r.git?tag=v0.0.2#refs/heads/master",
            'ref conflicts: "refs/heads/master" vs "refs/tags/v0.0.2"',
        ),
        # dfgitutil/git_ref_test.go TestParseGitRef
        (
            "https://github.com/moby/buildkit.git?ref=v1.0.0#v1.2.3",
            'ref conflicts: "v1.2.3" vs "v1.0.0"',
        ),
        (
            "https://github.com/moby/buildkit.git?ref=v1.0.0&tag=v1.2.3",
            'ref conflicts: "v1.0.0" vs "refs/tags/v1.2.3"',
        ),
        (
            "https://github.com/moby/buildkit.git?tag=v1.0.0&branch=v1.0",
            "branch conflicts with tag",
        ),
        ("git@github.com:moby/buildkit.git?color=red", 'unexpected query "color"'),
        ("https://example.com/r.git?ref=", 'query "ref" has no value'),
    ],
)
def test_a_git_query_that_conflicts_fails(plan: Plan, source: str, message: str) -> None:
    verdict = plan(f"FROM scratch\nADD {source} /src\n")
    assert verdict.error == f"Dockerfile:2: {message}"


@pytest.mark.parametrize(
    "source",
    [
        # dockerfile_addgit_test.go testGitQueryString, the valid ones
        "https://example.com/r.git?tag=v0.0.2#refs/tags/v0.0.2",
        "https://example.com/r.git?subdir=sub&ref=feature",
        "https://example.com/r.git?keep-git-dir&submodules",
        "git@github.com:moby/buildkit.git?subdir=/subdir#v1.0.0",
    ],
)
def test_git_queries_that_agree_plan(plan: Plan, source: str) -> None:
    assert plan(f"FROM scratch\nADD {source} /src\n").code == 0


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("http://example.com/file", "source can't be a URL for COPY"),
        ("https://example.com/r.git", "source can't be a git ref for COPY"),
    ],
)
def test_copy_refuses_remote_sources(plan: Plan, source: str, message: str) -> None:
    """dockerfile2llb/convert_copy.go dispatchCopy, even when a context path of that name
    exists (`plan` used to look the URL up in the context)."""
    (Path.cwd() / "http:" / "example.com").mkdir(parents=True)
    (Path.cwd() / "http:" / "example.com" / "file").write_text("x")
    verdict = plan(f"FROM scratch\nCOPY {source} /x\n")
    assert verdict.error.startswith(f"Dockerfile:2: {message}")


# -- SOURCE_DATE_EPOCH (dockerfile 1.24+) ---------------------------------------------------------


def test_an_epoch_default_that_is_no_timestamp_fails(plan: Plan) -> None:
    """dockerfile_source_date_epoch_test.go testSourceDateEpochDockerfileDefaultInvalid."""
    verdict = plan("ARG SOURCE_DATE_EPOCH=not-a-timestamp\nFROM scratch\nCOPY Dockerfile .\n")
    assert verdict.error.startswith("Dockerfile:1: invalid SOURCE_DATE_EPOCH: not-a-timestamp")


def test_an_epoch_stage_that_is_not_source_only_fails_every_target(plan: Plan) -> None:
    """dockerfile_source_date_epoch_test.go testSourceDateEpochStageInvalid: the stage is
    evaluated before any other, so the error is at its FROM whatever the target."""
    text = (
        "ARG SOURCE_DATE_EPOCH=mysource\nFROM scratch AS mysource\nCOPY Dockerfile /Dockerfile\n"
        "FROM scratch AS app\nCOPY Dockerfile .\n"
    )
    verdict = plan(text, "--target", "app")
    assert verdict.error == (
        "Dockerfile:2: SOURCE_DATE_EPOCH stage does not meet source-only requirements: "
        "unsupported copy instruction"
    )


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("FROM busybox AS mysource\nADD https://example.com/src.tar /\n", "must use FROM scratch"),
        ("FROM scratch AS mysource\nARG V=1\n", "must contain exactly one remote ADD"),
        (
            "FROM scratch AS mysource\nADD https://example.com/a /\nADD https://example.com/b /\n",
            "must contain exactly one remote ADD",
        ),
        ("FROM scratch AS mysource\nADD src.tar /\n", "source must be a single HTTP(S) or Git ADD"),
    ],
)
def test_the_epoch_stage_rules(plan: Plan, stage: str, message: str) -> None:
    """dockerfile2llb/epoch.go sourceDateEpochStageSource."""
    verdict = plan(f"ARG SOURCE_DATE_EPOCH=mysource\n{stage}FROM scratch\n", files=("src.tar",))
    assert verdict.error == f"Dockerfile:2: SOURCE_DATE_EPOCH stage {message}"


def test_an_epoch_stage_is_needed_and_keyed(plan: Plan) -> None:
    """dockerfile_source_date_epoch_test.go testSourceDateEpochStageOverride: a source-only stage
    dates the build (BuildKit evaluates it whatever the target); a timestamp build arg wins."""
    text = (
        "ARG SOURCE_DATE_EPOCH=mysource\nFROM scratch AS mysource\nARG SRC=src.tar\n"
        "ADD https://example.com/${SRC} /\nFROM scratch AS app\nCOPY Dockerfile .\n"
    )
    verdict = plan(text, "--target", "app")
    assert verdict.code == 0
    assert verdict.stage("mysource")["needed"] is True
    key = verdict.stage("app")["key"]
    again = plan(text, "--target", "app", "--build-arg", "SRC=other.tar")
    assert again.stage("app")["key"] != key
    override = plan(text, "--target", "app", "--build-arg", "SOURCE_DATE_EPOCH=1700000000")
    assert override.stage("mysource")["needed"] is False
    assert override.stage("app")["key"] not in (key, again.stage("app")["key"])


def test_an_epoch_timestamp_is_keyed(plan: Plan) -> None:
    """dockerfile_source_date_epoch_test.go testSourceDateEpochDockerfileDefault: the epoch
    stamps the image, so another epoch is another image."""
    text = "ARG SOURCE_DATE_EPOCH=1700000000\nFROM scratch\nCOPY Dockerfile .\n"
    first = plan(text).stage("0")["key"]
    assert plan(text, "--build-arg", "SOURCE_DATE_EPOCH=1800000000").stage("0")["key"] != first
