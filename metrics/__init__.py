"""Evaluation metrics: one registry, batched torch, a per-sample score and curves where they exist.

    from xaibench.metrics import compute
    result = compute("deletion", model, x, attributions, target=y, substrate="blur")
    result.scores  # (N,)

A library package: it uses models, data and ``xaibench.core`` and knows nothing of run directories,
jobs or the CLI (the layers are in ``xaibench.core``'s docstring).
"""

from xaibench.metrics.base import CATEGORIES, METRICS, Metric, MetricInputs, MetricResult, compute

__all__ = ["CATEGORIES", "METRICS", "Metric", "MetricInputs", "MetricResult", "compute"]
