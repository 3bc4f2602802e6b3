"""YAML files that remember where each value was written.

Configuration and rule errors are reported as ``file:line: message``. PyYAML's node tree knows the
line of every key and value; this module keeps that line next to the plain data, so a pydantic
error location such as ``("rules", 2, "window")`` can be turned back into a line number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lockoutd.validation_messages import plain_message

try:  # the C loader is several times faster; fall back where libyaml is missing
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Location = tuple[str | int, ...]


@dataclass
class LineMap:
    """Maps a location inside the loaded data to the 1-based line it was written on."""

    path: str
    lines: dict[Location, int] = field(default_factory=dict)

    def line_of(self, location: Sequence[str | int]) -> int:
        """The line of ``location``, or of its nearest enclosing value that has one."""
        loc = tuple(location)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)

    def where(self, location: Sequence[str | int]) -> str:
        """``file:line`` for ``location``."""
        return f"{self.path}:{self.line_of(location)}"


class YamlFileError(ValueError):
    """A file that is not readable YAML; ``problems`` are ``file:line: message`` strings."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def load_yaml(path: Path) -> tuple[Any, LineMap]:
    """Read ``path`` and return its data with a :class:`LineMap`.

    Duplicate keys are refused: in a security policy, a second ``threshold:`` silently replacing
    the first is a bug nobody would find by reading the file.
    """
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlFileError([f"{name}:1: cannot read file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise YamlFileError([f"{name}:1: file is not UTF-8 text"]) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> tuple[Any, LineMap]:
    """Parse YAML ``text``; ``name`` is used in error messages and the returned map."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlFileError([f"{name}:{line}: invalid YAML: {exc.problem or exc}"]) from None
    line_map = LineMap(name)
    if node is None:
        return None, line_map
    problems: list[str] = []
    data = _to_python(node, (), line_map, problems)
    if problems:
        raise YamlFileError(problems)
    return data, line_map


def _to_python(node: yaml.Node, loc: Location, line_map: LineMap, problems: list[str]) -> Any:
    line_map.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if key in result:
                problems.append(
                    f"{line_map.path}:{key_node.start_mark.line + 1}: duplicate key {key!r}"
                )
                continue
            child = (*loc, key)
            # A key's own line is where a reader looks for it, even for a nested block below it.
            line_map.lines[child] = key_node.start_mark.line + 1
            result[key] = _to_python(value_node, child, line_map, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _to_python(item, (*loc, index), line_map, problems)
            for index, item in enumerate(node.value)
        ]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        # A mapping or list used as a key; keep it readable in the error that will follow.
        return repr(node.value)
    return _Loader("").construct_object(node, deep=True)


def validation_problems(
    exc: ValidationError, line_map: LineMap, *, prefix: Location = ()
) -> list[str]:
    """Turn a pydantic error into ``file:line: message`` strings, one per problem."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc: Location = ()
        for part in error["loc"]:
            # A key the file really has is kept, even one spelled like a type ("str:").
            if not _is_union_tag(part) or (*prefix, *loc, part) in line_map.lines:
                loc = (*loc, part)
        dotted = ".".join(str(part) for part in loc) or "(top level)"
        message = plain_message(error)
        problems.append(f"{line_map.where((*prefix, *loc))}: {dotted}: {message}")
    return problems


# The tags pydantic gives plain member types of a union, e.g. ``str | list[str]``.
_TYPE_TAGS = frozenset(
    {"str", "int", "float", "bool", "bytes", "none", "list", "dict", "tuple", "set", "frozenset"}
    | {"decimal", "date", "time", "datetime", "timedelta", "url", "uuid", "is-instance"}
)


def _is_union_tag(part: str | int) -> bool:
    # pydantic adds the name of the tried member type to locations inside unions and
    # function validators; it means nothing to someone reading the YAML.
    return isinstance(part, str) and (
        part.startswith(("function-", "constrained-")) or "[" in part or part in _TYPE_TAGS
    )
