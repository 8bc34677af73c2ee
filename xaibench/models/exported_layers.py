"""The layers of a ``torch.export`` program as modules, named and typed as in the eager model.

``torch.export.unflatten`` rebuilds the program's module hierarchy under the eager model's names
(``features.0``), each submodule an ``InterpreterModule`` that runs its piece of the graph; forward hooks
on them fire and their outputs stay in the autograd graph. What does not survive is the layers' class:
code that looks for an ``nn.Conv2d`` (Grad-CAM's default layer, influence's tracked modules) or an
``nn.ReLU`` (captum's guided backpropagation and DeepLift change their gradients) would find none. So a
leaf that was one of the layers in ``RESTORED`` and whose graph is exactly one call of that layer's
operator is replaced by that layer, built around the same parameter tensors: the same computation.
Every other submodule keeps its graph and gets its original class name as ``original_name``,
TorchScript's attribute for the same thing, so that ``xaibench.models.layers.layer_type`` reads both.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.fx.operator_schemas import normalize_function

from xaibench.core.errors import InputError, first_line

aten = torch.ops.aten


def _parameterised(kind: type[nn.Module]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Constructor arguments of a Linear or Conv layer from its operator's, ``weight`` the parameter."""
    def arguments(call: dict[str, Any]) -> dict[str, Any]:
        weight = call["weight"]
        if kind is nn.Linear:
            return {"in_features": weight.shape[1], "out_features": weight.shape[0]}
        return {"in_channels": weight.shape[1] * call["groups"], "out_channels": weight.shape[0],
                "kernel_size": tuple(weight.shape[2:]), "stride": call["stride"], "padding": call["padding"],
                "dilation": call["dilation"], "groups": call["groups"]}
    return arguments


def _pooling(call: dict[str, Any]) -> dict[str, Any]:
    return {"kernel_size": call["kernel_size"], "stride": call["stride"] or None, "padding": call["padding"],
            "dilation": call["dilation"], "ceil_mode": call["ceil_mode"]}


def _elu(call: dict[str, Any]) -> dict[str, Any]:
    if call["scale"] != 1 or call["input_scale"] != 1:  # not nn.ELU: SELU-like scales
        raise ValueError("not an nn.ELU")
    return {"alpha": call["alpha"]}


def _softmax(call: dict[str, Any]) -> dict[str, Any]:
    if call["dtype"] is not None:
        raise ValueError("not an nn.Softmax")
    return {"dim": call["dim"]}


def _none(call: dict[str, Any]) -> dict[str, Any]:
    return {}


def _in_place(arguments: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda call: {**arguments(call), "inplace": True}


# operator -> (torch.nn class whose forward is exactly that call, its constructor's arguments from the call's):
# the layers captum recognises by class (guided backpropagation, deconvolution, DeepLift) and the layers
# that xaibench looks for (Grad-CAM's convolutions, influence's Linear and Conv2d modules)
RESTORED: dict[Any, tuple[type[nn.Module], Callable[[dict[str, Any]], dict[str, Any]]]] = {
    aten.linear.default: (nn.Linear, _parameterised(nn.Linear)),
    aten.conv1d.default: (nn.Conv1d, _parameterised(nn.Conv1d)),
    aten.conv1d.padding: (nn.Conv1d, _parameterised(nn.Conv1d)),
    aten.conv2d.default: (nn.Conv2d, _parameterised(nn.Conv2d)),
    aten.conv2d.padding: (nn.Conv2d, _parameterised(nn.Conv2d)),
    aten.relu.default: (nn.ReLU, _none), aten.relu_.default: (nn.ReLU, _in_place(_none)),
    aten.elu.default: (nn.ELU, _elu), aten.elu_.default: (nn.ELU, _in_place(_elu)),
    aten.sigmoid.default: (nn.Sigmoid, _none), aten.tanh.default: (nn.Tanh, _none),
    aten.softmax.int: (nn.Softmax, _softmax),
    aten.max_pool1d.default: (nn.MaxPool1d, _pooling), aten.max_pool2d.default: (nn.MaxPool2d, _pooling),
}


def unflattened(program: torch.export.ExportedProgram) -> nn.Module:
    """The program as a module tree with the eager model's names and standard layers restored.

    Raises:
        InputError: ``torch.export.unflatten`` fails on the program.
    """
    try:
        with leafspec_notice_ignored():
            root = torch.export.unflatten(program)
    except Exception as error:  # whatever torch raises for a program it cannot unflatten
        raise InputError(f"torch.export.unflatten cannot rebuild the program's modules ({first_line(error)}); "
                         "save a state_dict (with --arch) or a pickled module instead") from error
    types = original_types(program)
    for name, module in list(root.named_modules()):
        restored = _restored(module, types.get(name, "")) if name else None
        if restored is not None:
            parent, _, child = name.rpartition(".")
            setattr(root.get_submodule(parent), child, restored)
        elif name in types:
            module.original_name = types[name].rpartition(".")[2]
    for module in root.modules():  # run the generated code, not torch.fx.Interpreter (2-3x less overhead)
        if hasattr(module, "_run_with_interpreter"):
            module._run_with_interpreter = False
    return root


@contextmanager
def leafspec_notice_ignored() -> Iterator[None]:
    """Hides torch's FutureWarning about its own use of ``LeafSpec`` (unflattening, copying a tree)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
        yield


def original_types(program: torch.export.ExportedProgram) -> dict[str, str]:
    """Module path -> qualified class name of the eager module, from the graph's ``nn_module_stack``."""
    types: dict[str, str] = {}
    for node in program.graph.nodes:
        for path, kind in node.meta.get("nn_module_stack", {}).values():
            types.setdefault(path, kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}")
    return types


def _restored(module: nn.Module, original: str) -> nn.Module | None:
    """The standard layer ``module`` computes, or None when its graph is anything else."""
    graph = getattr(module, "graph", None)
    if next(module.children(), None) is not None or not isinstance(graph, torch.fx.Graph):
        return None
    nodes = list(graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    calls = [n for n in nodes if n.op == "call_function"]
    if len(inputs) != 1 or len(calls) != 1 or calls[0].target not in RESTORED:
        return None
    call, (kind, arguments) = calls[0], RESTORED[calls[0].target]
    if original != f"{kind.__module__}.{kind.__qualname__}" or nodes[-1].args[0] is not call:
        return None
    normalised = normalize_function(call.target, call.args, call.kwargs, normalize_to_only_use_kwargs=True)
    if normalised is None or normalised.kwargs.get("input", normalised.kwargs.get("self")) is not inputs[0]:
        return None
    weights = {key: _parameter(module, normalised.kwargs.get(key)) for key in ("weight", "bias")}
    if any(weight is False for weight in weights.values()):
        return None
    parameterised = weights["weight"] is not None
    extra = {"bias": weights["bias"] is not None, "device": "meta"} if parameterised else {}
    try:
        layer = kind(**arguments({**normalised.kwargs, **weights}), **extra)
    except (TypeError, ValueError):  # a call the layer's constructor cannot express
        return None
    if parameterised:  # the program's own parameters, not copies
        layer.weight, layer.bias = weights["weight"], weights["bias"]
    return layer


def _parameter(module: nn.Module, node: object) -> nn.Parameter | None | bool:
    """The parameter a ``get_attr`` node reads, None for no node, False for anything else."""
    if node is None:
        return None
    if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
        return False
    value = functools.reduce(getattr, node.target.split("."), module)
    return value if isinstance(value, nn.Parameter) else False
