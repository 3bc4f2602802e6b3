"""What the configuration file and the environment mean beyond their values.

- Relative paths written in the file are read from the file's folder, as most daemons do; paths
  from the environment (or the defaults) are relative to the working directory, as a shell user
  expects.
- A credential set in the environment replaces the credentials written in the file, so that a
  secret can be injected without editing the file; a note says what was set aside.
- An empty path is an error, never the working directory (``Path("")`` is ``.``).
- A ``LOCKOUTD_*`` variable that names no setting is an error naming the nearest one: a typo must
  not leave the default silently in force.

Everything here works from the settings model, so a setting added to it is covered without a
change here.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from lockoutd.extensions import NO_EXTENSIONS_VARIABLE
from lockoutd.yamlfile import LineMap

NOT_SETTINGS = frozenset({"LOCKOUTD_TEST_BOOTSTRAP_SERVERS", NO_EXTENSIONS_VARIABLE})
"""``LOCKOUTD_*`` variables that are documented but are no setting (the test suite's broker; the
switch to the pure-Python code, read once at start)."""

# Credentials that stand in for one another beyond a secret and its file (``pat``/``pat_file``).
_ALTERNATIVES = {("zitadel", "pat"): ("key_file",)}


@dataclass(frozen=True)
class _Setting:
    section: str
    key: str
    annotation: Any

    def variable(self, prefix: str) -> str:
        return f"{prefix}{self.section}__{self.key}".upper()

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.key}"


def _settings(model: type[BaseModel]) -> Iterator[_Setting]:
    for section, field in model.model_fields.items():
        section_model = field.annotation
        assert isinstance(section_model, type)
        assert issubclass(section_model, BaseModel)
        for key, inner in section_model.model_fields.items():
            yield _Setting(section, key, inner.annotation)


def _mentions(annotation: Any, kind: type) -> bool:
    return annotation is kind or any(_mentions(arg, kind) for arg in typing.get_args(annotation))


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list or any(
        _is_list(arg) for arg in typing.get_args(annotation)
    )


def _is_mapping(annotation: Any) -> bool:
    return typing.get_origin(annotation) is dict


def unknown_variables(
    environ: Mapping[str, str], model: type[BaseModel], prefix: str
) -> dict[str, str]:
    """Each ``prefix*`` variable that names no setting, with the problem to report."""
    settings = list(_settings(model))
    known = {s.variable(prefix) for s in settings} | {
        f"{prefix}{section}".upper() for section in model.model_fields
    }
    # A mapping setting takes its entries as further parts: LOCKOUTD_KAFKA__FORMATS__<TOPIC>.
    mappings = tuple(s.variable(prefix) + "__" for s in settings if _is_mapping(s.annotation))
    candidates = sorted(known | NOT_SETTINGS)
    found = {}
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(prefix) or upper in known or upper in NOT_SETTINGS:
            continue
        if upper.startswith(mappings):
            continue
        nearest = difflib.get_close_matches(upper, candidates, n=1, cutoff=0.6)
        hint = (
            f"; did you mean {nearest[0]}?"
            if nearest
            else f" (settings are {prefix}<SECTION>__<KEY>)"
        )
        found[name] = f"environment {name}: not a lockoutd setting{hint}"
    return found


def resolve_relative_paths(data: dict[str, Any], base: Path, model: type[BaseModel]) -> None:
    """Make the relative paths written in the file relative to ``base``, its folder."""
    for setting in _settings(model):
        section = data.get(setting.section)
        if not isinstance(section, dict) or setting.key not in section:
            continue
        if not _mentions(setting.annotation, Path):
            continue
        value = section[setting.key]
        if _is_list(setting.annotation) and isinstance(value, str):
            # `rule_paths: a,b` is two paths, as in the environment; each is read from the folder.
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list):
            section[setting.key] = [_under(base, item) for item in value]
        else:
            section[setting.key] = _under(base, value)


def _under(base: Path, value: Any) -> Any:
    if not isinstance(value, str) or not value.strip() or Path(value).is_absolute():
        return value  # not a path (validation says so), empty (refused below), or absolute
    return str(base / value)


def empty_paths(
    data: dict[str, Any],
    environ: Mapping[str, str],
    model: type[BaseModel],
    prefix: str,
    line_map: LineMap,
) -> list[str]:
    """Paths set to an empty string: ``Path("")`` would quietly mean the working directory."""
    problems = []
    for setting in _settings(model):
        if not _mentions(setting.annotation, Path):
            continue
        variable = setting.variable(prefix)
        section = data.get(setting.section)
        if variable in environ:
            if not environ[variable].strip():
                problems.append(
                    f"environment {variable}: is empty; name a file, or unset the variable"
                )
        elif isinstance(section, dict) and _blank(section.get(setting.key)):
            where = line_map.where((setting.section, setting.key))
            problems.append(
                f"{where}: {setting.dotted}: is empty; name a file, or leave the key out"
            )
    return problems


def _blank(value: Any) -> bool:
    if isinstance(value, list):
        return any(_blank(item) for item in value)
    return isinstance(value, str) and not value.strip()


def credentials_from_the_environment(
    data: dict[str, Any],
    environ: Mapping[str, str],
    model: type[BaseModel],
    prefix: str,
    source: str,
) -> list[str]:
    """Drop the file's credentials where the environment sets one of the same kind.

    A secret and its file (``pat`` and ``pat_file``, and ``key_file`` for the ZITADEL token) are
    one credential: the environment wins over the file for it as a whole, as it does for any
    single key. Returns a note for each credential of the file that was set aside.
    """
    by_key = {(s.section, s.key): s for s in _settings(model)}
    notes = []
    for setting in by_key.values():
        if not _mentions(setting.annotation, SecretStr):
            continue
        group = [setting.key, f"{setting.key}_file"]
        group += _ALTERNATIVES.get((setting.section, setting.key), ())
        members = [by_key[(setting.section, k)] for k in group if (setting.section, k) in by_key]
        from_environment = [m for m in members if m.variable(prefix) in environ]
        section = data.get(setting.section)
        if not from_environment or not isinstance(section, dict):
            continue
        for member in members:
            if member.key in section and member.variable(prefix) not in environ:
                del section[member.key]
                notes.append(
                    f"{from_environment[0].variable(prefix)} is set, so {member.dotted} from "
                    f"{source} is ignored"
                )
    return notes
