"""Class activation maps through captum: Grad-CAM and Guided Grad-CAM.

Grad-CAM (Selvaraju et al., 2017) weights a layer's feature maps A_k by alpha_k, the spatial mean of
d logit[target] / d A_k, keeps relu(sum_k alpha_k A_k), and upsamples it to the input's size (bilinear
for images, linear for sequences). The map is repeated over the input channels so that it has the
input's shape. Guided Grad-CAM multiplies it with guided backpropagation.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from xaibench.attribution.base import METHODS, Method
from xaibench.attribution.chunks import map_chunks
from xaibench.attribution.layers import find_layer
from xaibench.core.errors import IncompatibleError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import captum
    import torch
else:
    captum = lazy_import("captum")
    torch = lazy_import("torch")


def upsampled_grad_cam(
    model: torch.nn.Module, layer: tuple[str, torch.nn.Module], inputs: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Grad-CAM at ``layer`` (name, module), upsampled to the inputs' spatial size: (N, 1, *spatial).

    Raises:
        IncompatibleError: when the layer's output is not a feature map with the inputs' spatial rank.
    """
    name, module = layer
    cam = captum.attr.LayerGradCam(model, module).attribute(inputs, target=target, relu_attributions=True)
    if not isinstance(cam, torch.Tensor) or cam.ndim != inputs.ndim:
        raise IncompatibleError(
            f"layer {name!r} does not output a feature map like the input's; pass --layer"
        )
    mode = "bilinear" if inputs.ndim == 4 else "linear"
    return captum.attr.LayerAttribution.interpolate(cam, tuple(inputs.shape[2:]), interpolate_mode=mode)


@METHODS.register("gradcam")
class GradCam(Method):
    """Grad-CAM (Selvaraju et al., 2017) at a convolutional layer, by default the last one."""

    modalities = ("image", "sequence")
    category = "cam"
    signed = False
    description = "Grad-CAM at a convolutional layer, upsampled (Selvaraju et al. 2017)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """layer: dotted module name; None picks the last Conv1d/Conv2d."""

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
    (sequences); composed here from captum's parts so that a layer without a spatial output raises
    instead of silently giving an empty map.
    """

    modalities = ("image", "sequence")
    category = "cam"
    description = "guided backpropagation times Grad-CAM (Selvaraju et al. 2017)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """layer: dotted module name; None picks the last Conv1d/Conv2d."""

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
