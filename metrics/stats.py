"""Batched statistics the metrics share: correlations, ranks with ties, areas under curves, intervals.

Every function works along the last axis and batches over the leading ones. A correlation of a constant
vector is undefined and returns NaN, as scipy does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench._lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along the last axis, in float64; NaN where either side is constant."""
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    denom = a.norm(dim=-1) * b.norm(dim=-1)
    value = (a * b).sum(-1) / denom
    return torch.where(denom > 0, value.clamp(-1.0, 1.0), torch.full_like(value, float("nan")))


def ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks along the last axis, ties given their average rank (scipy.stats.rankdata)."""
    values = x.double()
    ordered = values.sort(dim=-1).values.contiguous()
    low = torch.searchsorted(ordered, values.contiguous(), right=False)
    high = torch.searchsorted(ordered, values.contiguous(), right=True)
    return (low + high + 1).double() / 2


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation along the last axis (Pearson of average ranks)."""
    return pearson(ranks(a), ranks(b))


def trapezoid(curve: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """Trapezoid area under ``curve`` along the last axis; unit spacing when ``x`` is None."""
    if x is None:
        return torch.trapezoid(curve.double(), dim=-1)
    return torch.trapezoid(curve.double(), x.double().to(curve.device), dim=-1)


def normalised_auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under ``curve`` sampled at evenly spaced x from 0 to 1 (RISE's deletion / insertion score)."""
    return trapezoid(curve) / max(curve.shape[-1] - 1, 1)


def bootstrap_interval(values: torch.Tensor, generator: torch.Generator, *, resamples: int = 1000,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (1-D; NaN entries are dropped).

    Returns (nan, nan) when no finite value is left.
    """
    finite = values.double()[torch.isfinite(values.double())]
    if finite.numel() == 0:
        return float("nan"), float("nan")
    picks = torch.randint(0, finite.numel(), (resamples, finite.numel()), generator=generator)
    means = finite[picks].mean(dim=1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=means.dtype))
    return float(low), float(high)
