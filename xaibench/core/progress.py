"""Progress reporting without coupling: long loops call ``advance``; the CLI installs a bar.

The library reports work in samples done; by default nothing listens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_listener: ContextVar[Callable[[int], None] | None] = ContextVar("xaibench_progress", default=None)


def advance(done: int) -> None:
    """Report that ``done`` more units of work have finished."""
    listener = _listener.get()
    if listener is not None:
        listener(done)


@contextmanager
def reporting(listener: Callable[[int], None]) -> Iterator[None]:
    """Route ``advance`` calls to ``listener`` inside the block."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
