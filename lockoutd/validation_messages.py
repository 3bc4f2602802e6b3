"""Validation errors in lockoutd's words: what a setting or a rule expects, not pydantic's types.

"Input should be a valid dictionary or instance of Action" tells a rule author about Python
classes; "expected a mapping: lock: {} ... or report: {}" tells them what to write.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import ErrorDetails

# What a mapping of each model looks like, written as in a rule or configuration file.
_MAPPING_EXAMPLES = {
    "Action": "lock: {} (or lock: {duration: 15m}) or report: {}",
    "LockAction": "{} or {duration: 15m}",
    "Escalation": "{factor: 2, max: 24h, memory: 1d}",
    "Allowlist": "{users: [...], ips: [...]}",
}

_NAME_PATTERN = "^[a-z0-9-]+$"

_PLAIN = {
    "string_type": "expected text",
    "list_type": "expected a list, such as [a, b]",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "missing": "required, but missing",
    "extra_forbidden": "unknown key (check its spelling and indentation)",
}


def plain_message(error: ErrorDetails) -> str:
    """The message for one pydantic error, as an operator would say it."""
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind in _PLAIN:
        return _PLAIN[kind]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        example = _MAPPING_EXAMPLES.get(str(ctx.get("class_name")))
        return f"expected a mapping: {example}" if example else "expected a mapping (key: value)"
    if kind == "literal_error":
        return f"must be {ctx['expected']}"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}"
    if kind == "less_than":
        return f"must be less than {ctx['lt']}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    if kind == "too_short":
        return f"needs at least {ctx['min_length']}"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else error["msg"]
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters long"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == _NAME_PATTERN:
            return "use only lower-case letters, digits and -"
        return f"must match the pattern {ctx.get('pattern')}"
    # Our own validators already speak lockoutd; pydantic prefixes their messages.
    return error["msg"].removeprefix("Value error, ")
