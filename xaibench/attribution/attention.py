"""Transformer attribution from attention maps: attention rollout and gradient-weighted attention relevance.

Both read the per-head attention probabilities A_l (N, heads, T, T) of every self-attention call, layer
l = 1..L in the order the model makes them (``xaibench.attribution.attention_capture``), combine them
into one token-to-token matrix (N, T, T), and read the map from it: the class token's row over the patch
tokens (token 0 followed by an h x w grid of patches, ``xaibench.attribution.layers.token_grid``), or, for
a transformer without a class token, the mean of the rows. The patch grid is upsampled bilinearly to the
image size, like Grad-CAM's map (``xaibench.attribution.cam``), and repeated over the input channels.

- ``attention_rollout`` (Abnar & Zuidema, ACL 2020, "Quantifying Attention Flow in Transformers"): per
  layer the heads' mean Abar_l, the residual connection added as A'_l = 0.5 Abar_l + 0.5 I with rows
  renormalised to sum to 1, and rollout = A'_L ... A'_2 A'_1. It ignores the target class.
- ``attention_relevance`` (Chefer, Gur & Wolf, ICCV 2021, "Generic Attention-model Explainability for
  Interpreting Bi-Modal and Encoder-Decoder Transformers", the self-attention rules, eqs. 5 and 6):
  R = I, then per layer R <- R + Abar_l R with Abar_l = mean over heads of (dlogit/dA_l * A_l)^+.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from xaibench.attribution.attention_capture import (
    CapturedAttention,
    attention_gradients,
    capturing_model_attention,
)
from xaibench.attribution.base import METHODS, Method, input_modality
from xaibench.attribution.chunks import map_chunks
from xaibench.attribution.layers import token_grid
from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

HEAD_FUSIONS = ("mean", "max", "min")


# ---------------------------------------------------------------------------------------------
# the rules, on attention tensors


def fuse_heads(probabilities: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """One (N, T, T) matrix from a layer's per-head (N, heads, T, T) attention: their mean, max or min."""
    if how == "mean":
        return probabilities.mean(dim=1)
    if how == "max":
        return probabilities.amax(dim=1)
    if how == "min":
        return probabilities.amin(dim=1)
    raise UnknownNameError.for_name("head fusion", how, list(HEAD_FUSIONS))


def attention_rollout(attentions: list[torch.Tensor], head_fusion: str = "mean") -> torch.Tensor:
    """Abnar & Zuidema's rollout (N, T, T) of per-layer attention (N, heads, T, T), first layer first:
    A'_l = 0.5 fuse(A_l) + 0.5 I, rows renormalised, rollout = A'_L ... A'_1."""
    eye = torch.eye(attentions[0].shape[-1], dtype=attentions[0].dtype, device=attentions[0].device)
    rolled = None
    for probabilities in attentions:
        mixed = 0.5 * fuse_heads(probabilities, head_fusion) + 0.5 * eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)  # a no-op for the mean up to rounding; max and min need it
        rolled = mixed if rolled is None else mixed @ rolled
    return rolled


def attention_relevance(attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s relevance R (N, T, T) of per-layer attention (N, heads, T, T) and the gradients of
    the explained logit with respect to it, first layer first: R = I, R <- R + mean_h((grad * A)^+) R."""
    first = attentions[0]
    eye = torch.eye(first.shape[-1], dtype=first.dtype, device=first.device)
    relevance = eye.expand(first.shape[0], -1, -1)
    for probabilities, gradient in zip(attentions, gradients, strict=True):
        weighted = (gradient * probabilities).clamp(min=0).mean(dim=1)
        relevance = relevance + weighted @ relevance
    return relevance


def patch_map(matrix: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The map (N, C, H, W) of a token-to-token matrix (N, T, T) for images ``inputs`` (N, C, H, W): the
    class token's row (token 0) over the patch tokens, or the mean of the rows when the tokens have no
    class token, on the patch grid, upsampled bilinearly and repeated over the channels.

    Raises:
        IncompatibleError: T is not a class token (or none) and a grid of patches of the image.
    """
    height, width = inputs.shape[2:]
    try:  # the columns (the tokens attended to) on their grid: (N, T rows, h, w)
        grid = token_grid(matrix.transpose(1, 2), (height, width))
    except InputError:
        raise IncompatibleError(f"the attention runs over {matrix.shape[-1]} tokens, which are not a class token "
                                f"and a grid of patches of a {height}x{width} image; the attention methods "
                                "need a vision transformer") from None
    has_class_token = matrix.shape[-1] > grid.shape[-2] * grid.shape[-1]
    rows = grid[:, :1] if has_class_token else grid.mean(dim=1, keepdim=True)
    upsampled = torch.nn.functional.interpolate(rows, size=(height, width), mode="bilinear", align_corners=False)
    return upsampled.expand_as(inputs)


def token_map(matrix: torch.Tensor, model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The map (N, D, L) of a token-to-token matrix (N, T, T) over a text model's tokens: the first special
    token's row ([CLS], <s>) over the content tokens, or the mean of the rows when no special token
    precedes the content, repeated over the D embedding channels (as ``patch_map`` repeats over colours).

    Raises:
        IncompatibleError: T is not the special tokens plus the L content tokens.
    """
    before, after = model.special_counts
    length = inputs.shape[-1]
    if matrix.shape[-1] != before + length + after:
        raise IncompatibleError(f"the attention runs over {matrix.shape[-1]} tokens, not the text's "
                                f"{before + length + after}")
    rows = matrix[:, 0] if before else matrix.mean(dim=1)
    return rows[:, before:before + length].unsqueeze(1).expand_as(inputs)


def read_map(matrix: torch.Tensor, model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The map of a token-to-token matrix: over a text's tokens or an image's patches."""
    if input_modality(model, inputs) == "text":
        return token_map(matrix, model, inputs)
    return patch_map(matrix, inputs)


def checked_probabilities(captured: list[CapturedAttention], rows: int) -> list[torch.Tensor]:
    """The captured per-head probabilities, once each is known to be batched self-attention over the same
    tokens for ``rows`` samples.

    Raises:
        IncompatibleError: an attention call the rules do not cover (cross-attention, unbatched calls,
            token counts that change between layers), or none at all.
    """
    if not captured:
        raise IncompatibleError("the model's forward pass made no attention call")
    attentions = [entry.probabilities for entry in captured]
    tokens = attentions[0].shape[-1]
    for probabilities in attentions:
        if probabilities.ndim != 4 or probabilities.shape[0] != rows or probabilities.shape[-2:] != (tokens, tokens):
            raise IncompatibleError(f"an attention call gave weights of shape {tuple(probabilities.shape)}, not "
                                    f"({rows}, heads, {tokens}, {tokens}): the attention methods need batched "
                                    "self-attention over the same tokens in every layer")
    return attentions


# ---------------------------------------------------------------------------------------------
# the methods


@METHODS.register("attention_rollout")
class AttentionRollout(Method):
    """Attention rollout (Abnar & Zuidema, ACL 2020): how much of the class token's final representation
    flows, through the attention of all layers and their residual connections, from each patch.

    Per layer the heads' attention is averaged (the paper); ``head_fusion`` max or min instead takes
    the heads' maximum or minimum, variants of jacobgil's vit-explain that are not in the paper. The
    residual connection is added as 0.5 A + 0.5 I with rows renormalised, the layers are multiplied
    from the first to the last, and the class token's row over the patch tokens is the map (the mean of
    the rows for a transformer without a class token). Class-agnostic: the target is ignored, every class
    gets the same map. Peers: Chefer et al.'s repository computes the same rollout (A + I, rows
    normalised); vit-explain also discards the lowest attentions (``discard_ratio``, 0.9 there) and
    divides the map by its maximum, neither of which is in the paper, so neither is done here.
    """

    modalities = ("image", "text")
    category = "attention"
    signed = False
    needs_gradients = False
    model_kind = "attention"  # the model kind the method runs on: one with torch.nn.MultiheadAttention
    description = "attention rollout of the class token over all layers; class-agnostic (Abnar & Zuidema 2020)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """head_fusion: how a layer's heads are combined: mean (the paper), max or min (vit-explain)."""

        head_fusion: str = "mean"

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        if params.head_fusion not in HEAD_FUSIONS:
            raise UnknownNameError.for_name("head fusion", params.head_fusion, list(HEAD_FUSIONS),
                                            where=f"method {self.name!r}")

        def chunk(rows: slice) -> torch.Tensor:
            with torch.no_grad(), capturing_model_attention(model) as captured:
                model(inputs[rows])
            attentions = checked_probabilities(captured, rows.stop - rows.start)
            return read_map(attention_rollout(attentions, params.head_fusion), model, inputs[rows])

        return map_chunks(inputs, batch_size, chunk)


@METHODS.register("attention_relevance")
class AttentionRelevance(Method):
    """Gradient-weighted attention relevance (Chefer, Gur & Wolf, ICCV 2021, "Generic Attention-model
    Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers"), the rule for
    self-attention: R = I; for each layer, first to last, R <- R + Abar R with Abar the heads' mean of
    (dlogit[target]/dA * A)^+, A the layer's attention probabilities. The map is the class token's row of R
    over the patch tokens, as in the authors' ViT code (R[0, 1:]); the identity only sits on the diagonal,
    so it is not part of that row. A transformer without a class token gets the mean of the rows of R - I
    (the identity would add the same 1/T to every patch). One forward and one backward pass per chunk
    of ``batch_size`` rows; the map depends on the target.

    This is the gradient-only rule of the ICCV paper, not the authors' CVPR 2021 method ("Transformer
    Interpretability Beyond Attention Visualization", called transformer_attribution in their code), which
    weights the attention by LRP relevances propagated through every layer. The authors' ViT code averages
    over the heads and the batch together (a batch of one there); here each sample has its own map. The
    name says what it computes, beside attention_rollout, and avoids transformer_attribution, the
    authors' name for the LRP method.
    """

    modalities = ("image", "text")
    category = "attention"
    signed = False
    model_kind = "attention"  # the model kind the method runs on: one with torch.nn.MultiheadAttention
    description = "gradient-weighted attention relevance of the class token over all layers (Chefer et al. 2021)"

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Method.Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        target = target.to(inputs.device)

        def chunk(rows: slice) -> torch.Tensor:
            with torch.enable_grad():
                with capturing_model_attention(model) as captured:
                    logits = model(inputs[rows].detach().requires_grad_(True))
                attentions = checked_probabilities(captured, rows.stop - rows.start)
                picked = logits.gather(1, target[rows, None]).sum()
                gradients = attention_gradients(picked, captured)
            relevance = attention_relevance([a.detach() for a in attentions], gradients)
            eye = torch.eye(relevance.shape[-1], dtype=relevance.dtype, device=relevance.device)
            return read_map(relevance - eye, model, inputs[rows])

        return map_chunks(inputs, batch_size, chunk)
