"""The batched path-integration engine, and the path methods built on it: integrated gradients, Blur IG.

A path method attributes ``F(x) - F(start)`` along a path ``p(t)`` from a start to the input x:

    attribution_i = integral grad F(p(t))_i * p'(t)_i dt  ~  sum_k grad F(p_k)_i * d_k,i

where the ``p_k`` are quadrature points and ``d_k = p'(t_k) * weight_k``. The engine evaluates the
points of many samples (and of several starts per sample, as BEE needs) in one pass: points are built
with one broadcasted expression per chunk of samples, gradients come from ``target_gradients`` in row
chunks of at most ``batch_size`` rows, and the weighted sum over k is one batched matrix product (an
in-place product and sum for general paths).

Two entry points:
- ``straight_path_integral``: the straight line ``b + alpha (x - b)`` (Sundararajan et al., ICML 2017,
  "Axiomatic Attribution for Deep Networks"), where ``d_k = weight_k (x - b)`` factors out of the sum.
- ``path_integral``: any path, given as a function that returns points and steps for a slice of samples.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from xaibench.attribution.base import METHODS, Method, target_gradients
from xaibench.attribution.baselines import baseline_family, names_need_references
from xaibench.attribution.blur import gaussian_blur
from xaibench.core.batches import row_slices
from xaibench.core.errors import InputError, UnknownNameError
from xaibench.core.lazy import lazy_import
from xaibench.core.progress import advance

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

QUADRATURES = ("gausslegendre", "riemann_left", "riemann_middle", "riemann_right", "riemann_trapezoid")

# The paper's Blur IG reaches sigma 50 on 224-pixel images: a blur of about 22% of the image side.
BLUR_IG_SIGMA_PER_PIXEL = 50.0 / 224.0


@dataclasses.dataclass(frozen=True)
class IntegrationParams:
    """n_steps: points on the path; method: quadrature rule; baseline: zero, black, white or mean."""

    n_steps: int = 50
    method: str = "gausslegendre"
    baseline: str = "zero"


def quadrature(method: str, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``alphas`` in [0, 1] and weights of a rule for integrals over [0, 1], float64, (n_steps,).

    The rules and their points are captum's (``captum.attr._utils.approximation_methods``):
    Riemann sums with left, right or middle points, the trapezoid rule on ``linspace(0, 1, n)``, and
    Gauss-Legendre nodes mapped from [-1, 1] to [0, 1]. One deliberate difference: captum's trapezoid
    weights are ``1/n`` (halved at the ends), so they sum to ``(n-1)/n`` and its attributions are
    ``(n-1)/n`` times the trapezoid rule; here they are ``1/(n-1)`` (halved at the ends) and sum to 1.

    Raises:
        UnknownNameError: for another method name.
        InputError: for fewer than 1 step (2 for the trapezoid rule).
    """
    if method not in QUADRATURES:
        raise UnknownNameError.for_name("integration method", method, list(QUADRATURES))
    least = 2 if method == "riemann_trapezoid" else 1
    if n_steps < least:
        raise InputError(f"{method} needs n_steps >= {least}, got {n_steps}")
    if method == "gausslegendre":
        import numpy as np

        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return torch.from_numpy(0.5 * (nodes + 1.0)), torch.from_numpy(0.5 * weights)
    k = torch.arange(n_steps, dtype=torch.float64, device="cpu")  # on the CPU, like the Gauss-Legendre rule
    if method == "riemann_trapezoid":
        weights = torch.full((n_steps,), 1.0 / (n_steps - 1), dtype=torch.float64, device="cpu")
        weights[[0, -1]] /= 2
        return k / (n_steps - 1), weights
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return (k + offset) / n_steps, torch.full((n_steps,), 1.0 / n_steps, dtype=torch.float64, device="cpu")


def sample_chunks(n: int, rows_per_sample: int, batch_size: int | None) -> Iterator[slice]:
    """Slices of whole samples whose ``rows_per_sample`` rows fill at most ``batch_size`` rows.

    A sample with more rows than ``batch_size`` forms a chunk alone; ``target_gradients`` then splits
    its rows further, so no forward pass ever exceeds ``batch_size`` rows.
    """
    per_chunk = None if batch_size is None else max(1, batch_size // rows_per_sample)
    return row_slices(n, per_chunk)


def straight_path_integral(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    target: torch.Tensor,
    alphas: torch.Tensor,
    weights: torch.Tensor,
    batch_size: int | None = None,
    *,
    input_noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrated gradients on straight lines, several baselines per sample, averaged over baselines.

    ``attribution_n = mean_b (x_nb - b_nb) * sum_k w_nbk grad F(b_nb + alpha_nbk (x_nb - b_nb))``, with
    ``x_nb = x_n`` (+ ``input_noise[n, b]`` when given).

    Args:
        model: returns logits (rows, classes).
        inputs: the path ends, (N, *S).
        baselines: the path starts, (N, *S) for one baseline per sample or (N, B, *S) for B.
        target: class per sample, int64 (N,).
        alphas: positions on the path in [0, 1], (K,) shared or (N, B, K) per path.
        weights: quadrature weights, shaped like ``alphas``.
        batch_size: the most rows (path points) per forward pass; None for one pass.
        input_noise: (N, B, *S) added to the input of each path (GradientSHAP's smoothing).

    Returns:
        Attributions (N, *S) in the inputs' dtype.

    Memory: each chunk of samples materialises its differences ``x_nb - b_nb`` (chunk x B x sample
    size) and its points once (rows x sample size, plus as much for their gradients); with
    ``batch_size`` None that is all N * B * K points. Nothing of size N * B is built outside the chunks.
    """
    n, sample_shape = inputs.shape[0], inputs.shape[1:]
    like = {"dtype": inputs.dtype, "device": inputs.device}
    starts = baselines if baselines.ndim == inputs.ndim + 1 else baselines.unsqueeze(1)
    n_paths, n_steps = starts.shape[1], alphas.shape[-1]
    alphas = alphas.to(**like).expand(n, n_paths, n_steps)
    weights = weights.to(**like).expand(n, n_paths, n_steps)
    target = target.to(inputs.device)
    rows_per_sample = n_paths * n_steps
    out = torch.empty_like(inputs)
    for samples in sample_chunks(n, rows_per_sample, batch_size):
        end = inputs[samples].unsqueeze(1)
        if input_noise is not None:
            end = end + input_noise[samples]
        diff = end - starts[samples]  # (s, B, *S)
        alpha = alphas[samples].reshape(*alphas[samples].shape, *([1] * len(sample_shape)))
        points = torch.addcmul(starts[samples].unsqueeze(2), alpha, diff.unsqueeze(2))  # one kernel
        rows = target[samples].repeat_interleave(rows_per_sample)
        grads = target_gradients(model, points.flatten(0, 2), rows, batch_size)
        # sum_k w_k grad_k as one batched (1 x K) @ (K x D) product over paths, no copies
        paths = diff.shape[0] * n_paths
        summed = torch.bmm(weights[samples].reshape(paths, 1, n_steps), grads.reshape(paths, n_steps, -1))
        out[samples] = (diff * summed.view_as(diff)).mean(1)
        advance(samples.stop - samples.start)
    return out


def path_integral(
    model: torch.nn.Module,
    path: Callable[[slice], tuple[torch.Tensor, torch.Tensor]],
    n: int,
    n_steps: int,
    target: torch.Tensor,
    batch_size: int | None = None,
) -> torch.Tensor:
    """``sum_k grad F(p_k) * d_k`` for any path, evaluated for chunks of samples.

    Args:
        model: returns logits (rows, classes).
        path: maps a slice of samples to their ``points`` and ``steps``, both (s, K, *S); a step is the
            path derivative at the point times its quadrature weight.
        n: number of samples; n_steps: K, points per sample.
        target: class per sample, int64 (N,).
        batch_size: the most rows (path points) per forward pass; None for one pass.

    Returns:
        Attributions (N, *S).
    """
    chunks = []
    for samples in sample_chunks(n, n_steps, batch_size):
        points, steps = path(samples)
        rows = target[samples].to(points.device).repeat_interleave(n_steps)
        grads = target_gradients(model, points.flatten(0, 1), rows, batch_size)
        chunks.append(grads.reshape(steps.shape).mul_(steps).sum(1))  # grads is a fresh buffer
        advance(samples.stop - samples.start)
    return torch.cat(chunks)


@METHODS.register("path_integrated_gradients")
class PathIntegratedGradients(Method):
    """Integrated gradients on xaibench's batched path engine (Sundararajan et al., ICML 2017).

    Equals ``captum.attr.IntegratedGradients`` for the same baseline, n_steps and method (captum's
    trapezoid rule is smaller by ``(n_steps-1)/n_steps``, see ``quadrature``).

    The baseline is any family of ``xaibench.attribution.baselines`` (BEE's arms: Barkan et al., AAAI
    2025), one draw per input. A random family (constant, uniform, gaussian, blur, train_sample) draws
    from the method's generator, one seed per sample, so the result depends on the seed and not on
    batch_size; with the default (zero) and the other deterministic families the method is
    deterministic, which is what the class metadata (``stochastic = False``) describes. The train_*
    families need ``references`` (training samples in model space), which a caller passes as a tensor
    (``xaibench explain`` / ``evaluate`` load them from the training split when such a family is chosen).
    """

    category = "path"
    description = "integrated gradients on the batched path engine (Sundararajan et al. 2017)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """n_steps: points on the path; method: quadrature rule; baseline: a baseline family (zero,
        black, white, mean, constant, uniform, gaussian, blur, train_sample, train_mean); references:
        tensor (R, *shape) of training samples for the train_* families."""

        n_steps: int = 50
        method: str = "gausslegendre"
        baseline: str = "zero"
        references: object = None

    def wants_references(self, params: dict[str, Any]) -> bool:
        """Training samples are needed for a training baseline family (``-p baseline=train_sample``)."""
        return names_need_references(params.get("baseline"))

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        alphas, weights = quadrature(params.method, params.n_steps)
        baselines = baseline_family(params.baseline, params.references).sample(inputs, generator)
        return straight_path_integral(model, inputs, baselines, target, alphas, weights, batch_size)


@METHODS.register("blur_ig")
class BlurIG(Method):
    """Blur IG: integrated gradients along a blur path (Xu et al., CVPR 2020, "Attribution in Scale and
    Space").

    The path runs from ``blur(x, max_sigma)`` to x: with ``sigma_k = k dsigma``, ``dsigma = max_sigma /
    n_steps`` (k = 0..n_steps-1, as in the authors' PAIR saliency library) and ``x_k = blur(x, sigma_k)``,
    ``attribution = sum_k grad F(x_k) * (x_k - blur(x, sigma_k + h)) / h * dsigma``: minus the path
    derivative d x / d sigma by a forward finite difference of step h = ``grad_step``, so the path is
    walked towards the input. The attributions sum approximately to ``F(x) - F(blur(x, max_sigma))``.

    Differences from the reference: the blur uses reflect boundaries (the reference pads with zeros,
    so its most blurred image also darkens towards the border); the default n_steps is 50 (the
    reference uses 100); the default max_sigma scales with the image: 50 / 224 of its longest spatial
    side (50 on 224-pixel images, as in the paper; 1.8 on 8-pixel digits, 6.25 on 28-pixel images).
    """

    category = "path"
    modalities = ("image", "sequence")
    description = "integrated gradients along a Gaussian blur path (Xu et al. 2020)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """n_steps: points on the path; max_sigma: blur at the path start in pixels (none: 50/224 of
        the longest side); grad_step: finite-difference step in sigma."""

        n_steps: int = 50
        max_sigma: float | None = None
        grad_step: float = 0.01

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        max_sigma = params.max_sigma
        if max_sigma is None:
            max_sigma = BLUR_IG_SIGMA_PER_PIXEL * max(inputs.shape[2:])
        if params.n_steps < 1 or not math.isfinite(max_sigma) or max_sigma <= 0 or params.grad_step <= 0:
            raise InputError("blur_ig needs n_steps >= 1, max_sigma > 0 and grad_step > 0")
        path = blur_path(inputs, max_sigma, params.n_steps, params.grad_step)
        return path_integral(model, path, inputs.shape[0], params.n_steps, target, batch_size)


def blur_path(
    inputs: torch.Tensor, max_sigma: float, n_steps: int, grad_step: float
) -> Callable[[slice], tuple[torch.Tensor, torch.Tensor]]:
    """The Blur IG path for ``path_integral``: points ``blur(x, sigma_k)`` and their steps towards x."""
    dsigma = max_sigma / n_steps
    sigmas = torch.arange(n_steps, dtype=torch.float64, device="cpu") * dsigma  # blur matrices: float64 on the CPU

    def points_and_steps(samples: slice) -> tuple[torch.Tensor, torch.Tensor]:
        # float64: the finite difference divides rounding errors of the blur by grad_step
        x = inputs[samples].double()
        points = gaussian_blur(x, sigmas)
        steps = (points - gaussian_blur(x, sigmas + grad_step)).mul_(dsigma / grad_step)
        dense = torch.contiguous_format  # einsum may return permuted strides
        return points.to(inputs.dtype, memory_format=dense), steps.to(inputs.dtype, memory_format=dense)

    return points_and_steps
