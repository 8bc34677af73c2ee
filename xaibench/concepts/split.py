"""The model split at a layer, f = h o g, and the activations concept extraction factorises.

g(x) is the layer's output; h(a) the rest of the model from there. An ``nn.Sequential`` model split at
one of its direct children is cut into two ``nn.Sequential`` halves, so h costs only the layers after
the split. Any other model is traced by torch.fx with the layer kept whole, and the graph after the
layer's call becomes h (``traced_suffix``), which costs the same. A model that cannot be traced, or whose
layers after the split read values from before it, is split by injection: h(a) runs the model on zero
inputs with a forward hook that replaces the layer's output by ``a`` (the hook is always removed). The layers before the
split run on one zero row, whatever the rows of ``a``, so that an h call costs about the layers after
the split, not the whole model; a model that needs its batch size before the layer gets as many zero
rows as ``a`` has. Both are checked once on real inputs: h(g(x)) must reproduce the model's logits,
which fails for a model whose later layers read tensors from before the split (a skip connection
across it); that model gets a clear error instead of wrong concepts.

A layer whose output for images is a token sequence (N, T, D), a vision transformer's block, is split
with its tokens as positions, channels first: g gives (N, D, T) and h takes it, so every token (the
class token too: the head reads it, and h must reproduce the model) is one position, as a pixel of a
CNN's feature map is. Concept maps arrange the patch tokens' codes on their grid
(``xaibench.attribution.layers.token_grid``); a split whose tokens have no grid is refused.

The default layer (``split_at_default_layer``) is the last convolutional block's output: the last
activation module after the last convolution, or that convolution when none follows it
(``default_layer``). When a skip connection crosses it (the inner layers of a residual block or of a
transformer block), the innermost module around it that reproduces the model is taken instead: the
residual block (ResNet's last block) or the transformer block (a ViT's last block). When the model is
an ``nn.Sequential`` and its direct child holding that module returns the very same tensor (ResNet's
``layer4`` around its last block), the child is taken, so that the split is a cut.

Activations (Fel et al. 2023; CRAFT, Fel et al. CVPR 2023):
  patches   CRAFT: crops on a regular grid (stride 0.8 x the crop size), each resized to the input size,
            passed through g and averaged over space: one vector per crop.
  holistic  every spatial position of full images: one vector per position.
  pooled    one vector per image, g(x) averaged over space.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.attribution.layer_path import layer_activations
from xaibench.attribution.layers import token_grid
from xaibench.core.batches import row_slices
from xaibench.core.errors import InputError, UnknownNameError
from xaibench.models.layers import is_layer, named_layers, require_hooks

MODES = ("patches", "holistic", "pooled")
DEFAULT_CROP_ROWS = 256  # crops per chunk without a batch size: one call over all crops was 1.3x slower
ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid)


@dataclass(frozen=True)
class Split:
    """f = h o g at ``layer``; ``g`` and ``h`` take and return batches. ``how`` h was made: "cut" (the
    later children of an ``nn.Sequential``), "traced" (the later operations of the model's torch.fx
    graph) or "injected" (the model run with the layer's output replaced by a hook)."""

    layer: str
    g: Callable[[torch.Tensor], torch.Tensor]
    h: Callable[[torch.Tensor], torch.Tensor]
    how: str = "injected"


def default_layer(model: nn.Module) -> str:
    """The last convolutional block's output: the last activation module after the last convolution,
    or that convolution itself when none follows it. ``split_at_default_layer`` starts from it.

    Raises:
        InputError: the model has no convolution.
    """
    named = named_layers(model)
    convs = [i for i, (_, m) in enumerate(named) if is_layer(m, nn.Conv1d, nn.Conv2d)]
    if not convs:
        raise InputError("the model has no convolution; pass --layer")
    after = [n for n, m in named[convs[-1] + 1:] if is_layer(m, *ACTIVATIONS)]
    return after[-1] if after else named[convs[-1]][0]


def split_at_default_layer(model: nn.Module, probe: torch.Tensor) -> Split:
    """The split at the default layer (module docstring), checked on ``probe`` inputs.

    Raises:
        InputError: the model has no convolution, or no module around ``default_layer`` reproduces it.
        IncompatibleError: the split needs hooks, which the model's layers cannot run.
    """
    start, probe = default_layer(model), _two_rows(probe)
    expected = _outputs(model, probe)
    parts = start.split(".")
    for depth in range(len(parts), 0, -1):  # the layer, then the modules holding it, innermost first
        split = _checked(model, ".".join(parts[:depth]), probe, expected)
        if split is not None:
            return _as_cut(model, split, probe, expected)
    raise InputError(f"no layer around {start} reproduces the model's outputs from its activations alone; "
                     "pass --layer")


def split_model(model: nn.Module, layer: str, probe: torch.Tensor) -> Split:
    """Split ``model`` after ``layer`` and check the split on ``probe`` inputs (a few real samples).

    Raises:
        UnknownNameError: no layer of that name.
        IncompatibleError: the split needs hooks, which the model's layers cannot run.
        InputError: h(g(x)) does not reproduce the model (a skip connection across the layer), or the
            layer gives tokens that cannot be arranged as a grid.
    """
    probe = _two_rows(probe)
    split = _checked(model, layer, probe, _outputs(model, probe))
    if split is None:
        raise InputError(f"the model cannot be split at {layer}: the layers after it do not reproduce the "
                         "model's outputs from its activations alone (a skip connection across it?)")
    return split


def _outputs(model: nn.Module, probe: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(probe)


def _two_rows(probe: torch.Tensor) -> torch.Tensor:
    """``probe`` with at least two rows: on one, an h that runs the layers before the split on one row
    could not be told from one that runs them on every row."""
    return probe if probe.shape[0] > 1 else probe.expand(2, *probe.shape[1:])


def _checked(model: nn.Module, layer: str, probe: torch.Tensor, expected: torch.Tensor) -> Split | None:
    """The split after ``layer`` when h(g(probe)) gives ``expected`` (else None): a cut, the traced
    operations after the layer, or an injection whose h runs the layers before the split on one zero row,
    else on as many as it is given; the first that reproduces the model. Token outputs become positions,
    channels first."""
    named = dict(model.named_modules())
    if not layer or layer not in named:
        raise UnknownNameError.for_name("layer", layer, [n for n in named if n])
    children = list(model.named_children())
    if isinstance(model, nn.Sequential) and layer in dict(children):
        cut = [n for n, _ in children].index(layer) + 1
        g: Callable = nn.Sequential(*[m for _, m in children[:cut]])
        heads = [("cut", nn.Sequential(*[m for _, m in children[cut:]]))]
    else:
        require_hooks(model)
        shape = tuple(probe.shape[1:])
        g = functools.partial(layer_activations, model, named[layer], batch_size=None)
        traced = traced_suffix(model, layer)
        heads = [*([("traced", traced)] if traced is not None else []),
                 ("injected", _injected(model, named[layer], shape, one_row=True)),
                 ("injected", _injected(model, named[layer], shape))]
    with torch.no_grad():
        output = g(probe)
    tokens = probe.ndim == 4 and isinstance(output, torch.Tensor) and output.ndim == 3
    if tokens:
        token_grid(output, (probe.shape[2], probe.shape[3]))  # refused here, not when the maps are drawn
    for index, (how, h) in enumerate(heads):
        split = _channels_first(Split(layer, g, h, how)) if tokens else Split(layer, g, h, how)
        try:
            if _reproduces(split, probe, expected):
                return split
        except Exception:  # one zero row met code that needs the batch size before the layer: try them all
            if index == len(heads) - 1:
                raise
    return None


def _channels_first(split: Split) -> Split:
    """The split with token outputs (N, T, D) as (N, D, T): one position per token."""
    g, h = split.g, split.h
    return Split(split.layer, lambda x: g(x).transpose(1, 2), lambda a: h(a.transpose(1, 2)), split.how)


def traced_suffix(model: nn.Module, layer: str) -> nn.Module | None:
    """The operations after ``layer`` as a module taking its output: the model traced by torch.fx with
    ``layer`` kept whole, and the graph cut after its one call. None when the model cannot be traced
    (data-dependent Python in its forward), calls the layer more than once, or reads after the layer a
    value computed before it (a skip connection across the split): injection serves those."""

    class KeepLayer(torch.fx.Tracer):
        def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
            return qualified_name == layer or super().is_leaf_module(module, qualified_name)

    try:
        traced = torch.fx.GraphModule(model, KeepLayer().trace(model))
    except Exception:  # noqa: BLE001 (fx raises TraceError, TypeError, RuntimeError... on what it cannot trace)
        return None
    nodes = list(traced.graph.nodes)
    calls = [n for n in nodes if n.op == "call_module" and n.target == layer]
    if len(calls) != 1:
        return None
    graph = torch.fx.Graph()
    copied = {calls[0]: graph.placeholder("activations")}
    for node in nodes[nodes.index(calls[0]) + 1:]:
        for needed in node.all_input_nodes:
            if needed not in copied:
                if needed.op != "get_attr":  # computed before the split from the input
                    return None
                copied[needed] = graph.node_copy(needed)
        copied[node] = graph.node_copy(node, lambda n: copied[n])
    return torch.fx.GraphModule(traced, graph).eval()


def _reproduces(split: Split, probe: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether h(g(probe)) gives the model's outputs ``expected``."""
    with torch.no_grad():
        got = split.h(split.g(probe))
    return (isinstance(got, torch.Tensor) and got.shape == expected.shape
            and torch.allclose(got, expected, rtol=1e-4, atol=1e-4))


def _as_cut(model: nn.Module, split: Split, probe: torch.Tensor, expected: torch.Tensor) -> Split:
    """The split at the direct child of a Sequential ``model`` holding ``split.layer`` when the child
    returns the very tensor the layer returns (a cut: h runs only the later children); else ``split``."""
    top = split.layer.split(".")[0]
    if not isinstance(model, nn.Sequential) or top == split.layer:
        return split
    outputs: dict[str, object] = {}
    handles = [model.get_submodule(name).register_forward_hook(
        lambda _module, _args, output, name=name: outputs.setdefault(name, output)) for name in (top, split.layer)]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    same = outputs[top] is outputs[split.layer]
    return (_checked(model, top, probe, expected) if same else None) or split


def _injected(model: nn.Module, layer: nn.Module, sample_shape: tuple[int, ...], *,
              one_row: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """h(a): the model on zero inputs, ``layer``'s output replaced by ``a``. With ``one_row`` the layers
    before the split run on one zero row whatever a's rows (they are the same for every row, and the
    layers after it see a's rows): an h call then costs the layers after the split, not the model."""

    def h(activations: torch.Tensor) -> torch.Tensor:
        rows = 1 if one_row else activations.shape[0]
        handle = layer.register_forward_hook(lambda module, args, output: activations)
        try:
            return model(torch.zeros(rows, *sample_shape, dtype=activations.dtype, device=activations.device))
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
