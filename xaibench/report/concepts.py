"""The figures of ``xaibench concepts``: concept montages, importance bars and concept maps.

Fel et al. (NeurIPS 2023, "A Holistic Approach to Unifying Automatic Concept Extraction and Concept
Importance Estimation") and CRAFT (Fel et al., CVPR 2023) show a concept as its most activating crops,
its importance for the class as a bar and where it lies in an image as an attribution map; the
strategic cluster graph is drawn in ``xaibench.report.clusters``.

Everything takes plain numpy arrays (the job converts tensors) and draws with matplotlib's object-oriented
API on Agg canvases in the shared figure style (``xaibench.report.style``), imported lazily. A concept's
colour follows its rank by global importance (``concept_colors``), the same in every figure and table of
a run; the palette is chosen so that the first ten stay apart, also for colour-blind readers and when
blended over the gray images of the concept maps. The HTML and markdown report is built in
``xaibench.report.concept_page`` (``write_concept_report``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xaibench.core.errors import InputError
from xaibench.report import style
from xaibench.report._canvas import add_axes, grid_shape
from xaibench.report.charts import fmt
from xaibench.report.colors import LUMINANCE, interpolation_for
from xaibench.report.style import DPI, concept_label, with_style

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["concept_colors", "importance_figure", "importance_order", "importance_scale", "overlay_concepts",
           "text_color", "top_concepts", "write_concept_maps", "write_concept_montage", "write_importance_chart"]

TILE, GAP, CAPTION, LABEL, HEADER = 0.95, 0.08, 0.2, 0.3, 0.45  # montage, inches
MAP_TILE, MAP_COLS, LINE = 1.8, 4, 0.17  # concept maps, inches (LINE: one caption line)
MAX_MAPS = 16  # images shown in the concept maps
MAP_ALPHA = 0.6  # opacity of a concept where its normalised code is 1
MAP_CLIP = 99.0  # percentile of an image's code map at which its opacity saturates
TEXT_LUMINANCE = 0.5  # text in a concept's colour is darkened to at most this luminance
# Concept colours by importance rank: Okabe & Ito's colours without gray (the maps are gray), then three
# picked greedily for the largest smallest CIEDE2000 distance to those before. Over the first ten the
# smallest pairwise distance is 20.9 as drawn, 14.6 blended at 60% over mid-gray (the maps) and 11.6
# under simulated deuteranopia or protanopia (Machado et al. 2009); tab10, used before, gave 16.2,
# 11.8 and 1.3. tests/report/test_concepts.py checks the first two.
CONCEPT_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#F0E442", "#56B4E9", "#CC79A7", "#E69F00", "#881111",
                   "#990066", "#AACC99")


def concept_colors(importance: np.ndarray) -> list[str]:
    """A hex colour per concept (item i for concept i) by its rank in ``importance_order(importance)``:
    the most important concept gets ``CONCEPT_PALETTE[0]``, so the concepts that matter most get the
    colours that are easiest to tell apart; ranks beyond the palette get evenly spaced hues."""
    from matplotlib.colors import hsv_to_rgb, to_hex

    order = importance_order(importance)
    extra = len(order) - len(CONCEPT_PALETTE)
    palette = [c.lower() for c in CONCEPT_PALETTE] + [to_hex(hsv_to_rgb((j / extra, 0.5, 0.75)))
                                                      for j in range(max(extra, 0))]
    colors = [""] * len(order)
    for rank, concept in enumerate(order):
        colors[concept] = palette[rank]
    return colors


def text_color(color: str) -> str:
    """``color`` darkened to a luminance of at most ``TEXT_LUMINANCE``, so that text in a light colour
    (tab20's pale half) stays readable on white; bars, frames and dots keep the colour itself."""
    from matplotlib.colors import to_hex, to_rgb

    rgb = np.array(to_rgb(color))
    luminance = float(rgb @ LUMINANCE)
    return to_hex(rgb * TEXT_LUMINANCE / luminance) if luminance > TEXT_LUMINANCE else to_hex(rgb)


def importance_order(importance: np.ndarray) -> np.ndarray:
    """Concept indices by decreasing (signed) importance; ties keep index order, NaN comes last."""
    values = np.asarray(importance, dtype=np.float64)
    return np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")


def top_concepts(scores: np.ndarray, top: int) -> np.ndarray:
    """(N, top) indices of each row's ``top`` highest scores, highest first (ties by index, NaN last)."""
    values = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    return np.argsort(-values, axis=1, kind="stable")[:, :top]


def _label(concept: int, importance: float) -> str:
    return f"{concept_label(concept)} · importance {fmt(importance)}"


def _show(ax: Axes, image: np.ndarray, panel_in: float, color: str | None = None) -> None:
    """An image in [0, 1] ((H, W) gray or (H, W, 3)) on bare axes, framed in ``color``."""
    gray = image.ndim == 2
    ax.imshow(image, cmap="gray" if gray else None, vmin=0, vmax=1,
              interpolation=interpolation_for(max(image.shape[:2]), panel_in * DPI))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color or "0.8")
        spine.set_linewidth(2.5 if color else 0.8)


def _check_images(name: str, images: np.ndarray, lead: int) -> None:
    """Raise InputError unless ``images`` is (*lead dims, H, W) or (*lead dims, H, W, 3)."""
    rgb = images.ndim == lead + 3 and images.shape[-1] == 3
    if images.ndim != lead + 2 and not rgb:
        raise InputError(f"{name} must have {lead} leading dims then (H, W) or (H, W, 3), got {images.shape}")


@with_style
def write_concept_montage(path: Path, patches: np.ndarray, scores: np.ndarray,
                          importance: np.ndarray) -> Path:
    """A row per concept of its most activating crops, rows by decreasing global importance.

    Args:
        path: the file to write; its suffix (.png, .pdf or .svg) sets the format.
        patches: (k, m, H, W, 3) or (k, m, H, W) display images in [0, 1]; concept i's m crops, most
            activating first.
        scores: (k, m) the crops' code values for their concept, printed under each crop.
        importance: (k,) global importance; orders the rows (``importance_order``), labels and colours
            them.

    Returns:
        ``path``.
    """
    patches, scores = np.asarray(patches, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    importance = np.asarray(importance, dtype=np.float64)
    _check_images("patches", patches, 2)
    k, m = patches.shape[:2]
    if k == 0 or m == 0 or scores.shape != (k, m) or importance.shape != (k,):
        raise InputError(f"need patches (k, m, ...), scores (k, m) and importance (k,) with k, m > 0: got "
                         f"{patches.shape}, {scores.shape}, {importance.shape}")
    colors, row_h = concept_colors(importance), LABEL + TILE + CAPTION + GAP
    width = max(4.0, GAP + m * (TILE + GAP))
    fig = style.new_figure(width, k * row_h + HEADER)
    for row, concept in enumerate(importance_order(importance)):
        bottom = (k - 1 - row) * row_h + GAP
        fig.text(GAP / width, (bottom + CAPTION + TILE + 0.08) / fig.get_size_inches()[1],
                 _label(int(concept), importance[concept]), color=text_color(colors[concept]), fontsize=9,
                 fontweight="bold", va="bottom")
        for j in range(m):
            left = GAP + j * (TILE + GAP)
            ax = add_axes(fig, left, bottom + CAPTION, TILE, TILE)
            _show(ax, patches[concept, j], TILE, colors[concept])
            fig.text((left + TILE / 2) / width, (bottom + CAPTION - 0.03) / fig.get_size_inches()[1],
                     fmt(scores[concept, j]), ha="center", va="top", fontsize=7, color="0.35")
    fig.text(GAP / width, 1 - 0.12 / fig.get_size_inches()[1],
             f"Most activating crops of each concept (top {m}; number: code value).\n"
             "Rows by decreasing global importance.", fontsize=8, va="top", color="0.2")
    return style.save(fig, Path(path))


def write_importance_chart(path: Path, importance: np.ndarray) -> Path:
    """Write ``importance_figure(importance)`` to ``path`` (png, pdf or svg by its suffix) and return it."""
    return style.save(importance_figure(importance), Path(path))


@with_style
def importance_figure(importance: np.ndarray) -> Figure:
    """Horizontal bars of the global importance per concept, most important on top, in concept colours,
    each with its value printed at its end.

    Importances often span several decades (a dominant concept near 1, the rest near 1e-4), so the axis
    is logarithmic, the bars starting a decade below the smallest value, and every bar shows; with a
    value at or below 0 (gradient estimators can give them) it is symmetric-logarithmic, linear within
    the smallest non-zero magnitude (``importance_scale``).

    Args:
        importance: (k,) global importance of each concept for the class.
    """
    values = np.asarray(importance, dtype=np.float64)
    k = values.shape[0] if values.ndim == 1 else 0
    if k == 0:
        raise InputError(f"need importance (k,) with k > 0; got {values.shape}")
    order, colors = importance_order(values), concept_colors(values)
    fig = style.new_figure(style.TEXT_WIDTH, 0.85 + 0.26 * k, layout="constrained")
    ax = fig.add_subplot()
    y, shown = np.arange(k), np.nan_to_num(values[order])
    scale, threshold = importance_scale(values)
    base = threshold if scale == "log" else 0.0  # where the bars start
    ax.barh(y, shown - base, left=base, height=0.7, color=[colors[c] for c in order])
    for row, value in zip(y, shown):
        ax.text(value if value != 0 else base, row, f" {fmt(value)} ", va="center",
                ha="right" if value < 0 else "left", fontsize=style.SMALL, color=style.NEUTRAL)
    ax.set_yticks(y, [concept_label(c) for c in order])
    for tick, c in zip(ax.get_yticklabels(), order):
        tick.set_color(text_color(colors[c]))
    ax.invert_yaxis()
    if scale == "log":
        ax.set_xscale("log")
        ax.set_xlim(base, np.nanmax(values) * 6)  # room for the printed values
        ax.set_xlabel("global importance (log scale)")
    else:
        ax.set_xscale("symlog", linthresh=threshold)
        ax.axvline(0.0, color="0.55", linewidth=0.8)
        ax.set_xlabel(f"global importance (symmetric log scale, linear within ±{fmt(threshold)})")
        ax.margins(x=0.25)
    ax.grid(axis="x", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    return fig


def importance_scale(values: np.ndarray) -> tuple[str, float]:
    """("log", where the bars start: the power of ten a decade below the smallest value) when every
    finite value is positive, so the shortest bar spans at least a decade; else ("symlog", its linear
    threshold: the power of ten at or below the smallest non-zero magnitude, 1 when all are zero), the
    bars starting at 0, so every non-zero bar spans at least the linear region."""
    finite = values[np.isfinite(values)]
    if finite.size and (finite > 0).all():
        return "log", float(10.0 ** (np.floor(np.log10(finite.min())) - 1))
    nonzero = np.abs(finite[finite != 0])
    return "symlog", float(10.0 ** np.floor(np.log10(nonzero.min()))) if nonzero.size else 1.0


@with_style
def write_concept_maps(path: Path, images: np.ndarray, code_maps: np.ndarray, importance: np.ndarray,
                       top: int = 3, local_importance: np.ndarray | None = None) -> Path:
    """Each image (in gray) with its top concepts overlaid as translucent regions in their colours.

    The top concepts of an image are those with the highest ``local_importance`` when it is given (what
    matters for the prediction, as CRAFT's attribution maps show), else those with the highest summed
    code (what is most present). Deliberate choice: each (image, concept) map is normalised on its own
    (opacity ``MAP_ALPHA`` at its ``MAP_CLIP`` percentile), since code scales differ between concepts;
    the most important concept is painted last, on top. The first ``MAX_MAPS`` images are shown.

    Args:
        path: the file to write; its suffix (.png, .pdf or .svg) sets the format.
        images: (N, H, W, 3) or (N, H, W) display images in [0, 1].
        code_maps: (N, k, H, W) non-negative code maps, upsampled to the image size.
        importance: (k,) global importance: the concepts' colours (``concept_colors``).
        top: how many concepts per image.
        local_importance: (N, k) per-image concept importance, or None to rank by summed code.

    Returns:
        ``path``.
    """
    images, maps = np.asarray(images, dtype=np.float64), np.asarray(code_maps, dtype=np.float64)
    _check_images("images", images, 1)
    n, k = maps.shape[:2] if maps.ndim == 4 else (0, 0)
    if n == 0 or images.shape[0] != n or maps.shape[2:] != images.shape[1:3] or top < 1:
        raise InputError(f"need images (N, H, W[, 3]), code_maps (N, k, H, W) of the same N, H, W and "
                         f"top >= 1: got {images.shape}, {maps.shape}, top={top}")
    scores = maps.sum(axis=(2, 3)) if local_importance is None else np.asarray(local_importance, np.float64)
    if scores.shape != (n, k) or np.shape(importance) != (k,):
        raise InputError(f"local_importance must be (N, k) = {(n, k)} and importance (k,), got "
                         f"{scores.shape} and {np.shape(importance)}")
    shown, top, colors = min(n, MAX_MAPS), min(top, k), concept_colors(importance)
    ranked = top_concepts(scores[:shown], top)
    overlays = overlay_concepts(images[:shown], maps[:shown], ranked, colors)
    return _draw_maps(Path(path), overlays, ranked, scores[:shown], n, local_importance is not None, colors)


def overlay_concepts(images: np.ndarray, maps: np.ndarray, ranked: np.ndarray,
                     colors: list[str]) -> np.ndarray:
    """(n, H, W, 3): gray images with the ``ranked`` (n, t) concepts' maps blended in their colours."""
    from matplotlib.colors import to_rgb

    gray = images @ LUMINANCE if images.ndim == 4 else images
    out = np.repeat(gray[..., None], 3, axis=-1)
    rgb = np.array([to_rgb(c) for c in colors])  # (k, 3)
    chosen = np.take_along_axis(maps, ranked[:, :, None, None], axis=1)  # (n, t, H, W)
    level = np.percentile(chosen, MAP_CLIP, axis=(2, 3), keepdims=True)
    peak = chosen.max(axis=(2, 3), keepdims=True)
    scale = np.where(level > 0, level, np.where(peak > 0, peak, 1.0))
    alpha = MAP_ALPHA * np.clip(chosen / scale, 0.0, 1.0)
    for t in reversed(range(ranked.shape[1])):  # the most important concept last, on top
        a = alpha[:, t, :, :, None]
        out = out * (1 - a) + a * rgb[ranked[:, t]][:, None, None, :]
    return out


def _draw_maps(path: Path, overlays: np.ndarray, ranked: np.ndarray, scores: np.ndarray, total: int,
               by_importance: bool, colors: list[str]) -> Path:
    """The overlays in a grid, each captioned with its concepts (coloured) and their scores."""
    shown, top = ranked.shape
    rows, cols = grid_shape(shown, MAP_COLS)
    cell_h = MAP_TILE + (top + 1) * LINE + GAP
    width = cols * (MAP_TILE + 2 * GAP) + GAP
    fig = style.new_figure(max(width, 4.0), rows * cell_h + HEADER)
    height = fig.get_size_inches()[1]
    for i in range(shown):
        row, col = divmod(i, cols)
        left, bottom = GAP + col * (MAP_TILE + 2 * GAP), (rows - 1 - row) * cell_h + GAP
        _show(add_axes(fig, left, bottom + (top + 1) * LINE, MAP_TILE, MAP_TILE), overlays[i], MAP_TILE)
        fig.text(left / fig.get_size_inches()[0], (bottom + (top + 1) * LINE - 0.04) / height,
                 f"image {i}", fontsize=7, va="top", color="0.3")
        for t, concept in enumerate(ranked[i]):
            fig.text(left / fig.get_size_inches()[0], (bottom + (top - t) * LINE - 0.04) / height,
                     f"■ {concept_label(concept)} · {fmt(scores[i, concept])}", fontsize=7, va="top",
                     color=text_color(colors[concept]), fontweight="bold")
    basis = "local importance" if by_importance else "summed code"
    note = f"first {shown} of {total} images" if shown < total else f"{total} images"
    fig.text(GAP / fig.get_size_inches()[0], 1 - 0.1 / height,
             f"Top {top} concepts per image by {basis} ({note}),\nopacity: the concept's normalised code.",
             fontsize=8, va="top", color="0.2")
    return style.save(fig, path)
