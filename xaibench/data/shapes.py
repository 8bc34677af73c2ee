"""A synthetic image dataset with ground-truth object masks, for localisation metrics.

Each 64x64 RGB image holds one object (circle, square, triangle, cross or star) at a random position,
size, rotation and colour on a smooth random texture with pixel noise. The value ranges are chosen so
that object and background never overlap in any channel: every object channel lies in [0, 0.15] or
[0.85, 1] and every background channel in [0.2, 0.8]. The class depends on the shape only, and the mask
is exactly the object's pixels, in the spirit of the controlled-benchmark idea of Arras et al., "CLEVR-XAI:
A benchmark dataset for the ground truth evaluation of neural network explanations" (2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.draw import polygon

CLASS_NAMES = ("circle", "square", "triangle", "cross", "star")
SIZE = 64
CHUNK = 100


@dataclass(frozen=True)
class ShapesConfig:
    """Ranges of the generator; defaults give the built-in ``shapes`` dataset.

    Attributes:
        radius: (min, max) circumradius of an object in pixels.
        texture_amplitude: largest deviation of the background texture from its mean colour.
        noise: half-width of the uniform pixel noise added everywhere.
    """

    radius: tuple[float, float] = (9.0, 16.0)
    texture_amplitude: float = 0.1
    noise: float = 0.05


def _outline(label: int) -> np.ndarray:
    """Vertices (K, 2) as (x, y) of a shape with circumradius 1 centred at the origin."""
    if label == 0:  # circle: a 48-gon is round at these sizes
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        radii = np.ones(48)
    elif label in (1, 2):  # square, triangle: regular polygons
        corners = 4 if label == 1 else 3
        angles = np.pi / 2 + np.linspace(0, 2 * np.pi, corners, endpoint=False)
        radii = np.ones(corners)
    elif label == 3:  # cross: two bars of half-width w
        w = 0.3
        x = np.array([w, w, 1, 1, w, w, -w, -w, -1, -1, -w, -w])
        y = np.array([1, w, w, -w, -w, -1, -1, -w, -w, w, w, 1])
        return np.stack([x, y], axis=1)
    else:  # five-pointed star, inner radius 0.45
        angles = np.pi / 2 + np.linspace(0, 2 * np.pi, 10, endpoint=False)
        radii = np.tile([1.0, 0.45], 5)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


OUTLINES = tuple(_outline(label) for label in range(len(CLASS_NAMES)))


def _draw_masks(labels: np.ndarray, rng: np.random.Generator, config: ShapesConfig) -> np.ndarray:
    """Object masks (N, SIZE, SIZE): each outline rotated, scaled and placed fully inside the image."""
    n = len(labels)
    radius = rng.uniform(*config.radius, size=n)
    theta = rng.uniform(0, 2 * np.pi, size=n)
    # centres keep the whole circumscribed circle inside the image
    centre = rng.uniform(radius[:, None] + 1, SIZE - 2 - radius[:, None], size=(n, 2))
    masks = np.zeros((n, SIZE, SIZE), dtype=bool)
    for i, label in enumerate(labels):  # one rasterisation per image; cheap at 64x64
        c, s = np.cos(theta[i]), np.sin(theta[i])
        pts = OUTLINES[label] @ np.array([[c, s], [-s, c]]) * radius[i] + centre[i]
        rows, cols = polygon(pts[:, 1], pts[:, 0], shape=(SIZE, SIZE))
        masks[i, rows, cols] = True
    return masks


def _background(n: int, rng: np.random.Generator, config: ShapesConfig) -> np.ndarray:
    """Smooth random texture (N, 3, SIZE, SIZE) around a random mean colour in [0.35, 0.65]."""
    texture = np.zeros((n, 3, SIZE, SIZE), dtype=np.float32)
    for grid, weight in ((4, 1.0), (9, 0.5)):  # two octaves of bilinearly upsampled noise
        up = _bilinear_matrix(grid, SIZE)
        coarse = rng.standard_normal((n, 3, grid, grid), dtype=np.float32)
        texture += weight * (up @ coarse @ up.T)
    texture /= np.abs(texture).max(axis=(2, 3), keepdims=True)
    mean = rng.uniform(0.35, 0.65, size=(n, 3, 1, 1)).astype(np.float32)
    return mean + np.float32(config.texture_amplitude) * texture


def _bilinear_matrix(grid: int, size: int) -> np.ndarray:
    """(size, grid) linear interpolation weights (pixel centres, edges clamped); A @ g @ A.T upsamples g."""
    pos = np.clip((np.arange(size) + 0.5) * grid / size - 0.5, 0, grid - 1)
    lo = np.minimum(pos.astype(int), grid - 2)
    weights = np.zeros((size, grid), dtype=np.float32)
    weights[np.arange(size), lo] = 1 - (pos - lo)
    weights[np.arange(size), lo + 1] = pos - lo
    return weights


def _paint(masks: np.ndarray, rng: np.random.Generator, config: ShapesConfig) -> np.ndarray:
    """Images (N, 3, SIZE, SIZE) in [0, 1]: one saturated colour inside each mask, texture outside."""
    n = len(masks)
    # each object channel near 0 or near 1, far from the background's mid range
    high = rng.random((n, 3, 1, 1)) < 0.5
    colour = np.where(high, rng.uniform(0.9, 1.0, (n, 3, 1, 1)), rng.uniform(0.0, 0.1, (n, 3, 1, 1)))
    image = np.where(masks[:, None], colour.astype(np.float32), _background(n, rng, config))
    image += (rng.random(image.shape, dtype=np.float32) * 2 - 1) * np.float32(config.noise)
    return np.clip(image, 0, 1, out=image)


def generate(n: int, seed: int, config: ShapesConfig = ShapesConfig()) -> tuple[np.ndarray, ...]:
    """``n`` images with balanced, shuffled labels.

    Args:
        n: number of images.
        seed: seed of the ``np.random.Generator``; the same seed gives the same images.
        config: generator ranges.

    Returns:
        x float32 (N, 3, SIZE, SIZE) in [0, 1], y int64 (N,), masks bool (N, SIZE, SIZE).
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASS_NAMES))
    masks = _draw_masks(labels, rng, config)
    x = np.empty((n, 3, SIZE, SIZE), dtype=np.float32)
    for start in range(0, n, CHUNK):  # chunks keep temporaries small: large fresh arrays are slow to fault in
        x[start : start + CHUNK] = _paint(masks[start : start + CHUNK], rng, config)
    return x, labels.astype(np.int64), masks
