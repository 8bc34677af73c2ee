"""Localisation metrics: does the explanation point at the ground-truth region?

Each compares a ground-truth mask (images (N, H, W), sequences (N, L), tabular (N, F)) with the
attribution map summed over channels, (N, *spatial). A sample whose mask is empty has nothing to
localise and scores NaN.

Ties. Rankings of the map (the pointing game's maximum, the top-k of relevance rank accuracy and top-k
intersection) break ties uniformly at random *in expectation*: when the k-th largest value is shared,
each tied element counts with the probability that it makes the cut. The score is then deterministic,
independent of element order, and equal to the plain definition whenever there are no ties. Quantus
instead counts any tied maximum as a hit (pointing game) or takes numpy's unstable argsort order.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.stats import ranks, tie_bounds

from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def attribution_map(attributions: torch.Tensor) -> torch.Tensor:
    """The channel-summed attribution, flattened: (N, P) float64 with P = H * W, L or F."""
    summed = attributions if attributions.ndim == 2 else attributions.sum(1)
    return summed.flatten(1).double()


def flat_masks(batch: MetricInputs) -> torch.Tensor:
    """The ground-truth masks flattened like ``attribution_map``, (N, P) bool."""
    return batch.masks.flatten(1).to(batch.attributions.device)


def nan_where(undefined: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` with NaN where ``undefined`` is True."""
    return torch.where(undefined, torch.full_like(values, float("nan")), values)


def top_k_size(n_features: int, k: int, fraction: float) -> int:
    """``k`` when positive, else ``fraction`` of ``n_features`` rounded half up, at least 1.

    Raises:
        InputError: for a negative k, a k above ``n_features`` or a fraction outside (0, 1].
    """
    if k < 0 or k > n_features:
        raise InputError(f"k must be between 0 (use the fraction) and {n_features}, got {k}")
    if k > 0:
        return k
    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, int(fraction * n_features + 0.5))


def tie_blocks(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per element, the positions [start, end) that its value occupies in the descending order of its
    row: start counts the strictly larger values, end - start the equal ones. (N, P) int64 each."""
    below, below_or_equal = tie_bounds(values)
    count = values.shape[1]
    return count - below_or_equal, count - below


def top_k_chance(start: torch.Tensor, end: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """Probability that each element is among the k largest of its row when ties are broken uniformly
    at random: the share of its tie block that lies in [0, k). (N, P) float64; ``k`` an int or (N, 1)."""
    limit = torch.minimum(end, torch.as_tensor(k, device=end.device))
    return (limit - start).clamp_min(0).double() / (end - start).double()


def expected_top_k_hits(scores: torch.Tensor, masks: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Expected number of mask elements among the ``k`` highest ``scores`` of each row, (N,) float64.

    Args:
        scores: (N, P) values to rank, highest first.
        masks: (N, P) bool.
        k: (N,) int64 in [1, P].
    """
    return (top_k_chance(*tie_blocks(scores), k[:, None]) * masks).sum(1)


class LocalisationMetric(Metric):
    """What the localisation metrics share: masks instead of a model; higher scores are better."""

    category = "localisation"
    higher_is_better = True
    needs_model = False
    needs_masks = True


@METRICS.register("pointing_game")
class PointingGame(LocalisationMetric):
    """Pointing game (Zhang et al., 2018, "Top-Down Neural Attention by Excitation Backprop", IJCV;
    Quantus ``PointingGame``): 1.0 when the maximum of the channel-summed map lies inside the mask.

    A maximum shared by m elements, j of them inside the mask, scores j / m (the hit rate of a random
    choice among them; Quantus scores 1.0 when any of them is inside, so a constant map always "hits").
    Zhang et al. also accept points within 15 pixels of the mask; like Quantus, there is no tolerance
    here. ``weighted`` multiplies a hit by 1 - |mask| / P, rewarding hits on small regions as Quantus's
    ``weighted`` option intends (in Quantus 0.6.0 it raises). Samples with an empty mask score NaN;
    Quantus assigns NaN to a boolean array there, which stores True, and counts them as hits.
    """

    description = "whether the map's maximum lies inside the ground-truth mask (Zhang et al. 2018)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """weighted: scale a hit by 1 - (mask size / map size)."""

        weighted: bool = False

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        scores, masks = attribution_map(batch.attributions), flat_masks(batch)
        ones = torch.ones(batch.n, dtype=torch.long, device=scores.device)
        hits = expected_top_k_hits(scores, masks, ones)
        area = masks.sum(1).double()
        if params.weighted:
            hits = hits * (1 - area / masks.shape[1])
        return MetricResult(scores=nan_where(area == 0, hits))


@METRICS.register("attribution_localisation")
class AttributionLocalisation(LocalisationMetric):
    """Attribution localisation (Kohlbrenner et al., 2020, "Towards Best Practice in Explaining Neural
    Network Decisions with LRP", IJCNN; Quantus ``AttributionLocalisation``).

    ``mu = R_in / R_tot``: the attribution mass inside the mask over the total, on the channel-summed
    map. The mass is the positive part max(a, 0) (Kohlbrenner et al.; Quantus with
    ``positive_attributions=True, abs=False``) or, with ``absolute=True``, |a| (Quantus's defaults).
    ``weighted`` multiplies mu by the mask's share of the map, |mask| / P, as Quantus's ``weighted``
    option does; Quantus measures the map as ``x_batch[2:].size`` (all elements of the samples after
    the second, a slip of the batch axis), so its weighted scores are off by a factor that depends on
    the batch size. NaN where the mask is empty or there is no mass at all (Quantus returns 0 there).
    """

    description = "share of the positive attribution mass inside the mask (Kohlbrenner et al. 2020)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """absolute: use |a| as the mass instead of its positive part; weighted: multiply by the
        mask's share of the map."""

        absolute: bool = False
        weighted: bool = False

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        scores, masks = attribution_map(batch.attributions), flat_masks(batch)
        mass = scores.abs() if params.absolute else scores.clamp_min(0)
        total = mass.sum(1)
        ratio = (mass * masks).sum(1) / total
        area = masks.sum(1).double()
        if params.weighted:
            ratio = ratio * area / masks.shape[1]
        return MetricResult(scores=nan_where((area == 0) | (total == 0), ratio))


@METRICS.register("relevance_rank_accuracy")
class RelevanceRankAccuracy(LocalisationMetric):
    """Relevance rank accuracy (Arras et al., 2022, "CLEVR-XAI: A benchmark dataset for the ground
    truth evaluation of neural network explanations", Information Fusion; Quantus
    ``RelevanceRankAccuracy``).

    With K = |mask|, the fraction of the K highest values of the channel-summed map that lie inside the
    mask. Ties at the K-th value count in expectation (see the module docstring); Quantus uses numpy's
    argsort order. NaN for an empty mask, as in Quantus.
    """

    description = "fraction of the |mask| highest-ranked elements inside the mask (Arras et al. 2022)"

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        scores, masks = attribution_map(batch.attributions), flat_masks(batch)
        area = masks.sum(1)
        hits = expected_top_k_hits(scores, masks, area.clamp_min(1))
        return MetricResult(scores=nan_where(area == 0, hits / area.clamp_min(1).double()))


@METRICS.register("top_k_intersection")
class TopKIntersection(LocalisationMetric):
    """Top-k intersection (Theiner et al., 2021, "Interpretable Semantic Photo Geolocation",
    arXiv:2104.14995, WACV 2022; Quantus ``TopKIntersection``): the fraction of the k highest values of
    the channel-summed map that lie inside the mask.

    Quantus's default k = 1000 exceeds small inputs, so k defaults here to a fraction (5%) of the map's
    elements, rounded half up and at least 1; a positive ``k`` is used as given. ``concept_influence``
    divides by the mask's share of the map (Quantus's option of that name): 1.0 then means "as good as
    a random choice". Ties count in expectation (see the module docstring). NaN for an empty mask.
    """

    description = "fraction of the k highest-ranked elements inside the mask (Theiner et al. 2021)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """k: elements taken (0: use ``fraction``); fraction: k as a share of the map's elements;
        concept_influence: divide by the mask's share of the map."""

        k: int = 0
        fraction: float = 0.05
        concept_influence: bool = False

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        scores, masks = attribution_map(batch.attributions), flat_masks(batch)
        k = top_k_size(scores.shape[1], params.k, params.fraction)
        counts = torch.full((batch.n,), k, dtype=torch.long, device=scores.device)
        share = expected_top_k_hits(scores, masks, counts) / k
        area = masks.sum(1).double()
        if params.concept_influence:
            share = share * masks.shape[1] / area.clamp_min(1)
        return MetricResult(scores=nan_where(area == 0, share))


@METRICS.register("mask_auc")
class MaskAUC(LocalisationMetric):
    """ROC AUC of the channel-summed map as a score for mask membership (Fawcett, 2006, "An
    introduction to ROC analysis", Pattern Recognition Letters; Quantus ``AUC``).

    Computed per sample as the Mann-Whitney statistic on average ranks:
    ``AUC = (sum of the ranks of mask elements - n_in (n_in + 1) / 2) / (n_in n_out)``, the probability
    that a random element inside the mask outranks one outside, ties counting one half; this equals
    sklearn's ``roc_auc_score`` (and Quantus's ``roc_curve`` + ``auc``). NaN where the mask is empty or
    covers the whole map, since one of the two classes is then missing.
    """

    description = "ROC AUC of the map as a detector of the mask (Fawcett 2006)"

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        scores, masks = attribution_map(batch.attributions), flat_masks(batch)
        inside = masks.sum(1).double()
        outside = masks.shape[1] - inside
        rank_sum = (ranks(scores) * masks).sum(1)
        auc = (rank_sum - inside * (inside + 1) / 2) / (inside * outside)
        return MetricResult(scores=nan_where((inside == 0) | (outside == 0), auc))
