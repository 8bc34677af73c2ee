"""Attribution heatmaps as PNG files: one per sample plus ``grid.png``; images drawn here.

Tabular and sequence plots live in ``xaibench.report.plots``; colour scales in
``xaibench.report.colors``. Everything takes numpy arrays (the CLI converts tensors) and draws with
matplotlib's object-oriented API on Agg canvases, imported lazily.

Image display follows common practice (Simonyan et al., 2014, "Deep Inside Convolutional Networks";
Ancona et al., 2018): the map is summed over channels, signed maps use a diverging scale symmetric
around 0, and colours saturate at a high percentile of |map| per sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xaibench.core.errors import InputError
from xaibench.models.meta import SAMPLE_RANK
from xaibench.report._canvas import DPI, RenderJob, add_axes, grid_shape, grid_title, new_figure, save
from xaibench.report.colors import (
    HeatmapStyle,
    color_limits,
    interpolation_for,
    masked_image,
    relative_map,
    to_display,
    to_gray,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.image import AxesImage

IMAGE_SIZE = (7.6, 3.6)  # inches: input panel, map panel, colour bar
PANEL = 2.9  # inches, side of each square image panel
TILE = (1.7, 2.05)  # inches per grid tile: the image and a two-line caption
GRID_COLS = 8
PANEL_TITLES = {
    "overlay": "attribution over input", "heatmap": "attribution", "masked": "input × |attribution|",
}


def render_heatmaps(
    attributions: np.ndarray,
    inputs: np.ndarray,
    *,
    modality: str,
    signed: bool,
    out_dir: Path,
    stems: list[str],
    captions: list[str],
    feature_names: list[str] | None = None,
    value_range: tuple[float, float] | None = None,
    style: HeatmapStyle = HeatmapStyle(),
    title: str = "",
) -> list[Path]:
    """Draw one PNG per sample (``<stem>.png``) and ``grid.png`` with all samples into ``out_dir``.

    Args:
        attributions: (N, *sample_shape) attribution maps.
        inputs: (N, *sample_shape) inputs in display units (not normalised).
        modality: "image" (C, H, W), "tabular" (F,) or "sequence" (C, L).
        signed: whether the maps carry a sign (diverging colours) or not (sequential colours).
        out_dir: folder to write into (created if missing).
        stems: file stem per sample.
        captions: one-line title per sample.
        feature_names: tabular feature names (F) or sequence channel names (C); default x0, x1...
            (tabular) or ch0, ch1... (sequence); unused for images.
        value_range: (lo, hi) of image inputs for display; None uses each image's min..max.
        style: how maps are drawn (overlay, heatmap, masked; colour map; clip percentile; alpha).
        title: figure-level title of the grid.

    Returns:
        The files written: the per-sample PNGs in sample order, then ``grid.png``.

    A sample whose map is not finite (an explainer that gave no answer, such as an unparsed LLM reply)
    is drawn empty and captioned so.

    Raises:
        InputError: shapes, lengths, stems or the modality do not fit.
    """
    maps = np.asarray(attributions, dtype=np.float64)
    unanswered = ~np.isfinite(maps.reshape(len(maps), -1)).all(axis=1) if maps.ndim > 1 else np.zeros(0, bool)
    if len(captions) == len(unanswered):  # else _check_job reports the mismatch
        captions = [f"{text} · no attribution" if missing else text for text, missing in zip(captions, unanswered)]
    job = RenderJob(
        attributions=np.where(np.isfinite(maps), maps, 0.0),
        inputs=np.asarray(inputs, dtype=np.float64),
        signed=signed, out_dir=Path(out_dir), stems=list(stems), captions=list(captions),
        feature_names=None if feature_names is None else list(feature_names),
        value_range=value_range, style=style, title=title,
    )
    _check_job(job, modality)
    job.out_dir.mkdir(parents=True, exist_ok=True)
    if modality == "image":
        return render_images(job)
    from xaibench.report import plots  # deferred: plots imports this module's siblings only

    return plots.render_tabular(job) if modality == "tabular" else plots.render_sequences(job)


def _check_job(job: RenderJob, modality: str) -> None:
    """Raise InputError for a job whose arrays, names or lengths do not fit together."""
    if modality not in SAMPLE_RANK:
        raise InputError(f"unknown modality {modality!r}; expected one of {', '.join(sorted(SAMPLE_RANK))}")
    a, x, n = job.attributions, job.inputs, len(job.stems)
    if a.shape != x.shape:
        raise InputError(f"attributions {a.shape} and inputs {x.shape} differ in shape")
    if a.ndim != SAMPLE_RANK[modality] + 1:
        raise InputError(f"{modality} attributions must be (N, {_dims(modality)}), got {a.shape}")
    if n == 0 or a.shape[0] != n or len(job.captions) != n:
        raise InputError(f"need one stem and caption per sample: {a.shape[0]} samples, "
                         f"{n} stems, {len(job.captions)} captions")
    if len(set(job.stems)) != n or "grid" in job.stems:
        raise InputError("file stems must be unique and must not be 'grid'")
    if job.value_range is not None and not job.value_range[1] > job.value_range[0]:
        raise InputError(f"value_range must be (low, high) with low < high, got {job.value_range}")
    names, width = job.feature_names, {"tabular": a.shape[-1], "sequence": a.shape[1]}.get(modality)
    if names is not None and width is not None and len(names) != width:
        kind = "features" if modality == "tabular" else "channels"
        raise InputError(f"got {len(names)} feature names for {width} {kind}")


def _dims(modality: str) -> str:
    return {"image": "C, H, W", "sequence": "C, L", "tabular": "F"}[modality]


def render_images(job: RenderJob) -> list[Path]:
    """Per-sample two-panel PNGs (input | styled map + colour bar) and the overlay grid."""
    displays = [to_display(x, job.value_range) for x in job.inputs]
    maps = job.attributions.sum(axis=1)  # relevance per pixel, summed over channels
    figure = _ImageFigure(job, displays[0], maps[0])
    paths = [figure.draw(d, m, caption, job.out_dir / f"{stem}.png")
             for d, m, caption, stem in zip(displays, maps, job.captions, job.stems)]
    return [*paths, _image_grid(job, displays, maps)]


class _ImageFigure:
    """One figure reused for every sample: only data, colour limits and the title change."""

    def __init__(self, job: RenderJob, display: np.ndarray, relevance: np.ndarray) -> None:
        self.job, self.fig = job, new_figure(*IMAGE_SIZE)
        interp = interpolation_for(max(display.shape[:2]), PANEL * DPI)
        left = add_axes(self.fig, 0.15, 0.15, PANEL, PANEL)
        right = add_axes(self.fig, 3.35, 0.15, PANEL, PANEL)
        cax = add_axes(self.fig, 6.4, 0.15, 0.15, PANEL)
        left.set_title("input", fontsize=10)
        right.set_title(PANEL_TITLES[job.style.style], fontsize=10)
        self.input = _show(left, display, interp)
        self.background = _show(right, to_gray(display), interp)
        self.background.set_visible(job.style.style == "overlay")
        self.map = right.imshow(relevance, cmap=job.cmap, interpolation=interp)
        self.map.set_alpha(job.style.alpha if job.style.style == "overlay" else 1.0)
        if job.style.style == "masked":
            self.map.set_cmap("gray")
            self.map.set_clim(0.0, 1.0)
            bar = self.fig.colorbar(self.map, cax=cax)
            bar.set_label(f"kept: |attribution| / p{job.style.clip:g}", fontsize=8)
        else:
            bar = self.fig.colorbar(self.map, cax=cax, extend="both" if job.signed else "max")
            summed = ", sum over channels" if job.inputs.shape[1] > 1 else ""
            bar.set_label(f"attribution{summed}", fontsize=8)
        self.suptitle = self.fig.suptitle("", fontsize=11)

    def draw(self, display: np.ndarray, relevance: np.ndarray, caption: str, path: Path) -> Path:
        """Show one sample and save it to ``path``."""
        self.input.set_data(display)
        self.suptitle.set_text(caption)
        if self.job.style.style == "masked":
            self.map.set_data(masked_image(display, relevance, self.job.style.clip))
        else:
            self.background.set_data(to_gray(display))
            self.map.set_data(relevance)
            self.map.set_clim(*color_limits(relevance, self.job.signed, self.job.style.clip))
        return save(self.fig, path)


def _show(ax: Axes, image: np.ndarray, interp: str) -> AxesImage:
    """imshow a [0, 1] display image (grayscale or RGB) without ticks."""
    ax.set_xticks([])
    ax.set_yticks([])
    return ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation=interp)


def _image_grid(job: RenderJob, displays: list[np.ndarray], maps: np.ndarray) -> Path:
    """All samples (up to MAX_TILES) in the chosen style, each map scaled on its own."""
    n = job.shown
    rows, cols = grid_shape(n, GRID_COLS)
    fig = new_figure(*image_grid_size(n))
    interp = interpolation_for(max(displays[0].shape[:2]), (TILE[0] - 0.1) * DPI)
    for i in range(n):
        r, c = divmod(i, cols)
        ax = add_axes(fig, 0.1 + c * TILE[0], 0.1 + (rows - 1 - r) * TILE[1], TILE[0] - 0.1, TILE[0] - 0.1)
        ax.set_title(wrap_caption(job.captions[i], 26), fontsize=7)
        tile = _grid_tile(job, ax, displays[i], maps[i], interp)
    if job.style.style != "masked":
        cax = add_axes(fig, cols * TILE[0] + 0.2, 0.1 + (rows - 1) * TILE[1], 0.15, TILE[0] - 0.1)
        bar = fig.colorbar(tile, cax=cax)
        bar.set_label(f"attribution / p{job.style.clip:g} of |attribution|, per tile", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(grid_title(job.title, n, len(job.stems)), fontsize=11)
    return save(fig, job.out_dir / "grid.png")


def _grid_tile(
    job: RenderJob, ax: Axes, display: np.ndarray, relevance: np.ndarray, interp: str
) -> AxesImage:
    """Draw one grid tile and return its top image."""
    clip, style = job.style.clip, job.style.style
    if style == "masked":
        return _show(ax, masked_image(display, relevance, clip), interp)
    # The heatmap style draws the map over an empty tile; overlay draws it over the grayscale input.
    background = _show(ax, to_gray(display), interp)
    background.set_visible(style == "overlay")
    rel = relative_map(relevance, job.signed, clip)
    return ax.imshow(rel, cmap=job.cmap, vmin=-1.0 if job.signed else 0.0, vmax=1.0, interpolation=interp,
                     alpha=job.style.alpha if style == "overlay" else 1.0)


def wrap_caption(caption: str, width: int) -> str:
    """Wrap a caption into lines of at most ``width`` characters, breaking only at " · " separators
    (a part longer than ``width`` stays on its own line)."""
    lines: list[str] = []
    for part in caption.split(" · "):
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " · " + part
        else:
            lines.append(part)
    return "\n".join(lines)


def image_grid_size(n: int) -> tuple[float, float]:
    """The grid figure's size in inches for ``n`` shown tiles (tiles, a colour bar, a title band)."""
    rows, cols = grid_shape(n, GRID_COLS)
    return cols * TILE[0] + 1.1, rows * TILE[1] + 0.5
