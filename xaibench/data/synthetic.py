"""Synthetic data whose right explanation is known: three tabular tasks and a sequence task with motifs.

Tabular tasks, in the spirit of OpenXAI's synthetic data (Agarwal et al., 2022, "OpenXAI: Towards a
Transparent Evaluation of Model Explanations", NeurIPS Datasets and Benchmarks). Each sample has
``N_FEATURES`` = 10 features drawn independently from N(0, 1) (then rounded to float32; every formula
below is evaluated in float64 on the float32 values). A task's score is a sum of per-feature
contributions, s(x) = sum_i c_i(x), and its label is y = 1 when s(x) > 0, else 0 (class names
"negative", "positive"); there is no label noise. Rows whose score is exactly 0 (in the piecewise task:
no relevant feature on its active side) are drawn again. The contributions:

- ``linear``: s(x) = sum_i w_i x_i with w = ``LINEAR_WEIGHTS``; c_i = w_i (x_i - mean_i) with mean_i = 0,
  the features' mean, i.e. c_i = w_i x_i; sum_i c_i = s(x) - s(mean).
- ``interaction``: s(x) = sum_k a_k x_p x_q over the products (p, q, a_k) of ``INTERACTIONS``; each
  product's value is split equally between its two features, c_i = sum over the products holding i of
  a_k x_p x_q / 2 (feature 5 is in two products); sum_i c_i = s(x) = s(x) - s(mean).
- ``piecewise``: s(x) = sum of the pieces (i, w, t, side) of ``PIECES``, each feature in at most one;
  a feature matters only on one side of its threshold t: c_i = w max(x_i - t, 0) for side "above",
  c_i = w min(x_i - t, 0) for side "below", i.e. the active piece's contribution measured from the
  threshold, 0 on the inactive side; sum_i c_i = s(x) - s(thresholds), where s(thresholds) = 0.

The linear and interaction contributions are also the exact interventional Shapley values of s for these
independent, zero-mean features. Features with no term (``IRRELEVANT``) contribute exactly 0. The
ground-truth attribution of a sample points towards its label, as OpenXAI flips the sign by class:
g_i = (2y - 1) c_i, so that sum_i g_i = |s(x)| > 0 (compare with methods explaining the label,
``--target label``; the default target, the prediction, differs where the model errs).

Sequence task (``motifs``): each sample is a (1, ``SEQUENCE_LENGTH``) = (1, 64) sequence of N(0,
``MOTIF_NOISE``^2) noise to which its class's motif (``MOTIFS``, 8 values) is added at a uniformly
random start in [0, 64 - 8]; 4 balanced, shuffled classes. The ground truth is where the motif lies:
the attribution map is 1 on its 8 positions and 0 elsewhere, shape (1, 64) like x, and the mask (64,)
is True there.
"""

from __future__ import annotations

import numpy as np

N_FEATURES = 10
CLASS_NAMES = ("negative", "positive")
FEATURE_NAMES = tuple(f"x{i}" for i in range(N_FEATURES))
LINEAR_WEIGHTS = (2.0, -1.5, 1.0, -0.75, 0.5, 1.25, -1.0, 0.0, 0.0, 0.0)
INTERACTIONS = ((0, 1, 2.0), (2, 3, -1.5), (4, 5, 1.0), (5, 6, -1.0))  # (p, q, a): a x_p x_q
PIECES = (  # (feature, weight, threshold, side)
    (0, 2.0, 0.5, "above"), (1, -2.0, 0.5, "above"), (2, 1.5, -0.5, "below"),
    (3, -1.5, -0.5, "below"), (4, 1.0, 0.0, "above"), (5, -1.0, 0.0, "above"),
)
IRRELEVANT = {"linear": (7, 8, 9), "interaction": (7, 8, 9), "piecewise": (6, 7, 8, 9)}

SEQUENCE_LENGTH = 64
MOTIF_NOISE = 0.5
MOTIF_NAMES = ("bump", "dip", "step", "zigzag")
_BUMP = (0.5, 1.5, 2.0, 2.0, 2.0, 2.0, 1.5, 0.5)
MOTIFS = np.array([_BUMP, [-v for v in _BUMP], [-1.5] * 4 + [1.5] * 4, [1.5, -1.5] * 4])


def linear_contributions(x: np.ndarray) -> np.ndarray:
    """c_i = w_i x_i, (N, F) float64."""
    return x * np.asarray(LINEAR_WEIGHTS)


def interaction_contributions(x: np.ndarray) -> np.ndarray:
    """Each product a x_p x_q split equally between features p and q, (N, F) float64."""
    contributions = np.zeros_like(x)
    for p, q, a in INTERACTIONS:
        half = a * x[:, p] * x[:, q] / 2
        contributions[:, p] += half
        contributions[:, q] += half
    return contributions


def piecewise_contributions(x: np.ndarray) -> np.ndarray:
    """Each piece's w max(x_i - t, 0) ("above") or w min(x_i - t, 0) ("below"), (N, F) float64."""
    contributions = np.zeros_like(x)
    for i, weight, threshold, side in PIECES:
        shifted = x[:, i] - threshold
        active = np.maximum(shifted, 0) if side == "above" else np.minimum(shifted, 0)
        contributions[:, i] = weight * active
    return contributions


CONTRIBUTIONS = {"linear": linear_contributions, "interaction": interaction_contributions,
                 "piecewise": piecewise_contributions}


def tabular(task: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` samples of a tabular task ("linear", "interaction" or "piecewise").

    Args:
        task: a key of ``CONTRIBUTIONS``.
        n: number of samples.
        seed: seed of the ``np.random.Generator``; the same seed gives the same samples.

    Returns:
        x float32 (N, F), y int64 (N,), ground truth float32 (N, F): g = (2y - 1) c(x).
    """
    contributions_of = CONTRIBUTIONS[task]
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    while sum(len(block) for block in kept) < n:
        block = rng.standard_normal((n, N_FEATURES)).astype(np.float32)
        kept.append(block[contributions_of(block.astype(np.float64)).sum(1) != 0])
    x = np.concatenate(kept)[:n]
    contributions = contributions_of(x.astype(np.float64))
    y = (contributions.sum(1) > 0).astype(np.int64)
    ground_truth = (2 * y[:, None] - 1) * contributions
    return x, y, ground_truth.astype(np.float32)


def motifs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` noise sequences, each with its class's motif added at a random start.

    Args:
        n: number of sequences.
        seed: seed of the ``np.random.Generator``; the same seed gives the same sequences.

    Returns:
        x float32 (N, 1, L), y int64 (N,) with balanced, shuffled classes, masks bool (N, L): True on
        the motif's positions (the ground-truth attribution is ``masks[:, None]`` as float32).
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(MOTIF_NAMES))
    width = MOTIFS.shape[1]
    starts = rng.integers(0, SEQUENCE_LENGTH - width + 1, size=n)
    positions = starts[:, None] + np.arange(width)
    x = rng.normal(0.0, MOTIF_NOISE, size=(n, SEQUENCE_LENGTH))
    rows = np.arange(n)[:, None]
    x[rows, positions] += MOTIFS[labels]
    masks = np.zeros((n, SEQUENCE_LENGTH), dtype=bool)
    masks[rows, positions] = True
    return x[:, None].astype(np.float32), labels.astype(np.int64), masks
