"""Repaired model parameter randomisation tests (Hedström et al., 2024, "Sanity Checks Revisited: An
Exploration to Repair the Model Parameter Randomisation Test", TMLR; Quantus SmoothMPRT and EfficientMPRT).

smooth_mprt denoises both explanations MPRT compares; efficient_mprt replaces MPRT's layer-by-layer
similarities by the rise in explanation complexity from the original to the fully randomised model. Both
randomise the weights with ``cascading_randomisation``, from the input layer up by default as the paper
recommends. Explainer calls take at most ``batch_size`` rows, and a batch's noisy copies are made one draw
at a time, never all at once.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.perturb import explain_rows
from xaibench.metrics.randomisation import (
    cascading_randomisation,
    flat_maps,
    layer_curve,
)
from xaibench.metrics.stats import spearman

from xaibench.attribution.draws import draw_normal, sample_generators, sample_seeds
from xaibench.attribution.noise import range_scale
from xaibench.core.batches import row_slices
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import
from xaibench.core.progress import advance

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


# ---------------------------------------------------------------------------------------------
# smooth MPRT


@dataclasses.dataclass(frozen=True)
class SmoothParams:
    """Parameters of smooth_mprt.

    Attributes:
        n_samples: explanations averaged per input and model: n_samples - 1 noisy copies and the input
            itself (so 1 gives the plain explanation).
        noise: standard deviation of the Gaussian noise as a fraction of each input's value range
            (max - min over all its elements).
        order: which end the cascading randomisation starts from: bottom_up (the input layer, as the
            paper recommends) or top_down (the output layer, as mprt).
        abs: compare the absolute values of the maps (false: signed maps).
    """

    n_samples: int = 50
    noise: float = 0.1
    order: str = "bottom_up"
    abs: bool = True


def denoised_explanations(batch: MetricInputs, model: torch.nn.Module, seeds: list[int],
                          params: SmoothParams) -> torch.Tensor:
    """The mean of the explainer's explanations of ``params.n_samples`` copies of each input, (N, *S)
    in float64: x + eps_k for k < n_samples - 1, eps_k ~ N(0, (noise * (max x - min x))^2) per element,
    and x itself last.

    Sample i draws its eps_k in order from a generator seeded with ``seeds[i]``, so it sees the same
    noise whatever the batch size and for every model it is explained on. Samples go in chunks of at
    most ``batch_size``; a chunk is explained once per draw, so no call holds more than ``batch_size``
    rows and only one draw of the chunk exists at a time.
    """
    scale = range_scale(batch.inputs, params.noise)[:, 0]  # (N, 1, ...): broadcasts over one draw
    total = torch.zeros(batch.inputs.shape, dtype=torch.float64, device=batch.inputs.device)
    for samples in row_slices(batch.n, batch.batch_size):
        generators = sample_generators(seeds, samples)
        inputs, target = batch.inputs[samples], batch.target[samples]
        for draw in range(params.n_samples):
            points = inputs
            if draw < params.n_samples - 1:
                noise = draw_normal(generators, tuple(inputs.shape[1:]), inputs.dtype).to(inputs.device)
                points = noise.mul_(scale[samples]).add_(inputs)
            total[samples] += explain_rows(batch, model, points, target).double()
        advance(samples.stop - samples.start)
    return total / params.n_samples


@METRICS.register("smooth_mprt")
class SmoothMPRT(Metric):
    """Smooth model parameter randomisation test, sMPRT (Hedström et al., 2024, "Sanity Checks
    Revisited: An Exploration to Repair the Model Parameter Randomisation Test", TMLR; Quantus
    SmoothMPRT).

    MPRT with denoised explanations: each explanation is the mean of the explainer's explanations of
    ``n_samples`` noisy copies of the input (see ``denoised_explanations``; Quantus's default 50 copies,
    the last noise-free, noise 0.1 of the input's range), for the original model and after each step
    of the cascading randomisation (``cascading_randomisation``, bottom_up by default). The curve is
    the Spearman rank correlation of the original model's denoised explanation with each randomised
    model's, against the number of layers randomised; the score is its mean over layers (NaN layers,
    where a map is constant, left out). Lower is better.

    The reference is the original model's denoised explanation, as the paper defines sMPRT (both
    sides denoised, so that noise in the original explanation does not pass for a reaction to the
    weights) and as Quantus computes it when it is not given a_batch: the attribution being scored
    does not enter the score, which is a property of the explainer. Quantus given a_batch compares
    that a_batch, not denoised, with the denoised randomised explanations.

    Differences from Quantus: a sample's noise is drawn from its own generator and is the same for
    every model state, so the explanations compared differ only by the model (Quantus draws fresh
    noise from numpy's global RNG for each); an explainer that ignores the model scores exactly 1.
    Quantus re-explains with ``quantus.explain`` and its explain_func_kwargs, ignoring explain_func;
    here the explainer re-explains. Layers are randomised as in mprt (redrawn at their own scale from
    the generator, not ``reset_parameters`` under torch's global seed), and the mean leaves out the
    unrandomised model that Quantus's return_average_correlation counts. Quantus's default
    normalisation (a positive factor) does not change a rank correlation and is not applied.
    """

    category = "randomisation"
    higher_is_better = False
    needs_explainer = True
    stochastic = True
    curve_label = "layers randomised, from the input (order=bottom_up) or the output"
    description = "rank correlation of denoised explanations of cascadingly randomised models (Hedström et al. 2024)"
    Params = SmoothParams

    def _compute(self, batch: MetricInputs, params: SmoothParams, generator: torch.Generator) -> MetricResult:
        if params.n_samples < 1 or params.noise < 0:
            raise InputError(f"{self.name} needs n_samples >= 1 and noise >= 0")
        models = cascading_randomisation(batch.model, generator, params.order)
        seeds = sample_seeds(generator, batch.n)
        original = flat_maps(denoised_explanations(batch, batch.model, seeds, params), params.abs)
        correlations = []
        for _, randomised in models:
            explanations = denoised_explanations(batch, randomised, seeds, params)
            correlations.append(spearman(original, flat_maps(explanations, params.abs)).cpu())
        return layer_curve(correlations)


# ---------------------------------------------------------------------------------------------
# efficient MPRT


def histogram_entropy(maps: torch.Tensor, bins: int) -> torch.Tensor:
    """Discrete entropy (natural log) of the histogram of each row's values, (N, D) -> (N,) float64.

    ``bins`` equal bins over each row's own range [min, max], the last closed; a constant row's range
    is widened by 0.5 either side, so all its values share a bin (entropy 0). A value's bin is found as
    numpy finds it, in the row's dtype (the edges as ``np.linspace`` makes them, then a correction
    against them), so the counts are ``np.histogram(row, bins)``'s. The entropy of counts c is
    -sum p log p with p = c / sum c, empty bins adding 0 (``scipy.stats.entropy``): Quantus's
    discrete_entropy.
    """
    low, high = maps.amin(1, keepdim=True), maps.amax(1, keepdim=True)
    constant = low == high
    low, high = torch.where(constant, low - 0.5, low), torch.where(constant, high + 0.5, high)
    width = (high - low).clamp_min(torch.finfo(maps.dtype).tiny)  # huge constants stay constant
    steps = torch.arange(bins + 1, dtype=maps.dtype, device=maps.device)
    edges = torch.cat([(steps[:-1] * (width / bins)) + low, high], dim=1)
    index = ((maps - low) / width * bins).long().clamp_max(bins - 1)
    index -= (maps < edges.gather(1, index)).long()
    index += ((maps >= edges.gather(1, index + 1)) & (index != bins - 1)).long()
    counts = torch.zeros((maps.shape[0], bins), dtype=torch.float64, device=maps.device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float64))
    shares = counts / counts.sum(1, keepdim=True)
    return -torch.xlogy(shares, shares).sum(1)


@METRICS.register("efficient_mprt")
class EfficientMPRT(Metric):
    """Efficient model parameter randomisation test, eMPRT (Hedström et al., 2024, "Sanity Checks
    Revisited: An Exploration to Repair the Model Parameter Randomisation Test", TMLR; Quantus
    EfficientMPRT): the relative rise in explanation complexity when every layer is randomised,
    (H(e_rand) - H(e)) / H(e).

    e is the explanation being scored and e_rand the explainer's explanation of the same input and
    target on the fully randomised model (every layer of ``parameterised_layers`` redrawn by
    ``cascading_randomisation``; the bottom_up order of the draws is Quantus's default). H is the
    discrete entropy of a ``bins``-bin histogram of the map's values over its own range
    (``histogram_entropy``; Quantus's discrete_entropy with its 100 bins). Higher is better: an
    explanation that becomes more complex, noisier, when the weights are destroyed reacts to them.
    NaN where e is constant (H(e) = 0: the relative rise is undefined; Quantus divides by zero).

    Differences from Quantus: H(e) is the complexity of the attribution being scored, where Quantus
    re-explains the input on the original model (the same map for a deterministic explainer; for a
    stochastic one, the scored draw rather than another). Layers are randomised as in mprt (redrawn
    at their own scale from the generator, not ``reset_parameters`` under torch's global seed).
    Quantus's defaults abs=False and normalise=False are kept (a positive factor does not change the
    histogram's counts); ``abs`` bins absolute values.
    """

    category = "randomisation"
    higher_is_better = True
    needs_explainer = True
    stochastic = True
    description = "relative rise in explanation entropy after full model randomisation (Hedström et al. 2024)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """Parameters of efficient_mprt.

        Attributes:
            bins: equal-width histogram bins over each map's range for the entropy.
            abs: bin the absolute values of the maps (false: signed maps, Quantus's default).
        """

        bins: int = 100
        abs: bool = False

    def _compute(self, batch: MetricInputs, params: Params, generator: torch.Generator) -> MetricResult:
        if params.bins < 1:
            raise InputError(f"{self.name} needs bins >= 1, got {params.bins}")
        *_, (_, randomised) = cascading_randomisation(batch.model, generator, "bottom_up")
        explanations = explain_rows(batch, randomised, batch.inputs, batch.target)
        advance(batch.n)
        before = histogram_entropy(flat_maps(batch.attributions, params.abs), params.bins)
        after = histogram_entropy(flat_maps(explanations, params.abs), params.bins)
        rise = (after - before) / before
        return MetricResult(scores=torch.where(before > 0, rise, torch.full_like(rise, float("nan"))))
