"""FullGrad (Srinivas & Fleuret, NeurIPS 2019, "Full-Gradient Representation for Neural Network
Visualization"): the input-gradient and the bias-gradients of every layer, each made a map and summed.

For a network with biases whose non-linearities are piecewise linear (ReLU, max pooling), the logit is
exactly  f(x) = sum(grad_x f * x) + sum over layers of sum(grad_b f * b)  (the paper's completeness).
A layer's bias-gradient is the gradient at the layer's output times its bias, broadcast over the
output: (N, C, *spatial) for a convolution. Batch norm counts as a bias: in eval mode it is the affine
map x * gamma / sqrt(var + eps) + (beta - gamma * mean / sqrt(var + eps)), whose second term is its
effective bias. The map is

    psi(grad_x f * x) + sum over layers of psi(grad_b f * b),   psi = upsample(rescale(abs(.))),

rescale taking each sample's tensor (all of a layer's channels together, as the authors' code does) to
[0, 1] (minimum subtracted, divided by the maximum), then summed over channels; the sum over channels
and the upsampling (bilinear for images, linear for sequences) commute, so channels are summed first, and
the layers of one resolution are summed before they are upsampled together.

Layers: Conv1d, Conv2d, Linear, BatchNorm1d and BatchNorm2d with a bias. Like the authors' code, only
layers whose output is laid out like the input (convolutions, batch norms) give a map; a linear layer's
bias-gradient (the head's has no positions) counts in the decomposition but not in the map. Biases of
other layers (LayerNorm, attention) are left out, so completeness holds for CNNs of those layers, not
for transformers. Deviations: upsampling with align_corners False, as every CAM here (the authors'
code uses True), and a tensor with a zero range rescales to 0 (the authors divide by max + 1e-6).
pytorch-grad-cam's FullGrad differs more: it rescales every channel separately, takes only Conv2d and
BatchNorm2d layers and rescales the final map to [0, 1].

One forward and one backward pass per chunk of rows: forward hooks (always removed) keep every biased
layer's output, the model going on with a copy so that an in-place op after it cannot change the kept
tensor, and one ``autograd.grad`` call gives the input's gradient and every layer output's.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from xaibench.attribution.base import METHODS, Method
from xaibench.attribution.cam_layer import upsample_map
from xaibench.attribution.chunks import map_chunks
from xaibench.core.errors import IncompatibleError
from xaibench.core.lazy import lazy_import
from xaibench.models.layers import is_layer, named_layers, require_hooks

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


@dataclasses.dataclass(frozen=True)
class BiasGradient:
    """grad_b f * b of one layer call, broadcast over its output; ``placed``: whether it is a map laid
    out like the input (a convolution's or batch norm's), which FullGrad's map sums."""

    layer: str
    value: torch.Tensor
    placed: bool


@dataclasses.dataclass(frozen=True)
class FullGradients:
    """The full-gradient decomposition of logit[target] for each sample: ``input`` is grad_x f * x
    (N, *shape), ``biases`` one entry per call of a biased layer."""

    input: torch.Tensor
    biases: list[BiasGradient]


def _effective_bias(module: torch.nn.Module) -> tuple[torch.Tensor, bool] | None:
    """The bias the layer adds and whether it is per channel (axis 1; else along the last axis), or None.

    Raises:
        IncompatibleError: a batch norm that normalises with the batch's statistics.
    """
    bias = getattr(module, "bias", None)
    if is_layer(module, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d):
        mean, variance = getattr(module, "running_mean", None), getattr(module, "running_var", None)
        if module.training or mean is None or variance is None:
            raise IncompatibleError("fullgrad needs batch norm in eval mode with running statistics; call "
                                    "model.eval()")
        scale = variance.add(module.eps).rsqrt()
        if module.weight is not None:
            scale = scale * module.weight
        return (-mean * scale if bias is None else bias - mean * scale).detach(), True
    if bias is None:
        return None
    if is_layer(module, torch.nn.Conv1d, torch.nn.Conv2d):
        return bias.detach(), True
    if is_layer(module, torch.nn.Linear):
        return bias.detach(), False
    return None


def full_gradients(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> FullGradients:
    """The full-gradient decomposition (module docstring) in one forward and one backward pass.

    Raises:
        IncompatibleError: the model's output carries no gradients, its layers cannot run hooks, or a
            batch norm is in training mode.
    """
    require_hooks(model)
    biased = [(name, module, found) for name, module in named_layers(model)
              if (found := _effective_bias(module)) is not None]
    calls: list[tuple[str, torch.Tensor, torch.Tensor, bool]] = []

    def keeper(name: str, bias: torch.Tensor, per_channel: bool) -> object:
        def keep(_module: torch.nn.Module, _args: tuple, output: object) -> object:
            if not isinstance(output, torch.Tensor):
                return None
            calls.append((name, output, bias, per_channel))
            return output.clone()  # an in-place op after the layer changes the copy, not the kept output

        return keep

    handles = []
    try:  # registered inside: a registration that fails removes those made before it
        for name, module, found in biased:
            handles.append(module.register_forward_hook(keeper(name, *found)))
        with torch.enable_grad():
            x = inputs.detach().requires_grad_(True)
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if not (isinstance(logits, torch.Tensor) and logits.requires_grad):
        raise IncompatibleError("the model gives no gradients; use a perturbation method")
    picked = logits.gather(1, target[:, None]).sum()
    grads = torch.autograd.grad(picked, [x, *(output for _, output, _, _ in calls)], allow_unused=True)
    biases = []
    for (name, output, bias, per_channel), grad in zip(calls, grads[1:], strict=True):
        if grad is None:  # the output does not reach the logit
            grad = torch.zeros_like(output)
        shape = (1, -1, *(1,) * (output.ndim - 2)) if per_channel else (-1,)
        biases.append(BiasGradient(name, grad * bias.view(shape), per_channel and output.ndim == inputs.ndim))
    return FullGradients(grads[0] * x.detach(), biases)


def rescaled(values: torch.Tensor) -> torch.Tensor:
    """|values| shifted and scaled per sample (over all other axes) to [0, 1]; 0 where the range is 0."""
    magnitude = values.abs()
    shape = (-1, *(1,) * (values.ndim - 1))
    shifted = magnitude - magnitude.flatten(1).min(1).values.view(shape)
    top = shifted.flatten(1).max(1).values.view(shape)
    return torch.where(top > 0, shifted / torch.where(top > 0, top, torch.ones_like(top)), torch.zeros_like(shifted))


def rescaled_channel_sum(values: torch.Tensor) -> torch.Tensor:
    """``rescaled(values).sum(1, keepdim=True)`` without building the rescaled tensor: the shift and the
    scale are per sample, so the division moves out of the channel sum onto the (N, 1, ...) map, 64 to
    512 times smaller than a ResNet-18's batch-norm outputs."""
    magnitude = values.abs()
    flat = magnitude.flatten(1)
    low, high = flat.amin(1), flat.amax(1)  # on a CPU 10x faster than aminmax or min and max
    shape = (-1, *(1,) * (values.ndim - 1))
    top = (high - low).view(shape)
    summed = magnitude.sub_(low.view(shape)).sum(1, keepdim=True)
    return torch.where(top > 0, summed / torch.where(top > 0, top, torch.ones_like(top)), torch.zeros_like(summed))


def fullgrad_map(parts: FullGradients, inputs: torch.Tensor) -> torch.Tensor:
    """FullGrad's map (N, 1, *spatial) from the decomposition of ``inputs``. Upsampling is linear, so the
    maps of one resolution are summed first and upsampled once."""
    by_size: dict[tuple[int, ...], torch.Tensor] = {}
    for bias in parts.biases:
        if bias.placed:
            part = rescaled_channel_sum(bias.value)
            size = tuple(part.shape[2:])
            by_size[size] = by_size[size] + part if size in by_size else part
    total = rescaled_channel_sum(parts.input)
    for part in by_size.values():
        total = total + upsample_map(part, inputs)
    return total


@METHODS.register("fullgrad")
class FullGrad(Method):
    """FullGrad (Srinivas & Fleuret, 2019): the module docstring says what is computed and where it
    differs from the authors' and pytorch-grad-cam's code."""

    modalities = ("image", "sequence")
    category = "cam"
    signed = False
    description = "FullGrad: input-gradient and every layer's bias-gradients, as maps (Srinivas & Fleuret 2019)"

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Method.Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        target = target.to(inputs.device)

        def chunk(rows: slice) -> torch.Tensor:
            parts = full_gradients(model, inputs[rows], target[rows])
            return fullgrad_map(parts, inputs[rows]).expand_as(inputs[rows])

        return map_chunks(inputs, batch_size, chunk)
