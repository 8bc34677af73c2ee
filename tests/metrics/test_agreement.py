"""Agreement metrics: hand-computed values, a numpy transcription of OpenXAI's definitions (which they
must equal when there are no ties), scipy's spearmanr, a brute-force pair count, and the tie cases
where they deliberately differ from OpenXAI."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, rankdata, spearmanr
from xaibench.metrics import compute

from xaibench.core.errors import InputError

TOP_K = ("feature_agreement", "rank_agreement", "sign_agreement", "signed_rank_agreement")


def scores(name: str, explained: torch.Tensor, reference: torch.Tensor, **params: object) -> np.ndarray:
    result = compute(name, None, torch.zeros_like(explained), explained, target=0, reference=reference,
                     **params)
    return result.scores.numpy()


def openxai(name: str, explained: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """OpenXAI's definitions (openxai/metrics.py), transcribed; rows are samples."""
    dense = [rankdata(-np.abs(v), method="dense", axis=1) for v in (explained, reference)]
    if name == "rank_correlation":
        return np.array([pearsonr(e, r)[0] for e, r in zip(*dense)])
    if name == "pairwise_rank_agreement":
        n = explained.shape[1]
        alike = sum((dense[0][:, i] < dense[0][:, j]) == (dense[1][:, i] < dense[1][:, j])
                    for i, j in itertools.combinations(range(n), 2))
        return alike / (n * (n - 1) / 2)
    top = [np.argsort(-np.abs(v), axis=1)[:, :k] for v in (explained, reference)]
    keys = [[[f"feat{f}" for f in row] for row in t] for t in top]
    if "rank" in name:
        keys = [[[key + f"rank{d[i, f]}" for key, f in zip(row, t[i])] for i, row in enumerate(kk)]
                for kk, t, d in zip(keys, top, dense)]
    if "sign" in name:
        signs = [np.sign(v).astype(int) for v in (explained, reference)]
        keys = [[[key + f"sign{s[i, f]}" for key, f in zip(row, t[i])] for i, row in enumerate(kk)]
                for kk, t, s in zip(keys, top, signs)]
    if name in ("feature_agreement", "sign_agreement"):
        return np.array([len(set(a) & set(b)) / k for a, b in zip(*keys)])
    return np.array([sum(x == y for x, y in zip(a, b)) / k for a, b in zip(*keys)])


def test_hand_computed_example() -> None:
    e = torch.tensor([[0.9, -0.5, 0.3, 0.1]])
    r = torch.tensor([[0.8, 0.2, -0.4, 0.0]])
    # top-2: {0, 1} in order 0, 1 and {0, 2} in order 0, 2: one common feature, at the same position,
    # with the same sign
    for name in TOP_K:
        assert scores(name, e, r, k=2)[0] == pytest.approx(0.5), name
    # ranks of |e| 4, 3, 2, 1 and of |r| 4, 2, 3, 1: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert scores("rank_correlation", e, r)[0] == pytest.approx(0.8)
    # of the 6 pairs only (1, 2) is ordered differently
    assert scores("pairwise_rank_agreement", e, r)[0] == pytest.approx(5 / 6)
    # with opposite signs on feature 0, the signed metrics lose it
    flipped = r * torch.tensor([[-1.0, 1.0, 1.0, 1.0]])
    assert scores("sign_agreement", e, flipped, k=2)[0] == 0.0
    assert scores("signed_rank_agreement", e, flipped, k=3)[0] == 0.0
    assert scores("rank_agreement", e, flipped, k=3)[0] == pytest.approx(1 / 3)


@pytest.mark.parametrize("shape", [(5, 8), (4, 2, 6), (3, 2, 3, 3)])
def test_equal_to_openxai_without_ties(shape: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(sum(shape))
    e = torch.randn(shape, generator=generator)
    r = e + 0.7 * torch.randn(shape, generator=generator)  # related, not equal
    flat_e, flat_r = e.flatten(1).numpy().astype(np.float64), r.flatten(1).numpy().astype(np.float64)
    for k in (1, 3, flat_e.shape[1] // 2):
        for name in TOP_K:
            np.testing.assert_allclose(scores(name, e, r, k=k), openxai(name, flat_e, flat_r, k),
                                       rtol=1e-12, err_msg=f"{name} k={k}")
    for name in ("rank_correlation", "pairwise_rank_agreement"):
        np.testing.assert_allclose(scores(name, e, r), openxai(name, flat_e, flat_r, 0), rtol=1e-10,
                                   err_msg=name)


def test_rank_correlation_is_spearman_with_average_ranks() -> None:
    generator = torch.Generator().manual_seed(2)
    e = torch.randint(-3, 4, (4, 12), generator=generator).float()  # many tied magnitudes
    r = torch.randint(-3, 4, (4, 12), generator=generator).float()
    expected = [spearmanr(a, b)[0] for a, b in zip(e.abs().numpy(), r.abs().numpy())]
    np.testing.assert_allclose(scores("rank_correlation", e, r), expected, rtol=1e-12)
    # OpenXAI's dense ranks give another value once there are ties
    assert not np.allclose(openxai("rank_correlation", e.numpy(), r.numpy(), 0), expected)
    assert np.isnan(scores("rank_correlation", torch.ones(1, 5), r[:1, :5])[0])


def test_pairwise_agreement_counts_every_pair() -> None:
    generator = torch.Generator().manual_seed(4)
    for n_features in (2, 5, 37, 64):
        e = torch.randint(-4, 5, (3, n_features), generator=generator).float()
        r = torch.randint(-4, 5, (3, n_features), generator=generator).float()
        a, b = e.abs().numpy(), r.abs().numpy()
        alike = sum(np.sign(a[:, i] - a[:, j]) == np.sign(b[:, i] - b[:, j])
                    for i, j in itertools.combinations(range(n_features), 2))
        expected = alike / (n_features * (n_features - 1) / 2)
        np.testing.assert_allclose(scores("pairwise_rank_agreement", e, r), expected, rtol=1e-12)
    assert np.isnan(scores("pairwise_rank_agreement", torch.ones(2, 1), torch.ones(2, 1))).all()


def test_pairwise_ties_agree_only_with_ties() -> None:
    tied = torch.tensor([[1.0, 1.0]])
    for order in ([[1.0, 2.0]], [[2.0, 1.0]]):
        assert scores("pairwise_rank_agreement", tied, torch.tensor(order))[0] == 0.0
    assert scores("pairwise_rank_agreement", tied, -tied)[0] == 1.0
    # OpenXAI's "i strictly above j" test agrees with the tie in one order and not the other
    assert openxai("pairwise_rank_agreement", tied.numpy(), np.array([[1.0, 2.0]]), 0)[0] == 1.0
    assert openxai("pairwise_rank_agreement", tied.numpy(), np.array([[2.0, 1.0]]), 0)[0] == 0.0


def test_top_k_ties_count_in_expectation() -> None:
    # e ranks features 0 and 1 equally first, r ranks 0 and 2 equally first: with k = 1 each picks one
    # of its two at random, and they coincide with probability 1/2 * 1/2
    e = torch.tensor([[1.0, -1.0, 0.0, 0.0]])
    r = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    for name in TOP_K:
        assert scores(name, e, r, k=1)[0] == pytest.approx(0.25), name
    # k = 2: e's top two are {0, 1} for sure; r's second place is 0 or 2 (each 1/2), and its third and
    # fourth are the tied zeros 1 and 3: feature 0 is common (sure), 1 never is
    assert scores("feature_agreement", e, r, k=2)[0] == pytest.approx(0.5)
    # positions: 0 sits at position 0 or 1 in both (chance 1/2 each, both positions count): 2 * 1/4;
    # 1 sits at 0 or 1 in e but at 2 or 3 in r: never
    assert scores("rank_agreement", e, r, k=2)[0] == pytest.approx(0.25)
    # the sign of feature 1 differs (-1 against 0) but it is never common; feature 0 agrees
    assert scores("sign_agreement", e, r, k=2)[0] == pytest.approx(0.5)


def test_default_k_and_limits() -> None:
    generator = torch.Generator().manual_seed(9)
    e, r = torch.randn((3, 6), generator=generator), torch.randn((3, 6), generator=generator)
    for name in TOP_K:  # a quarter of 6, rounded half up: 2
        np.testing.assert_array_equal(scores(name, e, r), scores(name, e, r, k=2))
    with pytest.raises(InputError):
        scores("feature_agreement", e, r, k=7)
    with pytest.raises(InputError):
        compute("feature_agreement", None, e, e, target=0)  # no reference
