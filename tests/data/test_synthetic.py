"""Synthetic tasks with ground-truth attributions: determinism, the decompositions written out by hand,
the motif's positions, and the ground truth kept aligned by select, "all", preprocessing and prepare."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from xaibench.data import DATASETS, load_data, select, synthetic
from xaibench.data.prepare import Selection, prepare
from xaibench.data.transforms import Preprocessing
from xaibench.models import load_model

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
TABULAR = ("synthetic_linear", "synthetic_interaction", "synthetic_piecewise")
NAMES = (*TABULAR, "synthetic_motifs")


def _linear(x: np.ndarray) -> np.ndarray:
    w = np.array([2.0, -1.5, 1.0, -0.75, 0.5, 1.25, -1.0, 0.0, 0.0, 0.0])
    return x * w


def _interaction(x: np.ndarray) -> np.ndarray:
    """2 x0 x1 - 1.5 x2 x3 + x4 x5 - x5 x6, each product halved between its two features."""
    c = np.zeros_like(x)
    c[:, 0] = c[:, 1] = x[:, 0] * x[:, 1]
    c[:, 2] = c[:, 3] = -0.75 * x[:, 2] * x[:, 3]
    c[:, 4] = 0.5 * x[:, 4] * x[:, 5]
    c[:, 6] = -0.5 * x[:, 5] * x[:, 6]
    c[:, 5] = c[:, 4] + c[:, 6]
    return c


def _piecewise(x: np.ndarray) -> np.ndarray:
    """Hinges measured from their thresholds, zero on the inactive side."""
    c = np.zeros_like(x)
    c[:, 0] = 2.0 * np.maximum(x[:, 0] - 0.5, 0)
    c[:, 1] = -2.0 * np.maximum(x[:, 1] - 0.5, 0)
    c[:, 2] = 1.5 * np.minimum(x[:, 2] + 0.5, 0)
    c[:, 3] = -1.5 * np.minimum(x[:, 3] + 0.5, 0)
    c[:, 4] = np.maximum(x[:, 4], 0)
    c[:, 5] = -np.maximum(x[:, 5], 0)
    return c


EXPECTED = {"synthetic_linear": (_linear, 7), "synthetic_interaction": (_interaction, 7),
            "synthetic_piecewise": (_piecewise, 6)}  # contributions, first irrelevant feature


@pytest.mark.parametrize("name", NAMES)
def test_builtin_is_deterministic_and_splits_differ(name: str) -> None:
    first = DATASETS.get(name)("test")
    DATASETS.get(name).cache_clear()
    again = DATASETS.get(name)("test")
    assert again is not first
    for field in ("x", "y", "ground_truth"):
        assert torch.equal(getattr(first, field), getattr(again, field))
    assert first.ground_truth.dtype == torch.float32 and first.ground_truth.shape == first.x.shape
    train = DATASETS.get(name)("train")
    assert not torch.equal(train.x[:len(first)], first.x)


@pytest.mark.parametrize("task", ["linear", "interaction", "piecewise"])
def test_tabular_generator_depends_only_on_its_seed(task: str) -> None:
    first, again, other = (synthetic.tabular(task, 64, seed) for seed in (5, 5, 6))
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("name", TABULAR)
def test_ground_truth_is_the_decomposition_signed_towards_the_label(name: str) -> None:
    data = load_data(f"{name}:train")
    contributions_of, first_irrelevant = EXPECTED[name]
    x = data.x.double().numpy()
    contributions = contributions_of(x)
    score = contributions.sum(1)  # s(x) - s(reference point); that value is 0 for every task
    assert np.array_equal(data.y.numpy(), (score > 0).astype(np.int64))
    sign = np.where(score > 0, 1.0, -1.0)[:, None]
    torch.testing.assert_close(data.ground_truth, torch.from_numpy(sign * contributions).float(),
                               rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(data.ground_truth.double().sum(1), torch.from_numpy(np.abs(score)),
                               rtol=1e-5, atol=1e-5)
    assert (score != 0).all()  # rows with nothing to explain are drawn again
    assert (data.ground_truth[:, first_irrelevant:] == 0).all()
    assert (data.ground_truth[:, :first_irrelevant] != 0).any(0).all()
    assert 0.45 < data.y.double().mean() < 0.55
    assert data.class_names == ("negative", "positive")
    assert data.feature_names == tuple(f"x{i}" for i in range(10))


def test_linear_ground_truth_is_exactly_the_weighted_input() -> None:
    data = load_data("synthetic_linear:test")
    w = torch.tensor([2.0, -1.5, 1.0, -0.75, 0.5, 1.25, -1.0, 0.0, 0.0, 0.0])
    sign = (2 * data.y - 1)[:, None].float()
    assert torch.equal(data.ground_truth, sign * (data.x * w))  # products of float32 are rounded once


def test_piecewise_features_are_zero_on_their_inactive_side() -> None:
    data = load_data("synthetic_piecewise:test")
    x, truth = data.x, data.ground_truth
    inactive = torch.stack([x[:, 0] <= 0.5, x[:, 1] <= 0.5, x[:, 2] >= -0.5, x[:, 3] >= -0.5,
                            x[:, 4] <= 0, x[:, 5] <= 0], dim=1)
    assert (truth[:, :6][inactive] == 0).all()
    assert (truth[:, :6][~inactive] != 0).all()


def test_motif_ground_truth_marks_exactly_where_the_motif_was_added(monkeypatch) -> None:
    x, y, masks = synthetic.motifs(200, 7)
    monkeypatch.setattr(synthetic, "MOTIF_NOISE", 0.0)
    clean, clean_y, clean_masks = synthetic.motifs(200, 7)  # the same draws, the noise scaled to 0
    assert np.array_equal(y, clean_y) and np.array_equal(masks, clean_masks)
    assert np.array_equal(np.bincount(y), [50, 50, 50, 50])
    assert (masks.sum(1) == 8).all()
    starts = masks.argmax(1)
    assert np.array_equal(masks, (np.arange(64) >= starts[:, None]) & (np.arange(64) < starts[:, None] + 8))
    assert np.array_equal(clean[:, 0][masks].reshape(200, 8), synthetic.MOTIFS[y].astype(np.float32))
    assert (clean[:, 0][~masks] == 0).all()
    assert not np.array_equal(x, clean)


def test_motifs_dataset_has_the_positions_as_masks_and_attributions() -> None:
    data = load_data("synthetic_motifs:test")
    assert data.x.shape == (1000, 1, 64) and data.masks.shape == (1000, 64)
    assert data.masks.dtype == torch.bool
    assert torch.equal(data.ground_truth, data.masks[:, None].float())
    assert data.class_names == ("bump", "dip", "step", "zigzag")


def test_select_and_the_all_split_keep_the_ground_truth_aligned() -> None:
    test = load_data("synthetic_interaction:test")
    picked = select(test, indices="5,2,9-10")
    assert torch.equal(picked.ground_truth, test.ground_truth[[5, 2, 9, 10]])
    assert torch.equal(picked.x, test.x[[5, 2, 9, 10]])
    both = load_data("synthetic_motifs:all")
    train, test = load_data("synthetic_motifs:train"), load_data("synthetic_motifs:test")
    assert torch.equal(both.ground_truth, torch.cat([train.ground_truth, test.ground_truth]))
    assert torch.equal(both.masks, torch.cat([train.masks, test.masks]))


def test_preprocessing_resamples_an_image_ground_truth_as_its_image() -> None:
    image = load_data("synthetic_motifs:test").select([0, 1])
    x = torch.rand(2, 3, 8, 6, generator=torch.Generator().manual_seed(0))
    data = replace(image, x=x, modality="image", masks=None, ground_truth=x.clone())
    out = Preprocessing(resize=(5,), center_crop=(4, 4)).apply(data)
    assert out.x.shape == (2, 3, 4, 4)
    assert torch.equal(out.ground_truth, out.x)


def test_prepare_keeps_the_ground_truth_of_the_selected_samples() -> None:
    model = load_model(SAMPLES / "synthetic_piecewise_mlp.pt")
    prepared = prepare(model, Selection(data="synthetic_piecewise:test", indices="3,1,4", target="label"))
    full = load_data("synthetic_piecewise:test")
    assert torch.equal(prepared.data.ground_truth, full.ground_truth[[3, 1, 4]])
    assert torch.equal(prepared.inputs, full.x[[3, 1, 4]])
    assert torch.equal(prepared.targets, full.y[[3, 1, 4]])
