"""Toy models shared by the test suites: one linear and one small non-linear model per modality, and a
tiny ViT for the methods that need attention modules (``model_for``).

Shapes: image (2, 8, 8), sequence (2, 16), tabular (6,), text (8, 6): the embeddings (D = 8) of six
content tokens, what a text model wrapped by ``xaibench.models.text`` takes; 3 classes. Seeds are fixed,
so every test sees the same weights.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

# One memory budget for every command the tests run, whatever this machine's free memory: the rows per
# pass (which group the re-explained copies of stochastic methods) must not change between two runs
# that a test compares. tests/test_memory.py checks the default budget itself.
os.environ.setdefault("XAIBENCH_MAX_MEMORY", "512M")

SHAPES = {"image": (2, 8, 8), "sequence": (2, 16), "tabular": (6,), "text": (8, 6)}
CLASSES = 3
WORDS = tuple(f"w{i}" for i in range(12))  # the toy text vocabulary besides the special tokens


class Linear(nn.Module):
    """logits = flatten(x) @ W^T + b, so d logit_c / dx = W[c] reshaped to the sample shape."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape
        self.fc = nn.Linear(int(torch.tensor(shape).prod()), CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))

    def weight(self, c: int) -> torch.Tensor:
        return self.fc.weight[c].detach().reshape(self.shape)


class TextLinear(Linear):
    """A linear model over token embeddings, which xaibench treats as text."""

    input_modality = "text"


def toy_tokenizer():
    """A word-level tokenizer over ``WORDS`` with [PAD] [UNK] [CLS] [SEP] [MASK] and the template
    [CLS] text [SEP], built in memory."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tokenizer


def make_text_model(seed: int = 0) -> nn.Module:
    """A 1-block text transformer (width 8, 2 heads) over ``toy_tokenizer``, wrapped to take embeddings."""
    from xaibench.models.text import TextTokenizer, text_classifier
    from xaibench.models.text_transformer import TextTransformer

    torch.manual_seed(seed)
    inner = TextTransformer(vocab_size=5 + len(WORDS), max_length=8, num_layers=1, num_heads=2, hidden_dim=8,
                            mlp_dim=16, num_classes=CLASSES).eval()
    return text_classifier(inner, TextTokenizer(toy_tokenizer())).eval()


def text_ids(n: int = 4, seed: int = 0) -> torch.Tensor:
    """(n, 6) random content token ids (words only, no special token)."""
    return torch.randint(5, 5 + len(WORDS), (n, SHAPES["text"][1]), generator=torch.Generator().manual_seed(seed))


def small_net(modality: str) -> nn.Module:
    """A small ReLU network with a convolution (image, sequence) or hidden layer (tabular)."""
    if modality == "image":
        return nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, CLASSES),
        )
    if modality == "sequence":
        return nn.Sequential(
            nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv1d(4, 4, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool1d(4), nn.Flatten(), nn.Linear(16, CLASSES),
        )
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, CLASSES))


@pytest.fixture(params=sorted(SHAPES))
def modality(request: pytest.FixtureRequest) -> str:
    return request.param


def make_inputs(modality: str, n: int = 4, seed: int = 0) -> torch.Tensor:
    """Uniform inputs; for text, the seed-0 toy text model's embeddings of random words."""
    if modality == "text":
        return make_text_model(0).embed(text_ids(n, seed))
    return torch.rand((n, *SHAPES[modality]), generator=torch.Generator().manual_seed(seed))


def make_linear(modality: str, seed: int = 0) -> Linear:
    torch.manual_seed(seed)
    return (TextLinear if modality == "text" else Linear)(SHAPES[modality]).eval()


def make_net(modality: str, seed: int = 0) -> nn.Module:
    if modality == "text":
        return make_text_model(seed)
    torch.manual_seed(seed)
    return small_net(modality).eval()


def make_vit(seed: int = 0) -> nn.Module:
    """A 2-block ViT on the (2, 8, 8) images: a class token and 4x4 patches of 2x2 pixels, 2 heads of width 4."""
    from xaibench.models.vit import vit

    torch.manual_seed(seed)
    return vit(image_size=8, patch_size=2, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16,
               num_classes=CLASSES, in_channels=SHAPES["image"][0]).eval()


#: the toy model of each kind a method may need (its ``model_kind`` class attribute), per modality
MODEL_KINDS = {"attention": {"image": make_vit, "text": make_text_model}}


def model_for(name: str, modality: str, seed: int = 0) -> nn.Module:
    """The toy model method ``name`` runs on: the small net, or the model of the kind it needs."""
    from xaibench.attribution import METHODS

    kind = METHODS.get(name).model_kind
    return make_net(modality, seed) if kind is None else MODEL_KINDS[kind][modality](seed)
