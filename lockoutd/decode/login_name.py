"""One spelling per login name, used wherever a login name is compared or looked up.

Events, rule keys, allowlists and the resolution cache all see a login name through
:func:`normalize_login_name`, so that " Alice@Example.com" in an event, "alice@example.com" in
an allowlist and ZITADEL's "Alice@example.com" are one user, never three (README, "Rules").
ZITADEL itself compares login names without regard to case.
"""

from __future__ import annotations


def normalize_login_name(name: str) -> str:
    """``name`` without surrounding whitespace, lower-cased; "" when nothing is left."""
    return name.strip().lower()
