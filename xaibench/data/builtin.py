"""Built-in offline datasets: scikit-learn's bundled data, the MNIST-1D generator, synthetic shapes and
synthetic tasks with ground-truth attributions (``xaibench.data.synthetic``), and the generated text task
of ``xaibench.data.text_task`` (registered there; the registry imports it on first use).

Each entry of ``DATASETS`` is ``build(split) -> Dataset`` for split "train", "test" or "all" (train then
test), with metadata ``modality``, ``splits`` and ``description``. Builders are deterministic and cached
in memory; the cached tensors are shared between callers, so treat them as read-only. Nothing is
downloaded.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from xaibench.core.errors import UnknownNameError
from xaibench.core.lazy import lazy_import
from xaibench.core.registry import Registry
from xaibench.data.base import Dataset

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

Builder = Callable[[str], Dataset]
DATASETS: Registry[Builder] = Registry("dataset", modules=("xaibench.data.text_task",))
SPLITS = ("train", "test")
DIGIT_NAMES = tuple(str(d) for d in range(10))
SHAPES_SIZES = {"train": 2000, "test": 500}
SHAPES_SEEDS = {"train": 0, "test": 1}
TABULAR_SYNTHETIC_SIZES = {"train": 20000, "test": 2000}  # the models need many samples near the boundary
MOTIFS_SIZES = {"train": 4000, "test": 1000}
SYNTHETIC_SEEDS = {  # (train, test) per task: every task and split draws its own samples
    "linear": (10, 11), "interaction": (20, 21), "piecewise": (30, 31), "motifs": (40, 41),
}


def _builtin(name: str, *, modality: str, description: str) -> Callable[[Builder], Builder]:
    """Register ``make(split)`` as a cached builder that checks the split and also builds "all"."""

    def decorator(make: Builder) -> Builder:
        @functools.lru_cache(maxsize=None)
        def build(split: str) -> Dataset:
            if split == "all":
                return _concat(build("train"), build("test"))
            if split not in SPLITS:
                raise UnknownNameError.for_name(f"{name} split", split, [*SPLITS, "all"])
            return make(split)

        functools.update_wrapper(build, make)
        return DATASETS.register(name, modality=modality, splits=SPLITS, description=description)(build)

    return decorator


def _concat(first: Dataset, second: Dataset) -> Dataset:
    """``first`` then ``second`` as split "all", indexed 0..N-1."""
    return replace(
        first,
        x=torch.cat([first.x, second.x]),
        y=_cat(first.y, second.y),
        masks=_cat(first.masks, second.masks),
        ground_truth=_cat(first.ground_truth, second.ground_truth),
        texts=_join(first.texts, second.texts),
        evidence=_join(first.evidence, second.evidence),
        indices=torch.arange(len(first) + len(second), device="cpu"),
        split="all",
    )


def _cat(first: torch.Tensor | None, second: torch.Tensor | None) -> torch.Tensor | None:
    return None if first is None or second is None else torch.cat([first, second])


def _join(first: tuple[Any, ...] | None, second: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    return None if first is None or second is None else first + second


def _dataset(name: str, split: str, modality: str, x: np.ndarray, y: np.ndarray, **extra: Any) -> Dataset:
    """A labelled Dataset over numpy arrays, indexed 0..N-1 within its split."""
    return Dataset(
        x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        y=torch.from_numpy(np.asarray(y, dtype=np.int64)),
        name=name,
        split=split,
        modality=modality,
        indices=torch.arange(len(y), device="cpu"),
        **extra,
    )


def _stratified_split(x: np.ndarray, y: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``split`` part of a stratified 80/20 train/test split with random_state=0."""
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return (x_train, y_train) if split == "train" else (x_test, y_test)


@_builtin(
    "digits", modality="image",
    description="scikit-learn 8x8 handwritten digits, upsampled to 1x32x32 in [0, 1]; 10 classes",
)
def digits(split: str) -> Dataset:
    """scikit-learn's digits (UCI optical recognition of handwritten digits), /16 and bilinearly upsampled."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, y = _stratified_split(bunch.images / 16.0, bunch.target, split)
    small = torch.from_numpy(images.astype(np.float32))[:, None]
    x = torch.nn.functional.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)
    return _dataset("digits", split, "image", x.numpy(), y, class_names=DIGIT_NAMES)


def _standardised_tabular(name: str, loader: Callable[[], Any], split: str) -> Dataset:
    """A scikit-learn tabular dataset, standardised with the train split's mean and (population) std."""
    bunch = loader()
    x_train, _ = _stratified_split(bunch.data, bunch.target, "train")
    x, y = _stratified_split(bunch.data, bunch.target, split)
    x = (x - x_train.mean(axis=0)) / x_train.std(axis=0)
    return _dataset(
        name, split, "tabular", x, y,
        class_names=tuple(str(c) for c in bunch.target_names),
        feature_names=tuple(str(f) for f in bunch.feature_names),
    )


@_builtin(
    "breast_cancer", modality="tabular",
    description="scikit-learn Wisconsin breast cancer, 30 standardised features; 2 classes",
)
def breast_cancer(split: str) -> Dataset:
    """scikit-learn's breast cancer Wisconsin (diagnostic) data."""
    from sklearn.datasets import load_breast_cancer

    return _standardised_tabular("breast_cancer", load_breast_cancer, split)


@_builtin(
    "wine", modality="tabular",
    description="scikit-learn wine recognition, 13 standardised features; 3 classes",
)
def wine(split: str) -> Dataset:
    """scikit-learn's wine recognition data."""
    from sklearn.datasets import load_wine

    return _standardised_tabular("wine", load_wine, split)


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> dict[str, np.ndarray]:
    """MNIST-1D from its generator with the default arguments, leaving the global RNGs untouched.

    Greydanus & Kobak, "Scaling down deep learning with MNIST-1D" (ICML 2024). ``make_dataset`` seeds
    numpy's and Python's global generators, so their states are saved and restored around it.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        return make_dataset(get_dataset_args())
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


@_builtin(
    "mnist1d", modality="sequence",
    description="MNIST-1D generated sequences, 1x40 (4000 train, 1000 test); 10 classes",
)
def mnist1d(split: str) -> Dataset:
    """MNIST-1D with the package's own 80/20 train/test split."""
    data = _mnist1d_arrays()
    suffix = "" if split == "train" else "_test"
    x, y = data["x" + suffix], data["y" + suffix]
    return _dataset("mnist1d", split, "sequence", x[:, None, :], y, class_names=DIGIT_NAMES)


@_builtin(
    "shapes", modality="image",
    description="synthetic 3x64x64 shapes on textured backgrounds with object masks; 5 classes",
)
def shapes(split: str) -> Dataset:
    """Generated shapes (see ``xaibench.data.shapes``); train and test use different seeds."""
    from xaibench.data import shapes as generator

    x, y, masks = generator.generate(SHAPES_SIZES[split], SHAPES_SEEDS[split])
    return _dataset(
        "shapes", split, "image", x, y, masks=torch.from_numpy(masks), class_names=generator.CLASS_NAMES
    )


def _synthetic_seed(task: str, split: str) -> int:
    return SYNTHETIC_SEEDS[task][SPLITS.index(split)]


SYNTHETIC_TABULAR = {  # task of xaibench.data.synthetic: how its score is made
    "linear": "linear score of 10 N(0,1) features (3 irrelevant)",
    "interaction": "sum of feature-pair products of 10 N(0,1) features (3 irrelevant)",
    "piecewise": "sum of one-sided hinges of 10 N(0,1) features (4 irrelevant)",
}


def _synthetic_tabular(task: str) -> Builder:
    """The builder of a tabular task of ``xaibench.data.synthetic``, with its ground-truth attributions."""

    def make(split: str) -> Dataset:
        from xaibench.data import synthetic

        x, y, truth = synthetic.tabular(task, TABULAR_SYNTHETIC_SIZES[split], _synthetic_seed(task, split))
        return _dataset(f"synthetic_{task}", split, "tabular", x, y, ground_truth=torch.from_numpy(truth),
                        class_names=synthetic.CLASS_NAMES, feature_names=synthetic.FEATURE_NAMES)

    make.__name__ = make.__qualname__ = f"synthetic_{task}"
    make.__doc__ = f"The {task} task of ``xaibench.data.synthetic``: the label is the sign of its score."
    return make


for _task, _summary in SYNTHETIC_TABULAR.items():
    _builtin(f"synthetic_{_task}", modality="tabular",
             description=f"synthetic {_summary}, ground-truth attributions; 2 classes")(_synthetic_tabular(_task))


@_builtin(
    "synthetic_motifs", modality="sequence",
    description="synthetic 1x64 noise sequences with a planted class motif, ground-truth positions as "
                "attributions and masks; 4 classes",
)
def synthetic_motifs(split: str) -> Dataset:
    """Noise with a class motif at a random start; ground truth 1 on the motif's positions."""
    from xaibench.data import synthetic

    x, y, masks = synthetic.motifs(MOTIFS_SIZES[split], _synthetic_seed("motifs", split))
    positions = torch.from_numpy(masks)
    return _dataset("synthetic_motifs", split, "sequence", x, y, masks=positions,
                    ground_truth=positions[:, None].float(), class_names=synthetic.MOTIF_NAMES)
