"""Reading the attention probabilities of a model's ``torch.nn.MultiheadAttention`` modules by hooks.

The attention methods (``xaibench.attribution.attention``) need every attention call's per-head
probabilities A = softmax(Q K^T / sqrt(d) + mask), (N, heads, T, S), and for the gradient-weighted rule
d logit / dA. torch's ``MultiheadAttention`` returns A only when called with ``need_weights=True``; a
transformer that does not use them (xaibench's ViT, torchvision's) passes ``need_weights=False``, which
lets torch use its fused attention kernel. While ``capturing_attention`` is active, a forward pre-hook
asks each call for per-head weights (``need_weights=True, average_attn_weights=False``), and the forward
hook records them and hands the model what it asked for: ``(output, None)`` after ``need_weights=False``,
the head average after the default ``average_attn_weights=True``. The hooks are removed on exit, also
after an error.

With weights asked for, torch computes the output as softmax(...) @ V explicitly rather than with the
fused kernel: the model's outputs equal the uncaptured ones up to float rounding (about 1e-7 of their
scale; bitwise in torch's inference fast path, which an even head count and no gradients allow).

Gradients: the per-head weights torch returns are a reshaped view of the probabilities it multiplied with
the values, made after that product, so the gradient of the logits reaches the probabilities (the view's
base), not the view; ``attention_gradients`` differentiates with respect to that base.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from xaibench.core.errors import IncompatibleError
from xaibench.core.lazy import lazy_import
from xaibench.models.layers import is_layer, require_hooks

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

#: ``MultiheadAttention.forward``'s parameters in their positional order
_FORWARD_PARAMETERS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
                       "average_attn_weights", "is_causal")


@dataclasses.dataclass(frozen=True)
class CapturedAttention:
    """One attention call: ``probabilities`` (N, heads, T, S), or (heads, T, S) for an unbatched call,
    and ``source``, the tensor of the same values that the module multiplied with its values (the one
    gradients reach)."""

    probabilities: torch.Tensor
    source: torch.Tensor


def attention_modules(model: torch.nn.Module) -> list[torch.nn.MultiheadAttention]:
    """The model's ``torch.nn.MultiheadAttention`` modules, in registration order.

    Raises:
        IncompatibleError: the model has none, has them only as a compiled graph (an exported program),
            or cannot run hooks (TorchScript).
    """
    require_hooks(model)
    modules = [m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    if modules:
        return modules
    if any(is_layer(m, torch.nn.MultiheadAttention) for m in model.modules()):
        raise IncompatibleError("this model's attention layers are compiled graphs that do not return their "
                                "attention probabilities; load the model from a state_dict (with --arch) or as "
                                "a pickled module for the attention methods")
    raise IncompatibleError("the model has no torch.nn.MultiheadAttention modules; attention methods need a "
                            "transformer built on them (such as a ViT); use gradcam or a gradient method")


@contextmanager
def capturing_attention(modules: list[torch.nn.MultiheadAttention]) -> Iterator[list[CapturedAttention]]:
    """Within the block, each forward call of one of ``modules`` appends its per-head attention
    probabilities to the yielded list, in call order; see the module docstring."""
    captured: list[CapturedAttention] = []
    requests: list[tuple[bool, bool]] = []  # the caller's (need_weights, average_attn_weights), per pending call

    def ask_for_weights(_module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        kwargs = dict(kwargs)
        kwargs.update(zip(_FORWARD_PARAMETERS[3:], args[3:], strict=False))  # positional options by name
        requests.append((kwargs.get("need_weights", True), kwargs.get("average_attn_weights", True)))
        kwargs["need_weights"], kwargs["average_attn_weights"] = True, False
        return args[:3], kwargs

    def record(_module: torch.nn.Module, _args: tuple, _kwargs: dict[str, Any], output: tuple) -> tuple:
        need_weights, average = requests.pop()
        attended, weights = output
        base = weights._base
        captured.append(CapturedAttention(weights, base if base is not None and base.numel() == weights.numel()
                                          else weights))
        if not need_weights:
            return attended, None
        return attended, weights.mean(dim=-3) if average else weights  # heads: dim 1, or 0 unbatched

    handles = []
    try:
        for module in modules:
            handles.append(module.register_forward_pre_hook(ask_for_weights, with_kwargs=True))
            handles.append(module.register_forward_hook(record, with_kwargs=True))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def attention_gradients(output: torch.Tensor, captured: list[CapturedAttention]) -> list[torch.Tensor]:
    """d output / d probabilities of each captured call, shaped like its probabilities.

    Raises:
        IncompatibleError: the probabilities are not part of the computation of ``output``.
    """
    sources = [entry.source for entry in captured]
    if not output.requires_grad or not all(source.requires_grad for source in sources):
        raise IncompatibleError("the model gives no gradients of its attention probabilities; use "
                                "attention_rollout")
    try:
        gradients = torch.autograd.grad(output, sources)
    except RuntimeError:  # a source the output does not depend on: torch's internals changed
        raise IncompatibleError("the attention probabilities torch returns are not the ones its output was "
                                "computed from, so they have no gradients; use attention_rollout") from None
    return [g.view(entry.probabilities.shape) for g, entry in zip(gradients, captured, strict=True)]


@contextmanager
def capturing_model_attention(model: torch.nn.Module) -> Iterator[list[CapturedAttention]]:
    """``capturing_attention`` on the model's ``MultiheadAttention`` modules, or, for a Hugging Face text
    model (``xaibench.models.text.TextClassifier``), the attention probabilities transformers returns;
    the yielded list is complete when the block ends."""
    if not getattr(model, "huggingface", False):
        with capturing_attention(attention_modules(model)) as captured:
            yield captured
        return
    captured: list[CapturedAttention] = []
    with model.capturing_attention() as returned:
        yield captured
    captured.extend(CapturedAttention(probabilities, probabilities) for probabilities in returned)
