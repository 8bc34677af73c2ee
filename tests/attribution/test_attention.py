"""Attention rollout and gradient-weighted attention relevance: the rules on hand-made attention, the
capture of a ViT's attention by hooks against the ViT's forward written out, and the methods."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import make_inputs, make_net, make_vit
from xaibench.attribution import attribute
from xaibench.attribution.attention import (
    attention_relevance,
    attention_rollout,
    patch_map,
)
from xaibench.attribution.attention_capture import (
    attention_gradients,
    attention_modules,
    capturing_attention,
)
from xaibench.core.errors import IncompatibleError, UnknownNameError

TARGET = torch.tensor([0, 1, 2, 1])


def hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def reference_forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """xaibench's ViT written out: its logits and each block's attention probabilities (N, heads, T, T),
    the tensors the logits are computed from."""
    encoder = model.encoder
    patches = model.conv_proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat([model.class_token.expand(len(x), -1, -1), patches], dim=1) + encoder.pos_embedding
    probabilities = []
    for block in encoder.layers:
        attention, heads = block.self_attention, block.self_attention.num_heads
        query, key, value = nn.functional.linear(block.ln_1(tokens), attention.in_proj_weight,
                                                 attention.in_proj_bias).chunk(3, dim=-1)
        width = query.shape[-1] // heads

        def split(z: torch.Tensor, width: int = width, heads: int = heads) -> torch.Tensor:
            return z.unflatten(-1, (heads, width)).transpose(1, 2)

        p = torch.softmax(split(query) @ split(key).transpose(-1, -2) / width**0.5, dim=-1)
        probabilities.append(p)
        tokens = tokens + attention.out_proj((p @ split(value)).transpose(1, 2).flatten(2))
        tokens = tokens + block.mlp(block.ln_2(tokens))
    return model.heads(encoder.ln(tokens)[:, 0]), probabilities


# ---------------------------------------------------------------------------------------------
# the rules on hand-made attention


def test_rollout_of_identity_attention_is_the_identity_and_an_empty_map() -> None:
    """Each token attending only to itself: 0.5 I + 0.5 I = I in every layer, so rollout = I and the class
    token's row gives every patch 0, whatever the head fusion."""
    eye = torch.eye(17).expand(2, 3, 17, 17)
    for fusion in ("mean", "max", "min"):
        assert torch.equal(attention_rollout([eye, eye], fusion), torch.eye(17).expand(2, 17, 17))
    images = make_inputs("image", n=2)
    assert torch.equal(patch_map(attention_rollout([eye, eye]), images), torch.zeros_like(images))


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_rollout_of_uniform_attention_is_uniform_over_the_patches(layers: int) -> None:
    """A = U (every entry 1/T): U U = U and U I = U, so (0.5 U + 0.5 I)^L = 2^-L I + (1 - 2^-L) U; each
    patch gets (1 - 2^-L) / T from the class token's row."""
    tokens = 17
    uniform = torch.full((2, 2, tokens, tokens), 1 / tokens)
    expected = 2.0**-layers * torch.eye(tokens) + (1 - 2.0**-layers) / tokens
    rolled = attention_rollout([uniform] * layers)
    torch.testing.assert_close(rolled, expected.expand(2, -1, -1))
    images = make_inputs("image", n=2)
    torch.testing.assert_close(patch_map(rolled, images), torch.full_like(images, (1 - 2.0**-layers) / tokens))


def test_rollout_by_hand_multiplies_later_layers_on_the_left() -> None:
    """Two layers of two heads over 3 tokens. Layer 1: heads' mean [[0,.5,.5],[0,1,0],[0,0,1]], so
    A'1 = [[.5,.25,.25],[0,1,0],[0,0,1]]; layer 2: both heads [[0,1,0],[1,0,0],[0,0,1]], so
    A'2 = [[.5,.5,0],[.5,.5,0],[0,0,1]]; rollout = A'2 A'1 (A'1 A'2 would give [.375,.375,.25] first)."""
    first = torch.tensor([[[0.0, 1, 0], [0, 1, 0], [0, 0, 1]], [[0, 0, 1], [0, 1, 0], [0, 0, 1]]])
    second = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]]).expand(2, 3, 3)
    rolled = attention_rollout([first[None], second[None]])
    expected = torch.tensor([[0.25, 0.625, 0.125], [0.25, 0.625, 0.125], [0, 0, 1]])
    torch.testing.assert_close(rolled[0], expected, rtol=0, atol=1e-7)
    # max and min fusion: 0.5 fuse + 0.5 I no longer sums to 1 per row and is renormalised
    by_max = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0, 1, 0], [0, 0, 1]])
    torch.testing.assert_close(attention_rollout([first[None]], "max")[0], by_max, rtol=0, atol=1e-7)
    torch.testing.assert_close(attention_rollout([first[None]], "min")[0], torch.eye(3), rtol=0, atol=1e-7)


def test_relevance_by_hand() -> None:
    """Two layers of two heads over 3 tokens; the second head's gradient is 0, so Abar is half of the first
    head's (grad * A)^+. Layer 1: (grad * A)^+ = [[.2,0,1],[0,.8,0],[1.2,0,0]], Abar1 = half of it,
    R = I + Abar1 = [[1.1,0,.5],[0,1.4,0],[.6,0,1]]. Layer 2: (grad * A)^+ = [[1,0,0],0,0],
    Abar2 = [[.5,0,0],0,0], R + Abar2 R = [[1.65,0,.75],[0,1.4,0],[.6,0,1]] (R + R Abar2 would give .5
    at [0, 2], the layers in reverse order [1.65, 0, .5] in row 0)."""
    a1 = torch.tensor([[0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.4, 0.4, 0.2]])
    g1 = torch.tensor([[1.0, -1, 2], [0, 1, 0], [3, 0, -1]])
    a2 = torch.tensor([[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1]])
    g2 = torch.tensor([[2.0, -1, 0], [0, 0, 0], [0, 0, 0]])
    attentions = [torch.stack([a1, a1])[None], torch.stack([a2, a2])[None]]
    gradients = [torch.stack([g1, torch.zeros(3, 3)])[None], torch.stack([g2, torch.zeros(3, 3)])[None]]
    expected = torch.tensor([[1.65, 0, 0.75], [0, 1.4, 0], [0.6, 0, 1]])
    torch.testing.assert_close(attention_relevance(attentions, gradients)[0], expected, rtol=0, atol=1e-6)


def test_patch_map_reads_the_class_token_row_on_the_grid_row_by_row() -> None:
    """1 + 16 tokens of a 4x4 image: a class token and 1x1 patches, row by row; no resampling at that size."""
    matrix = torch.zeros(1, 17, 17)
    matrix[0, 0, 1:] = torch.arange(16.0)
    matrix[0, 1:, 1:] = 100.0  # the rows of the patch tokens: not read when there is a class token
    images = torch.zeros(1, 3, 4, 4)
    expected = torch.arange(16.0).reshape(4, 4).expand(1, 3, 4, 4)
    torch.testing.assert_close(patch_map(matrix, images), expected)
    # without a class token (16 tokens): the mean of the rows
    rows = torch.arange(256.0).reshape(1, 16, 16)
    torch.testing.assert_close(patch_map(rows, images), rows.mean(dim=1).reshape(1, 1, 4, 4).expand(1, 3, 4, 4))
    with pytest.raises(IncompatibleError, match="not a class token and a grid of patches"):
        patch_map(torch.zeros(1, 7, 7), images)


# ---------------------------------------------------------------------------------------------
# capturing a ViT's attention


def test_capture_gives_the_vits_attention_and_leaves_its_logits() -> None:
    model, x = make_vit(), make_inputs("image")
    with torch.no_grad():
        plain = model(x)
        expected_logits, expected = reference_forward(model, x)
        with capturing_attention(attention_modules(model)) as captured:
            logits = model(x)
    torch.testing.assert_close(expected_logits, plain)  # the reference is the ViT
    assert [c.probabilities.shape for c in captured] == [(4, 2, 17, 17)] * 2
    for entry, probabilities in zip(captured, expected, strict=True):
        torch.testing.assert_close(entry.probabilities, probabilities)
    # without gradients (and an even head count) torch's inference fast path computes the same output
    assert torch.equal(logits, plain)
    with capturing_attention(attention_modules(model)):
        with_graph = model(x.requires_grad_(True))
    # with gradients torch multiplies the explicit probabilities instead of its fused kernel: rounding only
    torch.testing.assert_close(with_graph, plain, rtol=1e-6, atol=1e-6)
    assert hooks_left(model) == 0


def test_capture_gives_the_gradients_of_the_vits_attention() -> None:
    model, x = make_vit(), make_inputs("image")
    logits, probabilities = reference_forward(model, x)
    expected = torch.autograd.grad(logits.gather(1, TARGET[:, None]).sum(), probabilities)
    with capturing_attention(attention_modules(model)) as captured:
        picked = model(x.requires_grad_(True)).gather(1, TARGET[:, None]).sum()
    gradients = attention_gradients(picked, captured)
    for got, want in zip(gradients, expected, strict=True):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want)


class UsesWeights(nn.Module):
    """A model that reads the head-averaged attention weights: the capture must hand them back."""

    def __init__(self, positional: bool) -> None:
        super().__init__()
        self.positional = positional
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)[..., :4]
        if self.positional:  # key_padding_mask, need_weights, attn_mask, average_attn_weights by position
            out, weights = self.attention(tokens, tokens, tokens, None, True, None, True)
        else:
            out, weights = self.attention(tokens, tokens, tokens)
        return out.sum(dim=(1, 2))[:, None] + weights.sum(dim=1)[:, :3]


@pytest.mark.parametrize("positional", [False, True])
def test_capture_hands_a_model_the_weights_it_asked_for(positional: bool) -> None:
    torch.manual_seed(0)
    model, x = UsesWeights(positional).eval(), torch.rand(3, 8, 2, 2)
    with torch.no_grad():
        plain = model(x)
        with capturing_attention(attention_modules(model)) as captured:
            logits = model(x)
    torch.testing.assert_close(logits, plain)
    assert captured[0].probabilities.shape == (3, 2, 4, 4)  # per head, although the model asked for the mean


def test_hooks_are_removed_after_an_error() -> None:
    model = make_vit()
    with pytest.raises(ValueError, match="inside"), capturing_attention(attention_modules(model)):
        model(make_inputs("image"))
        raise ValueError("inside")
    assert hooks_left(model) == 0


# ---------------------------------------------------------------------------------------------
# the methods


def test_rollout_method_is_the_rollout_of_the_vits_attention_for_any_target() -> None:
    model, x = make_vit(), make_inputs("image")
    with torch.no_grad():
        _, probabilities = reference_forward(model, x)
    expected = patch_map(attention_rollout(probabilities), x)
    got = attribute("attention_rollout", model, x, target=TARGET)
    torch.testing.assert_close(got, expected)
    assert torch.equal(attribute("attention_rollout", model, x, target=0), got)  # class-agnostic
    by_max = attribute("attention_rollout", model, x, target=TARGET, head_fusion="max")
    torch.testing.assert_close(by_max, patch_map(attention_rollout(probabilities, "max"), x))
    with pytest.raises(UnknownNameError, match="head fusion 'avg'"):
        attribute("attention_rollout", model, x, target=0, head_fusion="avg")


def test_relevance_method_is_the_relevance_of_the_vits_attention_for_the_target() -> None:
    model, x = make_vit(), make_inputs("image")
    logits, probabilities = reference_forward(model, x)
    gradients = torch.autograd.grad(logits.gather(1, TARGET[:, None]).sum(), probabilities)
    relevance = attention_relevance([p.detach() for p in probabilities], list(gradients))
    expected = patch_map(relevance - torch.eye(17), x)
    got = attribute("attention_relevance", model, x, target=TARGET)
    torch.testing.assert_close(got, expected)
    assert got.min() >= 0 and got.max() > 0
    other = attribute("attention_relevance", model, x, target=(TARGET + 1) % 3)
    assert not torch.allclose(other, got)  # the gradients of another logit weight the attention otherwise


@pytest.mark.parametrize("name", ["attention_rollout", "attention_relevance"])
def test_chunks_keep_the_result_and_bound_the_rows(name: str) -> None:
    model, x = make_vit(), make_inputs("image", n=5)
    rows: list[int] = []
    handle = model.conv_proj.register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))
    try:
        chunked = attribute(name, model, x, target=TARGET[1], batch_size=2)
    finally:
        handle.remove()
    assert rows == [2, 2, 1]
    torch.testing.assert_close(chunked, attribute(name, model, x, target=TARGET[1]))
    assert hooks_left(model) == 0


class PatchTransformer(nn.Module):
    """Self-attention over 2x2 patches of an 8x8 image without a class token; the tokens' mean is classified."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(2, 4, 2, stride=2)
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = tokens + self.attention(tokens, tokens, tokens, need_weights=False)[0]
        return self.head(tokens.mean(dim=1))


def test_without_a_class_token_the_rows_are_averaged() -> None:
    torch.manual_seed(0)
    model, x = PatchTransformer().eval(), make_inputs("image")
    with torch.no_grad(), capturing_attention(attention_modules(model)) as captured:
        model(x)
    mixed = 0.5 * captured[0].probabilities.mean(dim=1) + 0.5 * torch.eye(16)  # one layer: rollout = A'
    grid = mixed.mean(dim=1).reshape(4, 1, 4, 4)  # the mean row over the 16 patches
    expected = nn.functional.interpolate(grid, size=(8, 8), mode="bilinear", align_corners=False).expand_as(x)
    torch.testing.assert_close(attribute("attention_rollout", model, x, target=0), expected)
    assert attribute("attention_relevance", model, x, target=TARGET).shape == x.shape


class CrossAttention(nn.Module):
    """A learned query attending to the patches: cross-attention, which the rules do not cover."""

    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.ones(1, 1, 8))
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)[..., :8].repeat(1, 1, 4)
        pooled = self.attention(self.query.expand(len(x), -1, -1), tokens, tokens, need_weights=False)[0]
        return self.head(pooled[:, 0])


@pytest.mark.parametrize("name", ["attention_rollout", "attention_relevance"])
def test_models_outside_the_rules_are_refused(name: str) -> None:
    x = make_inputs("image")
    with pytest.raises(IncompatibleError, match="no torch.nn.MultiheadAttention modules"):
        attribute(name, make_net("image"), x, target=0)
    with pytest.raises(IncompatibleError, match="batched self-attention"):
        attribute(name, CrossAttention().eval(), x, target=0)


class EncoderTransformer(nn.Module):
    """A class token and 2x2 patches through torch's own nn.TransformerEncoder, whose inference fast path
    skips its attention modules unless hooks are attached to them."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(2, 8, 2, stride=2)
        self.class_token = nn.Parameter(torch.ones(1, 1, 8))
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.class_token.expand(len(x), -1, -1), self.embed(x).flatten(2).transpose(1, 2)], 1)
        return self.head(self.encoder(tokens)[:, 0])


def test_torchs_transformer_encoder_is_captured_layer_by_layer() -> None:
    torch.manual_seed(0)
    model, x = EncoderTransformer().eval(), make_inputs("image")
    with torch.no_grad():
        plain = model(x)
        with capturing_attention(attention_modules(model)) as captured:
            logits = model(x)
    assert [c.probabilities.shape for c in captured] == [(4, 2, 17, 17)] * 2
    torch.testing.assert_close(logits, plain)
    expected = patch_map(attention_rollout([c.probabilities for c in captured]), x)
    torch.testing.assert_close(attribute("attention_rollout", model, x, target=0), expected)
    assert attribute("attention_relevance", model, x, target=TARGET).max() > 0
