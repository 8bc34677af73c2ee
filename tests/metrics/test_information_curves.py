"""SIC and AIC (XRAI's performance information curves): exact curves through the compression and blur
seams, the bucket arithmetic, batching and the real WebP information estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from xaibench.metrics import compute
from xaibench.metrics import information_curves as ic

from tests.conftest import make_inputs, make_net
from xaibench.core.errors import IncompatibleError, InputError

#: 4 x 4 one-channel image of ones but the last pixel (0), revealed in flat-index order; fractions
#: 0.25, 0.5, 0.75 reveal 0, 4, 8, 12, 16 pixels, i.e. 0, 4, 8, 12, 15 ones.
X = torch.ones((1, 1, 4, 4))
X.view(-1)[15] = 0.0
A = torch.arange(16, 0, -1, dtype=torch.float32).view(1, 1, 4, 4)
FRACTIONS = "0.25,0.5,0.75"
ONES = [0, 4, 8, 12, 15]


class OnesCount(nn.Module):
    """Two classes: logit 0 = scale * (sum(x) - shift), logit 1 = 0; on the reveals above sum(x) counts
    the revealed ones. Records the most rows it saw in one pass."""

    def __init__(self, scale: float, shift: float = 0.0) -> None:
        super().__init__()
        self.scale, self.shift, self.most_rows = scale, shift, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.most_rows = max(self.most_rows, x.shape[0])
        logit = self.scale * (x.flatten(1).sum(1) - self.shift)
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def squared_nonzero(images: torch.Tensor) -> torch.Tensor:
    """Fake compressed size: (number of non-zero bytes)^2, so the reveals' levels are k^2 / 225."""
    return (images.flatten(1) > 0).sum(1).double() ** 2


@pytest.fixture
def seams(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Reveal on zeros instead of the blur and measure information as ``squared_nonzero``; returns the
    number of images of every compression call."""
    calls: list[int] = []

    def sizes(images: torch.Tensor) -> torch.Tensor:
        calls.append(images.shape[0])
        return squared_nonzero(images)

    monkeypatch.setattr(ic, "blurred_start", lambda inputs, sigma: torch.zeros_like(inputs))
    monkeypatch.setattr(ic, "compressed_sizes", sizes)
    return calls


def expected_curve(levels: list[float], values: list[float], buckets: int) -> tuple[np.ndarray, float]:
    grid = np.linspace(0, 1, buckets + 1)
    curve = np.interp(grid, levels, values)
    return curve, float(np.trapezoid(curve, grid))


def test_sic_is_the_area_under_the_relative_probability(seams: list[int]) -> None:
    model = OnesCount(0.25)
    probability = [1 / (1 + math.exp(-0.25 * m)) for m in ONES]
    relative = [p / probability[-1] for p in probability]  # rising, so the running max keeps it
    levels = [m * m / 225 for m in ONES]
    result = compute("sic", model, X, A, target=0, fractions=FRACTIONS, buckets=50)
    curve, area = expected_curve(levels, relative, 50)
    np.testing.assert_allclose(result.curve[0].numpy(), curve, rtol=1e-6)
    assert result.scores[0].item() == pytest.approx(area, rel=1e-6)
    np.testing.assert_allclose(result.curve_x.numpy(), np.linspace(0, 1, 51))


def test_aic_counts_agreement_with_the_original_prediction(seams: list[int]) -> None:
    """Class 0 wins from 7 revealed ones on, as on the original (15): the curve is 0 up to level 16/225,
    rises linearly to 1 at 64/225 and stays there, area 1 - 64/225 + 24/225 = 185/225; the target given
    (1, a wrong label) does not matter."""
    model = OnesCount(1.0, shift=6.5)
    for target in (0, 1):
        result = compute("aic", model, X, A, target=target, fractions=FRACTIONS, buckets=225)
        assert result.scores[0].item() == pytest.approx(185 / 225, abs=1e-12)
        curve = result.curve[0]
        assert curve[:17].eq(0).all()
        torch.testing.assert_close(curve[64:], torch.ones(162, dtype=torch.float64))
        assert curve[40].item() == pytest.approx(24 / 48)


def test_bucket_curve_is_monotone_and_interpolated() -> None:
    levels = torch.tensor([[0.0, 0.25, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0]])
    performance = torch.tensor([[0.0, 0.8, 0.4, 1.0], [0.2, 0.3, 0.9, 1.0]])
    curve, grid = ic.bucket_curve(levels, performance, 4)
    # first: the dip to 0.4 is held at 0.8; second: two points at 0.5, the later one continues
    torch.testing.assert_close(curve, torch.tensor([[0.0, 0.8, 0.8, 0.9, 1.0], [0.2, 0.25, 0.9, 0.95, 1.0]],
                                                   dtype=torch.float64))
    torch.testing.assert_close(grid, torch.linspace(0, 1, 5, dtype=torch.float64))


def test_levels_out_of_order_are_sorted_and_clipped() -> None:
    """A reveal compressing larger than the original counts as level 1, one smaller than the blur as 0."""
    levels = torch.tensor([[0.0, 1.5, 0.5, -0.2, 1.0]])
    performance = torch.tensor([[0.1, 0.2, 0.6, 0.7, 1.0]])
    curve, _ = ic.bucket_curve(levels, performance, 2)
    # running max 0.1 0.2 0.6 0.7 1.0; sorted: (0, .1) (0, .7) (.5, .6) (1, .2) (1, 1.0)
    torch.testing.assert_close(curve, torch.tensor([[0.7, 0.6, 1.0]], dtype=torch.float64))


def test_undefined_when_the_blur_holds_as_much_information(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ic, "compressed_sizes", lambda images: torch.full((images.shape[0],), 7.0,
                                                                          dtype=torch.float64))
    x = make_inputs("image", n=2)
    result = compute("sic", make_net("image"), x, x, target=0)
    assert torch.isnan(result.scores).all() and torch.isnan(result.curve).all()


@pytest.mark.parametrize("name", ["sic", "aic"])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_passes_and_compression_stay_within_batch_size(name: str, batch_size: int, seams: list[int]) -> None:
    x = torch.cat([X, 1 - X, X.flip(-1)])
    a = torch.cat([A, A.flip(-1), A.transpose(-1, -2)])
    whole = compute(name, OnesCount(0.5, shift=6.5), x, a, target=0, fractions=FRACTIONS, buckets=20)
    seams.clear()
    model = OnesCount(0.5, shift=6.5)
    chunked = compute(name, model, x, a, target=0, fractions=FRACTIONS, buckets=20, batch_size=batch_size)
    torch.testing.assert_close(chunked.scores, whole.scores)
    assert model.most_rows <= batch_size and max(seams) <= batch_size
    assert sum(seams) == 3 * 5  # every reveal compressed once


def test_webp_information_orders_images_and_is_deterministic() -> None:
    noise = torch.randint(0, 256, (2, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    flat = torch.full((1, 3, 16, 16), 128, dtype=torch.uint8)
    grey = noise[:, :1].repeat(1, 2, 1, 1)  # two channels: stacked as one grey picture
    sizes = ic.compressed_sizes(torch.cat([noise, flat]))
    assert (sizes[:2] > sizes[2]).all()
    torch.testing.assert_close(sizes, ic.compressed_sizes(torch.cat([noise, flat])))
    assert ic.compressed_sizes(grey).gt(0).all()


def test_real_run_scores_in_the_unit_interval() -> None:
    x = make_inputs("image", n=3)
    model = make_net("image")
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    for name in ("sic", "aic"):
        result = compute(name, model, x, a, target=torch.tensor([0, 1, 2]), buckets=100)
        finite = result.scores[torch.isfinite(result.scores)]
        assert finite.numel() > 0 and ((finite >= 0) & (finite <= 1)).all()
        assert result.curve[:, -1][torch.isfinite(result.scores)].eq(1).all()  # the original is level 1, value 1


def test_refuses_other_modalities_and_bad_fractions() -> None:
    x = make_inputs("sequence", n=2)
    with pytest.raises(IncompatibleError):
        compute("sic", make_net("sequence"), x, x, target=0)
    x = make_inputs("image", n=2)
    for fractions in ("0.5,0.2", "0,0.5", "1.0", "a,b", ""):
        with pytest.raises(InputError):
            compute("aic", make_net("image"), x, x, target=0, fractions=fractions)
    with pytest.raises(InputError):
        compute("sic", make_net("image"), x, x, target=0, buckets=0)


def test_an_image_met_before_is_not_encoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[tuple[int, ...]] = []
    real = ic._encoded_size
    monkeypatch.setattr(ic, "_SIZES", {})
    monkeypatch.setattr(ic, "_encoded_size", lambda image: encoded.append(image.shape) or real(image))
    noise = torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    first = ic.compressed_sizes(noise)
    assert len(encoded) == 2
    torch.testing.assert_close(ic.compressed_sizes(noise.flip(0)), first.flip(0))
    assert len(encoded) == 2  # both met before
    ic.compressed_sizes(noise.reshape(2, 1, 24, 8))  # the same bytes in another shape: another image
    assert len(encoded) == 4
    torch.testing.assert_close(first, torch.tensor([real(noise[0].numpy()), real(noise[1].numpy())],
                                                   dtype=torch.float64))
