"""Feature groups for perturbation methods: square patches, sequence segments, single features.

A feature mask gives every input element the integer id of its group (0..G-1); the perturbation
methods switch whole groups on or off. Groups span all channels, so an image patch is removed in every
channel at once, as in LIME's superpixels (Ribeiro et al., 2016) and occlusion (Zeiler & Fergus, 2014).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench.attribution.base import modality_of
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def default_patch(inputs: torch.Tensor) -> int:
    """Patch side for a batch: an eighth of the image's shorter side, a tenth of a sequence, 1 feature."""
    modality = modality_of(inputs)
    if modality == "image":
        return max(1, min(inputs.shape[2:]) // 8)
    if modality == "sequence":
        return max(1, inputs.shape[-1] // 10)
    return 1


def feature_mask(inputs: torch.Tensor, patch: int | None) -> torch.Tensor:
    """Group ids (1, *sample_shape), int64, shared by every sample of ``inputs``.

    Images: squares of ``patch`` pixels (the last row and column of squares may be smaller), the same
    group in every channel. Sequences: segments of ``patch`` steps across all channels. Tabular:
    runs of ``patch`` consecutive features (1, the default, gives one group per feature).

    Raises:
        InputError: when ``patch`` is below 1.
    """
    side = default_patch(inputs) if patch is None else patch
    if side < 1:
        raise InputError(f"patch must be at least 1, got {side}")
    device = inputs.device
    if modality_of(inputs) == "image":
        height, width = inputs.shape[2:]
        rows = torch.arange(height, device=device) // side
        cols = torch.arange(width, device=device) // side
        ids = rows[:, None] * (-(-width // side)) + cols[None, :]
    else:
        ids = torch.arange(inputs.shape[-1], device=device) // side
    return ids.expand(inputs.shape[1:]).unsqueeze(0).contiguous()
