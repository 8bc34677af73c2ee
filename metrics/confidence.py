"""Confidence under a soft mask: average drop (ADP) and increase in confidence (PIC).

Both multiply the input by the explanation rescaled to [0, 1] and compare the target's softmax
probability before and after (Chattopadhay, Sarkar, Howlader & Balasubramanian, 2018, WACV,
"Grad-CAM++"). The product is taken in the model's input space, so a masked-out element becomes 0, the
"removed" value after normalisation, as in the BEE authors' code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xaibench.metrics import perturb
from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult

from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def soft_mask(attributions: torch.Tensor) -> torch.Tensor:
    """The channel-summed map min-max scaled to [0, 1] per sample, broadcastable over channels.

    Images (N, C, H, W) give (N, 1, H, W), sequences (N, 1, L), tabular (N, F) itself scaled. A
    constant map ranks nothing above anything else and gives the all-zero mask, as the usual
    ``(a - min) / (max - min + eps)`` scaling of the Grad-CAM code does.
    """
    summed = attributions if attributions.ndim == 2 else attributions.sum(dim=1, keepdim=True)
    flat = summed.flatten(1)
    low = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - low
    scaled = (flat - low) / torch.where(span > 0, span, torch.ones_like(span))
    return scaled.view_as(summed)


def masked_probabilities(batch: MetricInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Target softmax probabilities of x and of x * mask, each (N,)."""
    masked = batch.inputs * soft_mask(batch.attributions)
    original, kept = (perturb.batched_scores(batch.model, x, batch.target, "probability", batch.batch_size)
                      for x in (batch.inputs, masked))
    return original.double().cpu(), kept.double().cpu()


@METRICS.register("average_drop")
class AverageDrop(Metric):
    """Average drop, ADP (Chattopadhay et al., 2018, WACV, "Grad-CAM++"): with m the channel-summed
    attribution min-max scaled to [0, 1] per sample (all zero for a constant map) and p the target's
    softmax probability, the per-sample score is 100 * max(0, p(x) - p(x * m)) / p(x); its mean over
    the dataset is the paper's ADP. NaN only where p(x) underflows to 0. Lower is better.
    """

    category = "faithfulness"
    higher_is_better = False
    description = "Average drop %: relative fall of the class probability when the map masks the input."

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        original, kept = masked_probabilities(batch)
        return MetricResult(100 * (original - kept).clamp_min(0) / original)


@METRICS.register("increase_in_confidence")
class IncreaseInConfidence(Metric):
    """Increase in confidence, PIC (Chattopadhay et al., 2018, WACV, "Grad-CAM++"): 100 when the
    target's softmax probability of x * m exceeds that of x, else 0, with m as in ``average_drop``;
    the dataset mean is the percentage of samples whose confidence rises. Higher is better.
    """

    category = "faithfulness"
    higher_is_better = True
    description = "Increase in confidence %: whether masking the input by the map raises the probability."

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        original, kept = masked_probabilities(batch)
        return MetricResult(100 * (kept > original).double())
