"""Class activation maps from gradients: the shared method class, Grad-CAM and Guided Grad-CAM.

A gradient CAM reads a layer's feature maps A (N, C, *spatial) and the gradient G = d logit[target] / d A
in one forward and one backward pass per chunk of rows (``xaibench.attribution.cam_layer``, which also
holds the default layer and the ``layer`` / ``reshape`` parameters), combines them into one map per
sample, keeps its positive part and upsamples it to the input's size (bilinear for images, linear for
sequences). The map is repeated over the input channels so that it has the input's shape. The variants
differ in how A and G are combined (``cam_weights``).

Grad-CAM (Selvaraju et al., 2017) weights the feature maps A_k by alpha_k, the spatial mean of G_k:
relu(sum_k alpha_k A_k). Guided Grad-CAM multiplies the upsampled map with guided backpropagation.

A vision transformer block's tokens are read as their grid of patches (the class token dropped), as
Chefer et al. (CVPR 2021) do for ViTs, so a CAM on a ViT block is computed per patch and upsampled like a
CNN's. A ViT whose head reads the class token gets no gradient on the patch tokens of its last block
(only per-token layers follow it): that layer is refused when named, and the default takes the last
block's ``ln_1`` (the tokens its attention mixes into the class token).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from xaibench.attribution.base import METHODS, Method
from xaibench.attribution.cam_layer import CamParams, Capture, Layer, capture_layer, upsample_map
from xaibench.attribution.chunks import map_chunks
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import captum
    import torch
else:
    captum = lazy_import("captum")
    torch = lazy_import("torch")

__all__ = ["CamParams", "Capture", "GradientCam", "capture_layer", "grad_cam", "upsample_map"]


def grad_cam_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """sum_k alpha_k A_k with alpha_k the spatial mean of G_k: (N, *spatial), before the ReLU."""
    alpha = gradients.flatten(2).mean(2)
    return torch.einsum("nc,nc...->n...", alpha, activations)


def grad_cam(model: torch.nn.Module, layer: str | Layer | None, inputs: torch.Tensor, target: torch.Tensor,
             reshape: str = "auto") -> torch.Tensor:
    """Grad-CAM at ``layer`` at the layer's resolution: (N, 1, *spatial').

    Raises:
        IncompatibleError, InputError: see ``capture_layer``.
    """
    capture = capture_layer(model, layer, inputs, target, gradients=True, reshape=reshape)
    return torch.relu(grad_cam_map(capture.activations, capture.gradients)).unsqueeze(1)


class GradientCam(Method):
    """A CAM whose map is ``relu(combine(A, G))`` at one layer, upsampled to the input (module docstring).
    Subclasses set ``combine``: (activations, gradients), both (n, C, *spatial), to (n, *spatial)."""

    modalities = ("image", "sequence")
    category = "cam"
    signed = False
    combine: ClassVar[staticmethod]
    Params = CamParams

    def cams(self, model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor,
             params: CamParams, batch_size: int | None, weigh: object = None) -> torch.Tensor:
        """The upsampled maps, one chunk of rows per pass; ``weigh(rows, cam)`` may scale each chunk's
        maps (Guided Grad-CAM multiplies them with guided backpropagation)."""
        layer: str | Layer | None = params.layer
        target = target.to(inputs.device)

        def chunk(rows: slice) -> torch.Tensor:
            nonlocal layer  # the default layer is chosen on the first chunk and kept for the others
            capture = capture_layer(model, layer, inputs[rows], target[rows], gradients=True,
                                    reshape=params.reshape)
            layer = capture.layer
            cam = torch.relu(type(self).combine(capture.activations, capture.gradients)).unsqueeze(1)
            cam = upsample_map(cam, inputs[rows])
            return cam.expand_as(inputs[rows]) if weigh is None else weigh(rows, cam)

        return map_chunks(inputs, batch_size, chunk)

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: CamParams,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return self.cams(model, inputs, target, params, batch_size)


@METHODS.register("gradcam")
class GradCam(GradientCam):
    """Grad-CAM (Selvaraju et al., 2017): relu(sum_k mean(G_k) A_k), upsampled; by default at the last
    learned feature map before the head (``cam_layer``)."""

    description = "Grad-CAM at a convolutional layer, upsampled (Selvaraju et al. 2017)"
    combine = staticmethod(grad_cam_map)


@METHODS.register("guided_gradcam")
class GuidedGradCam(GradientCam):
    """Guided Grad-CAM (Selvaraju et al., 2017): guided backpropagation times the upsampled Grad-CAM.

    Equals ``captum.attr.GuidedGradCam`` with interpolate_mode bilinear (images) or linear
    (sequences) on a convolutional layer; composed here from captum's guided backpropagation and
    Grad-CAM so that a layer without a spatial output raises instead of silently giving an empty map,
    and a transformer block's tokens are read as their patch grid.
    """

    signed = True
    description = "guided backpropagation times Grad-CAM (Selvaraju et al. 2017)"
    combine = staticmethod(grad_cam_map)

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: CamParams,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        guided = captum.attr.GuidedBackprop(model)
        device_target = target.to(inputs.device)

        def weigh(rows: slice, cam: torch.Tensor) -> torch.Tensor:
            return guided.attribute(inputs[rows], target=device_target[rows]) * cam

        return self.cams(model, inputs, target, params, batch_size, weigh)
