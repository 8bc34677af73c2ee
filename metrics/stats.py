"""Batched statistics the metrics share: correlations, ranks with ties, areas under curves, intervals.

Every function works along the last axis and batches over the leading ones. A correlation of a constant
vector is undefined and returns NaN, as scipy does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench.core.lazy import lazy_import

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


def tie_bounds(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per element along the last axis: how many values are strictly smaller (low) and how many are
    smaller or equal (high), int64; ``high - low`` is the size of its tie block.

    One sort: tie blocks are runs of equal values in the sorted row, their bounds spread by a running
    max (starts) and a reversed running min (ends), then scattered back to the original positions.
    """
    ordered, order = x.double().sort(dim=-1)
    positions = torch.arange(x.shape[-1], device=x.device).expand_as(order)
    differs = ordered[..., 1:] != ordered[..., :-1]
    opens = torch.cat([torch.ones_like(differs[..., :1]), differs], dim=-1)
    closes = torch.cat([differs, torch.ones_like(differs[..., :1])], dim=-1)
    starts = torch.where(opens, positions, torch.zeros_like(positions)).cummax(dim=-1).values
    ends = torch.where(closes, positions + 1, torch.full_like(positions, x.shape[-1]))
    ends = ends.flip(-1).cummin(dim=-1).values.flip(-1)
    low = torch.empty_like(order).scatter_(-1, order, starts)
    high = torch.empty_like(order).scatter_(-1, order, ends)
    return low, high


def ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks along the last axis, ties given their average rank (scipy.stats.rankdata)."""
    low, high = tie_bounds(x)
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
    picks = torch.randint(0, finite.numel(), (resamples, finite.numel()), generator=generator, device="cpu")
    means = finite[picks.to(finite.device)].mean(dim=1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=means.dtype, device=means.device))
    return float(low), float(high)


def bootstrap_band(rows: torch.Tensor, generator: torch.Generator, *, resamples: int = 1000,
                   level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Pointwise percentile bootstrap band of the mean curve of ``rows`` (n, K), in float64.

    The rows (samples) are resampled with replacement as in ``bootstrap_interval`` (one (resamples, n)
    draw, shared by every point, so each resample is a whole mean curve); at each point the band is
    the 2.5th and 97.5th percentile of the resampled means. Each resampled mean lies between the
    rows' smallest and largest value at that point, so the band stays inside the metric's range (a
    probability band inside [0, 1]), which mean +- 1.96 standard errors does not.
    """
    rows = rows.double()
    picks = torch.randint(0, rows.shape[0], (resamples, rows.shape[0]), generator=generator, device="cpu")
    counts = torch.zeros(resamples, rows.shape[0], dtype=rows.dtype, device="cpu").scatter_add_(
        1, picks, torch.ones_like(picks, dtype=rows.dtype))
    means = counts @ rows.cpu() / rows.shape[0]  # (resamples, K): how often each row was drawn
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=means.dtype, device=means.device), dim=0)
    return low, high
