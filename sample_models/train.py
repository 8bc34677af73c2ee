"""Train the bundled sample models from xaibench's offline datasets, deterministically, on the CPU.

    python sample_models/train.py [--only NAME[,NAME...]] [--out DIR]

Each model trains on its dataset's train split with Adam and a cosine learning-rate schedule for a
fixed number of epochs, from fixed seeds with deterministic algorithms, and is written as an xaibench
checkpoint with full metadata. A text model also gets a word-level tokenizer, built from its training
texts and stored in the checkpoint. The script prints and returns each model's test accuracy; README.md
in this folder records them.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import (
    Tokenizer,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from xaibench.data import Dataset, load_data
from xaibench.models import ARCHITECTURES, ModelMeta, save_checkpoint

HERE = Path(__file__).resolve().parent
SEED = 0
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # [PAD] is id 0, the model's pad_id


@dataclass(frozen=True)
class Recipe:
    """How one sample model is trained."""

    dataset: str
    arch: str
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    shipped: bool = True  # in sample_models/ and its README table; else trained on request (--only)
    arch_kwargs: dict[str, int] = field(default_factory=dict)  # beyond num_classes / in_features


RECIPES: dict[str, Recipe] = {
    "digits_cnn": Recipe("digits", "digits_cnn", epochs=12, lr=3e-3, batch_size=32),
    "shapes_cnn": Recipe("shapes", "shapes_cnn", epochs=5, lr=3e-3, batch_size=32),
    "mnist1d_cnn": Recipe("mnist1d", "mnist1d_cnn", epochs=30, lr=3e-3, batch_size=64,
                          weight_decay=1e-4),
    "breast_cancer_mlp": Recipe("breast_cancer", "mlp", epochs=40, lr=1e-3, batch_size=32,
                                weight_decay=1e-4),
    "breast_cancer_logreg": Recipe("breast_cancer", "logreg", epochs=40, lr=1e-2, batch_size=32),
    # synthetic tasks with ground-truth attributions (xaibench.data.synthetic)
    "synthetic_linear_mlp": Recipe("synthetic_linear", "mlp", epochs=20, lr=3e-3, batch_size=64),
    "synthetic_interaction_mlp": Recipe("synthetic_interaction", "mlp", epochs=30, lr=3e-3, batch_size=64,
                                        arch_kwargs={"hidden": 64}),
    "synthetic_piecewise_mlp": Recipe("synthetic_piecewise", "mlp", epochs=30, lr=3e-3, batch_size=64,
                                      arch_kwargs={"hidden": 64}),
    "synthetic_motifs_cnn": Recipe("synthetic_motifs", "motifs_cnn", epochs=10, lr=3e-3, batch_size=64),
    # a realistic CNN for benchmarks (method_comparison.py); 45 MB of weights, so not shipped
    "shapes_resnet18": Recipe("shapes", "resnet18", epochs=8, lr=1e-3, batch_size=32, shipped=False),
    # ViT-Tiny's layout at a size the 64x64 shapes support: 8x8 patches (64 tokens and a class token)
    "shapes_vit": Recipe("shapes", "vit", epochs=100, lr=1e-3, batch_size=32, shipped=False,
                         arch_kwargs={"image_size": 64, "patch_size": 8, "num_layers": 4, "num_heads": 4,
                                      "hidden_dim": 64, "mlp_dim": 128}),
    # a transformer text classifier (2 blocks of width 64) with a word-level tokenizer
    "planted_text_transformer": Recipe("planted_text", "text_transformer", epochs=5, lr=1e-3,
                                       batch_size=64),
}


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seeded RNG, deterministic algorithms and one thread inside the block; all restored afterwards.

    One thread makes float reductions, hence the trained weights, the same on any CPU count (and
    these small models train faster single-threaded than with threads competing for busy cores).
    """
    was_deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
            torch.set_num_threads(threads)


def train(name: str, out_dir: Path) -> float:
    """Train the sample model ``name``, write ``out_dir/<name>.pt`` and return its test accuracy."""
    recipe = RECIPES[name]
    train_set, test_set = load_data(f"{recipe.dataset}:train"), load_data(f"{recipe.dataset}:test")
    tokenizer = word_tokenizer(train_set.texts) if train_set.modality == "text" else None
    if tokenizer is not None:
        train_set, test_set = token_ids(train_set, tokenizer), token_ids(test_set, tokenizer)
    kwargs = {**_arch_kwargs(train_set, tokenizer), **recipe.arch_kwargs}
    with deterministic(SEED):
        model = ARCHITECTURES.get(recipe.arch)(**kwargs)
        _fit(model, train_set, recipe)
    model.eval()
    accuracy = accuracy_of(model, test_set)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / f"{name}.pt", model, arch=recipe.arch, arch_kwargs=kwargs,
                    meta=_meta(train_set), tokenizer=None if tokenizer is None else tokenizer.to_str())
    return accuracy


def word_tokenizer(texts: tuple[str, ...]) -> Tokenizer:
    """A word-level tokenizer trained on ``texts``: lower-cased words split at whitespace and
    punctuation, the special tokens first ([PAD] = 0), and ``encode(text).ids`` = [CLS] words [SEP]."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS)))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    return tokenizer


def token_ids(data: Dataset, tokenizer: Tokenizer) -> Dataset:
    """``data`` with ``x`` the int64 token ids (N, T) of its texts, which must all have T tokens."""
    encodings = tokenizer.encode_batch(list(data.texts))
    return replace(data, x=torch.tensor([encoding.ids for encoding in encodings]))


def _arch_kwargs(data: Dataset, tokenizer: Tokenizer | None = None) -> dict[str, int]:
    kwargs = {"num_classes": len(data.class_names)}
    if data.modality == "tabular":
        kwargs["in_features"] = int(data.x.shape[1])
    if tokenizer is not None:
        kwargs["vocab_size"] = tokenizer.get_vocab_size()
    return kwargs


def _fit(model: torch.nn.Module, data: Dataset, recipe: Recipe) -> None:
    """Mini-batch Adam on cross-entropy, cosine-annealed to zero over all steps."""
    optimiser = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * math.ceil(len(data) / recipe.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
    order_generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(recipe.epochs):
        for batch in torch.randperm(len(data), generator=order_generator).split(recipe.batch_size):
            loss = F.cross_entropy(model(data.x[batch]), data.y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()


@torch.no_grad()
def accuracy_of(model: torch.nn.Module, data: Dataset) -> float:
    """Fraction of ``data`` that ``model`` classifies correctly."""
    predictions = torch.cat([model(x).argmax(dim=1) for x in data.x.split(512)])
    return float((predictions == data.y).float().mean())


def _meta(data: Dataset) -> ModelMeta:
    """Metadata of a model trained on ``data``; the datasets are already scaled, so no mean/std. A text
    model's input is token ids of any length up to its ``max_length``: no input shape or value range."""
    if data.modality == "text":
        return ModelMeta(modality="text", class_names=data.class_names, dataset=data.name)
    image = data.modality == "image"
    low, high = (0.0, 1.0) if image else (float(data.x.min()), float(data.x.max()))
    return ModelMeta(
        modality=data.modality,
        input_shape=tuple(data.x.shape[1:]),
        class_names=data.class_names,
        value_range=(low, high),
        dataset=data.name,
        feature_names=data.feature_names if data.modality == "tabular" else None,
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated model names (default: all shipped models)")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: here)")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else [name for name, recipe in RECIPES.items() if recipe.shipped]
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        parser.error(f"unknown model {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    accuracies = {}
    for name in names:
        start = time.perf_counter()
        accuracies[name] = train(name, args.out)
        print(f"{name}: test accuracy {accuracies[name]:.4f} ({time.perf_counter() - start:.0f} s)")
    return accuracies


if __name__ == "__main__":
    main(sys.argv[1:])
