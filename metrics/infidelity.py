"""Infidelity and the prediction gaps PGI / PGU: how well attributions predict the effect of perturbations.

Infidelity (Yeh et al.) compares the attribution's linear prediction sum(a * I) of a perturbation I with
the score change it causes; PGI / PGU (OpenXAI) measure the change of the target probability when the
most (PGI) or least (PGU) relevant groups are jittered with Gaussian noise. Random draws come from one
generator per sample (``sample_seeds``), so they do not depend on ``batch_size``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, ClassVar

from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.correlation import (
    element_mask,
    per_sample_generators,
    substituted,
    unperturbed_scores,
)
from xaibench.metrics.perturb import (
    blockwise_scores,
    group_ids,
    group_relevance,
    perturbed_scores,
    removal_ranks,
    substrate,
)

from xaibench.attribution.draws import draw_normal
from xaibench.core.errors import InputError, UnknownNameError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

PERTURBATIONS = ("noise", "patch")
#: Quantus's Infidelity patch side (perturb_patch_sizes=[4]), used for images and sequences.
QUANTUS_PATCH = 4


@METRICS.register("infidelity")
class Infidelity(Metric):
    """Infidelity (Yeh, Hsieh, Suggala, Inouye & Ravikumar, "On the (In)fidelity and Sensitivity of
    Explanations", NeurIPS 2019): the mean over perturbations I of (sum(a * I) - (f(x) - f(x - I)))^2,
    with f the target logit (the model's output for the target, as captum's ``infidelity`` reads it).

    Perturbations: "noise" draws I ~ N(0, std^2) per element, ``samples`` times per sample, from each
    sample's generator; fed the same noise through its ``perturb_func``, captum.metrics.infidelity gives
    the same value, ``normalize`` included (the attribution rescaled by the optimal
    beta = E[(a.I) df] / E[(a.I)^2]). "patch" is Quantus's default: square patches (segments for
    sequences, features for tabular inputs) set to the substrate cumulatively in raster order, one
    perturbation per step, I = x - x~ (Quantus repeats this deterministic sweep ``n_perturb_samples``
    times; once is the same mean; where the side does not divide the image, edge patches are smaller
    here, Quantus pads). The gradient of a linear model has infidelity 0 under any perturbation.
    """

    higher_is_better = False
    stochastic = True
    description = "squared error of sum(a * I) against the output change, averaged over I (Yeh 2019)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """perturbation: "noise" (Gaussian, captum-style) or "patch" (Quantus's cumulative patches);
        samples: noise draws per sample; std: noise standard deviation; patch_size: patch side for
        "patch" (None: 4 for images and sequences, as Quantus, 1 for tabular features); substrate:
        what patches become; normalize: rescale attributions by the optimal beta (captum's
        normalize); output: the score that changes (logit, probability, top1)."""

        perturbation: str = "noise"
        samples: int = 10
        std: float = 0.1
        patch_size: int | None = None
        substrate: str = "black"
        normalize: bool = False
        output: str = "logit"

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        if params.perturbation not in PERTURBATIONS:
            raise UnknownNameError.for_name("perturbation", params.perturbation, list(PERTURBATIONS))
        if params.perturbation == "noise":
            predicted, changes = _noise_terms(batch, params, generator)
        else:
            predicted, changes = _patch_terms(batch, params, generator)
        if params.normalize:
            numerator = (predicted * changes).sum(dim=1)
            denominator = (predicted**2).sum(dim=1)
            # captum's safe_div: a zero denominator divides by 1
            beta = numerator / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
            predicted = beta[:, None] * predicted
        return MetricResult(scores=((predicted - changes) ** 2).mean(dim=1))


def _noise_terms(batch: MetricInputs, params: Any,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """sum(a * I) and f(x) - f(x - I) for ``samples`` Gaussian perturbations per sample, each (N, samples)."""
    if params.samples < 1 or params.std < 0:
        raise InputError("infidelity needs samples >= 1 and std >= 0")
    generators = per_sample_generators(generator, batch.n)
    predicted = torch.empty((batch.n, params.samples), dtype=torch.float64, device="cpu")
    shape = (params.samples, *batch.inputs.shape[1:])

    def build(samples: slice) -> torch.Tensor:
        noise = draw_normal(generators[samples], shape, batch.inputs.dtype).to(batch.inputs.device)
        noise.mul_(params.std)
        products = batch.attributions[samples].unsqueeze(1).double() * noise.double()
        predicted[samples] = products.flatten(2).sum(dim=2).cpu()
        return batch.inputs[samples].unsqueeze(1) - noise

    perturbed = perturbed_scores(batch, params.samples, build, params.output)
    return predicted, (unperturbed_scores(batch, params.output)[:, None] - perturbed).double()


def _patch_terms(batch: MetricInputs, params: Any,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """sum(a * I) and f(x) - f(x~) after each cumulative patch removal in raster order, each (N, G)."""
    side = params.patch_size
    if side is None:
        side = 1 if batch.modality in ("tabular", "text") else QUANTUS_PATCH
    ids = group_ids(batch.inputs, side)
    fill = substrate(batch.inputs, params.substrate, generator=generator)
    # group ids run in raster order, so removing groups 0..k-1 is Quantus's k-th cumulative step
    per_group = group_relevance(batch.attributions * (batch.inputs - fill), ids)
    n_groups = per_group.shape[1]
    groups = torch.arange(n_groups, device=ids.device)

    def build(samples: slice, block: slice) -> torch.Tensor:
        removed = groups[None, None, :] <= groups[block][None, :, None]
        removed = removed.expand(samples.stop - samples.start, -1, -1)
        return substituted(fill[samples], batch.inputs[samples], removed, ids)

    perturbed = blockwise_scores(batch, n_groups, build, params.output)
    changes = unperturbed_scores(batch, params.output)[:, None] - perturbed
    return per_group.cumsum(dim=1).cpu(), changes.double()


class PredictionGap(Metric):
    """The mean |p(x') - p(x)| over Gaussian perturbations x' of the top-k groups (PGI) or of the others
    (PGU); the two registered metrics below set ``perturb_top``."""

    stochastic = True
    perturb_top: ClassVar[bool]

    @dataclasses.dataclass(frozen=True)
    class Params:
        """k: the top groups by |relevance|, a fraction of the groups (rounded up) when below 1, else
        a count (OpenXAI's convention); std: noise standard deviation; samples: perturbations per
        sample; patch: group side (1: features, single pixels or steps); output: the score read
        (probability, logit, top1)."""

        k: float = 0.25
        std: float = 0.1
        samples: int = 100
        patch: int = 1
        output: str = "probability"

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        if params.samples < 1 or params.std < 0:
            raise InputError(f"{self.name} needs samples >= 1 and std >= 0")
        ids = group_ids(batch.inputs, params.patch)
        relevance = group_relevance(batch.attributions, ids).abs()
        top = removal_ranks(relevance, "morf") < top_count(params.k, relevance.shape[1])
        jittered = element_mask((top if self.perturb_top else ~top).unsqueeze(1), ids)
        generators = per_sample_generators(generator, batch.n)
        shape = (params.samples, *batch.inputs.shape[1:])

        def build(samples: slice) -> torch.Tensor:
            noise = draw_normal(generators[samples], shape, batch.inputs.dtype).to(batch.inputs.device)
            return batch.inputs[samples].unsqueeze(1) + noise.mul_(params.std) * jittered[samples]

        perturbed = perturbed_scores(batch, params.samples, build, params.output)
        gaps = (perturbed - unperturbed_scores(batch, params.output)[:, None]).abs()
        return MetricResult(scores=gaps.double().mean(dim=1))


def top_count(k: float, n_groups: int) -> int:
    """OpenXAI's k: ceil(k * n_groups) for 0 < k < 1, else round(k), at most n_groups."""
    if k <= 0:
        raise InputError(f"k must be positive, got {k}")
    count = math.ceil(k * n_groups) if k < 1 else round(k)
    return min(count, n_groups)


@METRICS.register("pgi")
class PGI(PredictionGap):
    """Prediction gap on important features (Agarwal et al., "OpenXAI: Towards a Transparent Evaluation
    of Model Explanations", NeurIPS 2022 Datasets and Benchmarks): the mean |p(x') - p(x)| when only
    the top-k groups by |relevance| are perturbed with N(0, std^2) noise, p the target probability.
    Higher is better. Differences from OpenXAI: OpenXAI reads column 0 of its binary models'
    probabilities (for two classes |dp_0| = |dp_1|), here the target class's, which also covers more
    classes; every feature is treated as continuous (OpenXAI flips discrete features instead); ties in
    relevance keep the lower group first.
    """

    higher_is_better = True
    perturb_top = True
    description = "mean output change when only the top-k groups are noised (OpenXAI PGI)"


@METRICS.register("pgu")
class PGU(PredictionGap):
    """Prediction gap on unimportant features (OpenXAI, Agarwal et al., NeurIPS 2022 Datasets and
    Benchmarks): as PGI, perturbing every group except the top-k. Lower is better. Same differences
    from OpenXAI as PGI.
    """

    higher_is_better = False
    perturb_top = False
    description = "mean output change when all but the top-k groups are noised (OpenXAI PGU)"
