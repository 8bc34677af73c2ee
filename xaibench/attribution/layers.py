"""Choosing a model layer by dotted name, or the last convolution when none is named."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench.core.errors import IncompatibleError, UnknownNameError
from xaibench.core.lazy import lazy_import
from xaibench.models.layers import is_layer, named_layers, require_hooks

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def find_layer(module: torch.nn.Module, name: str | None) -> tuple[str, torch.nn.Module]:
    """The submodule called ``name`` (dotted, as in ``named_modules`` and ``inspect``), or the last
    Conv1d/Conv2d (also one that was scripted or exported), for a method that hooks it.

    Raises:
        IncompatibleError: when the model's layers cannot run hooks (``require_hooks``), or ``name`` is
            None and the model has no convolution.
        UnknownNameError: when no submodule has that name (suggesting the closest one).
    """
    named = dict(named_layers(module))
    if name is not None and name not in named:
        raise UnknownNameError.for_name("layer", name, list(named))
    require_hooks(module)
    if name is not None:
        return name, named[name]
    convolutions = [(n, m) for n, m in named.items() if is_layer(m, torch.nn.Conv1d, torch.nn.Conv2d)]
    if not convolutions:
        raise IncompatibleError("no convolutional layer; pass --layer")
    return convolutions[-1]
