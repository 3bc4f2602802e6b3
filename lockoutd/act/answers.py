"""Reading the JSON of an HTTP answer, which whoever sits on the path to ZITADEL may have written.

``json.loads`` raises ``RecursionError`` on a body nested deeper than Python's recursion limit
(a hundred kilobytes of ``[`` is enough), and every reader of an answer expects ``ValueError``
for a body it cannot use. Not one answer may stop the daemon, so every answer is read here.
"""

from __future__ import annotations

import json
from typing import Any


def answer_json(content: bytes) -> Any:
    """The JSON value of an answer's body; ``ValueError`` for anything that is not JSON."""
    try:
        return json.loads(content)
    except RecursionError:
        raise ValueError("the answer is nested too deeply to be ZITADEL's") from None
