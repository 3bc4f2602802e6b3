"""Loading rule files: every ``*.yaml`` in the rule paths, every problem reported at once."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from lockoutd.decode.event import DERIVED_FIELDS, STANDARD_FIELDS
from lockoutd.decode.formats import MAPPED_EXTRA_FIELDS
from lockoutd.decode.native import UNPARSED_IP
from lockoutd.errors import ConfigError
from lockoutd.rules.model import RuleFile, RuleSet
from lockoutd.yamlfile import LineMap, YamlFileError, load_yaml, validation_problems

RULE_SUFFIXES = (".yaml", ".yml")


def rule_files(paths: Iterable[Path]) -> list[Path]:
    """The rule files named by ``paths``: files as given, directories' YAML files sorted by name."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.iterdir() if p.suffix in RULE_SUFFIXES and p.is_file())
            )
        else:
            found.append(path)
    return found


def load_rules(paths: Iterable[Path]) -> RuleSet:
    """Load and validate every rule file; raise :class:`ConfigError` with ``file:line`` problems."""
    paths = list(paths)
    problems: list[str] = []
    loaded: list[tuple[Path, RuleFile]] = []
    first_seen: dict[str, str] = {}
    warnings: list[str] = []
    for path in paths:
        if not path.exists():
            # Absolute: the working directory it was looked up in is part of the answer.
            problems.append(f"engine.rule_paths: {path.absolute()} does not exist")
    for path in rule_files(p for p in paths if p.exists()):
        try:
            data, lines = load_yaml(path)
        except YamlFileError as exc:
            problems.extend(exc.problems)
            continue
        if data is None:
            continue  # an empty file is allowed, e.g. one kept for a future rule
        if not isinstance(data, dict):
            problems.append(f"{path}:1: expected a mapping with 'rules' and 'allowlist'")
            continue
        try:
            rule_file = RuleFile.model_validate(data)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, lines))
            continue
        for index, rule in enumerate(rule_file.rules):
            where = lines.where(("rules", index, "name"))
            if rule.name in first_seen:
                problems.append(
                    f"{where}: rule name {rule.name!r} is already used at {first_seen[rule.name]}"
                )
            else:
                first_seen[rule.name] = where
        warnings += _unknown_fields(rule_file, lines)
        loaded.append((path, rule_file))
    if not problems and not first_seen:
        where = ", ".join(str(p) for p in paths) or "(no rule paths)"
        problems.append(f"{where}:1: no rules found; a lockout daemon without rules does nothing")
    if problems:
        raise ConfigError(problems)
    return RuleSet.build(loaded, warnings=warnings)


KNOWN_FIELDS = frozenset(STANDARD_FIELDS) | DERIVED_FIELDS | MAPPED_EXTRA_FIELDS | {UNPARSED_IP}
"""The fields that some input format gives an event; producers may add others of their own."""


def _unknown_fields(rule_file: RuleFile, lines: LineMap) -> list[str]:
    """Warnings for match conditions on fields that no input format produces.

    Extra fields of native events are matched as written, so such a rule is legal; but a typo
    (``reasn``) makes a rule that never fires, which nobody would notice.
    """
    warnings = []
    for index, rule in enumerate(rule_file.rules):
        for name in rule.match:
            if name in KNOWN_FIELDS:
                continue
            nearest = difflib.get_close_matches(name, sorted(KNOWN_FIELDS), n=1)
            hint = f"; did you mean {nearest[0]}?" if nearest else ""
            where = lines.where(("rules", index, "match", name))
            warnings.append(
                f"{where}: warning: rules.{index}.match.{name}: no input format produces this "
                f"field{hint} (an extra field of your own events is fine)"
            )
    return warnings
