"""A loaded model's layers as every format shows them: their names, their types, and whether hooks run.

Names are ``named_modules``' for every format (an exported program is unflattened under the eager
model's names, ``xaibench.models.exported``). Types are the eager class names: TorchScript keeps them as
``original_name``, and exported layers get the same attribute where they are not restored as the
``torch.nn`` layers they were. Methods on layers attach Python forward hooks; ``require_hooks`` is the
one place that refuses a model where they cannot work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench.core.errors import IncompatibleError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
    from torch import nn
else:
    torch = lazy_import("torch")

TORCHSCRIPT_HOOKS = ("TorchScript models do not run Python hooks, which this method needs on the model's "
                     "layers; save the model as a .pt2 program (torch.export.save), a state_dict (with "
                     "--arch) or a pickled module instead")


def layer_type(module: nn.Module) -> str:
    """The class name of the layer in the eager model (``Conv2d``), whatever format it was loaded from."""
    return getattr(module, "original_name", None) or type(module).__name__


def is_layer(module: nn.Module, *classes: type[nn.Module]) -> bool:
    """Whether ``module`` is one of ``classes``, or was one before it was scripted or exported."""
    return isinstance(module, classes) or layer_type(module) in {kind.__name__ for kind in classes}


def named_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(dotted name, module) for every submodule, the model itself left out: the names ``--layer`` takes."""
    return [(name, module) for name, module in model.named_modules() if name]


def hook_refusal(model: nn.Module) -> str | None:
    """Why forward hooks on ``model``'s layers cannot work, or None when they can."""
    from xaibench.models.exported import ExportedModule

    for module in model.modules():
        if isinstance(module, torch.jit.ScriptModule):
            return TORCHSCRIPT_HOOKS
        if isinstance(module, ExportedModule) and module.batch_size is not None:
            return (f"this .pt2 program runs only on batches of exactly {module.batch_size} rows, so hooks on "
                    "its layers would see padded chunks; export it again with a dynamic batch dimension "
                    "(torch.export.export(..., dynamic_shapes=...)) or save a state_dict (with --arch)")
    return None


def require_hooks(model: nn.Module) -> None:
    """Refuse, in one line, a model whose layers cannot run Python forward hooks.

    Raises:
        IncompatibleError: a TorchScript model, or an exported program that runs in fixed-size chunks.
    """
    refusal = hook_refusal(model)
    if refusal is not None:
        raise IncompatibleError(refusal)
