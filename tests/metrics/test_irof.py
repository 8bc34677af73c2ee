"""IROF: scores against Quantus's IROF, the two Quantus behaviours that make a score depend on the batch,
the segmentation against Quantus's, closed forms, a planted-feature model and batch-size invariance."""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import quantus.helpers.utils as quantus_utils
import torch
import xaibench.metrics.irof as irof
from torch import nn
from xaibench.metrics.base import compute

from tests.conftest import make_inputs, make_net
from xaibench.core.errors import IncompatibleError

pytestmark = pytest.mark.filterwarnings("ignore")

QUANTUS_OFF = {"normalise": False, "abs": False, "disable_warnings": True, "display_progressbar": False,
               "return_aggregate": False}


@pytest.fixture(autouse=True)
def numpy_trapz(monkeypatch: pytest.MonkeyPatch) -> None:
    """Quantus's AUC calls numpy.trapz, which numpy 2.4 removed; trapezoid is the same function."""
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)


def tiny_net(channels: int = 1) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 3)).eval()


class RegionModel(nn.Module):
    """Class 0's logit is 8 times the mean of the 3x3 region at rows/cols 2..4; the others are 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = 8 * x[:, 0, 2:5, 2:5].mean((1, 2))
        zero = torch.zeros_like(region)
        return torch.stack([region, zero, zero], dim=1)


def batch(n: int = 3, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 8, 8)).astype(np.float32)
    a = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)  # no ties: the orders agree
    return x, a, np.arange(n) % 3


def quantus_irof(model: nn.Module, x: np.ndarray, a: np.ndarray, y: np.ndarray,
                 **kwargs: object) -> np.ndarray:
    return np.array(quantus.IROF(**QUANTUS_OFF, **kwargs)(model, x, y, a, device="cpu"))


def test_scores_match_quantus_for_each_image_with_its_mean_as_baseline() -> None:
    model = tiny_net()
    x, a, y = batch()
    ours = compute("irof", model, torch.from_numpy(x), torch.from_numpy(a), target=torch.from_numpy(y))
    # alone in a batch and with the image's mean fixed, Quantus's baseline is our "mean"
    expected = [quantus_irof(model, x[i:i + 1], a[i:i + 1], y[i:i + 1],
                             perturb_baseline=float(x[i].mean()))[0] for i in range(3)]
    np.testing.assert_allclose(ours.scores.numpy(), expected, rtol=1e-4)


def test_scores_match_quantus_on_a_batch_with_a_zero_baseline() -> None:
    model = tiny_net()
    x, a, y = batch(seed=2)
    ours = compute("irof", model, torch.from_numpy(x), torch.from_numpy(a), target=torch.from_numpy(y),
                   substrate="zero")
    expected = quantus_irof(model, x, a, y, perturb_baseline=0.0)
    np.testing.assert_allclose(ours.scores.numpy(), expected, rtol=1e-4)
    np.testing.assert_array_equal(ours.curve_x.numpy(), np.arange(1, 65))


def test_quantus_mean_baseline_depends_on_the_rest_of_the_batch() -> None:
    model = tiny_net()
    x, a, y = batch(n=2, seed=3)
    x[1] += 2.0  # a bright second image moves Quantus's batch mean
    together = quantus_irof(model, x, a, y)
    alone = quantus_irof(model, x[:1], a[:1], y[:1], perturb_baseline=float(x[0].mean()))
    assert abs(together[0] - alone[0]) > 1e-2
    ours_together = compute("irof", model, torch.from_numpy(x), torch.from_numpy(a),
                            target=torch.from_numpy(y))
    ours_alone = compute("irof", model, torch.from_numpy(x[:1]), torch.from_numpy(a[:1]), target=int(y[0]))
    assert ours_together.scores[0].item() == pytest.approx(ours_alone.scores[0].item(), rel=1e-6)
    assert ours_alone.scores[0].item() == pytest.approx(alone[0], rel=1e-4)


def quadrants_and_pixels(n: int) -> np.ndarray:
    """Segmentations for a batch: image 0 one superpixel per pixel (64), the others four quadrants."""
    quadrants = (np.arange(8)[:, None] // 4) * 2 + np.arange(8)[None, :] // 4
    return np.stack([np.arange(64).reshape(8, 8)] + [quadrants] * (n - 1))


def test_quantus_pads_shorter_curves_with_zeros(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_net()
    x, a, y = batch(n=2, seed=4)
    segmentations = iter(quadrants_and_pixels(2))
    monkeypatch.setattr(quantus_utils, "get_superpixel_segments",
                        lambda img, segmentation_method: next(segmentations))
    monkeypatch.setattr(irof, "superpixels", lambda inputs, n_segments, compactness: torch.from_numpy(
        quadrants_and_pixels(inputs.shape[0])))
    reference = quantus_irof(model, x, a, y, perturb_baseline=0.0)
    ours = compute("irof", model, torch.from_numpy(x), torch.from_numpy(a), target=torch.from_numpy(y),
                   substrate="zero")
    assert ours.scores[0].item() == pytest.approx(reference[0], rel=1e-4)
    # the quadrant image's 4-point curve is padded with 60 zeros: the trapezoid gains half its last value
    last = ours.curve[1, 3].item()
    assert last > 0.1
    assert reference[1] == pytest.approx(ours.scores[1].item() - 0.5 * last, rel=1e-4)
    assert torch.equal(ours.curve[1, 3:], torch.full((61,), last, dtype=torch.float64))


def test_superpixels_are_ranked_by_mean_not_by_total_relevance(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = np.repeat([0, 1, 1, 1, 2, 2, 2, 2], 8).reshape(8, 8)  # 8, 24 and 32 pixels
    monkeypatch.setattr(quantus_utils, "get_superpixel_segments", lambda img, segmentation_method: rows)
    monkeypatch.setattr(irof, "superpixels", lambda inputs, n_segments, compactness: torch.from_numpy(
        np.stack([rows] * inputs.shape[0])))
    model = tiny_net()
    x, _, y = batch(n=2, seed=5)
    # means 1 > 0.5 > 0.3, totals 8 < 12 > 9.6: superpixel 0 goes first only by mean
    a = np.array([1.0, 0.5, 0.3], dtype=np.float32)[rows][None, None].repeat(2, 0)
    ours = compute("irof", model, torch.from_numpy(x), torch.from_numpy(a), target=torch.from_numpy(y),
                   substrate="zero")
    expected = quantus_irof(model, x, a, y, perturb_baseline=0.0)
    np.testing.assert_allclose(ours.scores.numpy(), expected, rtol=1e-4)
    first_removed = torch.from_numpy(x).clone()
    first_removed[:, :, 0] = 0
    with torch.no_grad():
        before, after = (model(images).softmax(1)[[0, 1], y]
                         for images in (torch.from_numpy(x), first_removed))
    torch.testing.assert_close(ours.curve[:, 0].float(), after / before, rtol=1e-5, atol=0)


def test_rgb_segmentation_matches_quantus_whose_irof_fails_on_rgb() -> None:
    x = torch.rand((2, 3, 16, 16), generator=torch.Generator().manual_seed(5))
    x[:, :, :, 8:] *= 0.2  # structure for the segmentation to find
    ours = irof.superpixels(x, 100, 10.0).numpy()
    for image, labels in zip(x.numpy(), ours):
        expected = quantus_utils.get_superpixel_segments(np.moveaxis(image, 0, -1).astype("double"), "slic")
        np.testing.assert_array_equal(labels, expected)
    with pytest.raises(AssertionError):  # its (N, 1, H, W) mask does not fit an (N, 3, H, W) batch
        quantus_irof(tiny_net(3), x.numpy(), x.numpy(), np.array([0, 1]), perturb_baseline=0.0)
    assert torch.isfinite(compute("irof", tiny_net(3), x, x, target=0).scores).all()


def test_a_model_that_ignores_its_input_scores_exactly_one() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        model[1].weight.zero_()
    x, a, y = batch()
    result = compute("irof", model, torch.from_numpy(x), torch.from_numpy(a), target=torch.from_numpy(y))
    assert torch.equal(result.curve, torch.ones(3, 64, dtype=torch.float64))
    assert torch.equal(result.scores, torch.ones(3, dtype=torch.float64))  # 64 - 63


def test_a_single_superpixel_is_undefined() -> None:
    x, a, _ = batch(n=2)
    result = compute("irof", tiny_net(), torch.from_numpy(x), torch.from_numpy(a), target=0, n_segments=1)
    assert torch.isnan(result.scores).all()


def test_planted_region_the_correct_map_scores_higher() -> None:
    x = 0.3 * torch.rand((4, 1, 8, 8), generator=torch.Generator().manual_seed(6))
    x[:, :, 2:5, 2:5] = 1.0
    correct = 0.1 * torch.rand((4, 1, 8, 8), generator=torch.Generator().manual_seed(7))
    correct[:, :, 2:5, 2:5] += 1.0
    random = torch.rand((4, 1, 8, 8), generator=torch.Generator().manual_seed(8))
    model = RegionModel()
    good = compute("irof", model, x, correct, target=0, substrate="zero")
    bad = compute("irof", model, x, random, target=0, substrate="zero")
    # 8x8 images give one superpixel per pixel: after the 9 region pixels, class 0 is at chance level
    floor = torch.softmax(torch.zeros(3), 0)[0] / torch.softmax(torch.tensor([8.0, 0, 0]), 0)[0]
    torch.testing.assert_close(good.curve[:, 8:], torch.full((4, 56), floor.item(), dtype=torch.float64))
    assert (good.scores > bad.scores).all()


def test_scores_do_not_depend_on_batch_size() -> None:
    model, x = make_net("image"), make_inputs("image", n=3)
    a = make_inputs("image", n=3, seed=1) - 0.5
    results = [compute("irof", model, x, a, target=torch.tensor([0, 1, 2]), batch_size=size)
               for size in (None, 1, 3)]
    # the convolution rounds differently for different rows per pass (float32), and S - area cancels
    # two numbers of size S = 64, so the last bits of the probabilities show at about 1e-6
    for result in results[1:]:
        torch.testing.assert_close(result.curve, results[0].curve, rtol=1e-6, atol=0)
        torch.testing.assert_close(result.scores, results[0].scores, rtol=1e-5, atol=0)


def test_sequences_are_refused() -> None:
    with pytest.raises(IncompatibleError):
        compute("irof", make_net("sequence"), make_inputs("sequence"), make_inputs("sequence"), target=0)
