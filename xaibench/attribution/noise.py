"""Gradient methods that average over random draws: SmoothGrad, VarGrad, GradientSHAP, expected gradients.

These are xaibench's own batched implementations rather than captum's ``NoiseTunnel``: NoiseTunnel draws
its noise from torch's global RNG chunk by chunk, so its result depends on how the samples are batched.
Here the method's ``generator`` gives one seed per sample up front (``sample_seeds``), and each sample
draws all its random quantities (noise, baseline choices, path positions) from a generator of its own
seeded with that seed. The draws are made inside the loop over chunks of samples (``sample_chunks``), for
one chunk at a time, so memory is bounded by the chunk and not by the number of samples; gradients are
evaluated with ``target_gradients`` in row chunks of at most ``batch_size``. A sample's draws depend only
on its seed, so they are bit-identical for every ``batch_size`` and reproducible from the generator's
seed (the gradients may still differ in the last bits where a model's kernels round differently for
different numbers of rows per pass, as convolutions on CPU do).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from xaibench.attribution.base import METHODS, Method, target_gradients
from xaibench.attribution.draws import (
    draw_indices,
    draw_normal,
    draw_uniform,
    sample_generators,
    sample_seeds,
)
from xaibench.attribution.path import sample_chunks, straight_path_integral
from xaibench.attribution.reference import simple_baseline
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import
from xaibench.core.progress import advance

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


@dataclasses.dataclass(frozen=True)
class NoiseParams:
    """n_samples: noisy copies per input; stdev: noise standard deviation as a fraction of each
    sample's value range (max - min); abs: average absolute gradients (captum's default)."""

    n_samples: int = 25
    stdev: float = 0.15
    abs: bool = True


def noisy_gradients(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    params: NoiseParams,
    batch_size: int | None,
    generator: torch.Generator,
    reduce: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``reduce`` over axis 1 of the gradients at ``x + N(0, (stdev * (max x - min x))^2)``, (N, n, *S).

    The noise scale is relative to each sample's range, as Smilkov et al. (2017) define it. Each sample's
    noise is one ``randn((n_samples, *S))`` from its own generator (see ``sample_generators``), drawn
    chunk by chunk.
    """
    if params.n_samples < 1 or params.stdev < 0:
        raise InputError("noise methods need n_samples >= 1 and stdev >= 0")
    n, sample_shape = inputs.shape[0], inputs.shape[1:]
    seeds = sample_seeds(generator, n)
    scale = range_scale(inputs, params.stdev)
    target = target.to(inputs.device)
    out = torch.empty_like(inputs)
    for samples in sample_chunks(n, params.n_samples, batch_size):
        generators = sample_generators(seeds, samples)
        noise = draw_normal(generators, (params.n_samples, *sample_shape), inputs.dtype)
        # the points overwrite the chunk's noise: x + scale * noise
        points = noise.to(inputs.device).mul_(scale[samples]).add_(inputs[samples].unsqueeze(1))
        rows = target[samples].repeat_interleave(params.n_samples)
        grads = target_gradients(model, points.flatten(0, 1), rows, batch_size).view_as(points)
        out[samples] = reduce(grads.abs_() if params.abs else grads)
        advance(samples.stop - samples.start)
    return out


def range_scale(inputs: torch.Tensor, stdev: float) -> torch.Tensor:
    """``stdev * (max - min)`` of each sample, shaped (N, 1, 1, ...) to scale noise of shape (N, n, *S)."""
    flat = inputs.flatten(1)
    return (stdev * (flat.amax(1) - flat.amin(1))).view(-1, *([1] * inputs.ndim))


def _mean_over_draws(grads: torch.Tensor) -> torch.Tensor:
    return grads.mean(1)


def _variance_over_draws(grads: torch.Tensor) -> torch.Tensor:
    return grads.var(1, correction=0)


@METHODS.register("smoothgrad")
class SmoothGrad(Method):
    """SmoothGrad: the mean gradient over noisy copies of the input (Smilkov et al., 2017).

    Averages absolute gradients by default, as captum's ``NoiseTunnel(Saliency)`` does (Saliency
    takes the absolute value by default), so that results are comparable; ``abs=false`` averages the
    signed gradients, which the class metadata (unsigned) does not cover.
    """

    signed = False
    stochastic = True
    description = "mean gradient over noisy copies of the input (Smilkov et al. 2017)"
    Params = NoiseParams

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: NoiseParams,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return noisy_gradients(model, inputs, target, params, batch_size, generator, _mean_over_draws)


@METHODS.register("vargrad")
class VarGrad(Method):
    """VarGrad: the variance of the gradient over noisy copies of the input (Adebayo et al., 2018,
    "Local Explanation Methods for Deep Neural Networks Lack Sensitivity to Parameter Values").

    The population variance (divided by n_samples) of absolute gradients by default, as captum's
    ``NoiseTunnel(Saliency)`` with ``nt_type="vargrad"`` computes it.
    """

    signed = False
    stochastic = True
    description = "variance of the gradient over noisy copies of the input (Adebayo et al. 2018)"
    Params = NoiseParams

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: NoiseParams,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return noisy_gradients(model, inputs, target, params, batch_size, generator, _variance_over_draws)


def expected_path_gradients(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    n_draws: int,
    draw_baselines: Callable[[slice, list[torch.Generator]], torch.Tensor],
    batch_size: int | None,
    generator: torch.Generator,
    stdev: float = 0.0,
) -> torch.Tensor:
    """``mean_j grad F(b_j + alpha_j (x_j - b_j)) * (x_j - b_j)`` over ``n_draws`` draws per sample.

    Args:
        n_draws: draws per sample.
        draw_baselines: maps a chunk of samples and one generator per sample of it to the drawn
            baselines of the chunk, (s, n_draws, *S), drawing only from those generators.
        stdev: ``x_j = x + noise_j``, Gaussian noise with this standard deviation as a fraction of the
            sample's value range; 0 for ``x_j = x``.

    Each sample draws from its own generator (seeded from ``generator``), in this order: what
    ``draw_baselines`` draws, then alpha ~ U(0, 1) as ``rand((n_draws, 1))``, then, if stdev > 0, the
    noise as ``randn((n_draws, *S))``. Draws are made for one chunk of samples at a time.
    """
    n, sample_shape = inputs.shape[0], inputs.shape[1:]
    seeds = sample_seeds(generator, n)
    scale = range_scale(inputs, stdev)
    ones = torch.ones(1, dtype=inputs.dtype, device=inputs.device)
    out = torch.empty_like(inputs)
    for samples in sample_chunks(n, n_draws, batch_size):
        generators = sample_generators(seeds, samples)
        baselines = draw_baselines(samples, generators)
        alphas = draw_uniform(generators, (n_draws, 1), inputs.dtype)
        noise = None
        if stdev > 0:
            noise = draw_normal(generators, (n_draws, *sample_shape), inputs.dtype)
            noise = noise.to(inputs.device).mul_(scale[samples])
        # one chunk of straight_path_integral: its rows per sample are n_draws, as here
        out[samples] = straight_path_integral(
            model, inputs[samples], baselines, target[samples], alphas, ones, batch_size, input_noise=noise
        )
    return out


@METHODS.register("gradient_shap")
class GradientShap(Method):
    """GradientSHAP (Lundberg & Lee, NeurIPS 2017), as captum's ``GradientShap`` defines it.

    For each of n_samples draws: a baseline chosen uniformly from the listed simple baselines, a
    position alpha ~ U(0, 1) and optional input noise; the attribution is the mean of
    ``grad F(b + alpha (x~ - b)) * (x~ - b)`` with ``x~ = x + noise``, an estimate of the expected
    integrated gradients over the baseline distribution. Differences from captum: the noise level is
    relative to each sample's value range (as in SmoothGrad), and the baselines are named
    (zero, black, white, mean; comma-separated) instead of passed as a tensor; with only "zero" it is
    integrated gradients from zero with random path positions.
    """

    category = "path"
    stochastic = True
    description = "expected gradients x (input - baseline) over random baselines (Lundberg & Lee 2017)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """n_samples: draws per input; baselines: comma-separated simple baselines to draw from;
        stdev: input noise as a fraction of the sample's value range."""

        n_samples: int = 25
        baselines: str = "zero"
        stdev: float = 0.0

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        kinds = [kind.strip() for kind in params.baselines.split(",") if kind.strip()]
        if params.n_samples < 1 or params.stdev < 0 or not kinds:
            raise InputError("gradient_shap needs n_samples >= 1, stdev >= 0 and at least one baseline")

        def draw_baselines(samples: slice, generators: list[torch.Generator]) -> torch.Tensor:
            chunk = inputs[samples]
            pool = torch.stack([simple_baseline(chunk, kind) for kind in kinds], dim=1)  # (s, P, *S)
            picks = draw_indices(generators, len(kinds), params.n_samples).to(inputs.device)
            return pool[torch.arange(chunk.shape[0], device=inputs.device)[:, None], picks]

        return expected_path_gradients(
            model, inputs, target, params.n_samples, draw_baselines, batch_size, generator, params.stdev
        )


@METHODS.register("expected_gradients")
class ExpectedGradients(Method):
    """Expected gradients (Erion et al., Nature Machine Intelligence 2021, "Improving performance of
    deep learning models with axiomatic attribution priors and expected gradients").

    Integrated gradients averaged over baselines drawn uniformly from a reference set of training
    samples, with one random path position alpha ~ U(0, 1) per draw:
    ``mean_j grad F(r_j + alpha_j (x - r_j)) * (x - r_j)``.
    """

    category = "path"
    stochastic = True
    needs_references = True
    description = "integrated gradients averaged over training-sample baselines (Erion et al. 2021)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """n_samples: draws per input; references: tensor (N_ref, *shape) of training samples."""

        n_samples: int = 50
        references: object = None

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        refs = params.references
        if not isinstance(refs, torch.Tensor):
            raise InputError("expected_gradients needs references: a tensor of training samples")
        if refs.ndim != inputs.ndim or refs.shape[1:] != inputs.shape[1:] or refs.shape[0] == 0:
            raise InputError(
                f"references must have shape (N_ref, {', '.join(map(str, inputs.shape[1:]))}), "
                f"got {tuple(refs.shape)}"
            )
        if params.n_samples < 1:
            raise InputError("expected_gradients needs n_samples >= 1")
        refs = refs.detach().to(inputs.device, inputs.dtype)

        def draw_baselines(samples: slice, generators: list[torch.Generator]) -> torch.Tensor:
            return refs[draw_indices(generators, refs.shape[0], params.n_samples).to(inputs.device)]

        return expected_path_gradients(
            model, inputs, target, params.n_samples, draw_baselines, batch_size, generator
        )
