"""ROAD: the noisy linear imputation against Quantus's imputer and exact closed forms, the accuracy curve
against Quantus's ROAD, the noise, a planted-feature model, Quantus's multi-channel failure, and
batch-size invariance."""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
from quantus.functions.perturb_func import noisy_linear_imputation
from torch import nn
from xaibench.metrics.base import compute
from xaibench.metrics.road import Road, linear_imputation, parse_percentages

from tests.conftest import make_inputs, make_net
from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError

pytestmark = pytest.mark.filterwarnings("ignore")

QUANTUS_OFF = {"normalise": False, "abs": False, "disable_warnings": True, "display_progressbar": False}


def tiny_image_net(channels: int) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 3)).eval()


class RegionModel(nn.Module):
    """Class 0 when the mean of the 3x3 region at rows/cols 2..4 exceeds 0.5, class 1 otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = x[:, 0, 2:5, 2:5].mean((1, 2))
        return torch.stack([region - 0.5, 0.5 - region, torch.full_like(region, -10.0)], dim=1)


class Recorder(nn.Module):
    """Remembers every batch it sees; predicts from the pixel mean."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        mean = x.flatten(1).mean(1)
        return torch.stack([mean, -mean, 0 * mean], dim=1)


def test_imputation_matches_quantus_imputer_in_one_block_solve() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((3, 3, 6, 7)).astype(np.float32)
    removed = np.zeros((3, 42), dtype=bool)
    expected = []
    for i, count in enumerate((5, 20, 41)):  # a few pixels, about half, all but one
        indices = rng.choice(42, count, replace=False)
        removed[i, indices] = True
        expected.append(noisy_linear_imputation(images[i], indices, noise=0.0))
    ours = linear_imputation(torch.from_numpy(images), torch.from_numpy(removed).view(3, 6, 7))
    np.testing.assert_allclose(ours.numpy(), np.stack(expected), rtol=1e-4, atol=1e-6)


def test_imputation_is_the_weighted_mean_of_the_eight_neighbours() -> None:
    image = torch.arange(25, dtype=torch.float64).view(1, 1, 5, 5) ** 2
    removed = torch.zeros(1, 5, 5, dtype=torch.bool)
    removed[0, 2, 2] = removed[0, 0, 0] = True
    out = linear_imputation(image, removed)[0, 0]
    v = image[0, 0]
    direct = v[1, 2] + v[3, 2] + v[2, 1] + v[2, 3]
    diagonal = v[1, 1] + v[1, 3] + v[3, 1] + v[3, 3]
    assert out[2, 2].item() == pytest.approx((direct / 6 + diagonal / 12).item(), rel=1e-12)
    # a corner pixel has three neighbours; the weights are renormalised by theirs, 1/6 + 1/6 + 1/12
    corner = (v[0, 1] / 6 + v[1, 0] / 6 + v[1, 1] / 12) / (5 / 12)
    assert out[0, 0].item() == pytest.approx(corner.item(), rel=1e-12)
    kept = ~removed[0]
    assert torch.equal(out[kept], v[kept])


def test_sequence_imputation_interpolates_linearly_between_kept_steps() -> None:
    values = torch.tensor([[[0.0, 9.0, 9.0, 3.0, 9.0, 9.0, 9.0, 7.0]],
                           [[9.0, 9.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0]]])
    removed = torch.tensor([[False, True, True, False, True, True, True, False],
                            [True, True, False, False, False, False, False, False]])
    out = linear_imputation(values, removed)[:, 0]
    torch.testing.assert_close(out[0], torch.tensor([0.0, 1, 2, 3, 4, 5, 6, 7], dtype=torch.float64))
    # a removed run at the border has one kept end: it takes that end's value
    torch.testing.assert_close(out[1, :3], torch.tensor([5.0, 5, 5], dtype=torch.float64))


def test_curve_matches_quantus_road() -> None:
    model = tiny_image_net(1)
    rng = np.random.default_rng(1)
    x = rng.random((6, 1, 8, 8)).astype(np.float32)
    a = rng.standard_normal((6, 1, 8, 8)).astype(np.float32)  # no ties: the orders agree
    target = np.array([0, 1, 2, 0, 1, 2])
    metric = quantus.ROAD(noise=0.0, **QUANTUS_OFF)
    reference = metric(model, x, target, a, device="cpu")
    ours = compute("road", model, torch.from_numpy(x), torch.from_numpy(a), target=torch.from_numpy(target),
                   noise=0.0)
    expected = np.array([reference[p] for p in range(1, 100, 2)])
    assert 0 < expected.mean() < 1  # the curve moves: the comparison is not trivial
    np.testing.assert_array_equal(ours.curve.mean(0).numpy(), expected)
    np.testing.assert_array_equal(ours.curve_x.numpy(), np.arange(1, 100, 2) / 100)
    torch.testing.assert_close(ours.scores, ours.curve.mean(1))


def test_quantus_road_fails_on_multichannel_images_where_ours_removes_whole_pixels() -> None:
    model = tiny_image_net(2)
    x = torch.rand((2, 2, 8, 8), generator=torch.Generator().manual_seed(0))
    a = torch.rand((2, 2, 8, 8), generator=torch.Generator().manual_seed(1))
    metric = quantus.ROAD(noise=0.0, **QUANTUS_OFF)
    # it ranks the C*H*W attribution entries and uses those indices as pixel indices
    with pytest.raises(IndexError):
        metric(model, x.numpy(), np.array([0, 1]), a.numpy(), device="cpu")
    recorder = Recorder()
    compute("road", recorder, x, a, target=0, percentages="50", noise=0.0)
    seen = recorder.seen[0]
    relevance = a.sum(1).flatten(1)
    top = relevance.argsort(1, descending=True)[:, :32]
    changed = (seen != x).any(1).flatten(1)
    for i in range(2):  # exactly the 32 most relevant pixels change
        assert set(changed[i].nonzero().flatten().tolist()) == set(top[i].tolist())


def test_noise_has_the_requested_deviation_on_removed_pixels_only() -> None:
    x = torch.rand((2, 1, 16, 16), generator=torch.Generator().manual_seed(2))
    a = torch.rand((2, 1, 16, 16), generator=torch.Generator().manual_seed(3))
    noisy, clean = Recorder(), Recorder()
    compute("road", noisy, x, a, target=0, percentages="50", noise=0.01)
    compute("road", clean, x, a, target=0, percentages="50", noise=0.0)
    difference = (noisy.seen[0] - clean.seen[0]).flatten(1)
    removed = (clean.seen[0] != x).flatten(1)
    assert torch.equal(difference[~removed], torch.zeros(int((~removed).sum())))
    assert 0.008 < difference[removed].std().item() < 0.012
    assert abs(difference[removed].mean().item()) < 0.002


def planted_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = 0.3 * torch.rand((4, 1, 8, 8), generator=torch.Generator().manual_seed(4))
    x[:, :, 2:5, 2:5] = 1.0
    correct = 0.1 * torch.rand((4, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    correct[:, :, 2:5, 2:5] += 1.0
    random = torch.rand((4, 1, 8, 8), generator=torch.Generator().manual_seed(6))
    return x, correct, random


def test_planted_region_morf_accuracy_drops_only_for_the_correct_map() -> None:
    x, correct, random = planted_inputs()
    model = RegionModel()
    good = compute("road", model, x, correct, target=0)
    bad = compute("road", model, x, random, target=0)
    counts = torch.tensor([int(64 * p / 100) for p in range(1, 100, 2)])
    # once the 9 region pixels are gone they are imputed from background below 0.3: class 1
    assert torch.equal(good.curve[:, counts >= 9], torch.zeros(4, int((counts >= 9).sum())))
    assert torch.equal(good.curve[:, 0], torch.ones(4))
    assert (good.scores < bad.scores).all()


def test_planted_region_lerf_keeps_accuracy_for_the_correct_map() -> None:
    x, correct, random = planted_inputs()
    model = RegionModel()
    good = compute("road", model, x, correct, target=0, order="lerf")
    bad = compute("road", model, x, random, target=0, order="lerf")
    counts = torch.tensor([int(64 * p / 100) for p in range(1, 100, 2)])
    assert torch.equal(good.curve[:, counts <= 55], torch.ones(4, int((counts <= 55).sum())))
    assert (good.scores > bad.scores).all()


def test_direction_follows_the_order() -> None:
    road = Road()
    assert road.direction(Road.Params(order="morf")) is False
    assert road.direction(Road.Params(order="lerf")) is True
    with pytest.raises(UnknownNameError):
        compute("road", make_net("image"), make_inputs("image"), make_inputs("image"), target=0,
                order="random")


def test_percentages_parse_ranges_and_lists() -> None:
    assert parse_percentages("1:100:2") == [float(p) for p in range(1, 100, 2)]
    assert parse_percentages("10, 50,90") == [10.0, 50.0, 90.0]
    for bad in ("", "100", "-1", "1:2", "a,b"):
        with pytest.raises(InputError):
            parse_percentages(bad)


@pytest.mark.parametrize("modality", ["image", "sequence"])
def test_scores_do_not_depend_on_batch_size(modality: str) -> None:
    model, x = make_net(modality), make_inputs(modality, n=3)
    a = make_inputs(modality, n=3, seed=1) - 0.5
    results = [compute("road", model, x, a, target=torch.tensor([0, 1, 2]), batch_size=size,
                       generator=torch.Generator().manual_seed(7)) for size in (None, 1, 3)]
    for result in results[1:]:
        torch.testing.assert_close(result.curve, results[0].curve, rtol=0, atol=0)


def test_tabular_inputs_are_refused() -> None:
    with pytest.raises(IncompatibleError):
        compute("road", make_net("tabular"), make_inputs("tabular"), make_inputs("tabular"), target=0)
