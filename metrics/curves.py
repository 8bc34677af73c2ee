"""Cumulative removal curves: deletion, insertion, pixel flipping, region perturbation, selectivity, POS/NEG.

Every metric here ranks feature groups (pixels or patches, sequence steps or segments, tabular
features; see ``perturb.group_ids``) by their summed attribution, replaces the first ``counts[k]`` groups
of that order with a substrate (or, for insertion, reveals them on the substrate), and records a model
output at each step k. ``removal_curve`` is the one engine; each metric chooses the order, the step
counts, the substrate, the output and how the curve becomes a score.

The substrate is computed once from the unperturbed sample (``perturb.substrate``). Quantus recomputes
its baseline from the partly perturbed input at every step; for its default "black" (the minimum) that
is the same value, for "mean" and "uniform" it drifts or is redrawn. Only the "uniform" substrate uses
the generator, one draw per sample, so the metrics are deterministic otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, ClassVar

from xaibench.metrics import perturb
from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.stats import normalised_auc, trapezoid

from xaibench.attribution.masks import default_patch
from xaibench.core.errors import InputError, UnknownNameError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

#: steps an automatic ``per_step`` / ``features_in_step`` (0) aims for
AUTO_STEPS = 32
#: Quantus's patch side for region perturbation and selectivity
QUANTUS_PATCH = 8
#: POS / NEG remove 10%, 20%, ..., 90% of the groups (BEE, after Barkan et al.)
TENTHS = range(1, 10)


# ---------------------------------------------------------------------------------------------
# the shared engine


@dataclasses.dataclass(frozen=True)
class Ordering:
    """Feature groups of a batch and their removal order.

    Attributes:
        ids: group id of every element, (1, *S).
        ranks: position of each group in the removal order, (N, G); 0 goes first.
    """

    ids: torch.Tensor
    ranks: torch.Tensor

    @property
    def n_groups(self) -> int:
        return self.ranks.shape[1]


def ordering(batch: MetricInputs, patch: int, order: str) -> Ordering:
    """Groups of ``patch`` (see ``perturb.group_ids``) ranked by summed attribution in ``order``."""
    ids = perturb.group_ids(batch.inputs, patch)
    relevance = perturb.group_relevance(batch.attributions, ids)
    return Ordering(ids, perturb.removal_ranks(relevance, order))


def removal_curve(batch: MetricInputs, groups: Ordering, counts: torch.Tensor, fill: torch.Tensor,
                  output: str, *, insert: bool = False) -> torch.Tensor:
    """Model output after each step, (N, K) for K = len(counts).

    Step k replaces the first ``counts[k]`` groups of the order with ``fill`` (deletion), or, with
    ``insert``, shows only those groups of the input, the rest being ``fill``.
    """

    def build(samples: slice, block: slice) -> torch.Tensor:
        chosen = perturb.cumulative_masks(groups.ranks[samples], groups.ids, counts[block])
        sample = batch.inputs[samples].unsqueeze(1)
        substrate = fill[samples].unsqueeze(1)
        return torch.where(chosen, sample, substrate) if insert else torch.where(chosen, substrate, sample)

    return perturb.blockwise_scores(batch, counts.numel(), build, output)


def auto_per_step(n_groups: int, per_step: int) -> int:
    """``per_step`` groups per step, or with 0 enough for about ``AUTO_STEPS`` steps."""
    return math.ceil(n_groups / AUTO_STEPS) if per_step == 0 else per_step


def fraction(counts: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Fraction of the groups removed after each step."""
    return counts.double() / n_groups


# ---------------------------------------------------------------------------------------------
# RISE deletion and insertion


@dataclasses.dataclass(frozen=True)
class RiseParams:
    """per_step: groups removed (inserted) per step, 0 = ceil(G / 32), i.e. at most 33 points with the
    unperturbed one; substrate: what removed groups become (see ``perturb.SUBSTRATES``; "auto" for
    deletion is blur for images and zero for sequences and tabular data, for insertion blur for images
    and sequences and mean for tabular data); blur_sigma: the blur substrate's Gaussian sigma in pixels
    (RISE: 5); patch: group side (1 = pixels / steps / features)."""

    per_step: int = 0
    substrate: str = "auto"
    blur_sigma: float = 5.0
    patch: int = 1


@METRICS.register("deletion")
class Deletion(Metric):
    """RISE deletion (Petsiuk, Das & Saenko, 2018, BMVC): replace the most relevant groups with the
    substrate, ``per_step`` at a time, recording the target's softmax probability before the first
    and after every step; the score is the normalised trapezoid area under that curve, the points
    taken as evenly spaced over [0, 1], exactly as RISE's released ``auc`` (a last, partial step counts
    as a full one; ``curve_x`` still gives the true fractions). A faithful map makes the probability
    fall fast, so lower is better. Groups span all channels; ``patch`` > 1 removes squares or segments.

    The substrate ("auto") is the blurred image for images and zero for sequences and tabular data. On
    images zero (RISE's choice, our default before issue 17) leaves holes whose edges the model reacts
    to: on the bundled shapes CNN every map, a random one included, drops the probability to about
    0.15 at the first step (1/32 of the pixels), and the methods' scores cannot be told apart; the blur
    separates them with a random map last (benchmarks/deletion_defaults.py, benchmarks/RESULTS.md).
    Sequences and tabular data keep zero, where nothing was measured against it.
    """

    category = "faithfulness"
    higher_is_better = False
    curve_label = "fraction of features removed"
    description = "RISE deletion: AUC of the class probability as the most relevant features are removed."
    Params = RiseParams

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        kind = params.substrate
        if kind == "auto":
            kind = "blur" if batch.modality == "image" else "zero"
        return _rise_curve(batch, params, kind, generator, insert=False)


@METRICS.register("insertion")
class Insertion(Metric):
    """RISE insertion (Petsiuk, Das & Saenko, 2018, BMVC): start from the substrate (RISE blurs the
    image; "auto" uses the blur for images and sequences, the per-sample mean for tabular data,
    which has no neighbourhood to blur, and for text zero, the mask token: ``xaibench.models.text``) and reveal the most relevant groups first, ``per_step`` at a
    time; the curve is the target's softmax probability from the bare substrate to the full input and
    the score its normalised area as in deletion. Higher is better. The blur is the shared
    reflect-boundary Gaussian (sigma ``blur_sigma``, truncated at 4 sigma); RISE's code uses an
    11-tap kernel of sigma 5 with zero padding, which darkens the borders.
    """

    category = "faithfulness"
    higher_is_better = True
    curve_label = "fraction of features inserted"
    description = "RISE insertion: AUC of the class probability as the most relevant features are revealed."
    Params = RiseParams

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        kind = params.substrate
        if kind == "auto":
            kind = {"tabular": "mean", "text": "zero"}.get(batch.modality, "blur")
        return _rise_curve(batch, params, kind, generator, insert=True)


def _rise_curve(batch: MetricInputs, params: RiseParams, kind: str, generator: torch.Generator,
                *, insert: bool) -> MetricResult:
    groups = ordering(batch, params.patch, "morf")
    counts = perturb.step_counts(groups.n_groups, auto_per_step(groups.n_groups, params.per_step))
    fill = perturb.substrate(batch.inputs, kind, generator=generator, blur_sigma=params.blur_sigma)
    curve = removal_curve(batch, groups, counts, fill, "probability", insert=insert)
    return MetricResult(normalised_auc(curve), curve, fraction(counts, groups.n_groups))


# ---------------------------------------------------------------------------------------------
# pixel flipping (Bach et al.) and its least-relevant-first twin


@dataclasses.dataclass(frozen=True)
class FlippingParams:
    """features_in_step: groups flipped per step (Quantus's name), 0 = ceil(G / 32); substrate: what
    flipped groups become (Quantus's perturb_baseline, default "black" = the sample's minimum);
    patch: group side (1 = pixels / steps / features)."""

    features_in_step: int = 0
    substrate: str = "black"
    patch: int = 1


@METRICS.register("pixel_flipping")
class PixelFlipping(Metric):
    """Pixel flipping (Bach et al., 2015, PLOS ONE; Quantus PixelFlipping): flip groups to the
    substrate cumulatively in descending attribution order, ``features_in_step`` at a time, and record
    the target's softmax probability after every step (as Quantus: softmax on, no point for the
    unperturbed input); the score is the trapezoid area with unit spacing, what Quantus's
    ``return_auc_per_sample`` computes. Lower is better. Differences from Quantus 0.6.0: a group is a
    pixel across all channels (Bach et al. flip pixels), where Quantus flips single channel values of
    the flattened input; both agree on one-channel images, sequences with one channel and tabular data.
    ``features_in_step`` 0 (our default) picks about 32 steps, since Quantus's default 1 costs one
    forward pass per pixel; Quantus requires it to divide the feature count, here the last step may be
    partial. Ties in attribution keep the lower index first (Quantus's numpy sort leaves them in no
    fixed order). Its AUC path calls ``numpy.trapz``, removed in numpy 2.4, so it crashes there.
    """

    category = "faithfulness"
    higher_is_better = False
    curve_label = "fraction of features flipped"
    description = "Pixel flipping: area under the class probability, most relevant features flipped first."
    Params = FlippingParams
    order: ClassVar[str] = "morf"

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        groups = ordering(batch, params.patch, self.order)
        per_step = auto_per_step(groups.n_groups, params.features_in_step)
        counts = perturb.step_counts(groups.n_groups, per_step)[1:]
        fill = perturb.substrate(batch.inputs, params.substrate, generator=generator)
        curve = removal_curve(batch, groups, counts, fill, "probability")
        return MetricResult(trapezoid(curve), curve, fraction(counts, groups.n_groups))


@METRICS.register("lerf")
class LeastRelevantFirst(PixelFlipping):
    """Pixel flipping in ascending attribution order (least relevant first, LeRF; Samek et al., 2017,
    IEEE TNNLS, for the order): the same curve and area as ``pixel_flipping``. A faithful map removes
    what the model ignores first, so the probability stays high: higher is better. Quantus's
    PixelFlipping has no order option; this is its curve with the order reversed.
    """

    higher_is_better = True
    description = "LeRF pixel flipping: area under the class probability, least relevant features first."
    order = "lerf"


# ---------------------------------------------------------------------------------------------
# region perturbation (Samek et al.) and selectivity (Montavon et al.)


def region_patch(batch: MetricInputs, patch: int) -> int:
    """``patch``, or with 0: Quantus's 8 for images (at most a quarter of the shorter side, so small
    images keep several regions), a tenth of a sequence, single tabular features."""
    if patch != 0:
        return patch
    if batch.modality == "image":
        return min(QUANTUS_PATCH, max(1, min(batch.inputs.shape[2:]) // 4))
    return 1 if batch.modality == "text" else default_patch(batch.inputs)


@dataclasses.dataclass(frozen=True)
class RegionParams:
    """patch: region side (Quantus's patch_size), 0 = 8 for images (capped at a quarter of the
    shorter side), a tenth of a sequence, 1 for tabular; regions: how many regions are removed
    (Quantus's regions_evaluation); order: "morf" (most relevant first) or "lerf"; substrate: what
    removed regions become (Quantus's perturb_baseline, default "black")."""

    patch: int = 0
    regions: int = 100
    order: str = "morf"
    substrate: str = "black"


@METRICS.register("region_perturbation")
class RegionPerturbation(Metric):
    """Region perturbation (Samek, Binder, Montavon, Lapuschkin & Müller, 2017, IEEE TNNLS; Quantus
    RegionPerturbation): non-overlapping square regions (segments for sequences, features for tabular
    data) ranked by summed attribution are replaced by the substrate one per step, for ``regions``
    steps (or all regions); the curve is f(x) - f(x~_k) with f the target's softmax probability,
    k = 0..L, and the score Samek's AOPC = mean over the L+1 points. Quantus returns the same curve
    without the k = 0 point (always 0), so AOPC = sum(Quantus's curve) / (L + 1). MoRF: higher is
    better (relevant regions destroy the prediction); LeRF: lower is better. Difference: Quantus pads
    an image whose side the patch does not divide symmetrically and lays its grid on the padded image,
    so partial regions sit at both borders; here the grid starts at the top-left corner and only the
    last row / column of regions is partial (identical whenever the patch divides the side).
    """

    category = "faithfulness"
    higher_is_better = True
    curve_label = "regions removed"
    description = "Region perturbation: AOPC of the class-probability drop as regions are removed."
    Params = RegionParams

    def direction(self, params: Any) -> bool:
        return params.order == "morf"

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        if params.order not in ("morf", "lerf"):
            raise UnknownNameError.for_name("order", params.order, ["morf", "lerf"])
        if params.regions < 1:
            raise InputError(f"regions must be at least 1, got {params.regions}")
        groups = ordering(batch, region_patch(batch, params.patch), params.order)
        counts = torch.arange(min(params.regions, groups.n_groups) + 1, device="cpu")
        fill = perturb.substrate(batch.inputs, params.substrate, generator=generator)
        scores = removal_curve(batch, groups, counts, fill, "probability")
        curve = scores[:, :1] - scores
        return MetricResult(curve.double().mean(dim=1), curve, counts.double())


@dataclasses.dataclass(frozen=True)
class SelectivityParams:
    """patch: region side (Quantus's patch_size), 0 = as region_perturbation's; substrate: what removed
    regions become (Quantus's perturb_baseline, default "black")."""

    patch: int = 0
    substrate: str = "black"


@METRICS.register("selectivity")
class Selectivity(Metric):
    """Selectivity (Montavon, Samek & Müller, 2018, Digital Signal Processing; Quantus Selectivity):
    remove all regions one per step, most relevant first, recording the target's softmax probability
    after each removal (no unperturbed point, as Quantus); the score is the unit-spaced trapezoid area
    Quantus's ``get_auc_score`` takes per sample. A fast drop means a selective map: lower is better.
    Regions and their grid as in ``region_perturbation`` (the same difference from Quantus's padding).
    """

    category = "faithfulness"
    higher_is_better = False
    curve_label = "regions removed"
    description = "Selectivity: area under the class probability as the most relevant regions are removed."
    Params = SelectivityParams

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        groups = ordering(batch, region_patch(batch, params.patch), "morf")
        counts = torch.arange(1, groups.n_groups + 1, device="cpu")
        fill = perturb.substrate(batch.inputs, params.substrate, generator=generator)
        curve = removal_curve(batch, groups, counts, fill, "probability")
        return MetricResult(trapezoid(curve), curve, counts.double())


# ---------------------------------------------------------------------------------------------
# POS / NEG top-1 curves (BEE)


@dataclasses.dataclass(frozen=True)
class TopOneParams:
    """substrate: what removed groups become ("zero" = 0 in the model's input space, as in the BEE
    code); patch: group side (1 = pixels / steps / features)."""

    substrate: str = "zero"
    patch: int = 1


class _TopOneCurve(Metric):
    """Shared by POS and NEG: top-1 correctness after removing 10%, ..., 90% of the groups."""

    category = "faithfulness"
    curve_label = "fraction of features removed"
    Params = TopOneParams
    order: ClassVar[str] = "morf"

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        groups = ordering(batch, params.patch, self.order)
        # round(t / 10 * G) half up, in integers
        counts = torch.tensor([(t * groups.n_groups + 5) // 10 for t in TENTHS], device="cpu")
        fill = perturb.substrate(batch.inputs, params.substrate, generator=generator)
        curve = removal_curve(batch, groups, counts, fill, "top1")
        return MetricResult(normalised_auc(curve), curve, torch.tensor(TENTHS, dtype=torch.float64, device="cpu") / 10)


@METRICS.register("pos")
class Pos(_TopOneCurve):
    """POS (as used by Barkan et al., 2025, AAAI, "BEE"): remove the 10%, 20%, ..., 90% most relevant
    groups (set to the substrate, 0 by default) and record whether the target is still the top-1
    class; the score is the trapezoid area over the nine fractions divided by their range 0.8, i.e. the
    accuracy averaged over [0.1, 0.9], so it lies in [0, 1]. Lower is better. Counts are rounded half
    up (round(f * G)).
    """

    higher_is_better = False
    description = "POS: top-1 accuracy AUC as 10-90% of the most relevant features are removed."
    order = "morf"


@METRICS.register("neg")
class Neg(_TopOneCurve):
    """NEG (Barkan et al., 2025, AAAI, "BEE"): POS with the least relevant groups removed first; the
    same normalised area. Higher is better.
    """

    higher_is_better = True
    description = "NEG: top-1 accuracy AUC as 10-90% of the least relevant features are removed."
    order = "lerf"
