"""The Grad-CAM variants: other ways to combine a layer's feature maps A and the gradient G there.

Each is a ``GradientCam`` (``xaibench.attribution.cam``): one forward and one backward pass per chunk of
rows at the same layer as Grad-CAM (same default, ``layer`` and ``reshape`` parameters), the map's
positive part upsampled to the input. With A_k the k-th channel's map, G_k = d logit[target] / d A_k
and sums over the spatial positions ij:

  Grad-CAM++  w_k = sum_ij alpha_kij relu(G_kij),
              alpha_kij = G_kij^2 / (2 G_kij^2 + sum_ab A_kab G_kij^3)        relu(sum_k w_k A_k)
  XGradCAM    w_k = sum_ij A_kij G_kij / sum_ij A_kij                         relu(sum_k w_k A_k)
  LayerCAM    relu(sum_k relu(G_k) * A_k)       (elementwise)
  HiResCAM    relu(sum_k G_k * A_k)             (elementwise)

A ratio whose denominator is exactly zero is taken as 0 (pytorch-grad-cam adds 1e-7 or 1e-6 to the
denominators instead). Unlike pytorch-grad-cam, maps are not rescaled to [0, 1] per image: their scale
is kept, as for Grad-CAM here, and metrics that need a range normalise themselves.

On a layer followed by global average pooling and a linear head, G_k = W[target, k] / positions at every
position, and Grad-CAM, XGradCAM (where sum A_k != 0) and HiResCAM give the same map; LayerCAM too when
the head's weights are non-negative.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench.attribution.base import METHODS
from xaibench.attribution.cam import GradientCam
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, 0 where the denominator is 0."""
    safe = torch.where(denominator == 0, torch.ones_like(denominator), denominator)
    return torch.where(denominator == 0, torch.zeros_like(numerator), numerator / safe)


def _channel_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """sum_k w_k A_k for weights (N, C): (N, *spatial)."""
    return torch.einsum("nc,nc...->n...", weights, activations)


def grad_cam_plus_plus_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++'s sum_k w_k A_k (module docstring), before the ReLU."""
    squared = gradients.square()
    totals = activations.flatten(2).sum(2).view(*activations.shape[:2], *(1,) * (activations.ndim - 2))
    alpha = _ratio(squared, 2 * squared + totals * squared * gradients)
    weights = (alpha * torch.relu(gradients)).flatten(2).sum(2)
    return _channel_sum(weights, activations)


def xgrad_cam_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """XGradCAM's sum_k w_k A_k (module docstring), before the ReLU."""
    weights = _ratio((activations * gradients).flatten(2).sum(2), activations.flatten(2).sum(2))
    return _channel_sum(weights, activations)


def layer_cam_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """LayerCAM's sum_k relu(G_k) * A_k, before the ReLU."""
    return (torch.relu(gradients) * activations).sum(1)


def hires_cam_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """HiResCAM's sum_k G_k * A_k, before the ReLU."""
    return (gradients * activations).sum(1)


@METHODS.register("gradcam_plus_plus")
class GradCamPlusPlus(GradientCam):
    """Grad-CAM++ (Chattopadhay, Sarkar, Howlader & Balasubramanian, WACV 2018).

    The class score is taken as Y = exp(S), S the logit, so that for a piecewise-linear network the
    second and third derivatives of Y are exp(S) G^2 and exp(S) G^3 and the paper's closed form for the
    pixel weights is alpha = G^2 / (2 G^2 + sum_ab A_ab G^3) (its eq. 19). The channel weights are
    sum_ij alpha_ij relu(G_ij): the authors' code multiplies them by the positive per-sample factor
    exp(S), which leaves the map's shape as it is but overflows float32 for logits above 88; like
    pytorch-grad-cam, it is left out here. pytorch-grad-cam computes the same alpha with 1e-6 added to the
    denominator; here a zero denominator (where G = 0) gives alpha = 0 without that shift. The paper
    derives alpha for non-negative activations (after a ReLU); on a signed layer such as a ViT's ``ln_1``
    the sum of A G^3 can make the denominator negative or near 0, and alpha with it.
    """

    description = "Grad-CAM++: pixel-weighted positive gradients (Chattopadhay et al. 2018)"
    combine = staticmethod(grad_cam_plus_plus_map)


@METHODS.register("xgradcam")
class XGradCam(GradientCam):
    """XGradCAM (Fu, Hu, Dong, Wang, Zhou & Zhang, BMVC 2020, "Axiom-based Grad-CAM").

    Channel weights sum_ij A_kij G_kij / sum_ij A_kij, the weights that satisfy the paper's sensitivity
    and conservation axioms for a ReLU network; a channel with sum A_k = 0 gets weight 0 (pytorch-grad-cam
    adds 1e-7 to the denominator). The weights assume non-negative activations (after a ReLU); on a
    signed layer such as a ViT's ``ln_1`` the sum of A_k may cancel to near 0 and the weight blow up.
    """

    description = "XGradCAM: activation-weighted gradients per channel (Fu et al. 2020)"
    combine = staticmethod(xgrad_cam_map)


@METHODS.register("layercam")
class LayerCam(GradientCam):
    """LayerCAM (Jiang, Zhang, Hou, Cheng & Wei, IEEE TIP 2021): relu(sum_k relu(G_k) * A_k), each
    position weighted by its own positive gradient, which keeps fine detail at earlier layers. The paper
    fuses maps of several layers; one layer is computed here (pass ``layer``), as in pytorch-grad-cam."""

    description = "LayerCAM: positive gradients times activations per position (Jiang et al. 2021)"
    combine = staticmethod(layer_cam_map)


@METHODS.register("hirescam")
class HiResCam(GradientCam):
    """HiResCAM (Draelos & Carin, 2020, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks"): relu(sum_k G_k * A_k), the gradient multiplied elementwise instead of
    averaged, so that for a network whose head is one linear layer on the flattened map the map is that
    layer's contribution of each position. The paper defines the signed sum; its positive part is kept
    here, as pytorch-grad-cam does, so that the map reads like the other CAMs (the evidence against the
    class is dropped)."""

    description = "HiResCAM: gradients times activations per position (Draelos & Carin 2020)"
    combine = staticmethod(hires_cam_map)
