"""BEE's per-input context: the model's own embedding of the input, reduced to a small fixed dimension.

BEE (Barkan et al., AAAI 2025) conditions its choice of baseline family on a context vector c(x); the
authors take a frozen ResNet18 embedding with a trainable linear head to 100 dimensions. xaibench uses
the explained model itself, so no second network is needed: the input of its last linear layer (the
penultimate features, where a classifier's evidence is already linear), or the output of a named layer,
projected to ``dim - 1`` dimensions by a fixed random Gaussian matrix (Johnson-Lindenstrauss: distances
are roughly kept), scaled to unit length, and extended by a constant 1 so that the policy's linear model
has a bias term. The projection is seeded by a constant, not by the run's generator, so one policy file
means the same context for every later run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench.attribution.layers import find_layer
from xaibench.core.batches import row_slices
from xaibench.core.errors import IncompatibleError, InputError
from xaibench.core.lazy import lazy_import
from xaibench.models.layers import is_layer, named_layers, require_hooks

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

PROJECTION_SEED = 20250225  # fixed: a saved policy must see the same projection in every run


def context_layer(model: torch.nn.Module, name: str | None) -> tuple[str, torch.nn.Module, bool]:
    """The layer whose activation is the context: (name, module, True) for the input of the last
    ``nn.Linear`` when ``name`` is None, else (name, module, False) for that layer's output.

    Raises:
        IncompatibleError: when the model's layers cannot run hooks, or ``name`` is None and the model
            has no linear layer.
    """
    require_hooks(model)
    if name is not None:
        found, module = find_layer(model, name)
        return found, module, False
    linears = [(n, m) for n, m in named_layers(model) if is_layer(m, torch.nn.Linear)]
    if not linears:
        raise IncompatibleError("the model has no linear layer to take the context from; pass a layer")
    found, module = linears[-1]
    return found, module, True


def embed(model: torch.nn.Module, inputs: torch.Tensor, layer: str | None, dim: int,
          batch_size: int | None = None) -> torch.Tensor:
    """Contexts (N, dim), float64: projected, unit-length activations plus a constant 1 in the last slot.

    Raises:
        InputError: for dim < 2.
    """
    if dim < 2:
        raise InputError(f"the context needs at least 2 dimensions (one is the bias), got {dim}")
    features = activations(model, inputs, layer, batch_size).flatten(1).double()
    projection = torch.randn((features.shape[1], dim - 1), dtype=torch.float64, device="cpu",
                             generator=torch.Generator().manual_seed(PROJECTION_SEED))
    reduced = torch.nn.functional.normalize(features @ projection.to(features.device), dim=1)
    return torch.cat([reduced, torch.ones_like(reduced[:, :1])], dim=1).cpu()


def activations(model: torch.nn.Module, inputs: torch.Tensor, layer: str | None,
                batch_size: int | None = None) -> torch.Tensor:
    """The context layer's activations for ``inputs`` in row chunks; the hook is always removed."""
    _, module, take_input = context_layer(model, layer)
    captured: list[torch.Tensor] = []

    def hook(_module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        captured.append((args[0] if take_input else output).detach())

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for rows in row_slices(inputs.shape[0], batch_size):
                model(inputs[rows])
    finally:
        handle.remove()
    return torch.cat(captured)
