"""Guided integrated gradients: an adaptive path that moves the features the model is least sensitive to.

Kapishnikov, Venugopalan, Avci, Wedin, Terry & Bolukbasi, CVPR 2021, "Guided Integrated Gradients: an
Adaptive Path Method for Removing Noise". Integrated gradients walks the straight line from a baseline
b to the input x, and so also through points where the gradient is large and noisy; Guided IG chooses
the path as it goes. At each of ``n_steps`` steps it takes one gradient g at the current point and
moves, among the features that may still move, the ``fraction`` with the smallest |g_i| towards x,
until the L1 distance to x has shrunk by ``||x - b||_1 / n_steps``; the attribution accumulates
``g_i * (change of feature i)``, a left Riemann sum of the path integral, so the attributions sum to
``f(x) - f(b)`` up to the sum's error (completeness of path methods).

The bounded variant (the paper's anchors; ``max_dist`` in the authors' PAIR saliency library, whose
defaults are used here): at step k every feature stays within ``max_dist`` of the straight line, in
units of its own way from b to x: its position ``a_i = (p_i - b_i) / (x_i - b_i)`` stays in
``[k/K - max_dist, k/K + max_dist]``; features that fall behind are pulled up to the lower bound first,
and features at the upper bound are not selected. ``max_dist = 0`` is the straight line (integrated
gradients with the left Riemann rule), ``max_dist >= 1`` the unbounded path; ``fraction = 1`` moves
every feature together, which also stays on the straight line.

Implementation: the path state is each feature's position ``a_i`` in float64 (as the authors' library
computes in float64), so "at the upper bound" is an exact comparison and the step's L1 target is met to
1e-9 relative; the points ``b + a (x - b)`` reach the model in the inputs' dtype. On Apple's MPS, which
has no float64, the state is float32 on the device (``xaibench.core.devices.accumulation_dtype``) and
the L1 target is met to 8 float32 epsilons (1e-6) relative: keeping it on the CPU instead would move
every step's gradient off the device. All samples of a chunk of ``batch_size`` samples advance together
(one gradient pass of one row per sample per step); the steps themselves are sequential. The selection
threshold is the authors' lower quantile of |g| over all features, those at the bound counted with an
infinite gradient: the ``floor(fraction (D - 1)) + 1``-th smallest value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from xaibench.attribution.base import METHODS, Method, target_gradients
from xaibench.attribution.path import sample_chunks
from xaibench.attribution.reference import simple_baseline
from xaibench.core.devices import accumulation_dtype
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import
from xaibench.core.progress import advance

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

# How close the L1 distance to the input must come to a step's target (the authors' tolerance), relative;
# at least 8 epsilons of the path state's dtype (float32 on MPS).
L1_TOLERANCE = 1e-9


@METHODS.register("guided_ig")
class GuidedIG(Method):
    """Guided integrated gradients (Kapishnikov et al., CVPR 2021), bounded by ``max_dist``.

    Defaults are those of the authors' PAIR saliency library (``GuidedIG.GetMask``): 200 steps, a
    quarter of the features per selection, at most 0.02 away from the straight line; the baseline is
    zero like its default (the paper's black image is zero in [0, 1] pixel space). The baselines are
    the simple ones of integrated_gradients (zero, black, white, mean).

    Differences from the library: the path positions are tracked per feature (``a_i``) rather than
    recovered from the point by division, which gives the same path without the library's float
    comparisons of points; a sample whose selected features cannot move any further ends its step
    (the library loops forever on that rounding corner).
    """

    category = "path"
    description = "integrated gradients along a path that moves low-gradient features first (Kapishnikov et al. 2021)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """n_steps: gradient steps along the path; fraction: share of the features moved per selection
        (those with the smallest absolute gradient); max_dist: how far (0..1, in units of each feature's
        way from baseline to input) a feature may lead or lag the straight line, 1 for unbounded;
        baseline: zero, black, white or mean."""

        n_steps: int = 200
        fraction: float = 0.25
        max_dist: float = 0.02
        baseline: str = "zero"

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        if params.n_steps < 1 or not 0 <= params.fraction <= 1 or params.max_dist < 0:
            raise InputError("guided_ig needs n_steps >= 1, fraction in [0, 1] and max_dist >= 0")
        baselines = simple_baseline(inputs, params.baseline)
        target = target.to(inputs.device)
        out = torch.empty_like(inputs)
        for samples in sample_chunks(inputs.shape[0], 1, batch_size):
            out[samples] = guided_path_integral(
                model, inputs[samples], baselines[samples], target[samples],
                params.n_steps, params.fraction, params.max_dist, batch_size,
            )  # fmt: skip
            advance(samples.stop - samples.start)
        return out


def guided_path_integral(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    target: torch.Tensor,
    n_steps: int,
    fraction: float,
    max_dist: float,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Guided IG of a chunk of samples, all advancing together: (s, *S) in the inputs' dtype.

    One gradient pass of s rows per step (split into passes of ``batch_size`` rows by
    ``target_gradients``); memory: a few (s, D) buffers for the path state, float64 (float32 on MPS).
    """
    wide = accumulation_dtype(inputs.device)
    way = (inputs - baselines).flatten(1).to(wide)  # x - b per feature
    length = way.abs()
    total = length.sum(1)
    # Position of each feature on its way, 0 at b and 1 at x. A feature with no way to go counts as
    # arrived: it is then never selected and adds nothing to the distance.
    position = torch.where(length > 0, 0.0, 1.0).to(way)
    attribution = torch.zeros_like(way)
    kth = math.floor(fraction * (way.shape[1] - 1)) + 1  # the authors' "lower" quantile, 1-based
    start = baselines.flatten(1).to(wide)
    for step in range(n_steps):
        points = torch.addcmul(start, position, way).to(inputs.dtype).view_as(inputs)
        grads = target_gradients(model, points, target, batch_size).flatten(1).to(wide)
        alpha = (step + 1) / n_steps
        low, high = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        before = position.clone()
        position.clamp_(min=low)  # features lagging the straight line catch up first
        goal = total * (1 - alpha)
        walk_step(position, grads.abs(), length, goal, high, kth)
        attribution.addcmul_(grads * way, position - before)
    return attribution.to(inputs.dtype).view_as(inputs)


def walk_step(
    position: torch.Tensor, magnitude: torch.Tensor, length: torch.Tensor, goal: torch.Tensor, high: float, kth: int
) -> None:
    """Move positions (s, D) in place towards ``high`` until each sample's L1 distance to the input,
    ``sum length * (1 - position)``, is ``goal`` (s,): repeatedly the features with the smallest
    ``magnitude`` (|gradient|) among those below ``high``, all the way or by the share that closes the gap.
    """
    active = torch.ones(position.shape[0], dtype=torch.bool, device=position.device)
    tolerance = max(L1_TOLERANCE, 8 * torch.finfo(position.dtype).eps)
    while True:
        distance = (length * (1 - position)).sum(1)
        reached = (distance - goal).abs() <= torch.maximum(tolerance * torch.maximum(distance, goal),
                                                           torch.full_like(goal, tolerance))
        active &= ~reached
        if not bool(active.any()):
            return
        movable = position < high
        keys = torch.where(movable, magnitude, math.inf)
        threshold = keys.kthvalue(kth, dim=1, keepdim=True).values
        selected = (keys <= threshold) & movable & active[:, None]
        room = (length * (high - position) * selected).sum(1)
        share = (distance - goal) / room  # inf where nothing is selected
        whole = share > 1
        moved = torch.where(whole[:, None], high, torch.addcmul(position, share[:, None], high - position))
        position.copy_(torch.where(selected, moved, position))
        # a partial move closes the gap; a sample with nothing left to select cannot get closer
        active &= whole & (room > 0)
