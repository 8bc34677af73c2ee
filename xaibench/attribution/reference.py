"""Simple per-sample reference inputs ("baselines") shared by path and ablation methods.

The words follow Quantus: "black" is the sample's minimum, "white" its maximum, "mean" its mean; "zero"
is the all-zero input. Each statistic is taken over the whole sample (all channels), so the reference
is a constant input of the sample's shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench.core.errors import UnknownNameError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

SIMPLE_BASELINES = ("zero", "black", "white", "mean")


def simple_baseline(inputs: torch.Tensor, kind: str) -> torch.Tensor:
    """A constant reference per sample, with the inputs' shape.

    Args:
        inputs: batch (N, *shape).
        kind: zero, black (per-sample minimum), white (per-sample maximum) or mean (per-sample mean).

    Raises:
        UnknownNameError: for another ``kind``.
    """
    if kind not in SIMPLE_BASELINES:
        raise UnknownNameError.for_name("baseline", kind, list(SIMPLE_BASELINES))
    if kind == "zero":
        return torch.zeros_like(inputs)
    flat = inputs.flatten(1)
    value = {"black": flat.amin, "white": flat.amax, "mean": flat.mean}[kind](dim=1)
    return value.view(-1, *([1] * (inputs.ndim - 1))).expand_as(inputs).contiguous()
