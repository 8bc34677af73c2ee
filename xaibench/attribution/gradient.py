"""Gradient attributions through captum: saliency, input x gradient, integrated gradients, DeepLift,
guided backpropagation and deconvolution.

Each method is deterministic and per-sample, so the samples are processed in chunks of at most
``batch_size`` rows; integrated gradients also bounds its path points per pass with captum's internal
batching, and DeepLift, which runs inputs and references together, uses chunks of half that size.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

from xaibench.attribution.base import METHODS, Method
from xaibench.attribution.chunks import captum_attribute, map_chunks
from xaibench.attribution.path import IntegrationParams, quadrature
from xaibench.attribution.reference import simple_baseline
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import captum
    import torch
else:
    captum = lazy_import("captum")
    torch = lazy_import("torch")


class _ParameterFreeCaptum(Method):
    """A captum method called as ``captum.attr.<captum_class>(model).attribute(x, target=t)``, in
    chunks of ``batch_size`` samples."""

    captum_class: ClassVar[str]

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Method.Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        method = getattr(captum.attr, self.captum_class)(model)
        target = target.to(inputs.device)
        return map_chunks(
            inputs, batch_size, lambda rows: captum_attribute(method, inputs[rows], target=target[rows])
        )


@METHODS.register("saliency")
class Saliency(Method):
    """Saliency map: the absolute gradient of the target logit (Simonyan et al., 2014).

    The class metadata says unsigned because that is the default; ``abs=false`` returns the raw,
    signed gradient.
    """

    signed = False
    description = "absolute gradient of the target logit (Simonyan et al. 2014)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """abs: take the gradient's absolute value (false gives the signed gradient)."""

        abs: bool = True

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        saliency = captum.attr.Saliency(model)
        target = target.to(inputs.device)
        return map_chunks(
            inputs,
            batch_size,
            lambda rows: captum_attribute(saliency, inputs[rows], target=target[rows], abs=params.abs),
        )


@METHODS.register("input_x_gradient")
class InputXGradient(_ParameterFreeCaptum):
    """Input times gradient of the target logit (Shrikumar et al., 2016)."""

    description = "input times gradient (Shrikumar et al. 2016)"

    captum_class = "InputXGradient"


@METHODS.register("integrated_gradients")
class IntegratedGradients(Method):
    """Integrated gradients (Sundararajan et al., 2017): (x - x') times the mean gradient on the
    straight path from the reference x' to x, by captum's quadrature rules.
    """

    category = "path"
    description = "integrated gradients from a constant reference (Sundararajan et al. 2017)"
    Params = IntegrationParams

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: IntegrationParams,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        quadrature(params.method, params.n_steps)  # the same rules and checks as the path engine
        method = captum.attr.IntegratedGradients(model)
        baselines = simple_baseline(inputs, params.baseline)
        target = target.to(inputs.device)
        # Chunks of at most batch_size samples; captum then packs batch_size // chunk path points a pass.
        return map_chunks(
            inputs,
            batch_size,
            lambda rows: captum_attribute(
                method,
                inputs[rows],
                baselines=baselines[rows],
                target=target[rows],
                n_steps=params.n_steps,
                method=params.method,
                internal_batch_size=batch_size,
            ),
        )


@METHODS.register("deeplift")
class DeepLift(Method):
    """DeepLIFT with the Rescale rule (Shrikumar et al., 2017), as captum implements it.

    Relies on ``nn.ReLU``-style activation modules (not functional calls, each module used once).

    captum forwards the inputs and their references together, so a chunk of s samples is one pass of
    2 s rows: chunks hold ``batch_size // 2`` samples, and a ``batch_size`` below 2 still means one
    sample, that is 2 rows, per pass.
    """

    modalities = ("image", "tabular", "sequence")  # not text: its rules are for ReLU networks, not attention
    description = "DeepLIFT rescale rule from a constant reference (Shrikumar et al. 2017)"
    float32_only = True  # summation to delta is exact; the rescale multipliers divide small differences

    @dataclasses.dataclass(frozen=True)
    class Params:
        """baseline: zero, black, white or mean."""

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
        method = captum.attr.DeepLift(model)
        baselines = simple_baseline(inputs, params.baseline)
        target = target.to(inputs.device)
        # captum forwards inputs and references in one pass: twice the chunk's rows.
        rows_per_chunk = None if batch_size is None else max(1, batch_size // 2)
        return map_chunks(
            inputs,
            rows_per_chunk,
            lambda rows: captum_attribute(method, inputs[rows], baselines=baselines[rows], target=target[rows]),
        )


@METHODS.register("guided_backprop")
class GuidedBackprop(_ParameterFreeCaptum):
    """Guided backpropagation (Springenberg et al., 2015): ReLU gradients also clipped to positive."""

    modalities = ("image", "tabular", "sequence")  # not text: its rules are for ReLU networks, not attention
    description = "guided backpropagation (Springenberg et al. 2015)"

    captum_class = "GuidedBackprop"


@METHODS.register("deconvolution")
class Deconvolution(_ParameterFreeCaptum):
    """Deconvolution (Zeiler & Fergus, 2014): ReLUs pass the positive part of the incoming gradient."""

    modalities = ("image", "tabular", "sequence")  # not text: its rules are for ReLU networks, not attention
    description = "deconvnet backward pass (Zeiler & Fergus 2014)"

    captum_class = "Deconvolution"
