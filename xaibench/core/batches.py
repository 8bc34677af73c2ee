"""Batching: how many rows go through the model in one pass."""

from __future__ import annotations

from collections.abc import Iterator


def row_slices(n: int, batch_size: int | None) -> Iterator[slice]:
    """Consecutive slices of at most ``batch_size`` rows covering ``range(n)``; none for n = 0."""
    step = max(1, n if batch_size is None else batch_size)
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))
