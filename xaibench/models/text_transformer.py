"""A small transformer text classifier over token ids, built from the ViT's blocks.

Token ids (N, T) are embedded (``token_embedding``, the layer whose output the token-level attribution
methods perturb), a learned position embedding (``pos_embedding``, positions [0, T)) is added, and
pre-norm transformer blocks (``layers.encoder_layer_{i}``, ``xaibench.models.vit.EncoderBlock``: x +
MSA(LN(x)), then x + MLP(LN(x)), on ``torch.nn.MultiheadAttention``) and a final LayerNorm (``ln``)
follow. A linear ``head`` reads token 0, where the tokenizer puts [CLS] (Devlin et al., NAACL 2019,
"BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding").

There is no attention mask: every position is attended, since xaibench feeds texts of one token
length per batch, without padding. Dropout is left out, as in the ViT.

This module imports torch; ``xaibench.models.archs`` imports it only when the architecture is built.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from xaibench.core.errors import InputError
from xaibench.models.vit import LAYER_NORM_EPS, POSITION_STD, EncoderBlock


class TextTransformer(nn.Module):
    """Transformer encoder classifying token ids by their first token (see the module docstring).

    Args:
        vocab_size: number of token ids.
        max_length: the most tokens T a text may have ([CLS] and [SEP] included).
        num_layers: transformer blocks.
        num_heads: attention heads per block (they divide ``hidden_dim``).
        hidden_dim: token width D.
        mlp_dim: hidden width of each block's MLP.
        num_classes: number of output logits.
        pad_id: the padding token's id, whose embedding is zero and gets no gradient.
    """

    def __init__(self, vocab_size: int, max_length: int = 64, num_layers: int = 2, num_heads: int = 4,
                 hidden_dim: int = 64, mlp_dim: int = 128, num_classes: int = 3, pad_id: int = 0) -> None:
        super().__init__()
        self.max_length = max_length
        self.token_embedding = nn.Embedding(vocab_size, hidden_dim, padding_idx=pad_id)
        self.pos_embedding = nn.Parameter(torch.empty(1, max_length, hidden_dim).normal_(std=POSITION_STD))
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(hidden_dim, num_heads, mlp_dim)) for i in range(num_layers)))
        self.ln = nn.LayerNorm(hidden_dim, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(hidden_dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) of token ids (N, T); float ids (whole numbers) are cast to integers.

        Raises:
            InputError: ids that are not (N, T) with 1 <= T <= ``max_length``.
        """
        if ids.ndim != 2 or not 1 <= ids.shape[1] <= self.max_length:
            raise InputError(f"this text transformer takes token ids (N, T) with 1 <= T <= "
                             f"{self.max_length}, got shape {tuple(ids.shape)}")
        tokens = self.token_embedding(ids.long()) + self.pos_embedding[:, :ids.shape[1]]
        return self.head(self.ln(self.layers(tokens))[:, 0])
