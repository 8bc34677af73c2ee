"""Inspecting a loaded model: its leaf layers, their output shapes and the parameter counts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from xaibench.core.devices import module_device
from xaibench.core.errors import InputError, first_line
from xaibench.core.lazy import lazy_import
from xaibench.models.layers import hook_refusal, layer_type

if TYPE_CHECKING:
    import torch
    from torch import nn

    from xaibench.models.formats import LoadedModel
else:
    torch = lazy_import("torch")

Shape = list[Any]  # a list of ints, or of such lists for layers returning several tensors


def summarize(loaded: LoadedModel, input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """A JSON-able description of ``loaded``.

    Output shapes come from forward hooks on the leaf modules during one forward pass of a zero
    sample of ``input_shape`` (default: ``meta.input_shape``), so they start with the batch axis, 1.
    Layer names and types are those every layer method sees (``xaibench.models.layers``). Where hooks
    cannot run (TorchScript; an exported program fixed to one batch size) layers are listed with
    ``output_shape`` None, as are all layers when no input shape is known.

    Returns:
        ``{"format", "meta", "input_shape", "layers": [{"name", "type", "output_shape", "params"}],
        "parameters", "trainable"}``.

    Raises:
        InputError: the model's forward fails on a sample of that shape.
    """
    module = loaded.module
    shape = input_shape if input_shape is not None else loaded.meta.input_shape
    leaves = [(name, m) for name, m in module.named_modules() if next(m.children(), None) is None]
    shapes: dict[str, Shape | None] = {}
    if shape is not None and hook_refusal(module) is None:
        shapes = _output_shapes(module, leaves, tuple(shape))
    layers = [
        {"name": name, "type": layer_type(m),
         "output_shape": shapes.get(name), "params": sum(p.numel() for p in m.parameters(recurse=False))}
        for name, m in leaves
    ]
    parameters = list(module.parameters())
    return {
        "format": loaded.format,
        "meta": loaded.meta.to_dict(),
        "input_shape": None if shape is None else list(shape),
        "layers": layers,
        "parameters": sum(p.numel() for p in parameters),
        "trainable": sum(p.numel() for p in parameters if p.requires_grad),
    }


def _output_shapes(module: nn.Module, leaves: list[tuple[str, nn.Module]],
                   shape: tuple[int, ...]) -> dict[str, Shape | None]:
    sample = torch.zeros((1, *shape), device=module_device(module))
    with _recording(leaves) as shapes, torch.no_grad():
        try:
            module(sample)
        except Exception as error:  # any failure of the user's forward means the shape does not fit
            raise InputError(f"the model does not run on inputs of shape {shape}: "
                             f"{first_line(error)}") from error
    return shapes


@contextmanager
def _recording(leaves: list[tuple[str, nn.Module]]) -> Iterator[dict[str, Shape | None]]:
    """Hooks that record each leaf's first output shape; removed on exit, even on error."""
    shapes: dict[str, Shape | None] = {}
    handles = []

    def recorder(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            shapes.setdefault(name, _shape_of(output))
        return hook

    try:
        for name, leaf in leaves:
            handles.append(leaf.register_forward_hook(recorder(name)))
        yield shapes
    finally:
        for handle in handles:
            handle.remove()


def _shape_of(output: Any) -> Shape | None:
    if isinstance(output, torch.Tensor):
        return list(output.shape)
    if isinstance(output, (tuple, list)):
        return [_shape_of(item) for item in output]
    return None
