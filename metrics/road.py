"""ROAD: remove and debias (Rong, Leemann, Borisov, Kasneci, Kasneci; ICML 2022).

Removed pixels are not set to a constant, which would leak the removal pattern to the model ("class
information leakage through the mask"), but filled by noisy linear imputation: each removed pixel is the
weighted mean of its neighbours, kept or removed, so the removed pixels of an image form one sparse linear
system. Here the systems of a whole chunk of (sample, percentage) pairs are one block-diagonal system,
built with vectorised index arithmetic and solved with a single sparse factorisation (scipy).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.perturb import (
    blockwise_scores,
    cumulative_masks,
    group_ids,
    group_relevance,
    removal_ranks,
)

from xaibench.attribution.draws import draw_normal, sample_generators, sample_seeds
from xaibench.core.errors import InputError, UnknownNameError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
    import torch
else:
    np = lazy_import("numpy")
    torch = lazy_import("torch")

#: (offset, weight) of the neighbours a removed element is the weighted mean of. Images: Rong et al.'s
#: weights, 1/6 for the four direct neighbours and 1/12 for the four diagonal ones. Sequences: the two
#: neighbouring steps, equally weighted. Only the ratios matter: each equation is normalised by the
#: weights of the neighbours that lie inside the input.
NEIGHBOURS: dict[int, tuple[tuple[tuple[int, ...], float], ...]] = {
    2: (((-1, -1), 1 / 12), ((-1, 0), 1 / 6), ((-1, 1), 1 / 12), ((0, -1), 1 / 6),
        ((0, 1), 1 / 6), ((1, -1), 1 / 12), ((1, 0), 1 / 6), ((1, 1), 1 / 12)),
    1: (((-1,), 1 / 2), ((1,), 1 / 2)),
}
ROAD_ORDERS = ("morf", "lerf")


def parse_percentages(text: str) -> list[float]:
    """Percentages from ``"start:stop:step"`` (a Python range, stop excluded) or ``"p1,p2,..."``.

    Raises:
        InputError: for text that does not parse, an empty list, or a value outside [0, 100).
    """
    try:
        if ":" in text:
            start, stop, step = (int(part) for part in text.split(":"))
            values = [float(p) for p in range(start, stop, step)]
        else:
            values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(
            f"percentages must be 'start:stop:step' or a comma-separated list, got {text!r}") from None
    if not values or any(not 0 <= p < 100 for p in values):
        raise InputError(f"percentages must be a non-empty list of values in [0, 100), got {text!r}")
    return values


def linear_imputation(values: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """Fill the removed elements of each input with the solution of the linear-imputation system.

    Every removed element equals the weighted mean (``NEIGHBOURS``) of its neighbours inside the input;
    neighbours that are removed too are unknowns of the same system. All inputs' systems form one
    block-diagonal sparse system with one right-hand side per channel, solved at once. Every connected
    region of removed elements touches a kept one unless everything is removed, so the system is regular
    whenever something is kept.

    Args:
        values: (B, C, *spatial) inputs, images (H, W) or sequences (L,).
        removed: (B, *spatial) bool, the elements to impute (all channels).

    Returns:
        (B, C, *spatial) float64 on the CPU: the inputs with removed elements replaced.
    """
    from scipy.sparse.linalg import spsolve

    flat_removed = removed.reshape(removed.shape[0], -1).cpu().numpy()
    flat_values = values.reshape(values.shape[0], values.shape[1], -1).double().cpu().numpy()
    owner, position = np.nonzero(flat_removed)
    out = flat_values.copy()
    if owner.size:
        matrix, rhs = _imputation_system(flat_values, flat_removed, owner, position, tuple(removed.shape[1:]))
        out[owner, :, position] = spsolve(matrix, rhs).reshape(owner.size, -1)
    return torch.from_numpy(out).view(values.shape)


def _imputation_system(flat_values: np.ndarray, flat_removed: np.ndarray, owner: np.ndarray,
                       position: np.ndarray, spatial: tuple[int, ...]) -> tuple[Any, np.ndarray]:
    """The sparse matrix and right-hand sides of ``sum_j w_j (x_i - x_j) = 0`` over the in-bounds
    neighbours j of each removed element i (the unknown ``owner[i], position[i]``): the diagonal holds
    the sum of the w, unknown neighbours get -w, kept neighbours move to the right-hand side (one
    column per channel)."""
    from scipy.sparse import csc_matrix

    count = owner.size
    unknown = np.full(flat_removed.shape, -1, dtype=np.int64)
    unknown[owner, position] = np.arange(count)
    coords = np.unravel_index(position, spatial)
    diagonal = np.zeros(count)
    rhs = np.zeros((count, flat_values.shape[1]))
    rows, cols, weights = [np.arange(count)], [np.arange(count)], []
    for offset, weight in NEIGHBOURS[len(spatial)]:
        shifted = [c + o for c, o in zip(coords, offset)]
        inside = np.logical_and.reduce([(s >= 0) & (s < size) for s, size in zip(shifted, spatial)])
        source = np.nonzero(inside)[0]
        neighbour = np.ravel_multi_index([s[inside] for s in shifted], spatial)
        neighbour_owner = owner[inside]
        diagonal[source] += weight
        is_unknown = flat_removed[neighbour_owner, neighbour]
        rows.append(source[is_unknown])
        cols.append(unknown[neighbour_owner[is_unknown], neighbour[is_unknown]])
        weights.append(np.full(int(is_unknown.sum()), -weight))
        kept = ~is_unknown
        rhs[source[kept]] += weight * flat_values[neighbour_owner[kept], :, neighbour[kept]]
    data = np.concatenate([diagonal, *weights])
    matrix = csc_matrix((data, (np.concatenate(rows), np.concatenate(cols))), shape=(count, count))
    return matrix, rhs


@METRICS.register("road")
class Road(Metric):
    """ROAD (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods",
    ICML 2022): top-1 accuracy after removing the most (MoRF) or least (LeRF) relevant p% of pixels,
    for each p in ``percentages``, with the removed pixels filled by noisy linear imputation.

    A pixel's relevance is its attribution summed over channels; it is removed in every channel. For
    each p, ``int(H * W * p / 100)`` pixels are removed (Quantus's count), each replaced by the weighted
    mean of its 8 neighbours (1/6 direct, 1/12 diagonal, as in the paper and Quantus's
    ``noisy_linear_imputation``), solved jointly, plus Gaussian noise of standard deviation ``noise``
    drawn per sample from the generator. The curve is the per-sample top-1 correctness (1 when the
    target is still the predicted class) per percentage, what Quantus records; Quantus reports only its
    mean over samples per percentage. The score is the mean of the curve over the percentages, the area
    under the accuracy curve with the percentages as equal-width steps: lower is better for MoRF, higher
    for LeRF.

    Differences from Quantus 0.6.0: LeRF is available (the paper evaluates both orders; Quantus only
    MoRF); ties in relevance keep the lower pixel index first (Quantus's unstable argsort leaves them
    unspecified); multi-channel images remove whole pixels, whereas Quantus ranks the channel-broadcast
    attribution's C*H*W entries and uses those indices as pixel indices, which fails or removes the wrong
    pixels for C > 1. Sequences (an extension of ours) use the two neighbouring steps with equal weights,
    so a removed run is filled by linear interpolation between its kept ends (plus noise).
    """

    category = "faithfulness"
    higher_is_better = False
    modalities = ("image", "sequence")
    stochastic = True
    curve_label = "fraction of pixels removed"
    description = "accuracy after removing the top/bottom p% of pixels, imputed linearly (Rong et al. 2022)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """percentages: the percentages of pixels (steps) removed, as ``"start:stop:step"`` (a Python
        range; Quantus's default 1, 3, ..., 99) or a comma-separated list, each in [0, 100);
        order: "morf" (most relevant first) or "lerf" (least relevant first); noise: the standard
        deviation of the Gaussian noise added to the imputed values."""

        percentages: str = "1:100:2"
        order: str = "morf"
        noise: float = 0.01

    def direction(self, params: Any) -> bool:
        return params.order == "lerf"

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        if params.order not in ROAD_ORDERS:
            raise UnknownNameError.for_name("order", params.order, list(ROAD_ORDERS))
        if params.noise < 0:
            raise InputError(f"noise must be non-negative, got {params.noise}")
        percentages = parse_percentages(params.percentages)
        inputs = batch.inputs
        ids = group_ids(inputs[:, :1])  # one group per pixel or step, channels together
        ranks = removal_ranks(group_relevance(batch.attributions.sum(1, keepdim=True), ids), params.order)
        n_pixels = ids[0].numel()
        counts = torch.tensor([int(n_pixels * p / 100) for p in percentages], dtype=torch.long, device="cpu")
        seeds = sample_seeds(generator, batch.n)

        def build(samples: slice, block: slice) -> torch.Tensor:
            removed = cumulative_masks(ranks[samples], ids[:, 0], counts[block])  # (s, k, *spatial)
            copies = inputs[samples].unsqueeze(1).expand(-1, removed.shape[1], *inputs.shape[1:])
            imputed = linear_imputation(copies.flatten(0, 1), removed.flatten(0, 1)).view(copies.shape)
            # every sample draws the noise of all its percentages, so a block's noise does not depend
            # on how the percentages are split into blocks
            shape = (len(counts), *inputs.shape[1:])
            noise = draw_normal(sample_generators(seeds, samples), shape, torch.float64)[:, block]
            imputed += noise.mul_(params.noise) * removed.unsqueeze(2).cpu()
            return imputed.to(inputs.device, inputs.dtype)

        curve = blockwise_scores(batch, len(counts), build, "top1")
        curve_x = torch.tensor(percentages, dtype=torch.float64, device="cpu") / 100
        return MetricResult(scores=curve.double().mean(1), curve=curve, curve_x=curve_x)
