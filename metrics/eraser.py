"""ERASER's comprehensiveness and sufficiency (DeYoung et al., ACL 2020, "ERASER: A Benchmark to Evaluate
Rationalized NLP Models"), soft-score form.

A rationale r_k is the top k% of a sample's features (tokens for text) by attribution. With m(x)_j the
model's probability of the explained class j:

- comprehensiveness_k = m(x)_j - m(x without r_k)_j: how much the prediction needs the rationale;
  higher is better;
- sufficiency_k = m(x)_j - m(r_k alone)_j: how much is lost when only the rationale is kept; lower is
  better.

For attributions, which are soft scores, ERASER reports each as an AOPC over the bins k in
B = {1, 5, 10, 20, 50}%; the score here is the plain mean over the bins (the paper writes the
normaliser as 1 / (|B| + 1); with the mean, a constant difference d scores d). A bin holds
ceil(k% of G) features, at least one, of the G features (groups of ``patch``).

Deviation: ERASER deletes the tokens, which shortens the text; here removed features are replaced by
the substrate, for text the mask token (``xaibench.models.text``), so every perturbed text keeps its
length, as the fixed-length batches xaibench explains require. On other modalities the substrate is a
parameter, as in the other removal metrics (``metrics/curves.py``). The curves give the difference
per bin.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, ClassVar

from xaibench.metrics import perturb
from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.curves import ordering, removal_curve

from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

ERASER_BINS = "1,5,10,20,50"


@dataclasses.dataclass(frozen=True)
class EraserParams:
    """bins: the rationale sizes in percent of the features, comma-separated (ERASER: 1,5,10,20,50);
    substrate: what removed features become (see ``perturb.SUBSTRATES``; text: the mask token, zero);
    patch: feature group side (1 = tokens / pixels / steps / features)."""

    bins: str = ERASER_BINS
    substrate: str = "zero"
    patch: int = 1


def rationale_sizes(bins: str, n_groups: int) -> torch.Tensor:
    """Features in each bin's rationale: ceil(k% of ``n_groups``), at least 1, in increasing order.

    Raises:
        InputError: a bin that is not a number in (0, 100], or bins not in increasing order.
    """
    try:
        percents = [float(item) for item in bins.split(",") if item.strip()]
    except ValueError:
        raise InputError(f"bins must be percentages such as {ERASER_BINS}, got {bins!r}") from None
    if not percents or any(not 0 < p <= 100 for p in percents) or percents != sorted(set(percents)):
        raise InputError(f"bins must be increasing percentages in (0, 100], such as {ERASER_BINS}, got {bins!r}")
    return torch.tensor([max(1, math.ceil(p / 100 * n_groups - 1e-9)) for p in percents], dtype=torch.long,
                        device="cpu")


def _differences(batch: MetricInputs, params: EraserParams, generator: torch.Generator,
                 *, keep: bool) -> MetricResult:
    """m(x)_j minus m(x with each bin's rationale removed), or with only the rationale kept."""
    groups = ordering(batch, params.patch, "morf")
    counts = rationale_sizes(params.bins, groups.n_groups)
    fill = perturb.substrate(batch.inputs, params.substrate, generator=generator)
    perturbed = removal_curve(batch, groups, counts, fill, "probability", insert=keep)
    full = perturb.batched_scores(batch.model, batch.inputs, batch.target, "probability", batch.batch_size)
    differences = full.to(perturbed).unsqueeze(1) - perturbed
    return MetricResult(differences.mean(dim=1), differences, counts.double() / groups.n_groups)


@METRICS.register("comprehensiveness")
class Comprehensiveness(Metric):
    """ERASER comprehensiveness (DeYoung et al., 2020): the mean over rationale sizes of
    m(x)_j - m(x without the top-k% features)_j; see the module docstring. Higher is better."""

    category = "faithfulness"
    higher_is_better = True
    curve_label = "fraction of features removed"
    description = "ERASER comprehensiveness: probability drop when the top-k% features are removed (AOPC)."
    Params = EraserParams
    keep: ClassVar[bool] = False  # whether the rationale is kept alone (sufficiency) or removed

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        return _differences(batch, params, generator, keep=self.keep)


@METRICS.register("sufficiency")
class Sufficiency(Comprehensiveness):
    """ERASER sufficiency (DeYoung et al., 2020): the mean over rationale sizes of
    m(x)_j - m(only the top-k% features)_j; see the module docstring. Lower is better."""

    higher_is_better = False
    curve_label = "fraction of features kept"
    description = "ERASER sufficiency: probability drop when only the top-k% features are kept (AOPC)."
    keep = True
