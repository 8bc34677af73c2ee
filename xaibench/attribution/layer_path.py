"""Path integration in a layer's activation space, upsampled to the input like Grad-CAM.

BEE's intermediate-layer variant (Barkan et al., AAAI 2025; their code integrates at ResNet's layer4):
with A = the layer's activation of x and b a baseline activation, the attribution of the activation is

    (A - b) * sum_k w_k * d logit / d a  at  a = b + alpha_k (A - b)

(integrated gradients where the network starts at the layer). The activation map is summed over
channels and interpolated to the input's spatial size (bilinear for images, linear for sequences), the
same map for every input channel, as Grad-CAM's maps are; a transformer block's tokens are first
arranged on their patch grid (``xaibench.attribution.layers.feature_map``). Points are injected by a
forward hook that replaces the layer's output; the hook is always removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from xaibench.attribution.base import modality_of
from xaibench.attribution.layers import feature_map
from xaibench.attribution.path import sample_chunks
from xaibench.core.batches import row_slices
from xaibench.core.errors import IncompatibleError
from xaibench.core.lazy import lazy_import
from xaibench.core.progress import advance

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def layer_activations(model: torch.nn.Module, layer: torch.nn.Module, inputs: torch.Tensor,
                      batch_size: int | None) -> torch.Tensor:
    """The layer's output for ``inputs``, in row chunks, without gradients."""
    captured: list[torch.Tensor] = []

    def keep(output: torch.Tensor) -> None:  # returns None: the output is kept as it is
        captured.append(output.detach())

    with _hooked(layer, keep), torch.no_grad():
        for rows in row_slices(inputs.shape[0], batch_size):
            model(inputs[rows])
    return torch.cat(captured)


def layer_path_integral(model: torch.nn.Module, layer: torch.nn.Module, inputs: torch.Tensor,
                        activations: torch.Tensor, baselines: torch.Tensor, target: torch.Tensor,
                        alphas: torch.Tensor, weights: torch.Tensor, batch_size: int | None) -> torch.Tensor:
    """Integrated gradients of the activations (N, *L) from ``baselines`` (N, *L), in the layer's space."""
    steps = alphas.numel()
    shape = (1, steps) + (1,) * (activations.ndim - 1)
    alphas_ = alphas.to(activations).view(shape)
    weights_ = weights.to(activations).view(shape)
    out = torch.empty_like(activations)
    for samples in sample_chunks(inputs.shape[0], steps, batch_size):
        delta = (activations[samples] - baselines[samples]).unsqueeze(1)
        points = (baselines[samples].unsqueeze(1) + alphas_ * delta).flatten(0, 1)
        repeated = inputs[samples].repeat_interleave(steps, dim=0)
        rows = target[samples].repeat_interleave(steps)
        grads = torch.cat([_gradient_at(model, layer, repeated[r], points[r], rows[r])
                           for r in row_slices(points.shape[0], batch_size)])
        out[samples] = (grads.view(delta.shape[0], steps, *activations.shape[1:]) * weights_).sum(1) * delta[:, 0]
        advance(samples.stop - samples.start)
    return out


def upsampled(layer_maps: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Channel sums of (N, C', *spatial') maps (or of the patch grid of (N, T, D) tokens of images),
    interpolated to the inputs' spatial size, per channel.

    Raises:
        IncompatibleError: for tabular inputs or a layer without spatial axes matching the modality.
        InputError: for tokens that cannot be arranged as a grid.
    """
    modality = modality_of(inputs)
    layer_maps = feature_map(layer_maps, inputs)
    if modality == "tabular" or layer_maps.ndim != inputs.ndim:
        raise IncompatibleError("a layer-space map needs image or sequence inputs and a convolutional layer")
    summed = layer_maps.sum(1, keepdim=True)
    mode = "bilinear" if modality == "image" else "linear"
    resized = torch.nn.functional.interpolate(summed, size=tuple(inputs.shape[2:]), mode=mode,
                                              align_corners=False)
    return resized.expand_as(inputs).contiguous()


def _gradient_at(model: torch.nn.Module, layer: torch.nn.Module, inputs: torch.Tensor, points: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
    """d logit[target] / d (the layer's output), with the output replaced by ``points``."""
    with torch.enable_grad():
        injected = points.detach().requires_grad_(True)
        with _hooked(layer, lambda _output: injected):
            picked = model(inputs).gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(picked, injected)
    return grad


@contextmanager
def _hooked(layer: torch.nn.Module, replace: object) -> Iterator[None]:
    """A forward hook on ``layer`` calling ``replace(output)`` (a non-None result replaces the output)."""
    handle = layer.register_forward_hook(lambda _module, _args, output: replace(output))
    try:
        yield
    finally:
        handle.remove()
