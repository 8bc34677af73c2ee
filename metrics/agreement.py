"""Agreement metrics: how closely an explanation matches a reference attribution.

The reference is a ground truth (OpenXAI's: the coefficients of a linear model) or another method's
attribution (Krishna et al., 2022, "The Disagreement Problem in Explainable Machine Learning"; Agarwal
et al., 2022, "OpenXAI: Towards a Transparent Evaluation of Model Explanations", NeurIPS Datasets and
Benchmarks). Both are compared element by element over the flattened sample (channels included), and
importance is the magnitude |value|: the top-k features are the k largest magnitudes.

k defaults to a quarter of the elements, rounded half up and at least 1 (``k=0``; a positive ``k`` is
used as given), as OpenXAI leaves k to the user.

Ties. Magnitudes that are equal occupy a block of consecutive positions in the ranking; each tied
feature is taken to sit at each of those positions with equal probability, independently in the two
attributions, and the top-k scores are the expected values under that random tie-breaking. Without
ties they are exactly OpenXAI's; with ties OpenXAI depends on numpy's unstable argsort order (and adds,
for rank agreement, a comparison of dense ranks), whereas these are deterministic and do not depend on
the order of the features.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.localisation import tie_blocks, top_k_chance, top_k_size
from xaibench.metrics.stats import spearman

from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


@dataclasses.dataclass(frozen=True)
class TopKParams:
    """k: the number of top features compared (0: use ``fraction``); fraction: k as a share of the
    elements per sample."""

    k: int = 0
    fraction: float = 0.25


def same_position_chance(blocks: tuple[torch.Tensor, torch.Tensor],
                         ref_blocks: tuple[torch.Tensor, torch.Tensor], k: int) -> torch.Tensor:
    """Expected number of the top k positions at which each element sits in both rankings, (N, F).

    An element tied over m positions sits at each of them with chance 1/m, independently in the two
    rankings; the positions that count lie in [0, k) and in both tie blocks.
    """
    (start, end), (ref_start, ref_end) = blocks, ref_blocks
    shared = torch.minimum(end, ref_end).clamp_max(k) - torch.maximum(start, ref_start)
    return shared.clamp_min(0).double() / ((end - start) * (ref_end - ref_start)).double()


def same_sign(batch: MetricInputs) -> torch.Tensor:
    """Whether each element has the same sign (numpy's: -1, 0, 1) in the attribution and reference."""
    return torch.sign(batch.attributions.flatten(1)) == torch.sign(batch.reference.flatten(1))


class TopKAgreement(Metric):
    """Shared machinery of FA, RA, SA and SRA: subclasses set ``by_position`` and ``signed``."""

    category = "agreement"
    higher_is_better = True
    needs_model = False
    needs_reference = True
    by_position: ClassVar[bool] = False  # compare positions in the ranking (RA) rather than sets (FA)
    signed: ClassVar[bool] = False  # count a common feature only when its signs agree
    Params = TopKParams

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        explained, reference = batch.attributions.flatten(1), batch.reference.flatten(1)
        k = top_k_size(explained.shape[1], params.k, params.fraction)
        blocks, ref_blocks = tie_blocks(explained.abs()), tie_blocks(reference.abs())
        if self.by_position:
            matches = same_position_chance(blocks, ref_blocks, k)
        else:
            matches = top_k_chance(*blocks, k) * top_k_chance(*ref_blocks, k)
        if self.signed:
            matches = matches * same_sign(batch)
        return MetricResult(scores=matches.sum(1) / k)


@METRICS.register("feature_agreement")
class FeatureAgreement(TopKAgreement):
    """Feature agreement, FA (Krishna et al., 2022; OpenXAI): the fraction of the top-k features of
    the explanation that are also among the top-k features of the reference, |top_k(a) & top_k(r)| / k.
    Ties count in expectation (see the module docstring)."""

    description = "share of the top-k features (by |value|) common to explanation and reference"


@METRICS.register("sign_agreement")
class SignAgreement(TopKAgreement):
    """Sign agreement, SA (Krishna et al., 2022; OpenXAI): feature agreement counting only common
    top-k features whose attributions have the same sign (numpy's sign: zero is its own sign).
    Ties count in expectation (see the module docstring)."""

    signed = True
    description = "share of the top-k features common to explanation and reference with the same sign"


@METRICS.register("rank_agreement")
class RankAgreement(TopKAgreement):
    """Rank agreement, RA (Krishna et al., 2022; OpenXAI): the fraction of the k top positions that
    hold the same feature in the explanation's and the reference's magnitude rankings. Ties count in
    expectation: a feature tied over m positions sits at each with probability 1/m (OpenXAI requires
    equal dense ranks in addition to its argsort order; the two agree when there are no ties)."""

    by_position = True
    description = "share of the top-k positions holding the same feature in both rankings"


@METRICS.register("signed_rank_agreement")
class SignedRankAgreement(TopKAgreement):
    """Signed rank agreement, SRA (Krishna et al., 2022; OpenXAI): rank agreement counting only
    positions whose common feature has the same sign in both. Ties count in expectation (see
    ``rank_agreement``)."""

    by_position = True
    signed = True
    description = "share of the top-k positions holding the same feature with the same sign in both"


@METRICS.register("rank_correlation")
class RankCorrelation(Metric):
    """Rank correlation, RC (Krishna et al., 2022; OpenXAI): Spearman's correlation of |a| and |r| over
    all elements, with tied magnitudes given their average rank (``scipy.stats.spearmanr``). OpenXAI
    computes Pearson's correlation of *dense* ranks, which equals this without ties but not with them
    (dense ranks squeeze the rank scale after every tie). NaN where either magnitude vector is constant.
    """

    category = "agreement"
    higher_is_better = True
    needs_model = False
    needs_reference = True
    description = "Spearman correlation of |explanation| and |reference| over all features"

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        explained, reference = batch.attributions.flatten(1).abs(), batch.reference.flatten(1).abs()
        return MetricResult(scores=spearman(explained, reference))


@METRICS.register("pairwise_rank_agreement")
class PairwiseRankAgreement(Metric):
    """Pairwise rank agreement, PRA (Krishna et al., 2022; OpenXAI): the fraction of all pairs of
    features that the explanation and the reference order alike by magnitude.

    Over all F (F - 1) / 2 pairs, as OpenXAI computes it. A pair agrees when sign(|a_i| - |a_j|) equals
    sign(|r_i| - |r_j|), so a tie agrees only with a tie; OpenXAI compares "i ranks strictly above j",
    which for a pair tied in one attribution agrees whenever the other puts j first (an asymmetry
    that depends on the features' order). The two agree when there are no ties. Counted in
    O(F log^2 F) per sample from the discordant pairs and the tie counts (as for Kendall's tau), not
    by enumerating pairs. NaN for a single feature.
    """

    category = "agreement"
    higher_is_better = True
    needs_model = False
    needs_reference = True
    description = "share of feature pairs ordered alike by |explanation| and |reference|"

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        first = batch.attributions.flatten(1).abs().double()
        second = batch.reference.flatten(1).abs().double()
        n_features = first.shape[1]
        if n_features < 2:
            return MetricResult(scores=torch.full((batch.n,), float("nan"), dtype=torch.float64, device="cpu"))
        return MetricResult(scores=pairs_ordered_alike(first, second) / (n_features * (n_features - 1) / 2))


def pairs_ordered_alike(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Per row, the number of pairs i < j with sign(first_i - first_j) == sign(second_i - second_j).

    Those are the concordant pairs and the pairs tied in both: all pairs, less those tied in first or
    in second (inclusion-exclusion), less the discordant ones, plus the pairs tied in both. (N,) float64.
    """
    n_features = first.shape[1]
    # sorted by (first, second), the strict inversions left in second are exactly the discordant pairs
    order = second.argsort(dim=1, stable=True)
    order = order.gather(1, first.gather(1, order).argsort(dim=1, stable=True))
    discordant = strict_inversions(second.gather(1, order))
    # a value's id is the number of smaller values in its row: equal values share it
    ids = [torch.searchsorted(v.sort(dim=1).values, v.contiguous()) for v in (first, second)]
    tied_both = tied_pairs(ids[0] * (n_features + 1) + ids[1])
    every = n_features * (n_features - 1) / 2
    return every - tied_pairs(ids[0]) - tied_pairs(ids[1]) + 2 * tied_both - discordant


def tied_pairs(values: torch.Tensor) -> torch.Tensor:
    """Number of pairs of equal values per row, (N,) float64."""
    ordered = values.sort(dim=1).values.contiguous()
    contiguous = values.contiguous()
    equal = torch.searchsorted(ordered, contiguous, right=True) - torch.searchsorted(ordered, contiguous)
    return (equal - 1).sum(1).double() / 2


def strict_inversions(values: torch.Tensor) -> torch.Tensor:
    """Number of pairs i < j with values[i] > values[j] per row, (N,) float64.

    A bottom-up merge sort batched over rows and blocks: at each level, every element of a right block
    counts the elements of its sorted left neighbour that exceed it. Rows are padded with +inf to a
    power of two; padding sits at the end and adds no inversion.
    """
    n, length = values.shape
    size = 1 << max(0, (length - 1).bit_length())
    blocks = torch.cat([values, values.new_full((n, size - length), float("inf"))], dim=1).unsqueeze(-1)
    count = torch.zeros(n, dtype=torch.long, device=values.device)
    width = 1
    while width < size:
        pairs = blocks.reshape(n, size // (2 * width), 2, width)
        left, right = pairs[:, :, 0].contiguous(), pairs[:, :, 1].contiguous()
        count += (width - torch.searchsorted(left, right, right=True)).sum(dim=(1, 2))
        blocks = pairs.reshape(n, size // (2 * width), 2 * width).sort(dim=-1).values
        width *= 2
    return count.double()
