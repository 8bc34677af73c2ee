"""What a method learned while explaining, for run.json, without coupling: methods call ``note``; the
command that writes the run collects the notes (the same pattern as ``xaibench.progress``).

BEE notes the baseline family each kept map came from and the learned family distribution; a method
never stores results on itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_sink: ContextVar[dict[str, Any] | None] = ContextVar("xaibench_details", default=None)


def note(key: str, value: Any) -> None:
    """Record ``value`` (JSON-able) under ``key`` if a caller is collecting; otherwise do nothing."""
    sink = _sink.get()
    if sink is not None:
        sink[key] = value


@contextmanager
def collecting() -> Iterator[dict[str, Any]]:
    """Collect the notes made inside the block into the yielded dict."""
    found: dict[str, Any] = {}
    token = _sink.set(found)
    try:
        yield found
    finally:
        _sink.reset(token)
