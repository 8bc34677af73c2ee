"""Gradient methods that average over random draws: SmoothGrad, VarGrad, GradientSHAP, expected gradients.

These are xaibench's own batched implementations rather than captum's ``NoiseTunnel``: NoiseTunnel draws
its noise from torch's global RNG chunk by chunk, so its result depends on how the samples are batched.
Here every random quantity (noise, baseline choices, path positions) is drawn up front for all samples
at once from the method's ``generator``; only then are the gradients evaluated, with
``target_gradients`` in row chunks of at most ``batch_size``. The result is therefore identical for
every ``batch_size`` and reproducible from the generator's seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from xaibench._lazy import lazy_import
from xaibench.attribution.base import METHODS, Method, target_gradients
from xaibench.attribution.path import sample_chunks, straight_path_integral
from xaibench.attribution.reference import simple_baseline
from xaibench.errors import InputError
from xaibench.progress import advance

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

    The noise scale is relative to each sample's range, as Smilkov et al. (2017) define it.
    """
    if params.n_samples < 1 or params.stdev < 0:
        raise InputError("noise methods need n_samples >= 1 and stdev >= 0")
    n, sample_shape = inputs.shape[0], inputs.shape[1:]
    scale = range_scale(inputs, params.stdev)
    noise = torch.randn((n, params.n_samples, *sample_shape), generator=generator, dtype=inputs.dtype)
    noise, target = noise.to(inputs.device), target.to(inputs.device)
    out = torch.empty_like(inputs)
    for samples in sample_chunks(n, params.n_samples, batch_size):
        points = torch.addcmul(inputs[samples].unsqueeze(1), scale[samples], noise[samples])
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
    baselines: torch.Tensor,
    target: torch.Tensor,
    batch_size: int | None,
    generator: torch.Generator,
    stdev: float = 0.0,
) -> torch.Tensor:
    """``mean_j grad F(b_j + alpha_j (x_j - b_j)) * (x_j - b_j)``, one draw per row of ``baselines``.

    Args:
        baselines: (N, n, *S), the drawn baselines of each sample.
        stdev: ``x_j = x + noise_j``, Gaussian noise with this standard deviation as a fraction of the
            sample's value range; 0 for ``x_j = x``.

    alpha_j ~ U(0, 1) and the noise are drawn here, for all samples at once, before any gradient.
    """
    n, draws = baselines.shape[:2]
    alphas = torch.rand((n, draws, 1), generator=generator, dtype=inputs.dtype).to(inputs.device)
    noise = None
    if stdev > 0:
        draws_noise = torch.randn(baselines.shape, generator=generator, dtype=inputs.dtype)
        noise = range_scale(inputs, stdev) * draws_noise.to(inputs.device)
    ones = torch.ones(1, dtype=inputs.dtype)
    return straight_path_integral(
        model, inputs, baselines, target, alphas, ones, batch_size, input_noise=noise
    )


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
        pool = torch.stack([simple_baseline(inputs, kind) for kind in kinds], dim=1)  # (N, P, *S)
        picks = torch.randint(len(kinds), (inputs.shape[0], params.n_samples), generator=generator)
        baselines = pool[torch.arange(inputs.shape[0])[:, None], picks]
        return expected_path_gradients(
            model, inputs, baselines, target, batch_size, generator, params.stdev
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
        picks = torch.randint(refs.shape[0], (inputs.shape[0], params.n_samples), generator=generator)
        baselines = refs.detach().to(inputs.device, inputs.dtype)[picks.to(inputs.device)]
        return expected_path_gradients(model, inputs, baselines, target, batch_size, generator)
