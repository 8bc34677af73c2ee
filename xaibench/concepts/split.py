"""The model split at a layer, f = h o g, and the activations concept extraction factorises.

g(x) is the layer's output; h(a) the rest of the model from there. An ``nn.Sequential`` model split at
one of its direct children is cut into two ``nn.Sequential`` halves, so h costs only the layers after
the split. Any other model is split by injection: h(a) runs the model on zero inputs with a forward
hook that replaces the layer's output by ``a`` (the hook is always removed). Both are checked once on
real inputs: h(g(x)) must reproduce the model's logits, which fails for a model whose later layers read
tensors from before the split (a skip connection across it); that model gets a clear error instead of
wrong concepts.

Activations (Fel et al. 2023; CRAFT, Fel et al. CVPR 2023):
  patches   CRAFT: crops on a regular grid (stride 0.8 x the crop size), each resized to the input size,
            passed through g and averaged over space: one vector per crop.
  holistic  every spatial position of full images: one vector per position.
  pooled    one vector per image, g(x) averaged over space.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.attribution.layer_path import layer_activations
from xaibench.core.batches import row_slices
from xaibench.core.errors import InputError, UnknownNameError
from xaibench.models.layers import is_layer, named_layers, require_hooks

MODES = ("patches", "holistic", "pooled")
DEFAULT_CROP_ROWS = 256  # crops per chunk without a batch size: one call over all crops was 1.3x slower


@dataclass(frozen=True)
class Split:
    """f = h o g at ``layer``; ``g`` and ``h`` take and return batches."""

    layer: str
    g: Callable[[torch.Tensor], torch.Tensor]
    h: Callable[[torch.Tensor], torch.Tensor]


def default_layer(model: nn.Module) -> str:
    """The last convolutional block's output: the last activation module after the last convolution,
    or that convolution itself when none follows it."""
    named = named_layers(model)
    convs = [i for i, (_, m) in enumerate(named) if is_layer(m, nn.Conv1d, nn.Conv2d)]
    if not convs:
        raise InputError("the model has no convolution; pass --layer")
    after = [n for n, m in named[convs[-1] + 1:] if is_layer(m, nn.ReLU, nn.GELU, nn.SiLU, nn.LeakyReLU,
                                                             nn.ELU, nn.Tanh, nn.Sigmoid)]
    return after[-1] if after else named[convs[-1]][0]


def split_model(model: nn.Module, layer: str, probe: torch.Tensor) -> Split:
    """Split ``model`` after ``layer`` and check the split on ``probe`` inputs (a few real samples).

    Raises:
        UnknownNameError: no layer of that name.
        IncompatibleError: the split needs hooks, which the model's layers cannot run.
        InputError: h(g(x)) does not reproduce the model (a skip connection across the layer).
    """
    named = dict(model.named_modules())
    if not layer or layer not in named:
        raise UnknownNameError.for_name("layer", layer, [n for n in named if n])
    children = list(model.named_children())
    if isinstance(model, nn.Sequential) and layer in dict(children):
        cut = [n for n, _ in children].index(layer) + 1
        head, tail = nn.Sequential(*[m for _, m in children[:cut]]), nn.Sequential(*[m for _, m in children[cut:]])
        split = Split(layer, head, tail)
    else:
        require_hooks(model)
        split = Split(layer, lambda x: layer_activations(model, named[layer], x, None),
                      _injected(model, named[layer], tuple(probe.shape[1:])))
    with torch.no_grad():
        expected, got = model(probe), split.h(split.g(probe))
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-4):
        raise InputError(f"the model cannot be split at {layer}: the layers after it do not reproduce the "
                         "model's outputs from its activations alone (a skip connection across it?)")
    return split


def _injected(model: nn.Module, layer: nn.Module, sample_shape: tuple[int, ...]) -> Callable:
    def h(activations: torch.Tensor) -> torch.Tensor:
        handle = layer.register_forward_hook(lambda module, args, output: activations)
        try:
            return model(torch.zeros(activations.shape[0], *sample_shape, dtype=activations.dtype))
        finally:
            handle.remove()
    return h


def activations(split: Split, inputs: torch.Tensor, mode: str, *, patch_size: float = 0.25,
                batch_size: int | None = None) -> torch.Tensor:
    """The rows to factorise, (n, channels), for ``mode`` (see the module docstring).

    Args:
        patch_size: the crop side as a fraction of the image side (patches mode).
    """
    if mode not in MODES:
        raise UnknownNameError.for_name("activation mode", mode, list(MODES))
    if mode == "patches":  # crops built, passed through g and pooled a chunk of images at a time
        per_image = crops(inputs[:1], patch_size).shape[0]
        images = max(1, (batch_size or DEFAULT_CROP_ROWS) // per_image)
        return torch.cat([_pooled(split, crops(inputs[first:first + images], patch_size), batch_size)
                          for first in range(0, inputs.shape[0], images)])
    if mode == "pooled":
        return _pooled(split, inputs, batch_size)
    return positions(feature_maps(split, inputs, batch_size))


def feature_maps(split: Split, inputs: torch.Tensor, batch_size: int | None) -> torch.Tensor:
    """g(x) for every input, (N, C, *spatial), in row chunks without gradients."""
    with torch.no_grad():
        return torch.cat([split.g(inputs[rows]) for rows in row_slices(inputs.shape[0], batch_size)])


def positions(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N * positions, C): one row per spatial position."""
    return maps.flatten(2).transpose(1, 2).reshape(-1, maps.shape[1]) if maps.ndim > 2 else maps


def _pooled(split: Split, inputs: torch.Tensor, batch_size: int | None) -> torch.Tensor:
    maps = feature_maps(split, inputs, batch_size)
    return maps.flatten(2).mean(2) if maps.ndim > 2 else maps


def crop_boxes(size: int, patch: int) -> list[int]:
    """Start offsets of crops of side ``patch`` along a side of ``size`` with stride 0.8 x patch (CRAFT),
    the last one flush with the border so the whole side is covered."""
    stride = max(1, int(0.8 * patch))
    starts = list(range(0, max(size - patch, 0) + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def crops(inputs: torch.Tensor, patch_size: float) -> torch.Tensor:
    """Grid crops of images (N, C, H, W), each resized back to (H, W): (N * crops, C, H, W), image-major."""
    if inputs.ndim != 4:
        raise InputError("patch activations need images (N, C, H, W); use --mode holistic or pooled")
    if not 0 < patch_size <= 1:
        raise InputError(f"patch size must be in (0, 1], got {patch_size}")
    h, w = inputs.shape[2:]
    ph, pw = max(1, round(patch_size * h)), max(1, round(patch_size * w))
    tiles = [inputs[:, :, y:y + ph, x:x + pw] for y in crop_boxes(h, ph) for x in crop_boxes(w, pw)]
    stacked = torch.stack(tiles, dim=1).flatten(0, 1)
    return F.interpolate(stacked, size=(h, w), mode="bilinear", align_corners=False)
