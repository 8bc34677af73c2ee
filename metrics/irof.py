"""IROF: iterative removal of features (Rieger & Hansen 2020), superpixels removed by mean relevance."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.perturb import (
    blockwise_scores,
    cumulative_masks,
    group_relevance,
    removal_ranks,
    substrate,
)

from xaibench.attribution.reference import SIMPLE_BASELINES
from xaibench.core.errors import InputError, UnknownNameError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
    import torch
else:
    np = lazy_import("numpy")
    torch = lazy_import("torch")

IROF_SUBSTRATES = (*SIMPLE_BASELINES, "blur")


def superpixels(inputs: torch.Tensor, n_segments: int, compactness: float) -> torch.Tensor:
    """SLIC superpixels of each image (N, C, H, W): labels (N, H, W), int64, numbered 0..S-1 per image.

    skimage's ``slic`` with Quantus's settings (its defaults, ``start_label=0``) on the image as the model
    receives it, channels last, in float64; three-channel images are compared in Lab space. Labels are
    renumbered consecutively, so that an image's labels are exactly 0..S-1.
    """
    from skimage.segmentation import slic

    images = inputs.detach().cpu().double().movedim(1, -1).numpy()
    labels = []
    for image in images:  # skimage segments one image per call (C code), outside the model hot path
        segments = slic(image, n_segments=n_segments, compactness=compactness, start_label=0)
        labels.append(np.unique(segments, return_inverse=True)[1].reshape(segments.shape))
    return torch.from_numpy(np.stack(labels)).long().to(inputs.device)


def mean_relevance(attributions: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Mean attribution over each superpixel's elements, all channels, (N, G); -inf for the labels an
    image does not have (G is the most superpixels of any image), so that they come last."""
    summed = group_relevance(attributions.sum(1), segments)
    sizes = group_relevance(torch.ones_like(segments, dtype=torch.float32), segments) * attributions.shape[1]
    return torch.where(sizes > 0, summed / sizes.clamp(min=1), torch.full_like(summed, -float("inf")))


def area_over_curve(curve: torch.Tensor, segment_counts: torch.Tensor) -> torch.Tensor:
    """``S - trapezoid(curve[:S])`` with unit steps for each row's own number of superpixels S, as
    Quantus scores IROF; NaN for an image with a single superpixel (nothing to order)."""
    curve = curve.double()
    steps = torch.arange(curve.shape[1], device=curve.device)
    inside = steps[None, :] < segment_counts[:, None]
    last = curve.gather(1, (segment_counts - 1).clamp(min=0)[:, None]).squeeze(1)
    area = (curve * inside).sum(1) - 0.5 * (curve[:, 0] + last)
    score = segment_counts.double() - area
    return torch.where(segment_counts > 1, score, torch.full_like(score, float("nan")))


@METRICS.register("irof")
class Irof(Metric):
    """IROF (Rieger & Hansen, "IROF: a low resource evaluation metric for explanation methods", ICLR
    2020 workshop on AI for affordable healthcare), as Quantus 0.6.0 defines it.

    Each image is split into SLIC superpixels (skimage, Quantus's parameters). Superpixels are ranked by
    their mean attribution (all channels) and replaced cumulatively, most relevant first, by the
    substrate (default: the image's mean, Quantus's default baseline). The curve is the ratio
    ``f(x~_k) / f(x)`` of the target's softmax probability after removing k superpixels to the
    original's, for k = 1..S; the score is the area over it, ``S - trapezoid(curve)`` with unit steps,
    as Quantus computes it (higher is better; it grows with the number of superpixels S, so compare
    scores only across equal segmentations). Segmentation is a per-image call into skimage's C code,
    outside the model hot path; all forward passes are batched. Curves of images with fewer superpixels
    than the batch's most stay at their last value (everything is removed).

    Differences from Quantus 0.6.0, each a Quantus behaviour that makes a sample's score depend on the
    other samples in its batch: Quantus's "mean" baseline is the mean of the whole batch, recomputed from
    the already perturbed batch at each step, where here it is the image's own mean before removal;
    Quantus pads shorter curves with zeros inside the trapezoid, which subtracts half the last value from
    the area for images with fewer superpixels than the batch's most. Labels are renumbered consecutively
    and ties in mean relevance keep the lower label first (Quantus's argsort leaves them unspecified).
    """

    category = "faithfulness"
    higher_is_better = True
    modalities = ("image",)
    curve_label = "superpixels removed"
    description = "area over the probability-ratio curve removing SLIC superpixels (Rieger & Hansen 2020)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """substrate: what removed superpixels become: mean (the image's mean), zero, black (its
        minimum), white (its maximum) or blur; n_segments, compactness: skimage ``slic``'s target
        number of superpixels and colour-versus-space trade-off (Quantus uses slic's defaults)."""

        substrate: str = "mean"
        n_segments: int = 100
        compactness: float = 10.0

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        if params.substrate not in IROF_SUBSTRATES:
            raise UnknownNameError.for_name("substrate", params.substrate, list(IROF_SUBSTRATES))
        if params.n_segments < 1 or params.compactness <= 0:
            raise InputError("irof needs n_segments >= 1 and compactness > 0")
        inputs = batch.inputs
        segments = superpixels(inputs, params.n_segments, params.compactness)
        segment_counts = segments.flatten(1).amax(1) + 1
        ranks = removal_ranks(mean_relevance(batch.attributions, segments), "morf")
        counts = torch.arange(ranks.shape[1] + 1, device="cpu")  # 0 (the original image) to every superpixel removed

        def build(samples: slice, block: slice) -> torch.Tensor:
            removed = cumulative_masks(ranks[samples], segments[samples], counts[block]).unsqueeze(2)
            fill = substrate(inputs[samples], params.substrate).unsqueeze(1)
            return torch.where(removed, fill, inputs[samples].unsqueeze(1))

        probabilities = blockwise_scores(batch, len(counts), build, "probability").double()
        curve = probabilities[:, 1:] / probabilities[:, :1]
        return MetricResult(scores=area_over_curve(curve, segment_counts.cpu()), curve=curve,
                            curve_x=counts[1:].double())
