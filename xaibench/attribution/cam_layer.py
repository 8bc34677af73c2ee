"""The layer a class activation map reads: its output as a feature map and the target logit's gradient
there, captured in one forward (and backward) pass; and the default layer when none is named.

``capture_layer`` hooks the layer (the hook is always removed) and reads its output as a feature map
(N, C, *spatial) (``xaibench.attribution.layers.feature_map``: a transformer's tokens become their
patch grid, by the ``reshape`` parameter's rule). The model goes on with a copy of the output, so that an
in-place layer after it (``ReLU(inplace=True)``) cannot change what was captured.

The default layer is found on the first chunk's own pass, not on a probe pass of its own: hooks on every
submodule record what each module returns, in the order the modules finish. The forward-only CAMs
(Score-CAM, Ablation-CAM, Eigen-CAM) are the exception: their passes keep no activations for a backward
pass, so their ``batch_size`` may be larger than a gradient pass can hold; they choose the layer on a
pass of the first sample alone (with gradients) and read the chunk without autograd. A module's output
is a *feature map* when it is laid out like the input: (N, C, *spatial) of the input's rank, or tokens
of an image that read as a patch grid. The *head* starts at the first parameter-free module after the
last learned map of more than one position that reads a map globally: down to one position (global
pooling) or to a vector of another rank (Flatten). The default is the last module, in execution order,
that

- holds parameters (a learned layer or a block of them: activations, pooling, dropout and reshapes only
  pass a learned map on, and a rule that took them would take the global pooling),
- outputs a feature map before the head, and runs once per forward pass,
- has a map that the target logit depends on: a non-zero gradient for the first sample (checked from the
  last candidate backwards, one short backward each, when the model gives gradients).

A block finishes after its last layer, so it is preferred to that layer when both return the same
tensor. This gives: a plain CNN's last convolution (a ReLU after it holds no parameters); ResNet's last
stage ``layer4``, after the residual addition and ReLU (pytorch-grad-cam recommends
``model.layer4[-1]``, whose output is the same tensor); a ViT's last block's ``ln_1``: with a head on the
class token, the patch tokens of everything after the last attention (the block's output, its MLP and
``ln_2``, the final LayerNorm) reach the logits through per-token layers only, so their gradient is
zero, and ``ln_1`` gives the tokens that the last attention mixes into the class token (pytorch-grad-cam's
ViT recipe, ``blocks[-1].norm1``). Deciding on the first sample makes the layer the same for every batch
size. A learned layer after the pooling of a map that already had one position (ConvNeXt's head
LayerNorm on 32x32 inputs) would be taken: pass the layer by name there.

A layer whose map has one position (ResNet-18's ``layer4`` on 32x32 inputs is 1x1) gives every CAM a
map that is constant over the input: the first call that reads it (by default or by name) warns once
(``XaibenchWarning``), naming the last earlier candidate whose map has more positions when the layer
was the default.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import Counter
from typing import TYPE_CHECKING, Any

from xaibench.attribution.layers import feature_map, find_layer, parse_grid, require_image_grid
from xaibench.core.errors import IncompatibleError, InputError, XaibenchWarning
from xaibench.core.lazy import lazy_import
from xaibench.models.layers import named_layers, require_hooks

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

Layer = tuple[str, "torch.nn.Module"]


@dataclasses.dataclass(frozen=True)
class CamParams:
    """layer: dotted module name; None picks the last learned feature map before the head that the
    target logit depends on (a CNN's last convolution or block, a ViT's last ln_1).
    reshape: how tokens (N, T, D) of images become a patch grid: auto (a class token or none, the grid
    from the image size) or HxW (the last H*W tokens, row by row)."""

    layer: str | None = None
    reshape: str = "auto"


@dataclasses.dataclass(frozen=True)
class Capture:
    """What one pass read at a CAM's layer: the layer (name, module), its output as a feature map
    (N, C, *spatial) and, when asked for, d logit[target] / d output read the same way."""

    layer: Layer
    activations: torch.Tensor
    gradients: torch.Tensor | None


def capture_layer(model: torch.nn.Module, layer: str | Layer | None, inputs: torch.Tensor,
                  target: torch.Tensor | None = None, gradients: bool = False, reshape: str = "auto") -> Capture:
    """One forward pass (and one backward with ``gradients``) of ``inputs`` reading ``layer``.

    Args:
        layer: a dotted name, a (name, module) pair (``Capture.layer`` of an earlier chunk), or None for
            the default layer (module docstring), chosen during this pass (with ``target`` and without
            ``gradients``: on a pass of the first row alone, before this pass). A name or None warns
            when the layer's map has one position (module docstring).
        target: class per row (n,), on the inputs' device; needed with ``gradients``.
        gradients: also return d logit[target] / d the layer's output.
        reshape: "auto" or "HxW" (``xaibench.attribution.layers.parse_grid``).

    Raises:
        IncompatibleError: the layer's output is not a feature map like the input's, or (with
            gradients) does not reach the logits; no layer fits the default rule.
        InputError: a bad ``reshape``, or tokens that do not fit it.
    """
    grid = parse_grid(reshape)
    require_image_grid(grid, inputs)
    if isinstance(layer, tuple):  # chosen by an earlier chunk's call, which warned if it had to
        return _read_layer(model, layer, inputs, target, gradients, grid)
    if layer is None:
        capture, earlier = _default_capture(model, inputs, target, gradients, grid)
    else:
        capture, earlier = _read_layer(model, find_layer(model, layer), inputs, target, gradients, grid), None
    if math.prod(capture.activations.shape[2:]) == 1:
        suggestion = f", e.g. --layer {earlier}" if earlier is not None else ""
        warnings.warn(f"layer {capture.layer[0]!r} gives a feature map of one position, so the CAM map is "
                      f"constant over the input and cannot localise; pass --layer with an earlier layer{suggestion}",
                      XaibenchWarning, stacklevel=2)
    return capture


def _read_layer(model: torch.nn.Module, layer: Layer, inputs: torch.Tensor, target: torch.Tensor | None,
                gradients: bool, grid: tuple[int, int] | None) -> Capture:
    """``capture_layer`` at a known layer."""
    name, module = layer
    outputs: list[object] = []

    def keep(_module: torch.nn.Module, _args: tuple, output: object) -> object:
        outputs.append(output)  # the model goes on with a copy: an in-place layer after it cannot change it
        return output.clone() if isinstance(output, torch.Tensor) else None

    handle = module.register_forward_hook(keep)
    try:
        with torch.set_grad_enabled(gradients):
            logits = model(inputs.detach().requires_grad_(gradients))
    finally:
        handle.remove()
    output = outputs[-1] if outputs else None
    activations = _as_map(output, inputs, grid, name)
    if not gradients:
        return Capture((name, module), activations, None)
    if not (isinstance(output, torch.Tensor) and output.requires_grad):
        raise _not_a_map(name)  # Method.attribute then says whether the model gives no gradients at all
    (gradient,) = torch.autograd.grad(_picked(logits, target), output)
    gradient = feature_map(gradient, inputs, grid)
    if output.ndim != gradient.ndim and not gradient.any():
        raise IncompatibleError(f"the logits do not depend on the patch tokens of layer {name!r} (a head that "
                                "reads the class token after it?); pass an earlier layer, e.g. the last "
                                "block's ln_1 or the block before it")
    return Capture((name, module), activations, gradient)


def upsample_map(cam: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """(n, 1, *spatial') maps interpolated to the inputs' spatial size: bilinear for images, linear for
    sequences (align_corners False, as Grad-CAM's maps and captum's)."""
    mode = "bilinear" if inputs.ndim == 4 else "linear"
    return torch.nn.functional.interpolate(cam, size=tuple(inputs.shape[2:]), mode=mode, align_corners=False)


def _picked(logits: object, target: torch.Tensor | None) -> torch.Tensor:
    if target is None:
        raise ValueError("a target is needed for gradients")  # a caller's bug, not a user's
    return logits.gather(1, target[:, None]).sum()


def _not_a_map(name: str) -> IncompatibleError:
    return IncompatibleError(f"layer {name!r} does not output a feature map like the input's; pass --layer")


def _as_map(output: object, inputs: torch.Tensor, grid: tuple[int, int] | None, name: str) -> torch.Tensor:
    """``output`` read as a feature map, detached; refused when it is not one."""
    if not isinstance(output, torch.Tensor) or output.ndim < 2 or output.shape[0] != inputs.shape[0]:
        raise _not_a_map(name)
    activations = feature_map(output.detach(), inputs, grid)
    if activations.ndim != inputs.ndim:
        raise _not_a_map(name)
    return activations


# ---------------------------------------------------------------------------------------------
# the default layer


@dataclasses.dataclass
class _Finished:
    """One module call, as the default rule sees it. ``output`` is kept for candidates only."""

    name: str
    module: torch.nn.Module
    learned: bool
    positions: int | None  # of the output read as a feature map; None when it is not one
    reads_globally: bool  # parameter-free, takes a map, gives one position or another rank
    output: torch.Tensor | None
    version: int  # the output's version counter when it was returned: a later in-place op bumps it


def _positions(value: object, inputs: torch.Tensor, grid: tuple[int, int] | None) -> int | None:
    """The number of positions of ``value`` read as a feature map of ``inputs``, or None."""
    if not (isinstance(value, torch.Tensor) and value.is_floating_point() and value.ndim >= 2
            and value.shape[0] == inputs.shape[0]):
        return None
    if value.ndim != inputs.ndim and not (inputs.ndim == 4 and value.ndim == 3):
        return None
    try:
        grid_map = feature_map(value, inputs, grid)
    except InputError:
        return None
    return math.prod(grid_map.shape[2:]) if grid_map.ndim == inputs.ndim else None


def _default_capture(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor | None,
                     gradients: bool, grid: tuple[int, int] | None) -> tuple[Capture, str | None]:
    """``capture_layer`` at the default layer, chosen during this pass (module docstring), and the last
    candidate before it whose map has more than one position (None if there is none)."""
    if not gradients and target is not None and inputs.shape[0] > 1:
        # a forward-only CAM: only the first sample decides, so a pass of that row alone keeps activations
        # for the backward pass, not a chunk as large as its batch_size of forward passes
        chosen, earlier = _default_capture(model, inputs[:1], target[:1], False, grid)
        return _read_layer(model, chosen.layer, inputs, None, False, grid), earlier
    require_hooks(model)
    finished: list[_Finished] = []
    calls: Counter[str] = Counter()

    def recorder(name: str, learned: bool) -> Any:
        def record(module: torch.nn.Module, args: tuple, output: object) -> None:
            calls[name] += 1
            positions = _positions(output, inputs, grid)
            before = _positions(args[0], inputs, grid) if args and not learned else None
            reads = before is not None and (positions == 1 < before or (
                positions is None and isinstance(output, torch.Tensor) and output.shape[:1] == inputs.shape[:1]))
            kept = output if learned and positions is not None else None
            finished.append(_Finished(name, module, learned, positions, reads, kept,
                                      kept._version if kept is not None else 0))

        return record

    handles = []
    try:  # registered inside: a registration that fails removes those made before it
        for name, module in named_layers(model):
            handles.append(module.register_forward_hook(recorder(name, any(True for _ in module.parameters()))))
        with torch.set_grad_enabled(gradients or target is not None):
            logits = model(inputs.detach().requires_grad_(gradients or target is not None))
    finally:
        for handle in handles:
            handle.remove()
    candidates = _candidates(finished, calls)
    differentiable = target is not None and isinstance(logits, torch.Tensor) and logits.requires_grad
    if gradients and not differentiable:
        raise _not_a_map(candidates[-1].name)  # Method.attribute then reports a model without gradients
    chosen, gradient = (_reached(candidates, _picked(logits, target), inputs, grid) if differentiable
                        else (candidates[-1], None))
    before = candidates[:next(i for i, seen in enumerate(candidates) if seen is chosen)]
    earlier = next((seen.name for seen in reversed(before) if (seen.positions or 0) > 1), None)
    if chosen.output._version != chosen.version:  # changed in place after it was returned: read it again
        return _read_layer(model, (chosen.name, chosen.module), inputs, target, gradients, grid), earlier
    activations = feature_map(chosen.output.detach(), inputs, grid)
    return Capture((chosen.name, chosen.module), activations, gradient if gradients else None), earlier


def _candidates(finished: list[_Finished], calls: Counter[str]) -> list[_Finished]:
    """Learned feature maps before the head, in execution order (module docstring).

    Raises:
        IncompatibleError: there are none.
    """
    wide = [i for i, seen in enumerate(finished) if seen.learned and (seen.positions or 0) > 1]
    start = wide[-1] + 1 if wide else 0
    head = next((i for i in range(start, len(finished)) if finished[i].reads_globally), len(finished))
    candidates = [seen for seen in finished[:head]
                  if seen.learned and seen.positions is not None and calls[seen.name] == 1]
    if not candidates:
        raise IncompatibleError("no layer outputs a feature map like the input's (a convolution's, or tokens "
                                "on a patch grid); pass --layer")
    return candidates


def _reached(candidates: list[_Finished], picked: torch.Tensor, inputs: torch.Tensor,
             grid: tuple[int, int] | None) -> tuple[_Finished, torch.Tensor]:
    """The last candidate whose map has a non-zero gradient for the first sample, and that gradient map.

    Raises:
        IncompatibleError: none has.
    """
    for seen in reversed(candidates):
        if not seen.output.requires_grad:
            continue
        (gradient,) = torch.autograd.grad(picked, seen.output, retain_graph=True, allow_unused=True)
        if gradient is None:
            continue
        gradient = feature_map(gradient, inputs, grid)
        if gradient[0].any():
            return seen, gradient
    raise IncompatibleError("the target logit depends on no layer's feature map for the first sample; pass --layer")
