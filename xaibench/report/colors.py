"""Pure colour-scale and display helpers for heatmaps (numpy only, no matplotlib at import).

The conventions follow common practice in attribution visualisation (e.g. Ancona et al., 2018,
"Towards better understanding of gradient-based attribution methods for deep neural networks", ICLR):
signed maps use a diverging colour map centred on 0 with a symmetric scale, unsigned maps a sequential
one starting at 0, and colours saturate at a high percentile of |attribution| so that a few extreme
values do not wash out the rest of the map.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from numbers import Real

import numpy as np

from xaibench.core.errors import InputError, UnknownNameError
from xaibench.report.style import DIVERGING_CMAP, FORMATS, SEQUENTIAL_CMAP

STYLES = ("overlay", "heatmap", "masked")
SCALES = ("shared", "sample")  # one colour scale for all samples, or one per sample
LUMINANCE = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights for RGB -> grayscale


@dataclass(frozen=True)
class HeatmapStyle:
    """How attribution maps are drawn; validated on construction.

    Attributes:
        style: "overlay" (map over the input in its own colours), "heatmap" (map alone) or "masked"
            (input times the normalised |map|).
        cmap: a matplotlib colour map name; None picks a diverging map for signed attributions
            and a sequential one for unsigned attributions.
        clip: percentile of |attribution| at which colours saturate, in (0, 100]: of all samples
            together (scale "shared") or of each sample (scale "sample").
        alpha: opacity of the overlay where colours saturate, in [0, 1]; smaller |attribution| fades
            in proportion, so that pixels without attribution show the input unchanged.
        scale: "shared" (one colour scale for every sample: maps can be compared) or "sample".
        format: the figure files' format: png, pdf or svg.
    """

    style: str = "overlay"
    cmap: str | None = None
    clip: float = 99.0
    alpha: float = 0.8
    scale: str = "shared"
    format: str = "png"

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise UnknownNameError.for_name("heatmap style", self.style, list(STYLES))
        if not isinstance(self.clip, Real) or not 0 < self.clip <= 100:
            raise InputError(f"clip must be a percentile in (0, 100], got {self.clip!r}")
        if not isinstance(self.alpha, Real) or not 0 <= self.alpha <= 1:
            raise InputError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if self.scale not in SCALES:
            raise UnknownNameError.for_name("colour scale", self.scale, list(SCALES))
        if self.format not in FORMATS:
            raise UnknownNameError.for_name("figure format", self.format, list(FORMATS))
        if self.cmap is not None:
            _check_cmap(self.cmap)

    def cmap_for(self, signed: bool) -> str:
        """The colour map to use for a signed or unsigned map (see ``choose_cmap``)."""
        return choose_cmap(signed, self.cmap)


def _check_cmap(name: str) -> None:
    """Raise UnknownNameError, with the closest matplotlib name, for an unknown colour map."""
    import matplotlib  # deferred: only needed when a user names a colour map

    known = list(matplotlib.colormaps)
    if name in known:
        return
    # Case slips ("rdbu_r") are the usual mistake; difflib alone is case-sensitive.
    by_lower = {k.lower(): k for k in known}
    if name.lower() in by_lower:
        raise UnknownNameError(f"unknown colour map {name!r}; did you mean {by_lower[name.lower()]!r}?")
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean {match[0]!r}?" if match else " (see matplotlib's list of colormaps)"
    raise UnknownNameError(f"unknown colour map {name!r}{hint}")


def choose_cmap(signed: bool, cmap: str | None = None) -> str:
    """The colour map name: ``cmap`` if given, else diverging for signed maps, sequential otherwise."""
    if cmap is not None:
        return cmap
    return DIVERGING_CMAP if signed else SEQUENTIAL_CMAP


def saturation(a: np.ndarray, clip: float) -> float:
    """The value of |a| at which colours saturate: the ``clip`` percentile of |a| (NaN ignored).

    Falls back to max |a| when the percentile is 0 (sparse maps) and to 1.0 for an all-zero map,
    so that the scale is never degenerate.
    """
    mag = np.abs(np.asarray(a, dtype=np.float64))
    if not np.isfinite(mag).any():
        return 1.0
    for value in (np.nanpercentile(mag, clip), np.nanmax(mag)):
        if math.isfinite(value) and value > 0:
            return float(value)
    return 1.0


def color_limits(a: np.ndarray, signed: bool, clip: float) -> tuple[float, float]:
    """(vmin, vmax) for one map: (-v, v) if signed, (0, v) if not, v = ``saturation(a, clip)``."""
    vmax = saturation(a, clip)
    return (-vmax, vmax) if signed else (0.0, vmax)


def normalised_magnitude(a: np.ndarray, clip: float, vmax: float | None = None) -> np.ndarray:
    """|a| / vmax, clipped to [0, 1]; NaN counts as 0. ``vmax`` defaults to ``saturation(a, clip)``."""
    mag = np.nan_to_num(np.abs(np.asarray(a, dtype=np.float64)), nan=0.0)
    return np.clip(mag / (saturation(a, clip) if vmax is None else vmax), 0.0, 1.0)


def relative_map(a: np.ndarray, signed: bool, clip: float, vmax: float | None = None) -> np.ndarray:
    """``a`` divided by ``vmax`` and clipped to [-1, 1] (signed) or [0, 1] (unsigned).

    ``vmax`` defaults to ``a``'s own saturation value (each map scaled on its own); a shared ``vmax``
    puts many maps on one scale.
    """
    rel = np.asarray(a, dtype=np.float64) / (saturation(a, clip) if vmax is None else vmax)
    return np.clip(rel, -1.0 if signed else 0.0, 1.0)


def sample_saturations(maps: np.ndarray, clip: float, scale: str) -> np.ndarray:
    """(N,) saturation values: each map's own (scale "sample") or, for "shared", that of all maps
    together, repeated."""
    if scale == "shared":
        return np.full(len(maps), saturation(maps, clip))
    return np.array([saturation(m, clip) for m in maps])


def overlay_rgba(rel: np.ndarray, cmap: str, signed: bool, alpha: float | None) -> np.ndarray:
    """(H, W, 4) colours of a relative map in [-1, 1] (signed) or [0, 1], each pixel's opacity
    ``alpha * |rel|`` (the input shows through unchanged where the attribution is 0), or opaque when
    ``alpha`` is None."""
    import matplotlib

    position = (rel + 1.0) / 2.0 if signed else rel
    rgba = matplotlib.colormaps[cmap](np.clip(position, 0.0, 1.0))
    if alpha is not None:
        rgba[..., 3] = alpha * np.abs(rel)
    return rgba


def pixel_map(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """A (C, H, W) attribution as one (H, W) map, and whether channels were summed.

    A map copied to every channel (Grad-CAM upsampled to the input) is taken once, not summed:
    summing would multiply it by C and the colour bar would claim a sum that was never taken.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.shape[0] == 1 or np.array_equal(a, np.broadcast_to(a[:1], a.shape)):
        return a[0], False
    return a.sum(axis=0), True


def masked_image(image: np.ndarray, relevance: np.ndarray, clip: float, vmax: float | None = None) -> np.ndarray:
    """The display image times ``normalised_magnitude(relevance, clip, vmax)`` (broadcast over RGB).

    Args:
        image: (H, W) or (H, W, 3) display values in [0, 1].
        relevance: (H, W) map.
        clip: saturation percentile; pixels at or above it keep their full value.
        vmax: the saturation value; None uses the map's own.
    """
    weight = normalised_magnitude(relevance, clip, vmax)
    return image * (weight[..., None] if image.ndim == 3 else weight)


def to_display(x: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    """A (C, H, W) input as an image in [0, 1]: (H, W, 3) for 3 channels, else (H, W) grayscale.

    Channel counts other than 1 and 3 are averaged. ``value_range`` (lo, hi) maps to [0, 1]; without
    it the sample's own min..max does (a constant image shows as mid-gray).
    """
    x = np.asarray(x, dtype=np.float64)
    img = np.moveaxis(x, 0, -1) if x.shape[0] == 3 else x.mean(axis=0)
    lo, hi = value_range if value_range is not None else (np.nanmin(img), np.nanmax(img))
    if not hi > lo:
        return np.full(img.shape, 0.5)
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0)


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB to (H, W) luminance; (H, W) unchanged."""
    return image @ LUMINANCE if image.ndim == 3 else image


def feature_order(a: np.ndarray, top: int | None = None) -> np.ndarray:
    """Indices of the features by decreasing |a| (ties keep feature order), the first ``top`` only.

    ``a`` is (F,) for one sample or (N, F), in which case features are ranked by mean |a| over samples.
    """
    mag = np.nan_to_num(np.abs(np.asarray(a, dtype=np.float64)), nan=0.0)
    if mag.ndim == 2:
        mag = mag.mean(axis=0)
    order = np.argsort(-mag, kind="stable")
    return order if top is None else order[:top]


def interpolation_for(size: int, panel_px: float) -> str:
    """"nearest" when each input pixel spans at least 2 screen pixels (shows the real pixels of
    small inputs such as 32 px digits), "antialiased" when the image is shown near or below its size."""
    return "nearest" if panel_px / max(size, 1) >= 2 else "antialiased"
