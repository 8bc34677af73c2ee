"""RISE: the masks against torch's bilinear upsampling, the saliency formula on given masks, convergence
to the expectation computed by hand for models whose class probability is a known function of the
mask, batch-size independence, seeds and the rows per pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xaibench.attribution.rise as rise_module
from tests.attribution.test_guided_ig import Float64Devices
from tests.conftest import make_inputs, make_net
from xaibench.attribution import attribute
from xaibench.attribution.reference import simple_baseline
from xaibench.attribution.rise import MaskLayout, bilinear_weights, smooth_masks
from xaibench.core.errors import InputError
from xaibench.core.progress import reporting


def rise(model: nn.Module, x: torch.Tensor, target: torch.Tensor | int, seed: int = 0, **params) -> torch.Tensor:
    return attribute("rise", model, x, target=target, generator=torch.Generator().manual_seed(seed), **params)


def upsampled(cells: torch.Tensor, offsets: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """What the paper describes, the direct way: upsample each grid (r, *cells) to (s + 1) * cell
    pixels per side with torch's (bi)linear interpolation, then crop ``size`` at the offsets."""
    grid = cells.shape[1]
    cell = [-(-side // grid) for side in size]
    up = [(grid + 1) * c for c in cell]
    mode = "bilinear" if len(size) == 2 else "linear"
    big = F.interpolate(cells.float().unsqueeze(1), size=up, mode=mode, align_corners=False)[:, 0]
    if len(size) == 1:
        return torch.stack([m[o[0]: o[0] + size[0]] for m, o in zip(big, offsets)])
    return torch.stack([m[o[0]: o[0] + size[0], o[1]: o[1] + size[1]] for m, o in zip(big, offsets)])


@pytest.mark.parametrize(("grid", "size"), [(7, (224, 224)), (3, (8, 8)), (4, (10, 17)), (7, (5, 5)), (5, (23,))])
def test_masks_are_upsampled_grids_cropped_at_their_offsets(grid: int, size: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(0)
    cells = torch.rand((6, *(grid,) * len(size)), generator=generator) < 0.5
    layout = MaskLayout(size=size, cells=(grid,) * len(size), smooth=True)
    offsets = torch.stack([torch.randint(c, (6,), generator=generator) for c in layout.cell_sizes()], 1)
    offsets[0] = torch.tensor(layout.cell_sizes()) - 1  # the largest offset still fits
    weights = [bilinear_weights(grid, c, torch.device("cpu")) for c in layout.cell_sizes()]
    ours = smooth_masks(cells.float(), offsets, weights, size)
    torch.testing.assert_close(ours, upsampled(cells, offsets, size), rtol=0, atol=1e-6)
    assert ours.min() >= 0 and ours.max() <= 1 + 1e-6


def given_masks(monkeypatch: pytest.MonkeyPatch, cells: torch.Tensor, offsets: torch.Tensor) -> None:
    """Make RISE use these grids and offsets (one sample) instead of drawing them."""
    monkeypatch.setattr(rise_module, "draw_cells", lambda generators, n_masks, layout, p: (cells, offsets))


@pytest.mark.parametrize("baseline", ["zero", "white"])
def test_saliency_formula_on_given_image_masks(monkeypatch: pytest.MonkeyPatch, baseline: str) -> None:
    """S = sum_i softmax(f(b + M_i (x - b)))_c M_i / (N p), the same in every channel."""
    model, x = make_net("image"), make_inputs("image", n=1)
    cells = torch.tensor([[[1, 0, 0], [0, 1, 1], [1, 1, 0]], [[0, 0, 1], [1, 0, 0], [0, 1, 1]],
                          [[1, 1, 1], [1, 1, 1], [1, 1, 1]]], dtype=torch.bool)
    offsets = torch.tensor([[0, 0], [2, 1], [1, 2]])  # cells of 3 pixels on the 8-pixel side
    given_masks(monkeypatch, cells[None], offsets[None])
    masks = upsampled(cells, offsets, (8, 8))
    b = simple_baseline(x, baseline)
    with torch.no_grad():
        probs = torch.softmax(model(b + masks[:, None] * (x - b)), dim=1)[:, 2]
    expected = (probs[:, None, None] * masks).sum(0) / (3 * 0.4)
    ours = rise(model, x, 2, n_masks=3, grid=3, p=0.4, baseline=baseline)
    torch.testing.assert_close(ours, expected.expand_as(x), rtol=1e-6, atol=1e-7)


def test_saliency_formula_on_given_tabular_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tabular masks are the drawn keep/drop bits themselves, one per feature."""
    model, x = make_net("tabular"), make_inputs("tabular", n=1)
    masks = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 1, 1, 0, 1, 0]], dtype=torch.bool)
    given_masks(monkeypatch, masks[None], torch.zeros((1, 2, 0), dtype=torch.long))
    with torch.no_grad():
        probs = torch.softmax(model(x * masks), dim=1)[:, 1]
    expected = (probs[:, None] * masks).sum(0, keepdim=True) / (2 * 0.5)
    torch.testing.assert_close(rise(model, x, 1, n_masks=2), expected, rtol=1e-6, atol=1e-7)


class Probability(nn.Module):
    """Two classes whose softmax probabilities are g(x) and 1 - g(x) for a g with values in [0, 1]."""

    def __init__(self, g) -> None:
        super().__init__()
        self.g = g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.g(x).clamp(1e-12, 1 - 1e-7)
        return torch.stack([g.log(), (1 - g).log()], dim=1)


def test_image_map_converges_to_its_expectation() -> None:
    """f = the mean of x (.) M over a 4x4 corner R of a 24x24 image (x = 0.8 there), grid 4, p = 0.5.

    For one offset o the mask is M(u) = sum_k w_k(u) G_k with independent cells G_k ~ Bernoulli(p)
    and bilinear weights summing to 1, so E[M(r) M(u) | o] = p^2 + p (1 - p) K_o(r, u) with
    K_o(r, u) = sum_k w_k(r) w_k(u), and E[S(u)] = E[f M(u)] / p = p mean_R(x) + (1 - p) mean_{r in R}
    x_r E_o[K_o(r, u)] (offsets uniform in 0..5). Far from R (no shared cell) that is p mean_R(x) = 0.4.
    The weights come from torch's interpolate of one-hot grids. 24 copies of the image get independent
    masks (a seed each): their mean must be within 5 standard errors (their spread / sqrt(24)) of it."""
    side, grid, cell, p, copies = 24, 4, 6, 0.5, 24
    x = torch.full((copies, 1, side, side), 0.2)
    x[:, :, :4, :4] = 0.8
    model = Probability(lambda batch: batch[:, 0, :4, :4].mean((1, 2)))
    maps = rise(model, x, 0, n_masks=1500, grid=grid, p=p, batch_size=4096)[:, 0]

    one_hot = torch.eye(grid * grid).view(grid * grid, 1, grid, grid)
    basis = F.interpolate(one_hot, size=((grid + 1) * cell,) * 2, mode="bilinear", align_corners=False)[:, 0]
    kernel = torch.zeros((side * side, side * side))
    for oh in range(cell):
        for ow in range(cell):
            w = basis[:, oh: oh + side, ow: ow + side].reshape(grid * grid, -1)  # (cells, pixels)
            kernel += w.T @ w / cell**2
    region = torch.zeros(side, side, dtype=torch.bool)
    region[:4, :4] = True
    expected = p * 0.8 + (1 - p) * 0.8 * kernel[region.flatten()].mean(0).view(side, side)
    assert torch.allclose(expected[19:, 19:], torch.tensor(0.4), atol=1e-6)  # no cell shared with R
    assert expected.max() > 0.55  # inside R the map stands out

    error = maps.mean(0) - expected
    standard_error = maps.std(0) / copies**0.5
    assert (error.abs() <= 5 * standard_error + 1e-6).all(), float((error.abs() / standard_error).max())


def test_tabular_masks_are_independent_features() -> None:
    """f = x_0 (.) M_0 with independent bits M_j ~ Bernoulli(p): E[S_0] = x_0 E[M_0^2] / p = x_0 and
    E[S_j] = x_0 E[M_0 M_j] / p = x_0 p, with exact variances per mask x_0^2 (1 - p) / p and
    x_0^2 (1 - p^2): the map is within 5 of its standard errors."""
    p, n_masks = 0.3, 4000
    x = torch.tensor([[0.6, 0.9, 0.1, 0.5]])
    saliency = rise(Probability(lambda batch: batch[:, 0]), x, 0, n_masks=n_masks, p=p)[0]
    expected = torch.tensor([0.6, 0.6 * p, 0.6 * p, 0.6 * p])
    variance = torch.tensor([0.36 * (1 - p) / p] + [0.36 * (1 - p * p)] * 3)
    assert ((saliency - expected).abs() <= 5 * (variance / n_masks).sqrt()).all(), saliency


@pytest.mark.parametrize("modality", ["image", "sequence", "tabular"])
def test_same_maps_for_every_batch_size_and_seeds(modality: str) -> None:
    """A sample's masks come from its own seed: the batching only regroups the same rows. Another
    seed draws other masks."""
    model, x = make_net(modality), make_inputs(modality, n=3)
    target = torch.tensor([0, 2, 1])
    full = rise(model, x, target, n_masks=20, grid=3)
    for batch_size in (1, 7, 20, 45, 1000):
        torch.testing.assert_close(rise(model, x, target, n_masks=20, grid=3, batch_size=batch_size), full)
    assert torch.equal(rise(model, x, target, n_masks=20, grid=3), full)
    assert not torch.allclose(rise(model, x, target, seed=1, n_masks=20, grid=3), full)


@pytest.mark.parametrize(("batch_size", "passes"), [(6, [6] * 10), (25, [25, 25, 10]), (45, [45, 15]),
                                                    (None, [60])])
def test_rows_per_pass_and_masks_built_at_once(monkeypatch: pytest.MonkeyPatch, batch_size: int | None,
                                               passes: list[int]) -> None:
    """Every forward pass, and every set of full-size masks built at once, has at most batch_size
    rows, filled across samples; the samples' n_masks rows are all evaluated once; progress counts
    the samples."""
    model, x = make_net("image"), make_inputs("image", n=3)
    built: list[int] = []

    def recording(grid: torch.Tensor, *args):
        built.append(grid.shape[0])
        return smooth_masks(grid, *args)

    monkeypatch.setattr(rise_module, "smooth_masks", recording)
    rows: list[int] = []
    handle = model[0].register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))
    reported: list[int] = []
    try:
        with reporting(reported.append):
            rise(model, x, torch.tensor([0, 1, 2]), n_masks=20, grid=3, batch_size=batch_size)
    finally:
        handle.remove()
    assert rows == passes and built == passes and sum(reported) == 3


@pytest.mark.parametrize("params", [{"n_masks": 0}, {"grid": 0}, {"p": 0.0}, {"p": 1.5}])
def test_bad_parameters_are_refused(params: dict) -> None:
    with pytest.raises(InputError, match="rise needs"):
        rise(make_net("tabular"), make_inputs("tabular"), 0, **params)


def test_interpolation_weights_are_float64_only_on_the_cpu() -> None:
    """MPS has no float64: the matrices are built on the CPU and moved (here to the meta device) as float32."""
    with Float64Devices() as recorded:
        weights = bilinear_weights(7, 5, torch.device("meta"))
    assert recorded.devices == {"cpu"}
    assert weights.device.type == "meta" and weights.dtype == torch.float32 and weights.shape == (40, 7)
