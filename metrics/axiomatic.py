"""Axiomatic metrics: properties an attribution should have by construction.

completeness (the attribution sums to the change of the output), non_sensitivity (features the model
ignores get no attribution, and only those) and input_invariance (a constant input shift that the
model absorbs does not change the explanation).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.perturb import batched_scores, explain_rows, group_ids, group_relevance, substrate

from xaibench.core.batches import row_slices
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import
from xaibench.core.progress import advance

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def check_tolerances(rtol: float, atol: float, name: str) -> None:
    """Raise InputError for a negative tolerance."""
    if rtol < 0 or atol < 0:
        raise InputError(f"{name} needs rtol >= 0 and atol >= 0, got rtol={rtol}, atol={atol}")


@METRICS.register("completeness")
class Completeness(Metric):
    """Completeness (Sundararajan et al., 2017, "Axiomatic Attribution for Deep Networks", ICML;
    Quantus ``Completeness``): the attribution sums to the change of the target logit between the
    baseline and the input.

    Per sample, 1.0 when ``|sum(a) - d| <= atol + rtol * |d|`` with ``d = f(x) - f(baseline)``, else
    0.0; the baseline is a substrate (zero by default: integrated gradients' usual baseline; Quantus's
    default is black, the per-sample minimum). The default ``rtol`` of 5% is Sundararajan et al.'s own
    check that the integral is approximated well enough. Differences from Quantus: it tests
    ``sum(a) == d`` with exact float equality, so attributions that satisfy the axiom fail on round-off
    (float32 sums of a few dozen terms already differ in the last bits), and its default
    ``normalise=True`` divides the attributions by their maximum before summing them.
    """

    category = "axiomatic"
    float32_only = True  # an exact identity: low-precision passes cannot meet it (xaibench.core.precision)
    higher_is_better = True
    description = "whether the attribution sums to f(x) - f(baseline) (Sundararajan et al. 2017)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """substrate: the baseline (zero, black, white, mean, blur, uniform); rtol, atol: the relative
        and absolute tolerance on the sum."""

        substrate: str = "zero"
        rtol: float = 0.05
        atol: float = 1e-4

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        check_tolerances(params.rtol, params.atol, "completeness")
        baseline = substrate(batch.inputs, params.substrate, generator=generator)
        at_input = batched_scores(batch.model, batch.inputs, batch.target, "logit", batch.batch_size)
        at_baseline = batched_scores(batch.model, baseline, batch.target, "logit", batch.batch_size)
        change = (at_input.double() - at_baseline.double()).cpu()
        total = batch.attributions.flatten(1).double().sum(1).cpu()
        holds = (total - change).abs() <= params.atol + params.rtol * change.abs()
        return MetricResult(scores=holds.double())


@METRICS.register("non_sensitivity")
class NonSensitivity(Metric):
    """Non-sensitivity (Nguyen & Martinez, 2020, "On quantitative aspects of model interpretability",
    arXiv:2007.07584; Quantus ``NonSensitivity``): the number of features whose attribution disagrees
    with the model's sensitivity to them.

    Each feature group (pixel or patch with all channels, sequence step, tabular feature) is replaced
    by the substrate on its own; the target logit "does not change" when ``|f(x') - f(x)| < output_eps``
    and the group is "unimportant" when its summed |a| is at most ``eps`` times the sample's largest
    group. A violation is a group for which exactly one of the two holds (zero attribution but the
    output moves, or attribution but the output does not move); the score counts them. As in Quantus:
    logits, the black (per-sample minimum) substrate, thresholds 1e-5, and one perturbation per element
    for single-channel inputs with ``patch=1``. Differences: groups span all channels (Quantus perturbs
    each channel element alone); the attribution threshold is relative to the sample (Quantus's default
    normalisation divides by the whole batch's maximum); any ``patch`` works (Quantus's
    ``features_in_step > 1`` fails, comparing arrays of different lengths).
    """

    category = "axiomatic"
    float32_only = True  # an exact identity: low-precision passes cannot meet it (xaibench.core.precision)
    higher_is_better = False
    description = "features where zero attribution and zero effect on the output disagree (Nguyen 2020)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """substrate: what a removed group is replaced with; patch: the side of image patches or the
        length of sequence segments (1: single pixels / steps); eps: "unimportant" threshold as a
        fraction of the sample's largest group attribution; output_eps: "no change" threshold on the
        target logit."""

        substrate: str = "black"
        patch: int = 1
        eps: float = 1e-5
        output_eps: float = 1e-5

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        if params.eps < 0 or params.output_eps < 0:
            raise InputError("non_sensitivity needs eps >= 0 and output_eps >= 0")
        ids = group_ids(batch.inputs, params.patch)
        relevance = group_relevance(batch.attributions.abs(), ids).cpu()
        unimportant = relevance <= params.eps * relevance.amax(dim=1, keepdim=True)
        fill = substrate(batch.inputs, params.substrate, generator=generator)
        reference = batched_scores(batch.model, batch.inputs, batch.target, "logit", batch.batch_size)
        removed = single_group_logits(batch, fill, ids, relevance.shape[1])
        unchanged = (removed - reference.cpu()[:, None]).abs() < params.output_eps
        return MetricResult(scores=(unchanged ^ unimportant).sum(1).double())


def single_group_logits(batch: MetricInputs, fill: torch.Tensor, ids: torch.Tensor,
                        n_groups: int) -> torch.Tensor:
    """Target logit with each group alone replaced by ``fill``, (N, n_groups).

    Groups are taken in blocks so that one block of all samples holds about ``batch_size`` rows (at
    least one group per block), keeping memory bounded even when a sample has more groups than
    ``batch_size``.
    """
    out = torch.empty((batch.n, n_groups), dtype=torch.float32, device="cpu")
    per_block = n_groups if batch.batch_size is None else max(1, batch.batch_size // batch.n)
    spatial = (1,) * (ids.ndim - 1)
    for groups in row_slices(n_groups, per_block):
        block = torch.arange(groups.start, groups.stop, device=ids.device).view(-1, *spatial)
        removed = (ids == block).unsqueeze(0)  # (1, b, *S)
        points = torch.where(removed, fill.unsqueeze(1), batch.inputs.unsqueeze(1))  # (N, b, *S)
        rows = batch.target.repeat_interleave(block.shape[0])
        logits = batched_scores(batch.model, points.flatten(0, 1), rows, "logit", batch.batch_size)
        out[:, groups] = logits.view(batch.n, -1).cpu()
    advance(batch.n)
    return out


@METRICS.register("input_invariance")
class InputInvariance(Metric):
    """Input invariance (Kindermans et al., 2019, "The (Un)reliability of Saliency Methods", in
    Explainable AI: Interpreting, Explaining and Visualizing Deep Learning; Quantus ``InputInvariance``).

    The input is shifted by a constant, ``x + c``, and the model compensates: the shifted model computes
    ``model(z - c)``, so on ``x + c`` it gives the original outputs (up to the rounding of
    ``(x + c) - c``). A method is input invariant when its explanation does not change either: per
    sample 1.0 when every element of ``explainer(shifted model, x + c)`` is within
    ``atol + rtol * |shifted|`` of ``explainer(model, x)`` (numpy's ``isclose``, as Quantus tests it,
    with its atol of 1e-4), else 0.0. Both explanations are recomputed with the explainer, so the score
    describes the method, whatever attributions were given. Saliency passes; input x gradient fails,
    since its attribution is multiplied by the shifted input.

    Differences from Quantus: Quantus folds the shift into the bias of the model's first layer, which
    must be a convolution, taking each channel's correction from one position of that layer's response
    to a constant input (exact only without zero padding); the wrapper here works for any model.
    Quantus 0.6.0's ``perturb_batch`` also passes ``indices[i][1:]`` to the shift, so the first element
    of every sample is never shifted and the shifted model does not reproduce the original outputs.
    """

    category = "axiomatic"
    modalities = ("image", "tabular", "sequence")  # not text: a shifted embedding is no token
    float32_only = True  # an exact identity: low-precision passes cannot meet it (xaibench.core.precision)
    higher_is_better = True
    needs_explainer = True
    description = "whether the explanation survives an input shift that the model absorbs (Kindermans 2019)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """shift: the constant c added to every input element (Quantus's default -1); rtol, atol: the
        element-wise tolerance."""

        shift: float = -1.0
        rtol: float = 1e-5
        atol: float = 1e-4

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        check_tolerances(params.rtol, params.atol, "input_invariance")
        original = explain_rows(batch, batch.model, batch.inputs, batch.target)
        moved = explain_rows(batch, shifted_model(batch.model, params.shift), batch.inputs + params.shift,
                             batch.target)
        close = (moved - original).abs() <= params.atol + params.rtol * moved.abs()
        return MetricResult(scores=close.flatten(1).all(dim=1).double())


def shifted_model(model: torch.nn.Module, shift: float) -> torch.nn.Module:
    """A module computing ``model(z - shift)``: on ``x + shift`` it returns ``model(x)``."""

    class ShiftedModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return self.model(inputs - shift)

    return ShiftedModel().eval()
