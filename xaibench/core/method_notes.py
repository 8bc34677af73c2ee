"""What a method learned while explaining, for run.json, without coupling: methods call ``note``; the
command that writes the run collects the notes (the same pattern as ``xaibench.core.progress``).

BEE notes the baseline family each kept map came from and the learned family distribution; the llm
method attaches its transcript, a file for the run directory. A method never stores results on itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any


class Details(dict):  # type: ignore[type-arg]
    """The notes (a JSON-able dict for run.json) and the attached files (name -> text)."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, str] = {}


_sink: ContextVar[Details | None] = ContextVar("xaibench_details", default=None)


def note(key: str, value: Any) -> None:
    """Record ``value`` (JSON-able) under ``key`` if a caller is collecting; otherwise do nothing."""
    sink = _sink.get()
    if sink is not None:
        sink[key] = value


def attach(name: str, text: str) -> None:
    """Attach a file ``name`` (a plain file name) with ``text`` for the run directory, if collecting."""
    sink = _sink.get()
    if sink is not None:
        sink.files[name] = text


@contextmanager
def collecting() -> Iterator[Details]:
    """Collect the notes and files made inside the block into the yielded ``Details``."""
    found = Details()
    token = _sink.set(found)
    try:
        yield found
    finally:
        _sink.reset(token)
