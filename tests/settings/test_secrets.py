"""Secrets: the buildx syntax, reading the values once, and never showing them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.errors import UsageError
from pipeline.settings.resolve import flag_layer
from pipeline.settings.secrets import Masker, Secrets, SecretSpec, resolve_secrets, secret_from_text

SECRET = "hunter2-secret"


# -- the buildx syntax --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id=npm,env=NPM_TOKEN", SecretSpec("npm", env="NPM_TOKEN")),
        ("id=netrc,src=/home/u/.netrc", SecretSpec("netrc", src="/home/u/.netrc")),
        ("id=netrc,source=.netrc", SecretSpec("netrc", src=".netrc")),
        ("src=.netrc,id=netrc", SecretSpec("netrc", src=".netrc")),
        ("ID=a,ENV=B", SecretSpec("a", env="B")),
        ("id=a,type=env,src=VAR", SecretSpec("a", env="VAR")),
        ("type=env,id=a,env=VAR", SecretSpec("a", env="VAR")),
        ("id=a,type=file,src=f", SecretSpec("a", src="f")),
        ('id=a,"src=dir,with,commas/f"', SecretSpec("a", src="dir,with,commas/f")),
        ("id=a,src=x=y", SecretSpec("a", src="x=y")),
    ],
)
def test_parse_secret(text: str, expected: SecretSpec) -> None:
    assert secret_from_text(text) == expected
    assert flag_layer({"secrets": [text]}, {}).values["secrets"] == (expected,)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("env=A", "the id is missing"),
        ("id=,env=A", "the id is missing"),
        ("", "the id is missing"),
        ("id=a", "needs env (a variable name) or src (a file path) to say where the value is"),
        ("id=a,env=A,src=f", "give env or src, not both"),
        ("id=a,src=f,source=g", '"src" is given twice'),
        ("id=a,id=b,env=A", '"id" is given twice'),
        ("id=a,env", '"env" is not a key=value pair'),
        ("id=a,required=true", 'unknown key "required" (expected id, env, src or type)'),
        ("id=a,type=ssh,src=f", 'type must be "env" or "file", not "ssh"'),
        ("id=a,type=file,env=A", "type=file takes src, not env"),
        ("id=a,env=", "env is empty"),
    ],
)
def test_parse_secret_errors(text: str, reason: str) -> None:
    with pytest.raises(UsageError) as caught:
        flag_layer({"secrets": [text]}, {})
    assert str(caught.value) == f'--secret "{text}": {reason}'
    assert caught.value.exit_code == 2


def test_parse_secret_does_not_read_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DS_SECRET", "hunter2")
    spec = secret_from_text("id=s,env=DS_SECRET")
    assert "hunter2" not in repr(spec)
    assert secret_from_text("id=f,src=/does/not/exist") == SecretSpec("f", src="/does/not/exist")


# -- resolve_secrets -----------------------------------------------------------------------------


def test_values_come_from_variables_and_files(tmp_path: Path) -> None:
    (tmp_path / "netrc").write_text("machine x\n")
    specs = (SecretSpec("npm", env="NPM_TOKEN"), SecretSpec("netrc", src=str(tmp_path / "netrc")))
    secrets = resolve_secrets(specs, {"NPM_TOKEN": SECRET})
    assert secrets.ids == ("npm", "netrc")
    assert secrets.items() == (("npm", SECRET), ("netrc", "machine x\n"))


def test_a_file_that_is_not_utf8_keeps_its_bytes(tmp_path: Path) -> None:
    data = b"\x30\x82\xff\xfe\x00"
    (tmp_path / "key.der").write_bytes(data)
    secrets = resolve_secrets([SecretSpec("key", src=str(tmp_path / "key.der"))], {})
    [(_, value)] = secrets.items()
    assert value.encode("utf-8", "surrogateescape") == data


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (
            SecretSpec("npm_token", env="UNSET_VARIABLE"),
            "secret npm_token: environment variable UNSET_VARIABLE is not set",
        ),
        (
            SecretSpec("netrc", src="/nonexistent/netrc"),
            "secret netrc: cannot read /nonexistent/netrc: No such file or directory",
        ),
    ],
)
def test_a_missing_secret_is_a_usage_error_naming_it(secret: SecretSpec, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        resolve_secrets([secret], {"OTHER": SECRET})
    assert str(caught.value) == message
    assert caught.value.exit_code == 2


def test_secrets_never_show_their_values() -> None:
    secrets = Secrets.of({"npm": SECRET})
    assert repr(secrets) == str(secrets) == "Secrets(ids=('npm',))"
    assert SECRET not in f"{secrets} {secrets!r} {[secrets]} {secrets.masker()!r}"
    assert secrets == Secrets.of({"npm": SECRET})
    assert secrets != Secrets.of({"npm": "other"})


def test_the_masker_of_secrets_hides_each_value() -> None:
    masker = Secrets.of({"a": SECRET, "b": "two\nlines"}).masker()
    assert masker(f"x {SECRET} two lines") == "x *** *** ***"


def test_masker_hides_secret_values_longest_first() -> None:
    mask = Masker([SECRET, "hunter2", "ab"])
    assert mask(f"token={SECRET} and hunter2 and ab") == "token=*** and *** and ab"


def test_a_build_reads_its_secrets_before_anything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No engine, registry or plan is needed to learn that a secret's variable is unset."""
    (tmp_path / "Dockerfile").write_text("FROM scratch AS a\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DS_UNSET_SECRET", raising=False)
    monkeypatch.setenv("PATH", "")  # neither dagger nor docker could be found
    assert main(["build", "--secret", "id=npm,env=DS_UNSET_SECRET"]) == 2
    assert capsys.readouterr().err == (
        "dagger-stages: secret npm: environment variable DS_UNSET_SECRET is not set\n"
    )
