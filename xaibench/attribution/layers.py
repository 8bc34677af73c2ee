"""Choosing a model layer by dotted name, or the last convolution when none is named."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench.core.errors import IncompatibleError, UnknownNameError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def find_layer(module: torch.nn.Module, name: str | None) -> tuple[str, torch.nn.Module]:
    """The submodule called ``name`` (dotted, as in ``named_modules``), or the last Conv1d/Conv2d.

    Raises:
        UnknownNameError: when no submodule has that name (suggesting the closest one).
        IncompatibleError: when ``name`` is None and the model has no convolution.
    """
    named = dict(module.named_modules())
    named.pop("", None)  # the model itself is not a layer
    if name is not None:
        if name not in named:
            raise UnknownNameError.for_name("layer", name, list(named))
        return name, named[name]
    convolutions = [(n, m) for n, m in named.items() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d))]
    if not convolutions:
        raise IncompatibleError("no convolutional layer; pass --layer")
    return convolutions[-1]
