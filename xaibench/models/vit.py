"""Vision Transformer (Dosovitskiy et al., ICLR 2021, "An Image is Worth 16x16 Words").

An image (N, C, S, S) is cut into (S / p)^2 patches of p x p pixels by a stride-p convolution
(``conv_proj``); the patch embeddings, row by row, follow a learned class token (``class_token``), and
a learned position embedding is added (``encoder.pos_embedding``). Pre-norm transformer blocks
(``encoder.layers.encoder_layer_{i}``: x + MSA(LN(x)), then x + MLP(LN(x)) with a GELU MLP) and a final
LayerNorm (``encoder.ln``) follow; a linear head (``heads.head``) reads the class token. Each block is one
module whose output is the block's output, (N, 1 + (S / p)^2, D): a hookable split point, which the layer
methods read as a grid of patches (``xaibench.attribution.layers.token_grid``).

The names and shapes of the parameters are those of torchvision's ``VisionTransformer`` (its MLP keeps
indices 0, 1 and 3, index 2 being a dropout there), and LayerNorms use eps 1e-6 as there, so
torchvision ViT weights of the same sizes load and give the same logits. Dropout is left out: the model
is for explaining, not training.

This module imports torch; ``xaibench.models.archs`` imports it only when a ViT is built.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from xaibench.core.errors import InputError

LAYER_NORM_EPS = 1e-6
POSITION_STD = 0.02  # the initial scale of the position embedding, as in the authors' code


class EncoderBlock(nn.Module):
    """A pre-norm transformer block: x + MSA(ln_1(x)), then x + mlp(ln_2(x)).

    Args:
        hidden_dim: token width D.
        num_heads: attention heads (they divide D).
        mlp_dim: width of the MLP's hidden layer.
    """

    def __init__(self, hidden_dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim, eps=LAYER_NORM_EPS)
        self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(hidden_dim, eps=LAYER_NORM_EPS)
        self.mlp = nn.Sequential(OrderedDict([
            ("0", nn.Linear(hidden_dim, mlp_dim)), ("1", nn.GELU()), ("3", nn.Linear(mlp_dim, hidden_dim)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.ln_1(x)
        attended, _ = self.self_attention(normed, normed, normed, need_weights=False)
        x = x + attended
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    """Position embedding, the blocks and the final LayerNorm.

    Args:
        tokens: sequence length (1 + patches).
        num_layers: number of blocks.
        hidden_dim, num_heads, mlp_dim: see ``EncoderBlock``.
    """

    def __init__(self, tokens: int, num_layers: int, hidden_dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, tokens, hidden_dim).normal_(std=POSITION_STD))
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(hidden_dim, num_heads, mlp_dim)) for i in range(num_layers)))
        self.ln = nn.LayerNorm(hidden_dim, eps=LAYER_NORM_EPS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(tokens + self.pos_embedding))


class VisionTransformer(nn.Module):
    """ViT classifier on square images (see the module docstring).

    Args:
        image_size: side S of the input images; a multiple of ``patch_size``.
        patch_size: side p of a patch.
        num_layers, num_heads, hidden_dim, mlp_dim: the encoder (``Encoder``).
        num_classes: number of output logits.
        in_channels: channels of the input images.

    Raises:
        ValueError: an image size that is not a multiple of the patch size.
    """

    def __init__(self, image_size: int, patch_size: int, num_layers: int, num_heads: int, hidden_dim: int,
                 mlp_dim: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of patch size {patch_size}")
        self.image_size = image_size
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.conv_proj = nn.Conv2d(in_channels, hidden_dim, patch_size, stride=patch_size)
        patches = (image_size // patch_size) ** 2
        self.encoder = Encoder(1 + patches, num_layers, hidden_dim, num_heads, mlp_dim)
        self.heads = nn.Sequential(OrderedDict([("head", nn.Linear(hidden_dim, num_classes))]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[2:]) != (self.image_size, self.image_size):
            raise InputError(f"this ViT takes {self.image_size}x{self.image_size} images, got "
                             f"{'x'.join(map(str, images.shape[2:]))}")
        patches = self.conv_proj(images).flatten(2).transpose(1, 2)  # (N, h * w, D), row by row
        tokens = torch.cat([self.class_token.expand(images.shape[0], -1, -1), patches], dim=1)
        return self.heads(self.encoder(tokens)[:, 0])


def vit(image_size: int = 224, patch_size: int = 16, num_layers: int = 12, num_heads: int = 3,
        hidden_dim: int = 192, mlp_dim: int = 768, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """A ViT; the defaults are ViT-Tiny/16 (Touvron et al., ICML 2021, DeiT-Ti sizes) at 224x224.

    Args: see ``VisionTransformer``.
    """
    return VisionTransformer(image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, num_classes,
                             in_channels)
