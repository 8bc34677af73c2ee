"""Attribution heatmaps: one figure per sample plus a grid (PNG, PDF or SVG); images drawn here.

Tabular and sequence plots live in ``xaibench.report.plots``; colour scales in
``xaibench.report.colors``; fonts, colours and formats in ``xaibench.report.style``. Everything takes
numpy arrays (the CLI converts tensors) and draws with matplotlib's object-oriented API on Agg canvases,
imported lazily.

Image display follows common practice (Simonyan et al., 2014, "Deep Inside Convolutional Networks";
Ancona et al., 2018): the map is summed over channels (a map copied to every channel is taken once),
signed maps use a diverging scale symmetric around 0, and colours saturate at a high percentile of
|map|, of all samples together by default so that maps can be compared. The overlay draws the input in
its own colours and the map over it with opacity growing with |map|.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xaibench.core.errors import InputError
from xaibench.models.meta import SAMPLE_RANK
from xaibench.report import style
from xaibench.report._canvas import (
    CHAR_WIDTH,
    DPI,
    RenderJob,
    flag_caption,
    grid_shape,
    grid_title,
    label_figure,
    mark_frame,
    save,
    scale_note,
    whole_pixels,
    wrap_caption,
)
from xaibench.report.colors import (
    HeatmapStyle,
    interpolation_for,
    masked_image,
    overlay_rgba,
    pixel_map,
    relative_map,
    sample_saturations,
    to_display,
)
from xaibench.report.style import styled

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.image import AxesImage

IMAGE_SIZE = (style.TEXT_WIDTH, 3.3)  # inches: input panel, map panel, colour bar
PANEL = 2.5  # inches, about the side of each square image panel
TILE = 1.3  # inches, side of a grid tile: 4 tiles and a colour bar fill A4 text width
COLORBAR_WIDTH = 1.1  # inches right of the tiles: the colour bar, its ticks and label
LINE = 0.125  # inches per caption line at style.SMALL points
GRID_HEAD, GRID_FOOT = 0.4, 0.45  # inches: the grid's title and its note on scale and marks
GRID_COLS = 8
LIGHTEN = 0.35  # share of white mixed into the input under an overlay
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
    misclassified: list[bool] | None = None,
    value_label: str = "input value",
) -> list[Path]:
    """Draw one figure per sample (``<stem>.<format>``) and ``grid.<format>`` with all samples.

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
        style: how maps are drawn (overlay, heatmap, masked; colour map; clip percentile; alpha;
            shared or per-sample colour scale; file format).
        title: figure-level title of the grid.
        misclassified: per sample, whether the prediction differs from the label (marked with a
            dashed frame and a text mark); None when unknown.
        value_label: what tabular and sequence input values are (e.g. "standardised value").

    Returns:
        The files written: the per-sample figures in sample order, then the grid.

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
        misclassified=None if misclassified is None else [bool(m) for m in misclassified],
        value_label=value_label,
    )
    _check_job(job, modality)
    job.out_dir.mkdir(parents=True, exist_ok=True)
    if modality == "image":
        return render_images(job)
    from xaibench.report import (
        plots,  # deferred: plots imports this module's siblings only
    )

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
    if job.misclassified is not None and len(job.misclassified) != n:
        raise InputError(f"need one misclassified flag per sample: {n} samples, {len(job.misclassified)} flags")
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
    """Per-sample two-panel figures (input | styled map + colour bar) and the grid."""
    displays = [to_display(x, job.value_range) for x in job.inputs]
    pairs = [pixel_map(a) for a in job.attributions]
    maps = np.stack([m for m, _ in pairs])
    summed = any(s for _, s in pairs)
    vmax = sample_saturations(maps, job.style.clip, job.style.scale)
    with styled():
        figure = _ImageFigure(job, displays[0], maps[0], summed)
        paths = [figure.draw(i, displays[i], maps[i], float(vmax[i])) for i in range(len(maps))]
        return [*paths, _image_grid(job, displays, maps, vmax, summed)]


def value_name(job: RenderJob, summed: bool) -> str:
    """What a map's values are: attribution, summed over the input's channels where it was."""
    return f"attribution, sum over {job.inputs.shape[1]} channels" if summed else "attribution"


class _ImageFigure:
    """One figure reused for every sample: only data, colour limits and the title change."""

    def __init__(self, job: RenderJob, display: np.ndarray, relevance: np.ndarray, summed: bool) -> None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        self.job, self.fig = job, style.new_figure(*IMAGE_SIZE, layout="constrained")
        interp = interpolation_for(max(display.shape[:2]), PANEL * DPI)
        left, self.right = self.fig.subplots(1, 2)
        left.set_title("input")
        self.right.set_title(PANEL_TITLES[job.style.style])
        self.panels = (left, self.right)
        self.input = _show(left, display, interp)
        self.background = _show(self.right, under_overlay(display), interp)
        self.background.set_visible(job.style.style == "overlay")
        self.map = self.right.imshow(np.zeros((*relevance.shape, 4)), interpolation=interp)
        masked = job.style.style == "masked"
        self.scale = ScalarMappable(Normalize(0.0, 1.0), "gray" if masked else job.cmap)
        bar = self.fig.colorbar(self.scale, ax=self.right, extend="neither" if masked else
                                "both" if job.signed else "max", shrink=0.9)
        bar.set_label(f"kept: |attribution| / p{job.style.clip:g}" if masked else value_name(job, summed),
                      fontsize=style.SMALL)
        self.fig.supxlabel(scale_note(job), fontsize=style.SMALL, color=style.MUTED)
        self.suptitle = self.fig.suptitle("")
        self._freeze_layout()

    def _title(self, i: int) -> str:
        return style.fit_text(flag_caption(self.job, i, self.job.captions[i]), IMAGE_SIZE[0] - 0.2)

    def _freeze_layout(self) -> None:
        """Lay the figure out once, for the tallest title of all samples, and keep that layout: each
        sample's save then draws once instead of running the layout engine again (half the time)."""
        titles = [self._title(i) for i in range(len(self.job.captions))]
        self.suptitle.set_text(max(titles, key=lambda title: title.count("\n"), default=""))
        self.fig.draw_without_rendering()
        self.fig.set_layout_engine("none")

    def draw(self, i: int, display: np.ndarray, relevance: np.ndarray, vmax: float) -> Path:
        """Show sample ``i`` (colours saturating at ``vmax``) and save it."""
        job, wrong = self.job, self.job.wrong(i)
        self.input.set_data(display)
        self.suptitle.set_text(self._title(i))
        self.suptitle.set_color(style.MARK if wrong else "black")
        for ax in self.panels:
            mark_frame(ax, wrong)
        if job.style.style == "masked":
            self.map.set_data(masked_image(display, relevance, job.style.clip, vmax))
        else:
            self.background.set_data(under_overlay(display))
            self.map.set_data(_map_rgba(job, relevance, vmax))
            self.scale.set_clim(-vmax if job.signed else 0.0, vmax)
        return save(self.fig, job.file(job.stems[i]))


def _map_rgba(job: RenderJob, relevance: np.ndarray, vmax: float) -> np.ndarray:
    """The map's colours: opacity by |value| over the input (overlay) or opaque (heatmap)."""
    rel = relative_map(relevance, job.signed, job.style.clip, vmax)
    return overlay_rgba(rel, job.cmap, job.signed, job.style.alpha if job.style.style == "overlay" else None)


def under_overlay(display: np.ndarray) -> np.ndarray:
    """The input as drawn under an overlay: its own colours, lightened by ``LIGHTEN`` so that the
    map's saturated colours stand out from coloured inputs."""
    return display * (1.0 - LIGHTEN) + LIGHTEN


def _show(ax: Axes, image: np.ndarray, interp: str) -> AxesImage:
    """imshow a [0, 1] display image (grayscale or RGB, in its own colours) without ticks."""
    ax.set_xticks([])
    ax.set_yticks([])
    return ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation=interp)


def _image_grid(job: RenderJob, displays: list[np.ndarray], maps: np.ndarray, vmax: np.ndarray,
                summed: bool) -> Path:
    """All samples (up to MAX_TILES) in the chosen style on one colour scale (or one per tile)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    n = job.shown
    rows, cols = grid_shape(n, GRID_COLS)
    width, height, chars = image_grid_size(n, [flag_caption(job, i, job.captions[i]) for i in range(n)])
    fig = style.new_figure(width, height, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, hspace=0.02, wspace=0.02)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    interp = interpolation_for(max(displays[0].shape[:2]), TILE * DPI)
    shared = job.style.scale == "shared"
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_visible(False)
            continue
        wrong = job.wrong(i)
        ax.set_title(wrap_caption(flag_caption(job, i, job.captions[i]), chars), fontsize=style.SMALL,
                     color=style.MARK if wrong else "black")
        tile_vmax = float(vmax[i]) if shared else None
        _grid_tile(job, ax, displays[i], maps[i], tile_vmax, interp)
        mark_frame(ax, wrong)
    visible = list(axes[:n])
    if job.style.style == "masked":
        note = f"{scale_note(job)}; brightness: |attribution| ÷ that value"
    else:
        limit = float(vmax[0]) if shared else 1.0
        scale = ScalarMappable(Normalize(-limit if job.signed else 0.0, limit), job.cmap)
        bar = fig.colorbar(scale, ax=visible, extend="both" if job.signed else "max",
                           shrink=min(1.0, 2.0 / rows), aspect=20)
        label = value_name(job, summed) if shared else f"{value_name(job, summed)} ÷ tile's p{job.style.clip:g}"
        bar.set_label(label, fontsize=style.SMALL)
        bar.ax.tick_params(labelsize=style.SMALL)
        note = scale_note(job)
    wrong = sum(job.wrong(i) for i in range(n))
    if job.misclassified is not None:
        note += f"\ndashed frame and ✗: misclassified, prediction ≠ label ({wrong} of {n})"
    label_figure(fig, grid_title(job.title, n, len(job.stems)), note)
    return save(fig, job.file("grid"))


def _grid_tile(
    job: RenderJob, ax: Axes, display: np.ndarray, relevance: np.ndarray, vmax: float | None, interp: str
) -> None:
    """Draw one grid tile: the input under the map (overlay), the map alone, or the masked input."""
    clip, kind = job.style.clip, job.style.style
    if kind == "masked":
        _show(ax, masked_image(display, relevance, clip, vmax), interp)
        return
    background = _show(ax, under_overlay(display), interp)
    background.set_visible(kind == "overlay")
    rel = relative_map(relevance, job.signed, clip, vmax)
    ax.imshow(overlay_rgba(rel, job.cmap, job.signed, job.style.alpha if kind == "overlay" else None),
              interpolation=interp)


def image_grid_size(n: int, captions: list[str] | None = None) -> tuple[float, float, int]:
    """The grid's (width, height) in inches for ``n`` tiles and the caption wrap width in characters.

    Each row is as tall as a tile plus its tallest wrapped caption, so titles never touch the images
    above; a 16-tile grid is 4 columns at A4 text width (``style.TEXT_WIDTH``).
    """
    rows, cols = grid_shape(n, GRID_COLS)
    chars = max(12, int(TILE / CHAR_WIDTH))
    lines = max((wrap_caption(c, chars).count("\n") + 1 for c in captions or []), default=2)
    row = TILE + lines * LINE + 0.08
    return whole_pixels(cols * TILE + COLORBAR_WIDTH), whole_pixels(rows * row + GRID_HEAD + GRID_FOOT), chars
