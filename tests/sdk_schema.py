"""A GraphQL schema generated from the installed dagger-io SDK, for the engine doubles.

The SDK builds every query with gql's DSL from the schema the engine serves, so the doubles
must serve one. Dagger's real schema lives in ../shared on our machines only and may not be
copied into this repository; where it is absent the doubles serve this one instead. It holds
only what the SDK's generated client (`dagger.client.gen`, a declared dependency) implies:
the fields it selects (`self._select("field", [Arg("name", value, default)])`), their
arguments typed from the methods' annotations (objects travel as `ID`, as in the real
schema), their results, enums, input objects, scalars, and the `Node`/`Syncer`/`Exportable`
interfaces that `node(id:)` and `sync` need. A query valid against it is therefore only as
valid as the SDK believes: it is no validation against the real engine's schema.
`tests/test_sdk_schema.py` checks, where the real schema exists, that this one claims
nothing the real one lacks.
"""

from __future__ import annotations

import ast
import enum
import functools
import inspect
import json
import types
import typing
from dataclasses import MISSING, dataclass, fields
from typing import Any, Self

import graphql
from dagger.client import base, gen

__all__ = ["sdk_schema", "sdk_schema_sdl"]

_T = typing.TypeVar("_T")
_BUILTIN = {str: "String", int: "Int", bool: "Boolean", float: "Float"}


@dataclass(frozen=True)
class _Field:
    name: str
    args: tuple[tuple[str, str], ...]
    type: str

    def sdl(self) -> str:
        args = ", ".join(f"{name}: {type_}" for name, type_ in self.args)
        return f"  {self.name}({args}): {self.type}" if args else f"  {self.name}: {self.type}"


@functools.cache
def sdk_schema() -> graphql.GraphQLSchema:
    """The schema the installed SDK implies, built (and so checked) by graphql-core."""
    return graphql.build_schema(sdk_schema_sdl())


@functools.cache
def sdk_schema_sdl() -> str:
    """The SDL of `sdk_schema`: scalars, enums, inputs, interfaces and object types."""
    objects = _object_fields()
    interfaces = {name: objects.pop(name) for name in _interface_names()}
    parts = [f"scalar {name}" for name in _scalar_names()]
    parts += [_enum_sdl(cls) for cls in _classes(base.Enum)]
    parts += [_input_sdl(cls) for cls in _classes(base.Input)]
    for name, fields_ in interfaces.items():
        parts.append(_composite_sdl("interface", name, fields_, _implements(fields_, interfaces)))
    for name, fields_ in objects.items():
        parts.append(_composite_sdl("type", name, fields_, _implements(fields_, interfaces)))
    return "\n\n".join(parts) + "\n"


def _classes(kind: type[_T]) -> list[type[_T]]:
    """The SDK's classes of a kind, in the order the generated module defines them."""
    return [
        cls
        for cls in vars(gen).values()
        if inspect.isclass(cls) and issubclass(cls, kind) and cls.__module__ != base.__name__
    ]


def _scalar_names() -> list[str]:
    """Custom scalars but the per-type IDs, which the engine serves as the builtin `ID`."""
    return [cls.__name__ for cls in _classes(base.Scalar) if not cls.__name__.endswith("ID")]


def _interface_names() -> list[str]:
    """Interfaces are generated as `_<Name>Client` concrete classes."""
    return [
        cls._graphql_name()
        for cls in _classes(base.Type)
        if cls.__name__.startswith("_") and cls.__name__.endswith("Client")
    ]


def _enum_sdl(cls: type[base.Enum]) -> str:
    """The SDK sends an enum by its member's name (`configure_converter_enum`)."""
    return f"enum {cls.__name__} {{\n" + "".join(f"  {n}\n" for n in cls.__members__) + "}"


def _input_sdl(cls: type) -> str:
    """Input objects are dataclasses that cattrs sends under their field names."""
    hints = typing.get_type_hints(cls, vars(gen))
    lines = [
        f"  {f.name}: {_input_type(hints[f.name], required=f.default is MISSING)}"
        + (f" = {default}" if (default := _literal(f.default)) else "")
        for f in fields(cls)
    ]
    return f"input {cls.__name__} {{\n" + "\n".join(lines) + "\n}"


def _composite_sdl(kind: str, name: str, fields_: list[_Field], implements: list[str]) -> str:
    clause = f" implements {' & '.join(implements)}" if implements else ""
    return f"{kind} {name}{clause} {{\n" + "\n".join(f.sdl() for f in fields_) + "\n}"


def _implements(fields_: list[_Field], interfaces: dict[str, list[_Field]]) -> list[str]:
    """The interfaces whose every field this type has alike: the SDK does not declare them,
    but `node(id:) { ... on T }` needs T to implement `Node`."""
    own = {f.name: f for f in fields_}
    return [
        name
        for name, wanted in interfaces.items()
        if wanted != fields_ and all(_satisfies(own.get(w.name), w) for w in wanted)
    ]


def _satisfies(field: _Field | None, wanted: _Field) -> bool:
    if field is None or field.type != wanted.type:
        return False
    args = dict(field.args)
    extra = set(args) - {name for name, _ in wanted.args}
    return all(args.get(n) == t for n, t in wanted.args) and not any(
        args[n].endswith("!") for n in extra
    )


def _object_fields() -> dict[str, list[_Field]]:
    """Every SDK class for a GraphQL object or interface, by GraphQL name, with its fields."""
    tree = ast.parse(inspect.getsource(gen))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    result: dict[str, list[_Field]] = {}
    for cls in _classes(base.Type):
        node = classes.get(cls.__name__)
        if node is None or cls is gen.Client:
            continue
        found = [
            _field(cls, fn)
            for fn in node.body
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        result[cls._graphql_name()] = [f for f in found if f is not None]
    return result


def _field(cls: type[base.Type], fn: ast.FunctionDef | ast.AsyncFunctionDef) -> _Field | None:
    """The field a method selects, or None for a helper that selects none (`with_`)."""
    selected = _selected(fn)
    if selected is None:
        return None
    name, synced = selected
    params = _params(fn)
    args = tuple(
        (arg_name, _input_type(_hint(params[param][0]), required=params[param][1]) + default)
        for arg_name, param, default in _args(fn, set(params))
    )
    if synced or name == "id":
        return _Field(name, args, "ID!")
    return _Field(name, args, _output_type(_hint(fn.returns), cls))


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, tuple[ast.expr | None, bool]]:
    """Each parameter's annotation, and whether it is required (has no default)."""
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    pairs = [
        *zip(positional, defaults, strict=True),
        *zip(a.kwonlyargs, a.kw_defaults, strict=True),
    ]
    return {arg.arg: (arg.annotation, default is None) for arg, default in pairs}


def _hint(annotation: ast.expr | None) -> Any:
    """An annotation as the SDK means it, its quoted forward references resolved in the
    generated module (beartype replaces them at runtime with proxies of its own)."""
    return type(None) if annotation is None else _resolved(_evaluated(annotation))


def _resolved(hint: Any) -> Any:
    return eval(hint, vars(gen)) if isinstance(hint, str) else hint


def _evaluated(node: ast.expr) -> Any:
    return eval(compile(ast.Expression(node), gen.__file__, "eval"), vars(gen))


def _selected(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str, bool] | None:
    """The field name of `self._select("f", …)`, or of `execute_sync(self, "f", …)`, which
    the SDK runs as a leaf and answers with the object's ID."""
    for node in ast.walk(fn):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if node.func.attr == "_select" and _const(node.args, 0):
            return _const(node.args, 0), False
        if node.func.attr == "execute_sync" and _const(node.args, 1):
            return _const(node.args, 1), True
    return None


def _const(args: list[ast.expr], index: int) -> str:
    node = args[index] if len(args) > index else None
    return str(node.value) if isinstance(node, ast.Constant) else ""


def _args(
    fn: ast.FunctionDef | ast.AsyncFunctionDef, params: set[str]
) -> list[tuple[str, str, str]]:
    """(GraphQL argument, Python parameter, SDL default) of each `Arg("name", value, default)`;
    the value may wrap the parameter (`[] if args is None else args`). The SDK leaves out a
    value equal to its default, so the engine must fill the default in, as the real one does."""
    found = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Arg":
            names = [
                n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name) and n.id in params
            ]
            default = _literal(_evaluated(node.args[2])) if len(node.args) > 2 else None
            if names:
                found.append((_const(node.args, 0), names[0], f" = {default}" if default else ""))
    return found


def _literal(value: Any) -> str | None:
    """A default as a GraphQL literal; None for no default."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(str(_literal(v)) for v in value) + "]"
    return None


def _input_type(hint: Any, *, required: bool) -> str:
    """An argument's type: objects (and the per-type ID scalars) travel as their ID."""
    inner, _ = _optional(hint)
    return _type(inner, _input_name) + ("!" if required else "")


def _output_type(hint: Any, owner: type[base.Type]) -> str:
    inner, optional = _optional(hint)
    if inner is type(None):
        return "Void"
    name = _type(inner, functools.partial(_output_name, owner))
    return name if optional else name + "!"


def _optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(hint) if m is not type(None)]
        if len(members) == 1:
            return members[0], True
    return hint, False


def _type(hint: Any, name_of: typing.Callable[[Any], str]) -> str:
    hint = _resolved(hint)
    if typing.get_origin(hint) is list:
        (element,) = typing.get_args(hint)
        return f"[{_type(element, name_of)}!]"
    return name_of(hint)


def _input_name(hint: Any) -> str:
    if hint in _BUILTIN:
        return _BUILTIN[hint]
    if hint is Self or issubclass(hint, base.Type) or hint.__name__.endswith("ID"):
        return "ID"
    return str(hint.__name__)


def _output_name(owner: type[base.Type], hint: Any) -> str:
    if hint is Self:
        return owner._graphql_name()
    if hint in _BUILTIN:
        return _BUILTIN[hint]
    if inspect.isclass(hint) and issubclass(hint, base.Object):
        return str(hint._graphql_name())
    if inspect.isclass(hint) and issubclass(hint, base.Scalar) and hint.__name__.endswith("ID"):
        return "ID"
    return str(hint.__name__)
