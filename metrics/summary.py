"""From per-sample metric results to the JSON-able summary that metrics.json and the reports hold."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from xaibench.metrics.base import MetricResult
from xaibench.metrics.stats import bootstrap_band, bootstrap_interval

from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

BOOTSTRAP_RESAMPLES = 2000


def summarise(result: MetricResult, generator: torch.Generator) -> dict[str, Any]:
    """Mean, standard deviation (ddof 1), 95% percentile-bootstrap interval of the mean, counts, the
    per-sample values (null for NaN) and, for curve metrics, the mean curve with a pointwise 95%
    percentile-bootstrap band over the samples (``bootstrap_band``: inside the metric's range, unlike
    mean +- 1.96 standard errors, which left [0, 1] for probabilities).

    NaN scores (a metric undefined for a sample) and infinite ones (a ratio over a zero change) are left
    out of the statistics and counted in "nan"; JSON gets null for them.
    """
    scores = result.scores.double()
    finite = scores[torch.isfinite(scores)]
    low, high = bootstrap_interval(finite, generator, resamples=BOOTSTRAP_RESAMPLES)
    summary: dict[str, Any] = {
        "mean": _number(finite.mean()) if finite.numel() else None,
        "std": _number(finite.std()) if finite.numel() > 1 else None,
        "ci95": [_number(low), _number(high)],
        "n": int(finite.numel()),
        "nan": int(scores.numel() - finite.numel()),
        "values": [_number(v) for v in scores.tolist()],
        "curve": None,
    }
    if result.curve is not None:
        summary["curve"] = _curve(result.curve.double(), result.curve_x, generator)
    return summary


def _curve(curve: torch.Tensor, x: torch.Tensor | None,
           generator: torch.Generator) -> dict[str, list[float | None]]:
    rows = curve[torch.isfinite(curve).all(dim=1)]
    axis = x.tolist() if x is not None else list(range(curve.shape[1]))
    if rows.shape[0] == 0:
        empty: list[float | None] = [None] * curve.shape[1]
        return {"x": axis, "mean": empty, "low": empty, "high": empty}
    low, high = bootstrap_band(rows, generator, resamples=BOOTSTRAP_RESAMPLES)
    return {"x": axis, "mean": [_number(v) for v in rows.mean(dim=0)],
            "low": [_number(v) for v in low], "high": [_number(v) for v in high]}


def _number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
