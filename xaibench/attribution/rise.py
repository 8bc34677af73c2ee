"""RISE: saliency as the mean of random masks weighted by the class probability they leave.

Petsiuk, Das & Saenko, BMVC 2018, "RISE: Randomized Input Sampling for Explanation of Black-box
Models". For N random masks M_i with values in [0, 1]:

    S(x) = 1 / (N p) * sum_i f_c(x (.) M_i) M_i

where ``x (.) M`` keeps the input where the mask is 1 and replaces it by the baseline where it is 0
(``b + M (x - b)``; the paper multiplies, which is the zero baseline), f_c is the softmax probability of
the target class and p the probability of keeping a grid cell. S(u) is a Monte-Carlo estimate of
``E[f_c(x (.) M) M(u)] / p``, for binary masks the expected probability given that position u is kept.

Masks (the paper's section 3.2): a binary grid of s x s cells, each kept with probability p,
upsampled bilinearly to ``(s + 1) * ceil(H / s)`` by ``(s + 1) * ceil(W / s)`` pixels and cropped to
H x W at a random offset below one cell in each direction, so that the smooth masks do not all align
with the same grid. The mask is shared by all channels. Sequences: the same in one dimension (s cells
along the length). Tabular rows: no grid to smooth, so every feature is kept independently with
probability p (binary masks; ``grid`` does not apply).

Draws: each sample gets its own seed from the generator and, from a CPU generator of its own, draws
its grids ``rand((n_masks, *cells)) < p`` then its offsets ``rand((n_masks, dims))`` (scaled to whole
pixels below the cell size), so a sample's masks do not depend on the batch or ``batch_size``. The
rows (one per sample and mask) go through the model in passes of ``batch_size`` filled across samples;
a pass draws the small grids (n_masks x s x s) of the samples it starts, builds its full-size masks
on the inputs' device, runs them and adds their weighted sum to the saliency, so no n_masks x samples
set of masks or masked inputs ever exists.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from xaibench.attribution.base import METHODS, Method, modality_of
from xaibench.attribution.draws import draw_uniform, sample_generators, sample_seeds
from xaibench.attribution.reference import simple_baseline
from xaibench.core.batches import row_slices
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import
from xaibench.core.progress import advance

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


@METHODS.register("rise")
class RISE(Method):
    """RISE (Petsiuk et al., BMVC 2018): the mean of random smooth masks weighted by the target class's
    softmax probability on the masked input.

    f_c is the softmax probability, as the paper defines it (its code appends a softmax to the model):
    the weights stay in [0, 1], so the map estimates an expected probability and each mask's weight
    does not depend on the logits' arbitrary offset.

    Defaults: the paper's grid s = 7 and p = 0.5, and 1000 masks instead of the paper's 4000 (ResNet-50)
    or 8000 (VGG-16): a quarter of the model passes, for twice the paper's Monte-Carlo standard error
    (it falls as 1 / sqrt(n_masks); each term lies in [0, 1/p]). Raise n_masks for final figures.

    Differences from the authors' code: the upsampling is torch's bilinear interpolation (pixel
    centres, edge values repeated beyond the outer cell centres; the code's skimage resize mirrors
    there instead), and each sample draws masks of its own rather than all images sharing one set, so
    a sample's map does not depend on the other samples of its batch.
    """

    modalities = ("image", "tabular", "sequence")  # not text: its smooth masks blend embeddings into no token
    category = "perturbation"
    signed = False
    needs_gradients = False
    stochastic = True
    description = "mean of random smooth masks weighted by the class probability they keep (Petsiuk et al. 2018)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """n_masks: random masks per input; grid: cells per side of the mask grid (images, sequences);
        p: probability of keeping a cell; baseline: what masked positions take (zero, the paper's
        multiplication; black, white or mean)."""

        n_masks: int = 1000
        grid: int = 7
        p: float = 0.5
        baseline: str = "zero"

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        if params.n_masks < 1 or params.grid < 1 or not 0 < params.p <= 1:
            raise InputError("rise needs n_masks >= 1, grid >= 1 and p in (0, 1]")
        layout = MaskLayout.of(inputs, params.grid)
        baselines = simple_baseline(inputs, params.baseline)
        if params.baseline == "zero":
            baselines = None  # masking is then a plain product, one pass over the rows less
        seeds = sample_seeds(generator, inputs.shape[0])
        sums = masked_score_sums(
            model, inputs, baselines, target.to(inputs.device), seeds, params.n_masks, params.p, layout, batch_size
        )
        saliency = (sums / (params.n_masks * params.p)).to(inputs.dtype)
        return layout.to_inputs(saliency, inputs.shape).contiguous()


@dataclasses.dataclass(frozen=True)
class MaskLayout:
    """Where masks live: ``size``, the mask's shape (H, W), (L,) or (F,); ``cells``, the grid's shape;
    ``smooth``, whether grids are upsampled and shifted (images, sequences) or are the masks (tabular)."""

    size: tuple[int, ...]
    cells: tuple[int, ...]
    smooth: bool

    @classmethod
    def of(cls, inputs: torch.Tensor, grid: int) -> MaskLayout:
        if modality_of(inputs) == "tabular":
            return cls(size=tuple(inputs.shape[1:]), cells=tuple(inputs.shape[1:]), smooth=False)
        size = tuple(inputs.shape[2:])
        return cls(size=size, cells=(grid,) * len(size), smooth=True)

    def cell_sizes(self) -> tuple[int, ...]:
        """Pixels per grid cell along each dimension: ``ceil(size / s)``."""
        return tuple(math.ceil(side / cells) for side, cells in zip(self.size, self.cells))

    def to_inputs(self, saliency: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """(s, positions) -> the inputs' shape (s, *S): every channel of a position gets its value."""
        if not self.smooth:
            return saliency.view(shape)
        return saliency.view(shape[0], 1, *self.size).expand(shape)


def draw_cells(
    generators: list[torch.Generator], n_masks: int, layout: MaskLayout, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's kept grid cells (s, n_masks, *cells) bool and mask offsets (s, n_masks, dims) int64,
    drawn on the CPU: per sample ``rand((n_masks, *cells)) < p``, then ``rand((n_masks, dims))``
    scaled to whole pixels in [0, cell size). Tabular masks have no offsets (dims = 0)."""
    kept = draw_uniform(generators, (n_masks, *layout.cells), torch.float32) < p
    cell = torch.tensor(layout.cell_sizes() if layout.smooth else (), dtype=torch.float64, device="cpu")
    offsets = (draw_uniform(generators, (n_masks, len(cell)), torch.float64) * cell).long()
    return kept, offsets


def masked_score_sums(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    baselines: torch.Tensor | None,
    target: torch.Tensor,
    seeds: list[int],
    n_masks: int,
    p: float,
    layout: MaskLayout,
    batch_size: int | None,
) -> torch.Tensor:
    """``sum_i f_c(b + M_i (x - b)) M_i`` per sample, (N, positions) float32; ``baselines`` None for b = 0.

    The rows, one per sample and mask (sample-major), go through the model in passes of at most
    ``batch_size``, filled across samples; each pass builds its own masks from the grids of
    ``mask_rows``. Progress is reported as samples finish.
    """
    n, device = inputs.shape[0], inputs.device
    diffs = inputs if baselines is None else inputs - baselines
    weights = [bilinear_weights(c, side, device) for c, side in zip(layout.cells, layout.cell_sizes())
               if layout.smooth]
    sums = torch.zeros((n, math.prod(layout.size)), dtype=torch.float32, device=device)
    finished = 0
    for rows, cells, offsets in mask_rows(seeds, n_masks, p, layout, batch_size):
        owner = torch.arange(rows.start, rows.stop, device=device) // n_masks  # the sample of each row
        first, end = rows.start // n_masks, (rows.stop - 1) // n_masks + 1
        grid = cells.to(device, torch.float32)
        masks = smooth_masks(grid, offsets.to(device), weights, layout.size) if layout.smooth else grid
        shaped = masks.unsqueeze(1) if layout.smooth else masks  # one mask for all channels
        points = diffs.index_select(0, owner).mul_(shaped)
        if baselines is not None:  # None: the zero baseline, the paper's plain multiplication
            points.add_(baselines.index_select(0, owner))
        with torch.no_grad():
            scores = torch.softmax(model(points).float(), dim=1).gather(1, target[owner, None])
        # per sample of the pass: sum of score x mask over its rows, as one product (a fixed order of
        # additions on every device, unlike index_add_'s atomics on CUDA)
        by_sample = torch.where(owner == torch.arange(first, end, device=device)[:, None], scores.T, 0.0)
        sums[first:end] += by_sample @ masks.flatten(1)
        done = rows.stop // n_masks
        advance(done - finished)
        finished = done
    return sums


def mask_rows(
    seeds: list[int], n_masks: int, p: float, layout: MaskLayout, batch_size: int | None
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """For each slice of at most ``batch_size`` rows (sample-major, ``n_masks`` rows per sample): the
    rows, their grids (r, *cells) and offsets (r, dims), on the CPU.

    A sample's grids are drawn whole (``draw_cells``) when its first row comes and dropped after its
    last: only the samples of the current pass are held, never those of the whole batch.
    """
    held_from = 0  # the sample of cells[0]
    cells, offsets = draw_cells([], n_masks, layout, p)  # none held yet
    for rows in row_slices(len(seeds) * n_masks, batch_size):
        first, end = rows.start // n_masks, (rows.stop - 1) // n_masks + 1
        cells, offsets = cells[first - held_from:], offsets[first - held_from:]
        held_from = first
        if first + len(cells) < end:
            new_cells, new_offsets = draw_cells(sample_generators(seeds, slice(first + len(cells), end)),
                                                n_masks, layout, p)
            cells, offsets = torch.cat([cells, new_cells]), torch.cat([offsets, new_offsets])
        local = slice(rows.start - first * n_masks, rows.stop - first * n_masks)
        yield rows, cells.flatten(0, 1)[local], offsets.flatten(0, 1)[local]


def bilinear_weights(cells: int, cell: int, device: torch.device) -> torch.Tensor:
    """(up, cells) float32 matrix on ``device`` of linear interpolation from ``cells`` values to
    ``up = (cells + 1) * cell`` pixels, as torch's ``interpolate(mode="linear"/"bilinear",
    align_corners=False)`` does it: pixel j reads position ``(j + 0.5) cells / up - 0.5``, clamped at 0
    and at the last cell. Built in float64 on the CPU (MPS has no float64; the matrix is small) and then
    moved, so that every device gets the same masks."""
    up = (cells + 1) * cell
    source = ((torch.arange(up, dtype=torch.float64, device="cpu") + 0.5) * (cells / up) - 0.5).clamp_(min=0)
    left = source.floor().long().clamp_(max=cells - 1)
    right = (left + 1).clamp_(max=cells - 1)
    frac = source - left
    weights = torch.zeros((up, cells), dtype=torch.float64, device="cpu")
    rows = torch.arange(up, device="cpu")
    weights.index_put_((rows, left), 1 - frac, accumulate=True)
    weights.index_put_((rows, right), frac, accumulate=True)
    return weights.float().to(device)


def smooth_masks(
    grid: torch.Tensor, offsets: torch.Tensor, weights: list[torch.Tensor], size: tuple[int, ...]
) -> torch.Tensor:
    """Masks (r, *size) from grids (r, *cells) (0/1 floats): each upsampled by ``weights`` (one
    interpolation matrix per dimension) and cropped to ``size`` from its offsets (r, dims).

    Separable: the crop picks rows of each interpolation matrix, so a mask is ``A_h G A_w^T`` (images)
    or ``A G`` (sequences) with no upsampled copy larger than the mask.
    """
    picked = [
        w[offsets[:, d, None] + torch.arange(side, device=grid.device)]  # (r, side, cells)
        for d, (w, side) in enumerate(zip(weights, size))
    ]
    if len(size) == 1:
        return torch.bmm(picked[0], grid.unsqueeze(-1)).squeeze(-1)
    return torch.bmm(torch.bmm(picked[0], grid), picked[1].transpose(1, 2))
