"""The schema generated from the installed SDK: the engine doubles' fallback where Dagger's real
schema (../shared) is absent. It must build, let the SDK drive a build, and claim nothing the
real schema lacks, or the doubles would accept queries the real engine refuses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import graphql
import pytest

from pipeline.engines.base import BuildSpec, StageJob
from pipeline.engines.dagger_engine import DaggerExecutor
from pipeline.oci.reference import Reference
from pipeline.settings.secrets import Secrets
from tests.fake_dagger import SCHEMA_PATH, FakeDagger, serve
from tests.sdk_schema import sdk_schema, sdk_schema_sdl

# The SDK (0.21.11) is newer than the schema in ../shared (engine v0.21.8): it still generates
# the `load<Type>FromID` loaders that engine dropped for `node(id:)`, and it has the Volume API.
NEWER_THAN_THE_REAL_SCHEMA = re.compile(
    r"Query\.load\w+FromID"
    r"|Volume|Address\.volume|Binding\.asVolume|Container\.withMountedVolume"
    r"|Env\.withVolume(Input|Output)|Query\.sshfsVolume"
)

Composite = graphql.GraphQLObjectType | graphql.GraphQLInterfaceType


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sdk_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDagger]:
    """The fake engine serving the generated schema even where the real one exists."""
    fake = FakeDagger(schema=sdk_schema(), token="sdk-schema-token")
    with serve(fake) as port:
        fake.port = port
        monkeypatch.setenv("DAGGER_SESSION_PORT", str(port))
        monkeypatch.setenv("DAGGER_SESSION_TOKEN", fake.token)
        yield fake


def test_the_generated_schema_is_a_valid_schema() -> None:
    schema = graphql.build_schema(sdk_schema_sdl())

    assert graphql.validate_schema(schema) == []
    node = schema.get_type("Node")
    container = schema.get_type("Container")
    assert isinstance(node, graphql.GraphQLInterfaceType)
    assert isinstance(container, graphql.GraphQLObjectType)
    assert node in container.interfaces
    assert str(container.fields["sync"].type) == "ID!"
    assert str(container.fields["withExec"].args["expect"].type) == "ReturnType"


@pytest.mark.anyio
async def test_the_sdk_builds_on_a_double_serving_the_generated_schema(
    sdk_fake: FakeDagger, tmp_path: Path
) -> None:
    spec = BuildSpec(
        context=tmp_path,
        dockerfile="FROM alpine:3.20 AS web\n",
        ignore_file="",
        build_args={"A": "1"},
        secrets=Secrets(),
        platform=None,
    )
    tag = Reference.parse("registry.test/app/cache:web")
    lines: list[str] = []
    async with DaggerExecutor().session(spec) as session:
        image = await session.build(StageJob(0, "web", "web", "key-web", tag), lines.append)
        address = await session.push(image, tag, lines.append)

    assert not sdk_fake.invalid, "\n\n".join(sdk_fake.invalid)
    [build] = sdk_fake.calls("dockerBuild")
    assert build.args["buildArgs"] == [{"name": "A", "value": "1"}]
    assert [c.args["address"] for c in sdk_fake.calls("publish")] == [str(tag)]
    assert address.startswith("sha256:")
    assert sdk_fake.calls("node"), "the SDK loads the synced container by node(id:)"


def test_the_generated_schema_claims_nothing_the_real_one_lacks() -> None:
    if not SCHEMA_PATH.is_file():
        pytest.skip(f"nothing to compare with: Dagger's schema is not at {SCHEMA_PATH}")
    real = graphql.build_schema(SCHEMA_PATH.read_text(encoding="utf-8"))

    claims = [c for c in _claims_missing(sdk_schema(), real) if not _newer(c)]

    assert claims == []


def _newer(claim: str) -> bool:
    return bool(NEWER_THAN_THE_REAL_SCHEMA.fullmatch(claim.split(":")[0].split("(")[0]))


def _claims_missing(generated: graphql.GraphQLSchema, real: graphql.GraphQLSchema) -> list[str]:
    """Each type, enum value, interface, field and argument the generated schema has that the
    real one lacks or types otherwise."""
    claims = []
    for name, type_ in generated.type_map.items():
        if name.startswith("__") or graphql.is_specified_scalar_type(type_):
            continue
        other = real.type_map.get(name)
        if other is None or type(other) is not type(type_):
            claims.append(f"{name}: no such {type(type_).__name__}")
        elif isinstance(type_, graphql.GraphQLEnumType):
            assert isinstance(other, graphql.GraphQLEnumType)
            claims += [
                f"{name}.{value}: no such value"
                for value in type_.values.keys() - other.values.keys()
            ]
        elif isinstance(type_, graphql.GraphQLInputObjectType):
            assert isinstance(other, graphql.GraphQLInputObjectType)
            claims += _input_claims(name, type_.fields, other.fields)
        elif isinstance(type_, Composite):
            assert isinstance(other, Composite)
            claims += _composite_claims(name, type_, other)
    return claims


def _composite_claims(name: str, type_: Composite, other: Composite) -> list[str]:
    theirs = {i.name for i in other.interfaces}
    claims = [f"{name}: implements {i.name}" for i in type_.interfaces if i.name not in theirs]
    for field_name, field in type_.fields.items():
        real_field = other.fields.get(field_name)
        where = f"{name}.{field_name}"
        if real_field is None:
            claims.append(f"{where}: no such field")
            continue
        if not _same_shape(field.type, real_field.type):
            claims.append(f"{where}: {field.type}, but {real_field.type}")
        claims += _input_claims(where, field.args, real_field.args)
    return claims


def _input_claims(
    where: str,
    values: dict[str, graphql.GraphQLArgument] | dict[str, graphql.GraphQLInputField],
    real: dict[str, graphql.GraphQLArgument] | dict[str, graphql.GraphQLInputField],
) -> list[str]:
    """Arguments (or input fields) must exist with the same type, be required only where the
    real ones are, and default, where they do, to the same value."""
    claims = []
    for name, value in values.items():
        other = real.get(name)
        if other is None:
            claims.append(f"{where}({name}): no such argument")
        elif not _same_shape(value.type, other.type) or (
            graphql.is_non_null_type(value.type) and not graphql.is_non_null_type(other.type)
        ):
            claims.append(f"{where}({name}): {value.type}, but {other.type}")
        elif (default := _default(value)) is not None and default != _default(other):
            claims.append(f"{where}({name}): defaults to {default}, but {_default(other)}")
    return claims


def _default(value: graphql.GraphQLArgument | graphql.GraphQLInputField) -> str | None:
    """The default as written in the SDL both schemas are built from."""
    node = value.ast_node
    return graphql.print_ast(node.default_value) if node and node.default_value else None


def _same_shape(ours: graphql.GraphQLType, theirs: graphql.GraphQLType) -> bool:
    """The same named type in the same lists; nullability is the caller's to compare."""
    return str(ours).replace("!", "") == str(theirs).replace("!", "")
