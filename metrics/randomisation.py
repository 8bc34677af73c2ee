"""Randomisation sanity checks: an explanation should change when what it explains changes.

mprt randomises the model's weights layer by layer (Adebayo et al., 2018); random_logit explains another
class (Sixt et al., 2020). Both compare the explanation being scored with the explainer's explanation
of the changed setting; a high similarity means the explanation does not depend on what it should,
so lower is better. Explainer calls take at most ``batch_size`` rows. The repaired tests smooth_mprt and
efficient_mprt (``xaibench.metrics.randomisation_variants``) randomise with ``cascading_randomisation`` too.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.perturb import explain_rows
from xaibench.metrics.stats import pearson, spearman

from xaibench.attribution.draws import (
    draw_indices,
    sample_generators,
    sample_seeds,
    shared_seed,
)
from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError
from xaibench.core.lazy import lazy_import
from xaibench.core.progress import advance

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

SIMILARITIES = ("auto", "ssim", "pearson")
LAYER_ORDERS = ("top_down", "bottom_up")


# ---------------------------------------------------------------------------------------------
# model parameter randomisation


def parameterised_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Modules that own parameters directly, in ``named_modules`` order (input to output)."""
    return [(name, module) for name, module in model.named_modules()
            if next(module.parameters(recurse=False), None) is not None]


def cascading_randomisation(model: torch.nn.Module, generator: torch.Generator,
                            order: str = "top_down") -> Iterator[tuple[str, torch.nn.Module]]:
    """Yield (layer name, randomised copy), one more layer randomised at each step, cumulatively.

    ``order`` is top_down (from the output layer, as Adebayo et al. randomise) or bottom_up (from the
    input layer, as Hedström et al. 2024 recommend). One copy of ``model`` (``copy.deepcopy``; the
    model itself is never modified) is randomised one more layer at each step and yielded again, so a
    caller that keeps models must copy them; the last step has every layer of
    ``parameterised_layers`` randomised. Each parameter tensor p of the layer is redrawn from
    N(0, rms(p)^2), rms(p) the root mean square of its original values: the layer keeps its weights'
    scale, and a tensor that was zero stays zero. The draws (CPU, float32, in this order, independent
    of the data) come from a generator seeded from ``generator`` when this is called: a stream of its
    own, so that weights initialised under ``torch.manual_seed(s)`` are not redrawn from the very
    stream that made them when ``generator`` is seeded with s too.

    Raises:
        UnknownNameError: an unknown ``order``.
        IncompatibleError: a model without parameters.
    """
    if order not in LAYER_ORDERS:
        raise UnknownNameError.for_name("layer order", order, list(LAYER_ORDERS))
    if not parameterised_layers(model):
        raise IncompatibleError("model parameter randomisation needs a model with parameters")
    return _randomised_layers(model, torch.Generator().manual_seed(shared_seed(generator)), order)


def _randomised_layers(model: torch.nn.Module, draws: torch.Generator,
                       order: str) -> Iterator[tuple[str, torch.nn.Module]]:
    randomised = copy.deepcopy(model)
    layers = parameterised_layers(randomised)
    for name, layer in reversed(layers) if order == "top_down" else layers:
        with torch.no_grad():
            for parameter in layer.parameters(recurse=False):
                scale = parameter.detach().double().pow(2).mean().sqrt()
                draw = torch.randn(parameter.shape, generator=draws, dtype=torch.float32, device="cpu")
                parameter.copy_(draw.to(parameter) * scale.to(parameter))
        yield name, randomised


def layer_curve(correlations: list[torch.Tensor]) -> MetricResult:
    """The result of a per-layer test: the (N,) correlations after each layer as the curve against
    the number of layers randomised, their mean over layers (NaN layers left out) as the score."""
    curve = torch.stack(correlations, dim=1)
    return MetricResult(scores=curve.nanmean(dim=1), curve=curve,
                        curve_x=torch.arange(1, curve.shape[1] + 1, dtype=torch.float64, device="cpu"))


def flat_maps(maps: torch.Tensor, absolute: bool) -> torch.Tensor:
    """(N, *S) maps as (N, D) rows, in absolute value when ``absolute``."""
    flat = maps.flatten(1)
    return flat.abs() if absolute else flat


@METRICS.register("mprt")
class ModelParameterRandomisation(Metric):
    """Model parameter randomisation test, cascading (Adebayo et al., 2018, "Sanity Checks for Saliency
    Maps", NeurIPS; Quantus MPRT with layer_order="top_down").

    Starting from the output, the parameterised layers of a copy of the model are randomised one
    more at a time (see ``cascading_randomisation``); after each, the explainer recomputes the
    explanations and the Spearman rank correlation (Quantus's default similarity) with the explanation
    being scored is recorded. The curve is the correlation against the number of layers randomised;
    the score is its mean over layers (NaN layers, where a map is constant, left out). Lower is better:
    an explanation that does not change with the weights fails the sanity check.

    Differences from Quantus: Quantus re-runs each layer's ``reset_parameters`` under torch's global
    seed, which only works for layers that define it (it also "randomises" batch norm to the identity)
    and ties the draw to global state; here every module owning parameters is redrawn from the
    generator at its own scale. Quantus returns per-layer correlations; its return_average_correlation
    also averages in the correlation with the unrandomised model's explanation (it skips a key "orig"
    but stores "original"), which this mean leaves out. With ``abs`` (Quantus's default) both maps are
    compared in absolute value, as Adebayo et al. show them; Quantus's default max-normalisation
    does not change a rank correlation and is not applied.
    """

    category = "randomisation"
    higher_is_better = False
    needs_explainer = True
    stochastic = True
    curve_label = "layers randomised, from the output"
    description = "rank correlation with explanations of cascadingly randomised models (Adebayo et al. 2018)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """abs: compare the absolute values of the maps (false: signed maps)."""

        abs: bool = True

    def _compute(self, batch: MetricInputs, params: Params, generator: torch.Generator) -> MetricResult:
        original = flat_maps(batch.attributions, params.abs)
        correlations = []
        for _, randomised in cascading_randomisation(batch.model, generator):
            explanations = explain_rows(batch, randomised, batch.inputs, batch.target)
            correlations.append(spearman(original, flat_maps(explanations, params.abs)).cpu())
            advance(batch.n)
        return layer_curve(correlations)


# ---------------------------------------------------------------------------------------------
# random logit


def ssim(a: torch.Tensor, b: torch.Tensor, win_size: int = 7, k1: float = 0.01,
         k2: float = 0.03) -> torch.Tensor:
    """Mean structural similarity of image pairs (N, C, H, W) -> (N,), in float64.

    skimage's ``structural_similarity`` with its defaults, batched: a uniform ``win_size`` window,
    sample covariances (normalised by n - 1), the mean over the window positions inside the image and
    then over channels (``channel_axis=0``); ``data_range`` per pair is max - min over both maps, as
    Quantus passes it. NaN where both maps are the same constant (SSIM is then 0 / 0).
    """
    n, channels, height, width = a.shape
    if min(height, width) < win_size:
        raise InputError(f"SSIM needs images of at least {win_size}x{win_size}, got {height}x{width}; "
                         "use similarity=pearson")
    both = torch.cat([a.flatten(1), b.flatten(1)], dim=1).double()
    data_range = (both.amax(dim=1) - both.amin(dim=1)).repeat_interleave(channels).view(-1, 1, 1, 1)
    x = a.double().reshape(n * channels, 1, height, width)
    y = b.double().reshape(n * channels, 1, height, width)

    def window_mean(values: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(values, win_size, stride=1)

    mean_x, mean_y = window_mean(x), window_mean(y)
    cov_norm = win_size**2 / (win_size**2 - 1)
    var_x = cov_norm * (window_mean(x * x) - mean_x * mean_x)
    var_y = cov_norm * (window_mean(y * y) - mean_y * mean_y)
    cov_xy = cov_norm * (window_mean(x * y) - mean_x * mean_y)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    index = ((2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)
             / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)))
    return index.view(n, -1).mean(dim=1)


@METRICS.register("random_logit")
class RandomLogit(Metric):
    """Random logit test (Sixt et al., 2020, "When Explanations Lie: Why Many Modified BP Attributions
    Fail", ICML; Quantus RandomLogit): the similarity between the explanation being scored (for the
    target class) and the explainer's explanation for another class, drawn uniformly among the
    non-target classes per sample from the generator. Lower is better: an explanation that looks the
    same whatever class it explains does not explain the class.

    Similarity: SSIM (skimage's defaults, see ``ssim``) for images, Pearson correlation of the
    flattened maps for sequences and tabular data, where SSIM's 7-wide 2-D window does not apply
    (``similarity`` chooses explicitly). Differences from Quantus: Quantus flattens each map before
    calling skimage, so its SSIM is a 1-D SSIM along the flattened rows rather than over the image;
    here it is over the image. Quantus also max-normalises each map by default (normalise=True),
    which changes SSIM; the maps are compared as they are. Quantus draws the class from numpy's
    global RNG with a fixed seed and needs ``num_classes``; here the model's output gives it.
    """

    category = "randomisation"
    higher_is_better = False
    needs_explainer = True
    stochastic = True
    description = "similarity of explanations for the target and a random other class (Sixt et al. 2020)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """similarity: ssim, pearson, or auto (SSIM for images, Pearson otherwise)."""

        similarity: str = "auto"

    def _compute(self, batch: MetricInputs, params: Params, generator: torch.Generator) -> MetricResult:
        similarity = _similarity(params.similarity, batch.modality)
        other = _other_classes(batch, generator)
        explanations = explain_rows(batch, batch.model, batch.inputs, other)
        advance(batch.n)
        if similarity == "ssim":
            return MetricResult(scores=ssim(batch.attributions, explanations))
        return MetricResult(scores=pearson(batch.attributions.flatten(1), explanations.flatten(1)))


def _similarity(name: str, modality: str) -> str:
    if name not in SIMILARITIES:
        raise UnknownNameError.for_name("similarity", name, list(SIMILARITIES))
    if name == "auto":
        return "ssim" if modality == "image" else "pearson"
    if name == "ssim" and modality != "image":
        raise InputError("the ssim similarity needs images; use pearson")
    return name


def _other_classes(batch: MetricInputs, generator: torch.Generator) -> torch.Tensor:
    """A class other than the target per sample, uniform over the others, one draw per sample."""
    with torch.no_grad():
        classes = batch.model(batch.inputs[:1]).shape[1]
    if classes < 2:
        raise IncompatibleError("random_logit needs a model with at least two classes")
    generators = sample_generators(sample_seeds(generator, batch.n), slice(None))
    draws = draw_indices(generators, classes - 1, 1)[:, 0].to(batch.target.device)
    return draws + (draws >= batch.target).long()
