"""Canonization for layer-wise relevance propagation: a traced copy of a model in the form LRP's rules assume.

LRP is not implementation-invariant (Motzkus et al., 2022, "Measurably Stronger Explanation Reliability
via Model Canonization"; Hui & Binder, 2019, on batch norm): a convolution followed by batch norm computes
one affine map, but propagating relevance through the two layers separately gives another answer than
through the one map; a residual ``a + b`` written with ``+`` is differentiated, and the gradient hands the
whole relevance of the sum to each summand, doubling it. ``canonical_copy`` therefore deep-copies the
model (the user's model never changes), traces the copy with torch.fx, and rewrites the trace:

- each batch norm (eval mode, running statistics) is folded into the Linear or convolution that feeds
  only it: W' = W * g / sqrt(var + eps) per output channel, b' = (b - mean) * g / sqrt(var + eps) + beta;
- each addition of two computed tensors (the ResNet's ``bn2(conv2(...)) + shortcut``) becomes a ``Sum``
  module, whose rule splits the relevance over the summands in proportion to their values;
- functional ReLUs become ReLU modules and in-place ReLUs out-of-place ones, so that each gets the
  pass-through rule and no saved activation is overwritten;
- a module called several times (a ReLU reused in a block) gets one copy per call, so that every call
  has its own rule; sharing parameters changes nothing in LRP, whose relevance is per call.

What has no LRP rule is refused with the layer or operation named: attention (the transformer methods
explain those models), layers other than the handled ones, and operations other than reshapes, routing
(concatenation, indexing) and additions.
"""

from __future__ import annotations

import copy
import dataclasses
import operator
from typing import TYPE_CHECKING, Any

from xaibench.core.errors import IncompatibleError, InputError, first_line
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
    from torch import fx, nn
else:
    torch = lazy_import("torch")

#: what is handled, for the refusal messages
HANDLED = "Linear, Conv1d/Conv2d, batch norm after them, ReLU, pooling, Flatten, Dropout and residual additions"
NO_GRADIENTS = "the model gives no gradients; use a perturbation method"


def weighted_layers() -> tuple[type, ...]:
    """Layers whose rule the composite picks: dense and convolutional."""
    return (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)


def average_pools() -> tuple[type, ...]:
    """Pooling layers that are linear maps without parameters: relevance in proportion to the inputs."""
    nn = torch.nn
    return (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)


def _routing_layers() -> tuple[type, ...]:
    """Layers whose gradient already routes each output's relevance to the inputs that made it: reshapes,
    the identity, dropout (eval) and max pooling (winner takes all, as LRP intends)."""
    nn = torch.nn
    return (nn.Identity, nn.Dropout, nn.Flatten, nn.Unflatten, nn.MaxPool1d, nn.MaxPool2d)


def _batch_norms() -> tuple[type, ...]:
    return (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)


def _attention() -> tuple[type, ...]:
    nn = torch.nn
    return (nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoder, nn.TransformerDecoder,
            nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


_ROUTING_METHODS = frozenset({"flatten", "view", "reshape", "squeeze", "unsqueeze", "transpose", "permute",
                              "contiguous", "size", "dim"})


def _routing_functions() -> frozenset[Any]:
    """Functions whose gradient moves each value's relevance along unchanged (or reads shapes)."""
    return frozenset({torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose,
                      torch.permute, torch.cat, torch.concat, operator.getitem, getattr})


def _additions() -> frozenset[Any]:
    return frozenset({operator.add, operator.iadd, torch.add})


def _relus() -> frozenset[Any]:
    return frozenset({torch.relu, torch.nn.functional.relu})


def sum_module() -> nn.Module:
    """A new ``Sum``: ``a + b`` as a module, so that LRP gives the addition its own rule."""
    return _sum_class()()


_SUM_CLASS: list[type] = []  # built on first use: importing this module must not import torch


def _sum_class() -> type:
    if not _SUM_CLASS:

        class Sum(torch.nn.Module):
            """a + b, as a module (a residual connection's merge)."""

            def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return a + b

        _SUM_CLASS.append(Sum)
    return _SUM_CLASS[0]


def is_sum(module: nn.Module) -> bool:
    return bool(_SUM_CLASS) and type(module) is _SUM_CLASS[0]


@dataclasses.dataclass(frozen=True)
class CanonicalModel:
    """A traced, rewritten deep copy of a model: ``model`` (a GraphModule whose parameters do not require
    gradients), ``first`` the names of the weighted layers that no other weighted layer precedes (they
    read the input, maybe reshaped or pooled: the special first-layer rules apply to them), and
    ``modules`` the name of every module the forward calls, once each, in the order of the calls."""

    model: nn.Module
    first: frozenset[str]
    modules: tuple[str, ...]


def canonical_copy(model: nn.Module) -> CanonicalModel:
    """The model in LRP's canonical form (see the module docstring); ``model`` itself is not changed.

    Raises:
        IncompatibleError: for attention, a layer or operation without an LRP rule, a batch norm that
            cannot be folded, or a forward that torch.fx cannot trace.
        InputError: for a batch norm in training mode.
    """
    _refuse_attention(model)
    copied = copy.deepcopy(model)
    for parameter in copied.parameters():
        parameter.requires_grad_(False)  # no graph for the weights: relevance flows to the input only
    graph_module = _trace(copied)
    origin = _unshare(graph_module)
    _modularise_relus(graph_module)
    _modularise_additions(graph_module)
    _fold_batch_norms(graph_module, origin)
    _check_nodes(graph_module, origin)
    graph_module.delete_all_unused_submodules()
    graph_module.graph.lint()
    graph_module.recompile()
    calls = [node for node in graph_module.graph.nodes if node.op == "call_module"]
    return CanonicalModel(model=graph_module, first=_first_layers(graph_module),
                          modules=tuple(str(node.target) for node in calls))


def fold_batch_norm(layer: nn.Module, norm: nn.Module) -> None:
    """Fold eval-mode batch norm ``norm`` into the Linear or convolution ``layer`` that feeds it, in place:
    ``layer`` then computes norm(layer(x)).

    Raises:
        IncompatibleError: when the norm keeps no running statistics or its width is not the layer's.
    """
    if norm.running_mean is None or norm.running_var is None:
        raise IncompatibleError("a batch norm without running statistics cannot be folded for lrp; "
                                "build it with track_running_stats=True")
    weight = layer.weight
    if norm.num_features != weight.shape[0]:
        raise IncompatibleError(f"a batch norm of {norm.num_features} features follows a layer of "
                                f"{weight.shape[0]} outputs; lrp cannot fold it")
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        bias = shift if layer.bias is None else layer.bias * scale + shift
        folded_weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    layer.weight = torch.nn.Parameter(folded_weight, requires_grad=False)
    layer.bias = torch.nn.Parameter(bias, requires_grad=False)


# ---------------------------------------------------------------------------------------------
# tracing and rewriting


def _refuse_attention(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, _attention()):
            raise IncompatibleError(f"lrp has no rule for attention (layer {name!r}); explain transformers "
                                    "with attention_rollout or attention_relevance")


def _trace(model: nn.Module) -> fx.GraphModule:
    """torch.fx trace of ``model``; refuses a forward that switches gradients off (torch.no_grad inside
    it): the trace would not keep that, and LRP would explain a model that gives no gradients."""
    import torch.fx

    class GradientCheckingTracer(torch.fx.Tracer):
        def create_node(self, kind: str, *args: Any, **kwargs: Any) -> torch.fx.Node:
            if kind in ("call_module", "call_function", "call_method") and not torch.is_grad_enabled():
                raise IncompatibleError(NO_GRADIENTS)
            return super().create_node(kind, *args, **kwargs)

    tracer = GradientCheckingTracer()
    try:
        with torch.enable_grad():  # a caller's no_grad is not the model's
            graph = tracer.trace(model)
    except IncompatibleError:
        raise
    except Exception as err:  # noqa: BLE001 (fx raises TraceError, TypeError, RuntimeError... on what it cannot trace)
        raise IncompatibleError(f"lrp could not trace the model's forward with torch.fx "
                                f"({first_line(err)}); it needs a forward without data-dependent control "
                                "flow") from None
    return torch.fx.GraphModule(tracer.root, graph)


def _new_name(graph_module: fx.GraphModule, stem: str) -> str:
    stem = stem.replace(".", "_")
    index = 0
    while hasattr(graph_module, f"{stem}_{index}"):
        index += 1
    return f"{stem}_{index}"


def _unshare(graph_module: fx.GraphModule) -> dict[str, str]:
    """Give each further call of a module its own copy; returns each module name's original name."""
    origin: dict[str, str] = {}
    for node in graph_module.graph.nodes:
        if node.op != "call_module":
            continue
        target = str(node.target)
        if target in origin:
            name = _new_name(graph_module, f"lrp_{target}")
            graph_module.add_submodule(name, copy.deepcopy(graph_module.get_submodule(target)))
            node.target = name
            origin[name] = target
        else:
            origin[target] = target
    return origin


def _modularise_relus(graph_module: fx.GraphModule) -> None:
    graph = graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_module":
            module = graph_module.get_submodule(str(node.target))
            if type(module) is torch.nn.ReLU:
                module.inplace = False  # our rules keep the inputs; an in-place ReLU would overwrite them
        functional = node.op == "call_function" and node.target in _relus()
        if functional or (node.op == "call_method" and node.target in ("relu", "relu_")):
            name = _new_name(graph_module, "lrp_relu")
            graph_module.add_submodule(name, torch.nn.ReLU())
            with graph.inserting_after(node):
                replacement = graph.call_module(name, args=(node.args[0],))
            node.replace_all_uses_with(replacement)
            graph.erase_node(node)


def _depends_on_input(graph_module: fx.GraphModule) -> set[Any]:
    dependent: set[Any] = set()
    for node in graph_module.graph.nodes:
        if node.op == "placeholder" or any(arg in dependent for arg in node.all_input_nodes):
            dependent.add(node)
    return dependent


def _modularise_additions(graph_module: fx.GraphModule) -> None:
    """``a + b`` of two computed tensors -> a ``Sum`` module; an addition of a constant is refused."""
    graph = graph_module.graph
    dependent = _depends_on_input(graph_module)
    for node in list(graph.nodes):
        is_addition = (node.op == "call_function" and node.target in _additions()) or (
            node.op == "call_method" and node.target in ("add", "add_"))
        if not is_addition:
            continue
        summands = node.args[:2]
        if len(node.args) != 2 or node.kwargs or not all(arg in dependent for arg in summands):
            raise IncompatibleError(f"lrp cannot propagate relevance through the addition {node.name!r}, which "
                                    "adds a constant or scaled term; it handles sums of two computed tensors")
        name = _new_name(graph_module, "lrp_sum")
        graph_module.add_submodule(name, sum_module())
        with graph.inserting_after(node):
            replacement = graph.call_module(name, args=tuple(summands))
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)


def _fold_batch_norms(graph_module: fx.GraphModule, origin: dict[str, str]) -> None:
    graph = graph_module.graph
    for node in list(graph.nodes):
        if node.op != "call_module":
            continue
        norm = graph_module.get_submodule(str(node.target))
        if type(norm) not in _batch_norms():
            continue
        name = origin.get(str(node.target), str(node.target))
        if norm.training:  # an InputError: base's gradient probe after an IncompatibleError would update its stats
            raise InputError(f"lrp folds batch norm {name!r} with its running statistics; put the "
                                    "model in eval mode (model.eval())")
        source = node.args[0] if node.args else None
        layer = graph_module.get_submodule(str(source.target)) if getattr(source, "op", "") == "call_module" \
            else None
        if layer is None or type(layer) not in weighted_layers() or len(source.users) != 1:
            raise IncompatibleError(f"lrp folds batch norm {name!r} into the Linear or convolution that feeds "
                                    "only it, and finds none; lrp does not apply to this model")
        fold_batch_norm(layer, norm)
        node.replace_all_uses_with(source)
        graph.erase_node(node)


def _check_nodes(graph_module: fx.GraphModule, origin: dict[str, str]) -> None:
    """Every remaining call has a rule, or a gradient that is LRP's rule; refuse the first that does not."""
    known = (*weighted_layers(), *average_pools(), *_routing_layers(), torch.nn.ReLU)
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            module = graph_module.get_submodule(str(node.target))
            if isinstance(module, torch.nn.Dropout) and module.training:  # random maps, and not LRP's model
                name = origin.get(str(node.target), str(node.target))
                raise InputError(f"lrp needs dropout {name!r} off; put the model in eval mode (model.eval())")
            if type(module) not in known and not is_sum(module):
                name = origin.get(str(node.target), str(node.target))
                raise IncompatibleError(f"lrp has no rule for layer {name!r} ({type(module).__name__}); it "
                                        f"handles {HANDLED}")
        elif node.op == "call_function" and node.target not in _routing_functions():
            raise IncompatibleError(f"lrp cannot propagate relevance through {_op_name(node)!r} in the model's "
                                    f"forward; it handles {HANDLED}, reshapes and concatenation")
        elif node.op == "call_method" and node.target not in _ROUTING_METHODS:
            raise IncompatibleError(f"lrp cannot propagate relevance through {node.target!r} in the model's "
                                    f"forward; it handles {HANDLED}, reshapes and concatenation")


def _op_name(node: fx.Node) -> str:
    return getattr(node.target, "__name__", str(node.target))


def _first_layers(graph_module: fx.GraphModule) -> frozenset[str]:
    """Weighted layers with no weighted layer before them."""
    weighted = weighted_layers()
    after_layer: set[Any] = set()
    first: set[str] = set()
    for node in graph_module.graph.nodes:
        is_layer = node.op == "call_module" and type(graph_module.get_submodule(str(node.target))) in weighted
        behind = any(arg in after_layer for arg in node.all_input_nodes)
        if is_layer and not behind:
            first.add(str(node.target))
        if is_layer or behind:
            after_layer.add(node)
    return frozenset(first)
