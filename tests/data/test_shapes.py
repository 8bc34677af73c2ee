"""The shapes generator: masks are exactly the object, backgrounds are textured, labels balanced."""

from __future__ import annotations

import numpy as np
import torch
from skimage.measure import label

from xaibench.data import load_data
from xaibench.data.shapes import CLASS_NAMES, ShapesConfig, _background, generate


def test_builtin_shapes_types_and_class_balance() -> None:
    train, test = load_data("shapes:train"), load_data("shapes:test")
    assert (len(train), len(test)) == (2000, 500)
    assert test.class_names == CLASS_NAMES == ("circle", "square", "triangle", "cross", "star")
    assert test.masks.dtype == torch.bool and test.masks.shape == (500, 64, 64)
    assert torch.equal(torch.bincount(train.y), torch.full((5,), 400))
    assert torch.equal(torch.bincount(test.y), torch.full((5,), 100))
    assert not torch.equal(train.x[:500], test.x)  # different seeds per split


def test_mask_is_exactly_the_saturated_object_pixels() -> None:
    data = load_data("shapes:test")
    x = data.x.numpy()
    # object channels lie in [0, 0.15] or [0.85, 1], background channels in [0.2, 0.8]
    saturated = ((x <= 0.15) | (x >= 0.85)).all(axis=1)
    background = ((x >= 0.2) & (x <= 0.8)).all(axis=1)
    masks = data.masks.numpy()
    assert np.array_equal(saturated, masks)
    assert np.array_equal(background, ~masks)
    assert x.min() >= 0 and x.max() <= 1


def test_each_mask_is_one_blob_inside_the_image() -> None:
    masks = load_data("shapes:test").masks.numpy()
    assert all(label(mask).max() == 1 for mask in masks)
    assert not masks[:, [0, -1], :].any() and not masks[:, :, [0, -1]].any()
    area = masks.sum(axis=(1, 2))
    triangle_min = 3 * np.sqrt(3) / 4 * 9**2  # smallest object: triangle of circumradius 9
    assert area.min() >= 0.9 * triangle_min and area.max() <= 1.05 * np.pi * 16**2


def test_background_is_smooth_texture_not_flat() -> None:
    config = ShapesConfig()
    texture = _background(100, np.random.default_rng(0), config)
    spread = texture.max(axis=(2, 3)) - texture.min(axis=(2, 3))
    assert spread.min() > config.texture_amplitude  # every channel of every image varies
    neighbour_step = np.abs(np.diff(texture, axis=3)).max(axis=(2, 3))
    assert neighbour_step.max() < 0.05  # low-frequency: no jumps between neighbours


def test_generate_is_seeded() -> None:
    first, second, other = generate(20, 7), generate(20, 7), generate(20, 8)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert first[0].dtype == np.float32 and first[1].dtype == np.int64 and first[2].dtype == bool
