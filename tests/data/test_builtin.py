"""Built-in datasets: sizes computed from the sources, exact values, caching, determinism, splits."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.model_selection import train_test_split

from xaibench.core.errors import UnknownNameError
from xaibench.data import DATASETS, builtin, load_data

SAMPLE_SHAPES = {
    "digits": (1, 32, 32), "breast_cancer": (30,), "wine": (13,), "mnist1d": (1, 40), "shapes": (3, 64, 64),
    "synthetic_linear": (10,), "synthetic_interaction": (10,), "synthetic_piecewise": (10,),
    "synthetic_motifs": (1, 64), "planted_text": (0,),  # text: x is empty until a tokenizer reads the texts
}


def test_registry_lists_every_builtin_with_metadata() -> None:
    assert DATASETS.list() == sorted(SAMPLE_SHAPES)
    for name in SAMPLE_SHAPES:
        entry = DATASETS.get(name)
        assert entry.splits == ("train", "test")
        assert entry.description
        assert entry.modality == load_data(f"{name}:test").modality


@pytest.mark.parametrize("name", sorted(SAMPLE_SHAPES))
def test_builtin_types_shapes_and_indices(name: str) -> None:
    for split in ("train", "test"):
        data = DATASETS.get(name)(split)
        assert (data.name, data.split) == (name, split)
        assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
        assert data.x.shape[1:] == SAMPLE_SHAPES[name]
        assert torch.equal(data.indices, torch.arange(len(data)))
        assert torch.isfinite(data.x).all()
        assert set(data.y.tolist()) == set(range(len(data.class_names)))


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "wine", "shapes"])
def test_builtin_is_deterministic_after_cache_clear(name: str) -> None:
    first = DATASETS.get(name)("test")
    assert DATASETS.get(name)("test") is first  # cached
    DATASETS.get(name).cache_clear()
    second = DATASETS.get(name)("test")
    assert second is not first
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)


@pytest.mark.parametrize("loader", [load_digits, load_breast_cancer, load_wine])
def test_sklearn_split_sizes_are_stratified_80_20(loader) -> None:
    bunch = loader()
    name = loader.__name__.removeprefix("load_")
    train, test = load_data(f"{name}:train"), load_data(name)
    assert len(test) == math.ceil(0.2 * len(bunch.target))  # sklearn rounds the test share up
    assert len(train) + len(test) == len(bunch.target)
    for label in np.unique(bunch.target):  # stratified: each class split in proportion
        share = (test.y == int(label)).sum().item() / (bunch.target == label).sum()
        assert abs(share - 0.2) < 0.05


def test_digits_values_are_bilinear_upsampling_of_pixels_over_16() -> None:
    bunch = load_digits()
    _, test_rows = train_test_split(
        np.arange(len(bunch.target)), test_size=0.2, stratify=bunch.target, random_state=0
    )
    data = load_data("digits:test")
    source = torch.from_numpy(bunch.images[test_rows] / 16.0).float()
    assert torch.equal(data.y, torch.from_numpy(bunch.target[test_rows]))
    # align_corners=False at scale 4: output pixel 2 samples source 0.125, output 0 clamps to source 0
    assert torch.equal(data.x[:, 0, 0, 0], source[:, 0, 0])
    w = torch.tensor([0.875, 0.125])
    expected = torch.einsum("i,j,nij->n", w, w, source[:, :2, :2])
    torch.testing.assert_close(data.x[:, 0, 2, 2], expected, rtol=1e-6, atol=1e-7)
    assert data.x.min() == 0 and data.x.max() == 1
    assert data.class_names == tuple("0123456789")


@pytest.mark.parametrize("name, loader", [("breast_cancer", load_breast_cancer), ("wine", load_wine)])
def test_tabular_is_standardised_with_train_statistics(name: str, loader) -> None:
    bunch = loader()
    raw_train, raw_test = train_test_split(bunch.data, test_size=0.2, stratify=bunch.target, random_state=0)
    train, test = load_data(f"{name}:train"), load_data(f"{name}:test")
    torch.testing.assert_close(train.x.double().mean(0), torch.zeros(train.x.shape[1], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(train.x.double().std(0, unbiased=False),
                               torch.ones(train.x.shape[1], dtype=torch.float64), atol=1e-6, rtol=0)
    mean, std = raw_train.mean(0), raw_train.std(0)
    torch.testing.assert_close(test.x, torch.from_numpy((raw_test - mean) / std).float())
    assert test.feature_names == tuple(bunch.feature_names)
    assert test.class_names == tuple(bunch.target_names)


def test_mnist1d_keeps_global_rngs_and_is_deterministic() -> None:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    before = load_data("mnist1d:train")
    builtin.mnist1d.cache_clear()
    builtin._mnist1d_arrays.cache_clear()
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.get_state()[1].copy(), random.getstate()
    again = load_data("mnist1d:train")
    assert np.array_equal(np.random.get_state()[1], expected_np)
    assert random.getstate() == expected_py
    assert torch.equal(before.x, again.x) and torch.equal(before.y, again.y)
    assert len(again) == int(args.num_samples * args.train_split)
    assert len(load_data("mnist1d")) == args.num_samples - len(again)
    assert again.x.shape[-1] == args.final_seq_length


def test_all_split_is_train_then_test() -> None:
    train, test, both = (load_data(f"wine:{split}") for split in ("train", "test", "all"))
    assert both.split == "all"
    assert torch.equal(both.x, torch.cat([train.x, test.x]))
    assert torch.equal(both.y, torch.cat([train.y, test.y]))
    assert torch.equal(both.indices, torch.arange(len(train) + len(test)))
    shapes = load_data("shapes:all")
    assert torch.equal(shapes.masks[len(load_data("shapes:train")):], load_data("shapes").masks)


def test_unknown_split_names_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="unknown digits split 'tset'; did you mean 'test'"):
        load_data("digits:tset")
