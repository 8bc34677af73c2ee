"""Class activation maps: Grad-CAM and Guided Grad-CAM.

Grad-CAM (Selvaraju et al., 2017) weights a layer's feature maps A_k by alpha_k, the spatial mean of
d logit[target] / d A_k, keeps relu(sum_k alpha_k A_k), and upsamples it to the input's size (bilinear
for images, linear for sequences). The map is repeated over the input channels so that it has the
input's shape. Guided Grad-CAM multiplies it with guided backpropagation. The layer's output is read as
a feature map by ``xaibench.attribution.layers.feature_map``: a vision transformer block's tokens
become their grid of patches (the class token dropped), as Chefer et al. (CVPR 2021) do for ViTs, so
Grad-CAM on a ViT block is computed per patch and upsampled like a CNN's. A ViT whose head reads the
class token gets no gradient on the patch tokens of its last block (only LayerNorm, per token, follows
it): that layer is refused, and the last block's ``ln_1`` (the tokens its attention mixes into the class
token) or an earlier block gives the map.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from xaibench.attribution.base import METHODS, Method
from xaibench.attribution.chunks import map_chunks
from xaibench.attribution.layers import feature_map, find_layer
from xaibench.core.errors import IncompatibleError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import captum
    import torch
else:
    captum = lazy_import("captum")
    torch = lazy_import("torch")


def grad_cam(
    model: torch.nn.Module, layer: tuple[str, torch.nn.Module], inputs: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Grad-CAM at ``layer`` (name, module) at the layer's resolution: (N, 1, *spatial').

    Raises:
        IncompatibleError: when the layer's output is not a feature map with the inputs' spatial rank.
        InputError: when it is a token sequence that cannot be arranged as a grid.
    """
    name, module = layer
    outputs: list[object] = []

    def keep(_module: torch.nn.Module, _args: tuple, output: object) -> object:
        outputs.append(output)  # the model goes on with a copy: an in-place layer after it cannot change it
        return output.clone() if isinstance(output, torch.Tensor) else None

    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            picked = model(inputs.detach().requires_grad_(True)).gather(1, target[:, None]).sum()
    finally:
        handle.remove()
    output = outputs[-1] if outputs else None
    if not isinstance(output, torch.Tensor) or not output.requires_grad:
        raise IncompatibleError(f"layer {name!r} does not output a feature map like the input's; pass --layer")
    (gradient,) = torch.autograd.grad(picked, output)
    activations, gradient = feature_map(output.detach(), inputs), feature_map(gradient, inputs)
    if activations.ndim != inputs.ndim:
        raise IncompatibleError(f"layer {name!r} does not output a feature map like the input's; pass --layer")
    if output.ndim != activations.ndim and not gradient.any():
        raise IncompatibleError(f"the logits do not depend on the patch tokens of layer {name!r} (a head that "
                                "reads the class token after it?); pass an earlier layer, e.g. the last "
                                "block's ln_1 or the block before it")
    alpha = gradient.flatten(2).mean(2)  # (N, C)
    return torch.relu(torch.einsum("nc,nc...->n...", alpha, activations)).unsqueeze(1)


def upsampled_grad_cam(
    model: torch.nn.Module, layer: tuple[str, torch.nn.Module], inputs: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Grad-CAM at ``layer`` (name, module), upsampled to the inputs' spatial size: (N, 1, *spatial).

    Raises:
        IncompatibleError, InputError: see ``grad_cam``.
    """
    cam = grad_cam(model, layer, inputs, target)
    mode = "bilinear" if inputs.ndim == 4 else "linear"
    return torch.nn.functional.interpolate(cam, size=tuple(inputs.shape[2:]), mode=mode, align_corners=False)


@METHODS.register("gradcam")
class GradCam(Method):
    """Grad-CAM (Selvaraju et al., 2017) at a convolutional layer, by default the last one."""

    modalities = ("image", "sequence")
    category = "cam"
    signed = False
    description = "Grad-CAM at a convolutional layer, upsampled (Selvaraju et al. 2017)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """layer: dotted module name (a transformer block's tokens are read as their patch grid); None
        picks the last Conv1d/Conv2d."""

        layer: str | None = None

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        layer = find_layer(model, params.layer)
        target = target.to(inputs.device)
        return map_chunks(
            inputs,
            batch_size,
            lambda rows: upsampled_grad_cam(model, layer, inputs[rows], target[rows]).expand_as(inputs[rows]),
        )


@METHODS.register("guided_gradcam")
class GuidedGradCam(Method):
    """Guided Grad-CAM (Selvaraju et al., 2017): guided backpropagation times the upsampled Grad-CAM.

    Equals ``captum.attr.GuidedGradCam`` with interpolate_mode bilinear (images) or linear
    (sequences) on a convolutional layer; composed here from captum's guided backpropagation and
    ``upsampled_grad_cam`` so that a layer without a spatial output raises instead of silently giving
    an empty map, and a transformer block's tokens are read as their patch grid.
    """

    modalities = ("image", "sequence")
    category = "cam"
    description = "guided backpropagation times Grad-CAM (Selvaraju et al. 2017)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """layer: dotted module name (a transformer block's tokens are read as their patch grid); None
        picks the last Conv1d/Conv2d."""

        layer: str | None = None

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        layer = find_layer(model, params.layer)
        guided = captum.attr.GuidedBackprop(model)
        target = target.to(inputs.device)

        def chunk(rows: slice) -> torch.Tensor:
            cam = upsampled_grad_cam(model, layer, inputs[rows], target[rows])
            return guided.attribute(inputs[rows], target=target[rows]) * cam

        return map_chunks(inputs, batch_size, chunk)
