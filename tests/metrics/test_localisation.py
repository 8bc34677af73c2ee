"""Localisation metrics against Quantus 0.6.0 and sklearn, exact values on hand-built maps, and the
Quantus bugs: empty masks counted as pointing-game hits, the weighted pointing game raising, the
batch-axis slip in AttributionLocalisation's weighting, tied maxima all counted as hits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from xaibench.metrics import compute

from xaibench.core.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore")
QUANTUS_OFF = {"normalise": False, "abs": False, "disable_warnings": True, "display_progressbar": False}


def scores(name: str, attributions: torch.Tensor, masks: torch.Tensor, **params: object) -> np.ndarray:
    inputs = torch.zeros_like(attributions)
    result = compute(name, None, inputs, attributions, target=0, masks=masks, **params)
    return result.scores.numpy()


def quantus_scores(cls_name: str, attributions: torch.Tensor, masks: torch.Tensor,
                   **options: object) -> np.ndarray:
    """Quantus on single-channel images (N, 1, H, W) with masks (N, H, W)."""
    import quantus

    metric = getattr(quantus, cls_name)(**{**QUANTUS_OFF, **options})
    a = attributions.numpy().copy()
    out = metric(model=None, x_batch=np.zeros_like(a), y_batch=np.zeros(len(a), dtype=int), a_batch=a,
                 s_batch=masks[:, None].numpy().astype(np.float64))
    return np.asarray(out, dtype=np.float64)


def random_case(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    attributions = torch.rand((n, 1, 8, 8), generator=generator) * 2 - 1
    masks = torch.rand((n, 8, 8), generator=generator) > 0.6
    return attributions, masks


def test_against_quantus() -> None:
    a, masks = random_case()
    for name, cls_name, ours, theirs in [
        ("pointing_game", "PointingGame", {}, {}),
        ("attribution_localisation", "AttributionLocalisation", {"absolute": True}, {"abs": True}),
        ("attribution_localisation", "AttributionLocalisation", {}, {"positive_attributions": True}),
        ("relevance_rank_accuracy", "RelevanceRankAccuracy", {}, {}),
        ("top_k_intersection", "TopKIntersection", {"k": 7}, {"k": 7}),
        ("top_k_intersection", "TopKIntersection", {"k": 7, "concept_influence": True},
         {"k": 7, "concept_influence": True}),
        ("mask_auc", "AUC", {}, {}),
    ]:
        expected = quantus_scores(cls_name, a, masks, **theirs)
        np.testing.assert_allclose(scores(name, a, masks, **ours), expected, rtol=1e-4, err_msg=name)


def test_pointing_game_quantus_bugs() -> None:
    a, masks = random_case()
    masks[1] = False
    ours = scores("pointing_game", a, masks)
    theirs = quantus_scores("PointingGame", a, masks)
    assert np.isnan(ours[1]) and theirs[1] == 1.0  # Quantus stores NaN in a bool array: a "hit"
    keep = [0, 2, 3]
    np.testing.assert_array_equal(ours[keep], theirs[keep])
    full = torch.ones_like(masks)
    with pytest.raises(TypeError):  # weighted=True cannot assign its weights in Quantus 0.6.0
        quantus_scores("PointingGame", a, full, weighted=True)
    # every maximum is a hit on a full mask, weighted by 1 - 64/64
    np.testing.assert_array_equal(scores("pointing_game", a, full, weighted=True), np.zeros(4))


def test_pointing_game_ties() -> None:
    # constant maps: every element is a maximum; a random pick hits with |mask| / P
    # (Quantus refuses a batch holding one value, so the two constants differ)
    a = torch.tensor([0.5, 0.25]).view(2, 1, 1, 1).expand(2, 1, 4, 4).clone()
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, 0, :3] = True
    masks[1, :2, :2] = True
    np.testing.assert_allclose(scores("pointing_game", a, masks), [3 / 16, 4 / 16])
    np.testing.assert_array_equal(quantus_scores("PointingGame", a, masks), [1.0, 1.0])
    # the maximum shared by two elements, one inside
    a[0, 0, 3, 3] = a[0, 0, 0, 0] = 2.0
    assert scores("pointing_game", a, masks)[0] == 0.5


def test_attribution_localisation_weighting() -> None:
    a, masks = random_case(n=4)
    mu = scores("attribution_localisation", a, masks, absolute=True)
    area = masks.flatten(1).sum(1).numpy()
    ours = scores("attribution_localisation", a, masks, absolute=True, weighted=True)
    np.testing.assert_allclose(ours, mu * area / 64)
    # Quantus divides by x_batch[2:].size: the elements of the last N - 2 samples, here 2 * 64
    theirs = quantus_scores("AttributionLocalisation", a, masks, abs=True, weighted=True)
    np.testing.assert_allclose(theirs, mu * area / (2 * 64), rtol=1e-4)


def test_hand_built_maps() -> None:
    masks = torch.zeros(2, 1, 6, dtype=torch.bool)
    masks[:, 0, 1:3] = True
    perfect = masks[:, None].float() * torch.tensor([2.0, 1.0]).view(2, 1, 1, 1)
    inverted = -perfect
    for name in ("pointing_game", "attribution_localisation", "relevance_rank_accuracy", "mask_auc"):
        np.testing.assert_array_equal(scores(name, perfect, masks), [1.0, 1.0], err_msg=name)
    assert (scores("mask_auc", inverted, masks) == 0).all()
    assert (scores("relevance_rank_accuracy", inverted, masks) == 0).all()
    # mask on elements 1 and 2: 2 of 4 units of positive mass inside (the -1 does not count), 2 of 5
    # units of absolute mass
    a = torch.tensor([[[[1.0, 2.0, 0.0, 1.0, -1.0, 0.0]]]])
    assert scores("attribution_localisation", a, masks[:1])[0] == pytest.approx(1 / 2)
    assert scores("attribution_localisation", a, masks[:1], absolute=True)[0] == pytest.approx(2 / 5)


def test_rank_ties_count_in_expectation() -> None:
    # map 3, 1, 1, 1, 0 with the mask on elements 1 and 4: the top 2 are element 0 and one of three
    # tied ones, of which one is inside: 1/3 expected hits out of 2
    a = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0]])
    masks = torch.tensor([[False, True, False, False, True]])
    assert scores("relevance_rank_accuracy", a, masks)[0] == pytest.approx(1 / 6)
    assert scores("top_k_intersection", a, masks, k=3)[0] == pytest.approx((2 / 3) / 3)
    assert scores("top_k_intersection", a, masks, k=4)[0] == pytest.approx(1 / 4)


def test_mask_auc_equals_sklearn_with_ties_and_channels() -> None:
    generator = torch.Generator().manual_seed(5)
    for shape in [(5, 3, 6, 6), (5, 2, 20), (5, 9)]:
        a = torch.randint(-3, 4, shape, generator=generator).float()  # few values: many ties
        spatial = shape[2:] if len(shape) > 2 else shape[1:]
        masks = torch.rand((shape[0], *spatial), generator=generator) > 0.5
        summed = (a if a.ndim == 2 else a.sum(1)).flatten(1).numpy()
        expected = [roc_auc_score(m.flatten().numpy(), s) for m, s in zip(masks, summed)]
        np.testing.assert_allclose(scores("mask_auc", a, masks), expected, rtol=1e-12)


def test_undefined_cases() -> None:
    a, masks = random_case(n=3)
    masks[0] = False
    masks[1] = True
    for name in ("pointing_game", "attribution_localisation", "relevance_rank_accuracy",
                 "top_k_intersection", "mask_auc"):
        assert np.isnan(scores(name, a, masks)[0]), name
    assert np.isnan(scores("mask_auc", a, masks)[1])
    assert np.isnan(scores("attribution_localisation", -a.abs(), masks)).all()  # no positive mass


def test_top_k_default_and_limits() -> None:
    a, masks = random_case()
    # 5% of 64 elements, rounded half up: 3
    np.testing.assert_array_equal(scores("top_k_intersection", a, masks),
                                  scores("top_k_intersection", a, masks, k=3))
    with pytest.raises(InputError):
        scores("top_k_intersection", a, masks, k=65)
    with pytest.raises(InputError):
        scores("top_k_intersection", a, masks, fraction=0.0)
