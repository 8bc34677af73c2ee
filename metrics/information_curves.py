"""Performance information curves: SIC and AIC (Kapishnikov, Bolukbasi, Viégas & Terry, 2019, ICCV, "XRAI").

Each image is blurred, then its most attributed pixels are revealed on the blur at increasing fractions.
Every revealed image gets an information level, its lossless-compressed size normalised between the
blurred image (0) and the original (1), and a model performance: the target's softmax probability
relative to the original's (SIC) or whether the prediction stays the original's (AIC). The points,
made monotone, are interpolated on evenly spaced buckets of the information level; the score is the
area under that curve.

Compression runs on the CPU (``compressed_sizes``, the one place that encodes; tests replace it to give
exact levels), model passes on the model's device, both in blocks of at most ``batch_size`` images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import TYPE_CHECKING, Any, ClassVar

from xaibench.metrics import perturb
from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.stats import trapezoid

from xaibench.attribution.path import sample_chunks
from xaibench.core.batches import row_slices
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import
from xaibench.core.progress import advance

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

#: the fractions of the most attributed pixels revealed in the XRAI paper's reference notebook
PAPER_FRACTIONS = "0.005,0.01,0.02,0.03,0.04,0.05,0.07,0.1,0.13,0.21,0.34,0.5,0.75"
#: sizes of images encoded before, by a digest of their bytes: SIC and AIC of the same maps reveal the
#: same images, and encoding (about 10 ms for a 64x64 RGB image) is most of their cost
_SIZES: dict[bytes, float] = {}
_SIZES_LIMIT = 1 << 18  # entries (about 30 MB); the cache is emptied when full


# ---------------------------------------------------------------------------------------------
# information level


def compressed_sizes(images: torch.Tensor) -> torch.Tensor:
    """Bytes of each image (rows, C, H, W) uint8 on the CPU as lossless WebP (Pillow), float64 (rows,).

    Three channels are encoded as one RGB picture, one channel as grey; any other channel count as its
    channels stacked vertically into one grey picture (WebP has no other layouts). An image met before
    (same shape and bytes) is not encoded again.
    """
    sizes = []
    for image in images:
        raw = image.contiguous().numpy()
        key = hashlib.blake2b(raw.tobytes(), digest_size=16, person=str(raw.shape).encode()[:16]).digest()
        size = _SIZES.get(key)
        if size is None:
            size = _encoded_size(raw)
            if len(_SIZES) >= _SIZES_LIMIT:
                _SIZES.clear()
            _SIZES[key] = size
        sizes.append(size)
    return torch.tensor(sizes, dtype=torch.float64, device="cpu")


def _encoded_size(image: Any) -> float:
    """Bytes of one (C, H, W) uint8 array as lossless WebP."""
    from PIL import Image

    channels, height, width = image.shape
    if channels == 3:
        picture = Image.fromarray(image.transpose(1, 2, 0).copy())  # RGB
    else:
        picture = Image.fromarray(image.reshape(channels * height, width))  # grey
    buffer = io.BytesIO()
    picture.save(buffer, format="WEBP", lossless=True, quality=100, method=4, exact=True)
    return float(buffer.tell())


def to_bytes(images: torch.Tensor, low: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """Images (s, k, C, H, W) in the model's space as uint8 on the CPU, each sample scaled by its
    original image's range (``low``, ``span``: (s,)), so all its reveals share one scale."""
    shape = (-1, 1, 1, 1, 1)
    scaled = (images.cpu().double() - low.view(shape)) / span.view(shape)
    return (scaled * 255).round().clamp(0, 255).to(torch.uint8)


def blurred_start(inputs: torch.Tensor, sigma: float) -> torch.Tensor:
    """The image the pixels are revealed on: the shared Gaussian blur (reflect boundary)."""
    return perturb.substrate(inputs, "blur", blur_sigma=sigma)


# ---------------------------------------------------------------------------------------------
# the curve


def bucket_curve(levels: torch.Tensor, performance: torch.Tensor, buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The performance resampled on ``buckets`` + 1 evenly spaced information levels in [0, 1].

    Args:
        levels: (N, P) information level of each point in reveal order, the blurred image first (0) and
            the original last (1); clipped to [0, 1] here.
        performance: (N, P) the model's performance at each point.

    The performance is first made non-decreasing in reveal order (a running maximum, the paper's
    monotone curve), then the points are sorted by level (ties keep the reveal order) and joined by
    straight lines; where several points share a level the last one continues the curve. Returns the
    curve (N, buckets + 1) and the levels (buckets + 1,), float64 on the CPU.
    """
    levels = levels.double().cpu().clamp(0, 1)
    running = performance.double().cpu().cummax(dim=1).values
    order = levels.argsort(dim=1, stable=True)
    xs, ys = levels.gather(1, order), running.gather(1, order)
    grid = torch.linspace(0, 1, buckets + 1, dtype=torch.float64, device="cpu")
    queries = grid.expand(xs.shape[0], -1).contiguous()
    above = torch.searchsorted(xs.contiguous(), queries, right=True)  # points at or below each level
    low = (above - 1).clamp(0, xs.shape[1] - 1)
    high = above.clamp(max=xs.shape[1] - 1)
    x0, x1, y0, y1 = xs.gather(1, low), xs.gather(1, high), ys.gather(1, low), ys.gather(1, high)
    gap = x1 - x0
    weight = torch.where(gap > 0, (queries - x0) / torch.where(gap > 0, gap, torch.ones_like(gap)),
                         torch.zeros_like(gap))
    return y0 + weight * (y1 - y0), grid


def reveal_counts(fractions: str, n_pixels: int) -> torch.Tensor:
    """Pixels revealed at each point: 0 (the blur), round(f * pixels) per fraction, all (the original)."""
    try:
        values = [float(part) for part in fractions.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"fractions must be comma-separated numbers in (0, 1), got {fractions!r}") from None
    if not values or any(not 0 < v < 1 for v in values) or values != sorted(values):
        raise InputError(f"fractions must be ascending numbers in (0, 1), got {fractions!r}")
    counts = [0] + [int(v * n_pixels + 0.5) for v in values] + [n_pixels]
    return torch.tensor(counts, dtype=torch.long, device="cpu")


@dataclasses.dataclass(frozen=True)
class InformationParams:
    """fractions: the ascending fractions of the most attributed pixels revealed (comma-separated; the
    XRAI reference notebook's 13 by default); blur_sigma: the Gaussian blur's sigma in pixels (the
    shared reflect-boundary blur, as RISE insertion's substrate); buckets: information-level buckets
    of the curve (the reference code's 1000, so 1001 points)."""

    fractions: str = PAPER_FRACTIONS
    blur_sigma: float = 5.0
    buckets: int = 1000


class _InformationCurve(Metric):
    category = "faithfulness"
    higher_is_better = True
    modalities = ("image",)
    curve_label = "normalised information level (compressed size)"
    Params = InformationParams
    output: ClassVar[str]

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        if params.buckets < 1:
            raise InputError(f"buckets must be at least 1, got {params.buckets}")
        ids = perturb.group_ids(batch.inputs, 1)
        ranks = perturb.removal_ranks(perturb.group_relevance(batch.attributions, ids), "morf")
        counts = reveal_counts(params.fractions, ranks.shape[1])
        blurred = blurred_start(batch.inputs, params.blur_sigma)
        target = self._reference_class(batch)
        sizes, scores = _reveal_points(batch, ranks, ids, counts, blurred, target, self.output)
        low, high = sizes[:, :1], sizes[:, -1:]
        gain = high - low
        levels = (sizes - low) / torch.where(gain > 0, gain, torch.ones_like(gain))
        performance = self._performance(scores)
        curve, grid = bucket_curve(levels, performance, params.buckets)
        # undefined where the blur compresses no smaller than the original (the paper skips those images)
        undefined = (gain[:, 0] <= 0) | ~torch.isfinite(performance).all(dim=1)
        curve = curve.masked_fill(undefined[:, None], float("nan"))
        return MetricResult(trapezoid(curve, grid), curve, grid)

    def _reference_class(self, batch: MetricInputs) -> torch.Tensor:
        return batch.target

    def _performance(self, scores: torch.Tensor) -> torch.Tensor:
        return scores


def _reveal_points(batch: MetricInputs, ranks: torch.Tensor, ids: torch.Tensor, counts: torch.Tensor,
                   blurred: torch.Tensor, target: torch.Tensor, output: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Compressed size and model score of every revealed image, each (N, K) on the CPU.

    Blocks of at most ``batch_size`` reveals per sample, and chunks of samples filling at most
    ``batch_size`` rows, so no more than ``batch_size`` revealed images exist at once.
    """
    flat = batch.inputs.flatten(1)
    low = flat.amin(dim=1).double().cpu()
    span = flat.amax(dim=1).double().cpu() - low
    span = torch.where(span > 0, span, torch.ones_like(span))
    copies = counts.numel()
    sizes = torch.empty((batch.n, copies), dtype=torch.float64, device="cpu")
    scores = torch.empty((batch.n, copies), dtype=torch.float32, device="cpu")
    for block in row_slices(copies, batch.batch_size):
        width = block.stop - block.start
        for samples in sample_chunks(batch.n, width, batch.batch_size):
            shown = perturb.cumulative_masks(ranks[samples], ids, counts[block])
            images = torch.where(shown, batch.inputs[samples].unsqueeze(1), blurred[samples].unsqueeze(1))
            sizes[samples, block] = compressed_sizes(
                to_bytes(images, low[samples], span[samples]).flatten(0, 1)).view(-1, width)
            rows = target[samples].repeat_interleave(width)
            got = perturb.batched_scores(batch.model, images.flatten(0, 1), rows, output, batch.batch_size)
            scores[samples, block] = got.view(-1, width).cpu()
            if block.stop == copies:
                advance(samples.stop - samples.start)
    return sizes, scores


@METRICS.register("sic")
class SoftmaxInformationCurve(_InformationCurve):
    """Softmax information curve, SIC (Kapishnikov, Bolukbasi, Viégas & Terry, 2019, ICCV, "XRAI"):
    reveal the top ``fractions`` of pixels (ranked by channel-summed attribution, ties by index) on a
    blurred image; the x axis is each image's information level, (size - size(blur)) / (size(original)
    - size(blur)) clipped to [0, 1], with size its lossless WebP byte count (Pillow, libwebp method 4,
    after scaling the sample to 0-255 by its original image's min and max over all channels); the y axis
    is the target's softmax probability divided by the original image's, clipped to [0, 1] and made
    non-decreasing along the reveals; the points (blurred image at 0, original at 1, value 1) are joined
    linearly and read on ``buckets`` + 1 even levels; the score is the trapezoid area. Higher is better.

    Differences from the paper and PAIR's saliency library (``saliency.metrics.pic``): (1) the start
    image is a Gaussian blur (sigma ``blur_sigma``) with the revealed pixels pasted on it; PAIR instead
    re-interpolates the hidden pixels linearly from the revealed ones plus 1% random seed pixels, so its
    revealed pixels also shape their surroundings, and it needs a random mask; this version is
    deterministic. (2) Information is lossless WebP of images quantised from the model's (normalised)
    input space, not of the uint8 photograph; WebP sizes can change between libwebp versions, and on
    tiny images the container overhead dominates. (3) PAIR normalises the probability between the blurred
    and the original image's and anchors the curve at (0, 0); here it is divided by the original's as the
    paper states, and the blurred image's own value is the curve at 0. (4) Images the paper skips score
    NaN only where the blur compresses no smaller than the original; the paper's filters on the
    prediction (original probability >= 0.8, blurred below original) are left to the caller. (5) Several
    points at one level (sizes clipped to 0 or 1) give a step, the later reveal continuing the curve.
    """

    description = "SIC: area under the normalised class probability vs information level (Kapishnikov et al. 2019)"
    output = "probability"

    def _performance(self, scores: torch.Tensor) -> torch.Tensor:
        original = scores[:, -1:].double()
        return (scores.double() / original).clamp(0, 1)


@METRICS.register("aic")
class AccuracyInformationCurve(_InformationCurve):
    """Accuracy information curve, AIC (Kapishnikov, Bolukbasi, Viégas & Terry, 2019, ICCV, "XRAI"):
    ``sic``'s reveals, information levels, buckets and area, with the y axis 1 where the model's top-1
    class on the revealed image equals its top-1 class on the original image, else 0 (made
    non-decreasing along the reveals as the paper's curves). Higher is better. The paper scores
    accuracy against the ground-truth label; comparing to the original prediction makes the curve end at
    1 whatever the label (as PAIR's code, which appends the point (1, 1)). The other differences from the
    paper and PAIR's library are ``sic``'s: a Gaussian-blur start image with pasted pixels, lossless WebP
    of the quantised model input, no filter on the prediction, steps where levels coincide.
    """

    description = "AIC: area under the top-1 agreement with the original vs information level (Kapishnikov et al. 2019)"
    output = "top1"

    def _reference_class(self, batch: MetricInputs) -> torch.Tensor:
        return _predictions(batch)


def _predictions(batch: MetricInputs) -> torch.Tensor:
    """The model's top-1 class on each original image, (N,) on the inputs' device."""
    with torch.no_grad():
        return torch.cat([batch.model(batch.inputs[rows]).argmax(dim=1)
                          for rows in row_slices(batch.n, batch.batch_size)]).to(batch.inputs.device)
