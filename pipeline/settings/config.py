"""The config file, `dagger-stages.yaml`, read into the config `Layer` of the settings
(`settings.config_file` finds it).

Validation is strict, because a typo in a CI config otherwise surfaces as a
silently ignored setting several minutes into a build. Every error names the
file and the line of the offending YAML node. The YAML's shape (mappings, lists,
strings, duplicates, unknown keys) is checked here; a value is checked by its field's
validator in `resolve`, the one a flag's value goes through, and a failure is told in
the file's terms where YAML needs a hint (`platforms: "linux/amd64,linux/arm64" is not
a platform like linux/amd64 (os/arch[/variant]; list several as a YAML list)`).
Nothing here fills in defaults: the layer holds only the keys the file sets, and
`resolve` merges it between the CI defaults and the environment. The keys are the
`Settings` fields that have one; `schema/dagger-stages.schema.json` describes the
same file for editors, and `tests/settings/test_config.py` keeps the two in agreement.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.errors import UsageError, suggest
from pipeline.settings.resolve import (
    ENGINES,
    OPTIONS,
    STAGE_NAME,
    Engine,
    Layer,
    Opt,
    TestSpec,
    is_build_arg_name,
    parse_engine,
    parse_platform,
    parse_repository,
    publish_stage,
    registry_host,
)
from pipeline.settings.secrets import secret_from_fields, secret_from_text

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from pipeline.dockerfile.platforms import Platform
    from pipeline.oci.reference import Repository
    from pipeline.settings.secrets import SecretSpec

__all__ = ["KEYS", "load_config"]

KEYS = tuple(opt.key for opt in OPTIONS.values() if opt.key is not None)
TEST_KEYS = ("stage", "command", "artifacts", "secrets")
SECRET_FIELDS = ("id", "env", "src", "source")

_SECRET_ID = re.compile(r"[^/\s]+")  # it names the file /run/secrets/<id>
_TAG = "tag:yaml.org,2002:"
_KINDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a float",
    "bool": "a boolean",
    "null": "null",
    "timestamp": "a date",
    "binary": "binary data",
    "seq": "a list",
    "map": "a mapping",
    "merge": "a merge key (<<)",
}

T = TypeVar("T")


def load_config(path: Path) -> Layer:
    """The settings the file sets, and `config_path`, which errors found later point to."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError("config file is not UTF-8 text", path=path) from None
    except OSError as exc:
        raise UsageError(f"cannot read config file: {exc.strerror}", path=path) from None
    doc = _Document(path, text)
    root = doc.root()
    values: dict[str, object] = {"config_path": str(path)}
    if root is None or (isinstance(root, ScalarNode) and root.tag == _TAG + "null"):
        return Layer("config", values)
    if not isinstance(root, MappingNode) or root.tag != _TAG + "map":
        raise doc.error(root, f"expected a mapping of settings, got {_kind(root, doc)}")
    return Layer("config", {**values, **_settings(doc, root)})


@dataclass(frozen=True)
class _Document:
    """A YAML file, composed into nodes that know their lines."""

    path: Path
    text: str

    def root(self) -> Node | None:
        loader = None
        try:
            loader = yaml.SafeLoader(self.text)
            return loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            if mark is None or (mark.index >= len(self.text) and exc.context_mark is not None):
                mark = exc.context_mark  # at end of file, where the unclosed thing began helps more
            line = None if mark is None else mark.line + 1
            raise UsageError(exc.problem or str(exc), path=self.path, line=line) from None
        except yaml.reader.ReaderError as exc:
            line = self.text.count("\n", 0, exc.position) + 1
            message = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
            raise UsageError(message, path=self.path, line=line) from None
        except yaml.YAMLError as exc:
            raise UsageError(str(exc), path=self.path) from None
        finally:
            if loader is not None:
                loader.dispose()

    def error(self, node: Node, message: str) -> UsageError:
        return UsageError(message, path=self.path, line=node.start_mark.line + 1)

    def scalar(self, node: ScalarNode) -> object:
        return SafeConstructor().construct_object(node)


def _settings(doc: _Document, root: MappingNode) -> dict[str, object]:
    """Each key's value, read by its reader (or, for a plain string key, its field's parse)."""
    values: dict[str, object] = {}
    for key, key_node, value in _pairs(doc, root, ""):
        if key not in KEYS:
            raise doc.error(key_node, _unknown(key, KEYS))
        name, opt = next((name, opt) for name, opt in OPTIONS.items() if opt.key == key)
        reader = _READERS.get(key) or _parsed_by(opt)
        values[name] = reader(doc, value, key)
    return values


def _parsed_by(opt: Opt) -> Callable[[_Document, Node, str], object]:
    """A string checked by the field's own validator, for keys that need nothing more."""

    def read(doc: _Document, node: Node, where: str) -> object:
        text = _string(doc, node, where)
        try:
            return text if opt.parse is None else opt.parse(text)
        except ValueError as exc:
            raise doc.error(node, f'{where}: "{text}": {exc}') from None

    return read


def _pairs(doc: _Document, node: MappingNode, where: str) -> Iterator[tuple[str, Node, Node]]:
    """Each key, its node (for its line) and its value; duplicate keys are an error."""
    seen: dict[str, int] = {}
    prefix = f"{where}: " if where else ""
    for key_node, value in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag != _TAG + "str":
            raise doc.error(key_node, f"{prefix}expected a string key, got {_kind(key_node, doc)}")
        key = str(key_node.value)
        if key in seen:
            raise doc.error(key_node, f'{prefix}duplicate key "{key}" (first at line {seen[key]})')
        seen[key] = key_node.start_mark.line + 1
        yield key, key_node, value


def _unknown(key: str, allowed: tuple[str, ...]) -> str:
    """The closest key by the rule of every other "did you mean" (`errors.suggest`), quoted as
    YAML keys are, else the list of keys there are."""
    close = suggest(key, allowed, case_sensitive=True)
    hint = f'did you mean "{close}"?' if close else "allowed: " + ", ".join(allowed)
    return f'unknown key "{key}" ({hint})'


def _kind(node: Node, doc: _Document) -> str:
    """How to name what the user wrote, with a quoting hint where YAML changed their text."""
    tag = str(node.tag)
    kind = _KINDS.get(tag.removeprefix(_TAG)) if tag.startswith(_TAG) else None
    if kind is None:
        return f"a value tagged {tag.replace(_TAG, '!!')}"
    if isinstance(node, ScalarNode) and tag in (_TAG + "float", _TAG + "bool"):
        value = doc.scalar(node)
        read = str(value).lower() if isinstance(value, bool) else repr(value)
        return f'{kind} (quote it: "{node.value}" would read as {read})'
    return kind


def _is(node: Node, kind: type[Node], tag: str) -> bool:
    return isinstance(node, kind) and node.tag == _TAG + tag


def _string(doc: _Document, node: Node, where: str, *, empty: bool = False) -> str:
    if not _is(node, ScalarNode, "str"):
        raise doc.error(node, f"{where}: expected a string, got {_kind(node, doc)}")
    if not node.value and not empty:
        raise doc.error(node, f"{where}: must not be empty")
    return str(node.value)


def _strings(
    doc: _Document, node: Node, where: str, *, single: bool
) -> list[tuple[str, str, Node]]:
    """A list of distinct strings (or one string, when `single`), each with its place and node."""
    if single and _is(node, ScalarNode, "str"):
        return [(_string(doc, node, where), where, node)]
    if not _is(node, SequenceNode, "seq"):
        wanted = "a string or a list of strings" if single else "a list of strings"
        raise doc.error(node, f"{where}: expected {wanted}, got {_kind(node, doc)}")
    items: list[tuple[str, str, Node]] = []
    seen: set[str] = set()
    for index, item in enumerate(node.value):
        place = f"{where}[{index}]"
        text = _string(doc, item, place)
        if text in seen:
            raise doc.error(item, f'{place}: "{text}" is listed twice')
        seen.add(text)
        items.append((text, place, item))
    return items


def _checked(
    doc: _Document,
    node: Node,
    where: str,
    parse: Callable[[str], T],
    what: str,
) -> tuple[T, ...]:
    """One string or a list of them, each checked by `parse`; `what` says what it must be."""
    values = []
    for text, place, item in _strings(doc, node, where, single=True):
        try:
            values.append(parse(text))
        except ValueError:
            raise doc.error(item, f'{place}: "{text}" is not {what}') from None
    return tuple(values)


def _stage_name(text: str) -> str:
    if not STAGE_NAME.fullmatch(text):
        raise ValueError(text)
    return text


def _relative(doc: _Document, node: Node, where: str) -> str:
    """A path in the file is relative to the file's directory."""
    text = _string(doc, node, where)
    return os.path.normpath(os.path.join(os.path.dirname(doc.path), text))


def _targets(doc: _Document, node: Node, where: str) -> tuple[str, ...]:
    what = "a stage name (list several targets as a YAML list)"
    return _checked(doc, node, where, _stage_name, what)


def _platforms(doc: _Document, node: Node, where: str) -> tuple[Platform, ...]:
    what = "a platform like linux/amd64 (os/arch[/variant]; list several as a YAML list)"
    return tuple(dict.fromkeys(_checked(doc, node, where, parse_platform, what)))


def _repository(doc: _Document, node: Node, where: str) -> Repository:
    text = _string(doc, node, where)
    try:
        return parse_repository(text)
    except ValueError as exc:
        raise doc.error(node, f'{where}: "{text}": {exc}') from None


def _engine_reaches(doc: _Document, node: Node, where: str) -> tuple[str, ...]:
    what = "a registry host such as localhost:5000 or registry.lan, or *"
    return _checked(doc, node, where, registry_host, what)


def _engine(doc: _Document, node: Node, where: str) -> Engine:
    if _is(node, ScalarNode, "str"):
        try:
            return parse_engine(str(node.value))
        except ValueError as exc:
            raise doc.error(node, f"{where}: {exc}") from None
    choices = ", ".join(f'"{engine}"' for engine in ENGINES)
    raise doc.error(node, f"{where}: expected one of {choices}, got {_kind(node, doc)}")


def _mapping(doc: _Document, node: Node, where: str, wanted: str) -> MappingNode:
    if not isinstance(node, MappingNode) or node.tag != _TAG + "map":
        raise doc.error(node, f"{where}: expected {wanted}, got {_kind(node, doc)}")
    return node


def _build_args(doc: _Document, node: Node, where: str) -> dict[str, str]:
    """Integers are kept as written (`0755` stays `0755`); floats and booleans must be quoted.

    An empty string is a value, as with `--build-arg NAME=`.
    """
    mapping = _mapping(doc, node, where, "a mapping of NAME: value")
    args: dict[str, str] = {}
    for name, key_node, value in _pairs(doc, mapping, where):
        if not is_build_arg_name(name):
            raise doc.error(key_node, f'{where}: "{name}" is not a valid build arg name')
        if _is(value, ScalarNode, "int"):
            args[name] = str(value.value)
        else:
            args[name] = _string(doc, value, f"{where}.{name}", empty=True)
    return args


def _secrets(doc: _Document, node: Node, where: str) -> tuple[SecretSpec, ...]:
    if not _is(node, SequenceNode, "seq"):
        raise doc.error(node, f"{where}: expected a list, got {_kind(node, doc)}")
    secrets: list[SecretSpec] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(node.value):
        place = f"{where}[{index}]"
        secret = _secret_item(doc, item, place)
        if secret.id in seen:
            first = seen[secret.id]
            raise doc.error(
                item, f'{place}: secret "{secret.id}" is already defined at line {first}'
            )
        seen[secret.id] = item.start_mark.line + 1
        secrets.append(secret)
    return tuple(secrets)


def _secret_item(doc: _Document, item: Node, place: str) -> SecretSpec:
    """The buildx string, or a mapping of the same fields; both checked as `--secret` is."""
    if _is(item, ScalarNode, "str"):
        text = str(item.value)
        try:
            return secret_from_text(text)
        except ValueError as exc:
            raise doc.error(item, f'{place}: "{text}": {exc}') from None
    wanted = "a string like id=ID,env=VAR or a mapping with id and env or src"
    mapping = _mapping(doc, item, place, wanted)
    values: dict[str, str] = {}
    for key, key_node, value in _pairs(doc, mapping, place):
        if key not in SECRET_FIELDS:
            raise doc.error(key_node, f"{place}: {_unknown(key, SECRET_FIELDS[:3])}")
        field = "src" if key == "source" else key
        if field in values:
            raise doc.error(key_node, f"{place}: give src or source, not both")
        values[field] = _string(doc, value, f"{place}.{key}")
    try:
        return secret_from_fields(values)
    except ValueError as exc:
        raise doc.error(mapping, f"{place}: {exc}") from None


def _test(doc: _Document, node: Node, where: str) -> TestSpec:
    mapping = _mapping(doc, node, where, "a mapping with stage, command and artifacts")
    values: dict[str, Node] = {}
    for key, key_node, value in _pairs(doc, mapping, where):
        if key not in TEST_KEYS:
            raise doc.error(key_node, f"{where}: {_unknown(key, TEST_KEYS)}")
        values[key] = value
    for required in ("stage", "command"):
        if required not in values:
            raise doc.error(mapping, f"{where}: {required} is required")
    stage = _string(doc, values["stage"], f"{where}.stage")
    command_node = values["command"]
    command: str | tuple[str, ...]
    if _is(command_node, ScalarNode, "str"):
        command = _string(doc, command_node, f"{where}.command")
    else:
        items = _strings(doc, command_node, f"{where}.command", single=False)
        command = tuple(text for text, _, _ in items)
        if not command:
            raise doc.error(command_node, f"{where}.command: must not be empty")
    artifacts: tuple[str, ...] = ()
    if "artifacts" in values:
        found = _strings(doc, values["artifacts"], f"{where}.artifacts", single=True)
        for text, place, item in found:
            if not text.startswith("/"):
                raise doc.error(item, f"{place}: an artifact is an absolute path in the container")
        artifacts = tuple(text for text, _, _ in found)
    secrets: tuple[str, ...] = ()
    if "secrets" in values:
        granted = _strings(doc, values["secrets"], f"{where}.secrets", single=False)
        for text, place, item in granted:
            if not _SECRET_ID.fullmatch(text):
                raise doc.error(item, f"{place}: a secret id has no '/' and no space")
        secrets = tuple(text for text, _, _ in granted)
    return TestSpec(stage=stage, command=command, artifacts=artifacts, secrets=secrets)


def _publish(doc: _Document, node: Node, where: str) -> dict[str, tuple[str, ...]]:
    """Tag templates by target; targets that differ only in case are one target."""
    mapping = _mapping(doc, node, where, "a mapping of target: [tag template, ...]")
    publish: dict[str, tuple[str, ...]] = {}
    for target, key_node, value in _pairs(doc, mapping, where):
        try:
            stage = publish_stage(target)
        except ValueError as exc:
            raise doc.error(key_node, f"{where}: {exc}") from None
        place = f"{where}.{target}"
        tags = _strings(doc, value, place, single=False)
        if not tags:
            raise doc.error(value, f"{place}: expected at least one tag")
        publish[stage] = (*publish.get(stage, ()), *(text for text, _, _ in tags))
    return publish


_READERS: dict[str, Callable[[_Document, Node, str], Any]] = {
    "dockerfile": _relative,
    "context": _relative,
    "targets": _targets,
    "build_args": _build_args,
    "cache_repo": _repository,
    "image_repo": _repository,
    "engine": _engine,
    "platforms": _platforms,
    "secrets": _secrets,
    "publish": _publish,
    "test": _test,
    "engine_reaches": _engine_reaches,
}
