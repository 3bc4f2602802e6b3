"""YAML files that remember the line of every value, for ``file:line: message`` errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from lockoutd.yamlfile import YamlFileError, load_yaml, parse_yaml, validation_problems

TEXT = textwrap.dedent(
    """\
    # a comment on line 1
    top:
      scalar: 1
      nested:
        deep: yes
    items:
      - name: first
        value: 10
      - name: second

        value: 20
    flow: {a: 1, b: [x, y]}
    """
)


def test_values_are_plain_python_data() -> None:
    """The data is what a YAML safe load gives: dicts, lists, ints, booleans, strings."""
    data, _ = parse_yaml(TEXT, "t.yaml")
    assert data == {
        "top": {"scalar": 1, "nested": {"deep": True}},
        "items": [{"name": "first", "value": 10}, {"name": "second", "value": 20}],
        "flow": {"a": 1, "b": ["x", "y"]},
    }


@pytest.mark.parametrize(
    ("location", "line"),
    [
        ((), 2),
        (("top",), 2),
        (("top", "scalar"), 3),
        (("top", "nested"), 4),
        (("top", "nested", "deep"), 5),
        (("items", 0), 7),
        (("items", 0, "value"), 8),
        (("items", 1), 9),
        (("items", 1, "value"), 11),
        (("flow", "b", 1), 12),
        (("items", 1, "missing"), 9),
        (("items", 5, "name"), 6),
        (("nowhere",), 2),
    ],
)
def test_every_location_has_its_line(location: tuple[str | int, ...], line: int) -> None:
    """A location maps to the line it was written on, or to its nearest written parent."""
    _, lines = parse_yaml(TEXT, "t.yaml")
    assert lines.line_of(location) == line
    assert lines.where(location) == f"t.yaml:{line}"


def test_a_duplicate_key_is_refused_on_its_line() -> None:
    """A key written twice in one mapping is an error on the second one's line."""
    with pytest.raises(YamlFileError) as caught:
        parse_yaml("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n", "d.yaml")
    assert caught.value.problems == ["d.yaml:4: duplicate key 'c'", "d.yaml:5: duplicate key 'a'"]


def test_the_same_key_in_two_mappings_is_fine() -> None:
    """Equal keys in different mappings are not duplicates."""
    data, _ = parse_yaml("a: {x: 1}\nb: {x: 2}\n", "ok.yaml")
    assert data == {"a": {"x": 1}, "b": {"x": 2}}


def test_invalid_yaml_is_reported_on_its_line() -> None:
    """A syntax error names the line the parser stopped on."""
    with pytest.raises(YamlFileError) as caught:
        parse_yaml("a: 1\nb: 2\n  c: 3\n", "bad.yaml")
    (problem,) = caught.value.problems
    assert problem.startswith("bad.yaml:3: invalid YAML: mapping values are not allowed")


def test_an_empty_document_is_none() -> None:
    """A file of only comments loads as ``None``."""
    assert parse_yaml("# nothing\n", "e.yaml")[0] is None


def test_a_missing_file_is_a_problem(tmp_path: Path) -> None:
    """A file that cannot be read is reported as ``file:1``."""
    missing = tmp_path / "missing.yaml"
    with pytest.raises(YamlFileError) as caught:
        load_yaml(missing)
    assert caught.value.problems == [f"{missing}:1: cannot read file: No such file or directory"]


def test_a_file_that_is_not_utf8_is_a_problem(tmp_path: Path) -> None:
    """A file in another encoding is reported, not decoded into garbage."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(YamlFileError) as caught:
        load_yaml(path)
    assert caught.value.problems == [f"{path}:1: file is not UTF-8 text"]


def test_a_file_loads_with_its_name_in_the_map(tmp_path: Path) -> None:
    """``load_yaml`` names the map after the path it read."""
    path = tmp_path / "x.yaml"
    path.write_text("a:\n  b: 1\n", encoding="utf-8")
    data, lines = load_yaml(path)
    assert data == {"a": {"b": 1}}
    assert lines.where(("a", "b")) == f"{path}:2"


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int
    name: str | list[str] = ""


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inner: list[_Inner]


def test_validation_errors_become_file_line_problems() -> None:
    """Each pydantic error becomes ``file:line: dotted.location: message`` on the value's line."""
    data, lines = parse_yaml(
        "inner:\n  - count: 1\n  - count: many\n    extra: 1\n",
        "v.yaml",
    )
    with pytest.raises(ValidationError) as caught:
        _Outer.model_validate(data)
    assert validation_problems(caught.value, lines) == [
        "v.yaml:3: inner.1.count: expected a whole number",
        "v.yaml:4: inner.1.extra: unknown key (check its spelling and indentation)",
    ]


def test_union_member_names_are_left_out_of_locations() -> None:
    """The names pydantic gives union members never appear in a problem's location."""
    data, lines = parse_yaml("inner:\n  - count: 1\n    name: 5\n", "u.yaml")
    with pytest.raises(ValidationError) as caught:
        _Outer.model_validate(data)
    problems = validation_problems(caught.value, lines)
    assert problems
    for problem in problems:
        assert problem.startswith("u.yaml:3: inner.0.name: "), problem


def test_a_key_spelled_like_a_type_stays_in_the_location() -> None:
    """An unknown key that happens to be called ``str`` is still named, on its own line."""
    data, lines = parse_yaml("inner:\n  - count: 1\n\n    str: x\n", "k.yaml")
    with pytest.raises(ValidationError) as caught:
        _Outer.model_validate(data)
    assert validation_problems(caught.value, lines) == [
        "k.yaml:4: inner.0.str: unknown key (check its spelling and indentation)"
    ]
