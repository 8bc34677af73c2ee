"""Random draws that are reproducible per sample, whatever the batching, the shard or the process count.

Every stochastic method and metric draws through these: one seed per sample (``sample_seeds``), drawn for
the whole batch even when a process explains only its block of it (``sampled_shard``), and per-sample CPU
generators (``sample_generators``, ``draw_*``) so that a sample's noise does not depend on its neighbours.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

_shard: ContextVar[tuple[int, int, int] | None] = ContextVar("xaibench_shard", default=None)


def sample_seeds(generator: torch.Generator, n: int) -> list[int]:
    """``n`` independent seeds drawn from ``generator``: one per sample, whatever the batching.

    Inside ``sampled_shard(rows, total)`` a call for the shard's ``n`` samples draws the seeds of all
    ``total`` samples and returns the shard's, so a process that explains a block of the batch gives
    its samples the seeds they get when one process explains them all.
    """
    rows, total = shard_of(n)
    return torch.randint(0, 2**62, (total,), generator=generator, device="cpu")[rows].tolist()


def shard_of(n: int) -> tuple[slice, int]:
    """Where a batch of ``n`` samples sits in the whole batch: (its rows, the whole batch's size); the
    batch itself, (slice(0, n), n), outside ``sampled_shard`` or for a batch of another size."""
    shard = _shard.get()
    if shard is not None and n == shard[1] - shard[0]:
        return slice(shard[0], shard[1]), shard[2]
    return slice(0, n), n


def shared_seed(generator: torch.Generator) -> int:
    """One seed for draws the whole batch shares (the same on every process of a sharded run)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device="cpu"))


@contextmanager
def sampled_shard(rows: slice, total: int) -> Iterator[None]:
    """Make ``sample_seeds`` hand the samples ``rows`` of a batch of ``total`` their batch seeds."""
    token = _shard.set((rows.start, rows.stop, total))
    try:
        yield
    finally:
        _shard.reset(token)


@contextmanager
def outside_shard() -> Iterator[None]:
    """Leave the block's shard: calls on another batch (a metric's re-explained copies) draw as their own."""
    token = _shard.set(None)
    try:
        yield
    finally:
        _shard.reset(token)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run code that draws from torch's global CPU RNG (captum does) with ``seed``, restoring it after;
    the GPUs' generators are neither seeded nor touched."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def sample_generators(seeds: Sequence[int], samples: slice) -> list[torch.Generator]:
    """A fresh CPU generator for each sample of ``samples``, seeded with that sample's seed."""
    return [torch.Generator().manual_seed(seed) for seed in seeds[samples]]


def draw_normal(
    generators: Sequence[torch.Generator], shape: tuple[int, ...], dtype: torch.dtype
) -> torch.Tensor:
    """(len(generators), *shape) on the CPU: row i is ``randn(shape)`` from ``generators[i]``."""
    out = torch.empty((len(generators), *shape), dtype=dtype, device="cpu")
    for row, generator in zip(out, generators):
        row.normal_(generator=generator)  # what torch.randn does, into the chunk's buffer
    return out


def draw_uniform(
    generators: Sequence[torch.Generator], shape: tuple[int, ...], dtype: torch.dtype
) -> torch.Tensor:
    """(len(generators), *shape) on the CPU: row i is ``rand(shape)`` from ``generators[i]``."""
    out = torch.empty((len(generators), *shape), dtype=dtype, device="cpu")
    for row, generator in zip(out, generators):
        row.uniform_(generator=generator)  # what torch.rand does
    return out


def draw_indices(generators: Sequence[torch.Generator], high: int, count: int) -> torch.Tensor:
    """(len(generators), count) int64 on the CPU: row i is ``randint(high, (count,))`` from generator i."""
    return torch.stack([torch.randint(high, (count,), generator=generator, device="cpu")
                        for generator in generators])
