"""URL credentials never reach a record: ``http://user:password@host`` is written as ``http://host``."""

from __future__ import annotations

import re
from typing import Any

_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")  # as urlsplit reads a netloc: up to its last "@"


def without_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it removed (scheme, host, port, path and
    query kept): what a record may show of a base URL or a command line."""
    return _USERINFO.sub("", text)


def scrubbed(value: Any) -> Any:
    """A JSON-able record with the credentials of every URL in its texts (keys included) removed."""
    if isinstance(value, str):
        return without_credentials(value)
    if isinstance(value, dict):
        return {scrubbed(k) if isinstance(k, str) else k: scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrubbed(v) for v in value]
    return value
