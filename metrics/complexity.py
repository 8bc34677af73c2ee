"""Complexity metrics: how concentrated an explanation is, from the attribution alone.

All three read the magnitudes |a| of every element of the attribution as given (channels are not
summed first: a (C, H, W) map is C * H * W values), so for single-channel inputs they see exactly the
values Quantus sees. No model is involved.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult

from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def magnitudes(batch: MetricInputs) -> torch.Tensor:
    """|a| per sample, flattened over all elements, (N, E) float64."""
    return batch.attributions.flatten(1).double().abs()


def undefined_where_zero(values: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``values`` with NaN where the sample's total magnitude is zero (an empty explanation)."""
    return torch.where(total > 0, values, torch.full_like(values, float("nan")))


@METRICS.register("sparseness")
class Sparseness(Metric):
    """Sparseness: the Gini index of the attribution magnitudes (Chalasani et al., 2020, "Concise
    Explanations of Neural Networks using Adversarial Training", ICML; Quantus ``Sparseness``).

    With the n magnitudes sorted ascending, v_(1) <= ... <= v_(n):
    ``G = sum_i (2i - n - 1) v_(i) / (n sum_i v_(i))``; 0 when all elements are equally important, close
    to 1 when one element holds everything. Computed over every element (channels are not summed).
    Differences from Quantus: Quantus adds 1e-7 to every magnitude (so an all-zero map scores 0 and tiny
    maps are pulled towards 0); here the index is exact and an all-zero attribution, whose Gini index is
    undefined, scores NaN. Quantus's default ``normalise=True`` divides by the maximum, which does not
    change the index.
    """

    category = "complexity"
    higher_is_better = True
    needs_model = False
    description = "Gini index of |attribution|: how concentrated the explanation is (Chalasani et al. 2020)"

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        values = magnitudes(batch).sort(dim=1).values
        n = values.shape[1]
        weights = 2 * torch.arange(1, n + 1, dtype=torch.float64, device=values.device) - n - 1
        total = values.sum(1)
        gini = (values * weights).sum(1) / (n * total)
        return MetricResult(scores=undefined_where_zero(gini, total))


@METRICS.register("complexity")
class Complexity(Metric):
    """Complexity: the entropy of the attribution's fractional contributions (Bhatt et al., 2020,
    "Evaluating and Aggregating Feature-based Model Explanations", IJCAI; Quantus ``Complexity``).

    ``p_i = |a_i| / sum_j |a_j|`` over every element (channels are not summed) and
    ``H = -sum_i p_i log p_i`` (natural log, 0 log 0 = 0): 0 when one element holds everything, log(n)
    for a uniform map. Differences from Quantus: Quantus evaluates ``p log(p + 1e-12)``, which differs
    from the entropy by at most about 1e-12 per element; an all-zero attribution scores NaN in both.
    """

    category = "complexity"
    higher_is_better = False
    needs_model = False
    description = "entropy of the fractional contributions |a_i| / sum |a| (Bhatt et al. 2020)"

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        values = magnitudes(batch)
        total = values.sum(1)
        shares = values / total.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
        entropy = -torch.special.xlogy(shares, shares).sum(1)
        return MetricResult(scores=undefined_where_zero(entropy, total))


@METRICS.register("effective_complexity")
class EffectiveComplexity(Metric):
    """Effective complexity: the number of elements whose attribution magnitude exceeds a threshold
    (Nguyen & Martinez, 2020, "On quantitative aspects of model interpretability", arXiv:2007.07584;
    Quantus ``EffectiveComplexity``).

    Counts ``|a_i| > eps`` over every element (channels are not summed). By default ``eps`` is relative
    to the sample's largest magnitude, which is what Quantus's default ``normalise=True`` intends; Quantus
    however divides by the largest magnitude of the whole batch (``normalise_by_max`` normalises over
    all axes, the batch included), so a sample's count there depends on the other samples. With
    ``relative=False`` the threshold is absolute, which is Quantus with ``normalise=False``.
    """

    category = "complexity"
    higher_is_better = False
    needs_model = False
    description = "number of elements with |attribution| above a threshold (Nguyen & Martinez 2020)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """eps: the threshold (Quantus's default 1e-5); relative: eps is a fraction of the sample's
        largest |attribution| (True) or an absolute value (False)."""

        eps: float = 1e-5
        relative: bool = True

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        if params.eps < 0:
            raise InputError(f"effective_complexity needs eps >= 0, got {params.eps}")
        values = magnitudes(batch)
        threshold = torch.full((batch.n, 1), params.eps, dtype=torch.float64, device=values.device)
        if params.relative:
            threshold = threshold * values.amax(dim=1, keepdim=True)
        return MetricResult(scores=(values > threshold).sum(1).double())
