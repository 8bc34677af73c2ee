"""Tracked modules: their input activations and output gradients, from which per-example gradients follow.

For a Linear or Conv2d module with weight W (out, in) and bias b, the gradient of an example's loss is
G = sum_p g_p a_p^T over the module's positions p (one for a plain Linear, sequence positions for a
Linear on (B, T, D), output pixels for a Conv2d), where a_p is the input at p with a 1 appended for the
bias (Conv2d: the unfolded patch) and g_p the gradient of the loss with respect to the output at p.
``capture`` records each module's inputs and output gradients for a batch in one forward and one backward
pass; a and g are formed from them when a module's turn comes (a Conv2d's unfolded patches are several
times its input, so only one module's exist at a time), and the per-example G is then an einsum, or never
formed at all when the scores contract a and g directly.

A Conv2d whose zero padding covers some kernel taps at every output position (a 3x3 convolution on a 1x1
map: 8 taps of 9) has input columns that are zero for every example of that input size: ``Captured.support``
names the others, so that products with a and G can skip the columns that are structurally zero.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.core.errors import InputError
from xaibench.models.layers import require_hooks

SUPPORTED = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class Captured:
    """One module's view of a batch: its input and output gradient of every call (several for a module
    called more than once per forward; their positions are concatenated, which is exact for the gradient).

    ``activations`` (B, P, in[+1]) and ``gradients`` (B, P, out) are formed anew on each access.
    """

    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    output_gradients: tuple[torch.Tensor, ...]

    @property
    def activations(self) -> torch.Tensor:
        return _joined([_activations(self.module, x) for x in self.inputs])

    @property
    def gradients(self) -> torch.Tensor:
        return _joined([_gradients(self.module, g) for g in self.output_gradients])

    def per_example(self) -> torch.Tensor:
        """Per-example gradient matrices (B, out, in[+1]) = sum_p g_p a_p^T."""
        return outer_sum(self.gradients, self.activations)

    def support(self) -> torch.Tensor | None:
        """Indices of the input columns (bias column included) that can be non-zero for inputs of this
        size, or None when every column can: the others are zero padding in every example."""
        if not isinstance(self.module, nn.Conv2d):
            return None
        sizes = {tuple(x.shape[-2:]) for x in self.inputs}
        return _conv_support(_geometry(self.module), tuple(sorted(sizes)), str(self.inputs[0].device))


def outer_sum(gradients: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """(B, out, in) = sum_p g_p a_p^T from (B, P, out) and (B, P, in)."""
    if activations.shape[1] == 1:
        return gradients[:, 0, :, None] * activations[:, 0, None, :]
    return torch.einsum("bpo,bpi->boi", gradients, activations)


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _geometry(module: nn.Conv2d) -> tuple:
    return (module.in_channels, tuple(module.kernel_size), tuple(module.stride), tuple(module.dilation),
            _padding(module), module.bias is not None)


@lru_cache(maxsize=512)
def _conv_support(geometry: tuple, sizes: tuple[tuple[int, int], ...], device: str) -> torch.Tensor | None:
    """Indices of the unfolded columns that some output position reads from inside an image of one of
    ``sizes``, None when that is every column. Cached: the same tensor for the same arguments."""
    channels, kernel, stride, dilation, padding, bias = geometry
    taps = torch.zeros(kernel[0] * kernel[1], dtype=torch.bool, device=device)
    for size in sizes:
        ones = torch.ones(1, 1, *size, device=device)
        taps |= F.unfold(ones, kernel, dilation=dilation, padding=padding, stride=stride).amax(dim=2)[0] > 0
    if bool(taps.all()):
        return None
    mask = taps.repeat(channels)  # unfold orders columns channel-major: c * taps + tap
    return (torch.cat([mask, mask.new_ones(1)]) if bias else mask).nonzero()[:, 0]


def select_modules(model: nn.Module, patterns: str | list[str] | None = None) -> dict[str, nn.Module]:
    """The tracked modules: every Linear and Conv2d, or those whose names match one of the globs.

    Raises:
        InputError: a pattern matches nothing trackable, or names a module of another type.
        IncompatibleError: the model's layers cannot run hooks (``require_hooks``).
    """
    require_hooks(model)
    named = dict(model.named_modules())
    if patterns is None:
        chosen = {name: m for name, m in named.items() if isinstance(m, SUPPORTED)}
    else:
        chosen = {}
        for pattern in [patterns] if isinstance(patterns, str) else patterns:
            matched = {name: m for name, m in named.items() if fnmatch.fnmatchcase(name, pattern)}
            wrong = sorted(name for name, m in matched.items() if not isinstance(m, SUPPORTED))
            if wrong and not any(isinstance(m, SUPPORTED) for m in matched.values()):
                kinds = ", ".join(f"{n} ({type(named[n]).__name__})" for n in wrong[:3])
                raise InputError(f"--modules {pattern!r} matches {kinds}; influence tracks only nn.Linear "
                                 "and nn.Conv2d modules")
            chosen.update({name: m for name, m in matched.items() if isinstance(m, SUPPORTED)})
            if not matched:
                known = ", ".join(n for n, m in named.items() if isinstance(m, SUPPORTED))
                raise InputError(f"--modules {pattern!r} matches no module; trackable: {known}")
    if not chosen:
        raise InputError("the model has no nn.Linear or nn.Conv2d module to track")
    for name, module in chosen.items():
        _check_supported(name, module)
    return dict(sorted(chosen.items(), key=lambda item: list(named).index(item[0])))


def _check_supported(name: str, module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise InputError(f"module {name}: grouped convolutions (groups={module.groups}) are not supported")
        if module.padding_mode != "zeros":
            raise InputError(f"module {name}: padding_mode {module.padding_mode!r} is not supported")


def parameter_count(module: nn.Module) -> tuple[int, int]:
    """(out, in[+1]): the shape of the module's gradient matrix, bias as the last input column."""
    extra = int(module.bias is not None)
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features + extra
    kh, kw = module.kernel_size
    return module.out_channels, module.in_channels * kh * kw + extra


def gradient_matrix(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A parameter-shaped gradient (weight, bias) as the (out, in[+1]) matrix ``Captured`` produces."""
    matrix = weight.reshape(weight.shape[0], -1)
    return matrix if bias is None else torch.cat([matrix, bias[:, None]], dim=1)


def _activations(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """(B, P, in[+1]): Linear inputs with leading axes as positions, Conv2d inputs unfolded."""
    if isinstance(module, nn.Conv2d):
        patches = F.unfold(inputs, module.kernel_size, dilation=module.dilation,
                           padding=_padding(module), stride=module.stride).transpose(1, 2)
    else:
        patches = inputs.reshape(inputs.shape[0], -1, inputs.shape[-1])
    if module.bias is not None:
        patches = torch.cat([patches, patches.new_ones(*patches.shape[:2], 1)], dim=2)
    return patches


def _padding(module: nn.Conv2d) -> tuple[int, ...]:
    if module.padding == "valid":
        return (0, 0)
    if module.padding == "same":
        total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size)]
        if any(t % 2 for t in total):
            raise InputError("Conv2d padding='same' with an even kernel is not supported")
        return tuple(t // 2 for t in total)
    return tuple(module.padding)


def _gradients(module: nn.Module, grad_output: torch.Tensor) -> torch.Tensor:
    """(B, P, out) in the positions' order of ``_activations``."""
    if isinstance(module, nn.Conv2d):
        return grad_output.flatten(2).transpose(1, 2)
    return grad_output.reshape(grad_output.shape[0], -1, grad_output.shape[-1])


@contextmanager
def tracked(modules: dict[str, nn.Module]) -> Iterator[dict[str, list[tuple[torch.Tensor, torch.Tensor]]]]:
    """Forward hooks that keep each tracked module's (activation, output) per call; always removed.

    Yields a dict name -> list of (input, output) recorded since it was last cleared. A module called
    twice in one forward (shared weights) records both calls.
    """
    records: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in modules}
    handles = []

    def hook_for(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            records[name].append((args[0].detach(), output))
        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(hook_for(name)))
        yield records
    finally:
        for handle in handles:
            handle.remove()


def capture(model: nn.Module, modules: dict[str, nn.Module], inputs: torch.Tensor,
            objective: Callable[[torch.Tensor], torch.Tensor]) -> tuple[dict[str, Captured], torch.Tensor]:
    """Activations and output gradients of ``objective(model(inputs))`` (a sum over the batch).

    Returns the captured tensors per module and the model's outputs (detached). Parameters' .grad is
    left untouched: gradients are taken with respect to the modules' outputs only.
    """
    with tracked(modules) as records, torch.enable_grad():
        outputs = model(inputs)
        calls = [(name, output) for name, seen in records.items() for _, output in seen]
        missing = [name for name, seen in records.items() if not seen]
        if missing:
            raise InputError(f"tracked module(s) {', '.join(missing)} were not called by the model's forward")
        if not all(output.requires_grad for _, output in calls):
            raise InputError("the tracked modules' outputs do not require gradients; enable requires_grad "
                             "on the model's parameters")
        grads = torch.autograd.grad(objective(outputs), [output for _, output in calls], allow_unused=True)
    captured, position = {}, 0
    for name, seen in records.items():
        grads_of = grads[position:position + len(seen)]
        position += len(seen)
        captured[name] = Captured(modules[name], tuple(x for x, _ in seen),
                                  tuple(torch.zeros_like(out) if g is None else g
                                        for (_, out), g in zip(seen, grads_of)))
    return captured, outputs.detach()
