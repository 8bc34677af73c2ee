"""Perturbation attributions through captum: occlusion, feature ablation, Shapley value sampling, LIME
and Kernel SHAP.

They need forward passes only. Features are grouped (``masks.feature_mask``: image patches shared by
all channels, sequence segments, single tabular features); a removed group takes the reference value
(``reference.simple_baseline``). Every element of a group receives the group's attribution.

Batching: the deterministic methods run chunks of samples and let captum evaluate
``batch_size // chunk`` perturbations of the chunk per pass. The sampling methods draw from torch's
global RNG inside captum, so they run one sample at a time under a seed drawn from the generator
(captum's Lime and KernelShap process one example at a time internally anyway); ``batch_size`` then
bounds the perturbed copies per pass.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xaibench.attribution.base import METHODS, Method, input_modality, modality_of
from xaibench.attribution.chunks import captum_attribute, map_chunks, map_seeded_samples
from xaibench.attribution.masks import default_patch, feature_mask
from xaibench.attribution.reference import simple_baseline
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import captum
    import torch
else:
    captum = lazy_import("captum")
    torch = lazy_import("torch")


def occlusion_window(
    inputs: torch.Tensor, window: int | None, stride: int | None
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Sliding-window shape, strides and number of window positions for captum's Occlusion.

    The window covers all channels; its side defaults to ``masks.default_patch`` and the stride to
    the window (non-overlapping). Windows at the far edge are cropped, so every element is covered.

    Raises:
        InputError: for a window larger than the input or a stride outside 1..window.
    """
    tabular = modality_of(inputs) == "tabular"
    spatial = tuple(inputs.shape[1:] if tabular else inputs.shape[2:])
    side = default_patch(inputs) if window is None else window
    step = side if stride is None else stride
    if not 1 <= side <= min(spatial):
        raise InputError(f"window must be between 1 and {min(spatial)}, got {side}")
    if not 1 <= step <= side:
        raise InputError(f"stride must be between 1 and the window ({side}), got {step}")
    channels = () if tabular else (inputs.shape[1],)
    positions = math.prod(math.ceil((size - side) / step) + 1 for size in spatial)
    return channels + (side,) * len(spatial), channels + (step,) * len(spatial), positions


def chunking(n: int, batch_size: int | None, n_perturbations: int) -> tuple[int | None, int]:
    """Samples per chunk and perturbed copies per pass so that a pass has at most ~batch_size rows."""
    if batch_size is None:
        return None, n_perturbations
    rows = min(batch_size, n)
    return rows, max(1, min(n_perturbations, batch_size // rows))


def _check_samples(n_samples: int) -> None:
    if n_samples < 1:
        raise InputError(f"n_samples must be at least 1, got {n_samples}")


class _Perturbation(Method):
    """Shared metadata of the perturbation methods (not registered itself). On text a feature is one token:
    ``patch`` and ``window`` default to 1 there (a tenth of the text, the sequence default, would remove
    phrases)."""

    category = "perturbation"
    needs_gradients = False

    def attribute(self, model: torch.nn.Module, inputs: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if input_modality(model, inputs) == "text":
            declared = {f.name for f in dataclasses.fields(self.Params)}
            kwargs.update({key: 1 for key in ("patch", "window") if key in declared and kwargs.get(key) is None})
        return super().attribute(model, inputs, **kwargs)


@METHODS.register("occlusion")
class Occlusion(_Perturbation):
    """Occlusion (Zeiler & Fergus, 2014): the drop of the target logit when a sliding window is set to
    the reference, averaged over the windows covering each element.
    """

    description = "logit drop under a sliding occluding window (Zeiler & Fergus 2014)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """window: side in pixels / steps / features; stride: defaults to window; baseline: reference."""

        window: int | None = None
        stride: int | None = None
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
        window, strides, positions = occlusion_window(inputs, params.window, params.stride)
        baselines = simple_baseline(inputs, params.baseline)
        rows, per_pass = chunking(inputs.shape[0], batch_size, positions)
        method = captum.attr.Occlusion(model)
        target = target.to(inputs.device)
        return map_chunks(
            inputs,
            rows,
            lambda r: captum_attribute(
                method,
                inputs[r],
                sliding_window_shapes=window,
                strides=strides,
                baselines=baselines[r],
                target=target[r],
                perturbations_per_eval=per_pass,
            ),
        )


@METHODS.register("feature_ablation")
class FeatureAblation(_Perturbation):
    """Feature ablation: the drop of the target logit when one feature group is set to the reference."""

    description = "logit drop when each feature group is replaced by the reference"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """patch: group side (image patch, sequence segment, tabular run); baseline: reference."""

        patch: int | None = None
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
        mask = feature_mask(inputs, params.patch)
        baselines = simple_baseline(inputs, params.baseline)
        rows, per_pass = chunking(inputs.shape[0], batch_size, int(mask.max()) + 1)
        method = captum.attr.FeatureAblation(model)
        target = target.to(inputs.device)
        return map_chunks(
            inputs,
            rows,
            lambda r: captum_attribute(
                method,
                inputs[r],
                baselines=baselines[r],
                target=target[r],
                feature_mask=mask,
                perturbations_per_eval=per_pass,
            ),
        )


@METHODS.register("shapley_value_sampling")
class ShapleyValueSampling(_Perturbation):
    """Shapley values of the feature groups estimated from random permutations (Castro et al., 2009).

    Each permutation adds the groups one by one to the reference and credits each with the change of
    the target logit; the estimate is the mean over ``n_samples`` permutations.
    """

    stochastic = True
    description = "Shapley values by permutation sampling (Castro et al. 2009)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """n_samples: permutations; patch: group side; baseline: reference."""

        n_samples: int = 25
        patch: int | None = None
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
        return _seeded_per_sample(captum.attr.ShapleyValueSampling(model), inputs, target, params,
                                  batch_size, generator, per_pass_of=lambda mask: int(mask.max()) + 1)


def _seeded_per_sample(
    method: Any,
    inputs: torch.Tensor,
    target: torch.Tensor,
    params: Any,
    batch_size: int | None,
    generator: torch.Generator,
    per_pass_of: Callable[[torch.Tensor], int],
) -> torch.Tensor:
    """Run a sampling captum method (Shapley sampling, Lime, KernelShap) sample by sample under seeds.

    ``per_pass_of(feature_mask)`` is the number of perturbations one sample needs per round; it is
    bounded by ``batch_size`` through captum's ``perturbations_per_eval``.
    """
    _check_samples(params.n_samples)
    mask = feature_mask(inputs, params.patch)
    baselines = simple_baseline(inputs, params.baseline)
    _, per_pass = chunking(1, batch_size, per_pass_of(mask))
    target = target.to(inputs.device)
    return map_seeded_samples(
        inputs,
        generator,
        lambda r: captum_attribute(
            method,
            inputs[r],
            baselines=baselines[r],
            target=target[r],
            feature_mask=mask,
            n_samples=params.n_samples,
            perturbations_per_eval=per_pass,
        ),
    )


@METHODS.register("lime")
class Lime(_Perturbation):
    """LIME (Ribeiro et al., 2016) with captum's defaults: random on/off group masks (p = 0.5), an
    exponential kernel on the cosine distance to the input, and a Lasso surrogate (alpha 0.01) whose
    coefficients are the attributions. ``alpha`` sets the Lasso penalty; 0 fits ordinary weighted
    least squares. The penalty is absolute, so models with small logits need a smaller alpha (with
    the toy models' logit changes of ~0.01, alpha 0.01 zeroes every coefficient).
    """

    stochastic = True
    description = "local sparse linear surrogate on random group masks (Ribeiro et al. 2016)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """n_samples: perturbed copies; patch: group side; baseline: reference; alpha: Lasso penalty."""

        n_samples: int = 200
        patch: int | None = None
        baseline: str = "zero"
        alpha: float = 0.01

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        if params.alpha < 0:
            raise InputError(f"alpha must be at least 0, got {params.alpha}")
        surrogates = captum._utils.models.linear_model
        if params.alpha > 0:
            surrogate = surrogates.SkLearnLasso(alpha=params.alpha)
        else:
            surrogate = surrogates.SkLearnLinearRegression()
        method = captum.attr.Lime(model, interpretable_model=surrogate)
        return _seeded_per_sample(method, inputs, target, params, batch_size, generator,
                                  per_pass_of=lambda _: params.n_samples)


@METHODS.register("kernel_shap")
class KernelShap(_Perturbation):
    """Kernel SHAP (Lundberg & Lee, 2017): a weighted linear regression on group masks drawn from the
    Shapley kernel, with the empty and full masks weighted heavily so that the coefficients add up to
    f(x) - f(reference).
    """

    stochastic = True
    description = "Shapley values by kernel-weighted linear regression (Lundberg & Lee 2017)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """n_samples: perturbed copies per sample; patch: group side; baseline: reference."""

        n_samples: int = 200
        patch: int | None = None
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
        return _seeded_per_sample(captum.attr.KernelShap(model), inputs, target, params, batch_size,
                                  generator, per_pass_of=lambda _: params.n_samples)
