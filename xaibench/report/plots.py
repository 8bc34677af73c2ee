"""Tabular bar charts and sequence relevance bands, per sample and as a grid.

Tabular: features ranked by |attribution| (as in Lundberg & Lee, 2017, "A Unified Approach to
Interpreting Model Predictions", NeurIPS, whose force/bar plots order features by magnitude), each bar
labelled "name = input value", the axis saying what the values are (standardised scores for the bundled
data). Sequences: the signal drawn over its relevance as a coloured band. The image style (overlay /
heatmap / masked) does not apply here; colour map, clip, alpha, scale and format do.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xaibench.report import style
from xaibench.report._canvas import (
    CHAR_WIDTH,
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
from xaibench.report.colors import color_limits, feature_order, relative_map, sample_saturations
from xaibench.report.style import styled

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.image import AxesImage
    from matplotlib.lines import Line2D

TOP_BARS = 20  # bars per tabular sample
TOP_COLUMNS = 30  # features in the tabular grid
TABULAR_SIZE = (style.TEXT_WIDTH, 4.8)  # inches
SEQUENCE_SIZE = (style.TEXT_WIDTH, 2.9)
SEQUENCE_TILE = (3.1, 1.25)  # inches per small plot of the sequence grid, caption included
CELL = (0.2, 0.3)  # inches per tabular grid cell (feature, sample): a two-line row label fits
ROW_CHARS = 48  # tabular grid row labels wrap at this many characters
LINE_COLORS = ("black", *style.PALETTE)

def feature_labels(names: list[str], values: np.ndarray) -> list[str]:
    """'name = value' with the value to 3 significant digits."""
    return [f"{name} = {value:.3g}" for name, value in zip(names, values)]


def bar_limits(values: np.ndarray) -> tuple[float, float]:
    """x-limits for a bar chart: the values' range extended to include 0, with an 8% margin."""
    lo, hi = min(0.0, float(np.nanmin(values))), max(0.0, float(np.nanmax(values)))
    margin = 0.08 * (hi - lo) if hi > lo else 1.0
    return lo - (margin if lo < 0 else 0.0), hi + (margin if hi > 0 or lo == 0 else 0.0)


def render_tabular(job: RenderJob) -> list[Path]:
    """One horizontal bar chart per sample and a samples x features matrix as the grid."""
    n_features = job.inputs.shape[1]
    names = job.feature_names or [f"x{i}" for i in range(n_features)]
    with styled():
        chart = _BarChart(job, min(TOP_BARS, n_features))
        paths = [chart.draw(a, x, names, flag_caption(job, i, job.captions[i]), job.file(job.stems[i]),
                            job.wrong(i))
                 for i, (a, x) in enumerate(zip(job.attributions, job.inputs))]
        return [*paths, _tabular_grid(job, names)]


class _BarChart:
    """One bar chart figure reused for every sample (same number of bars, new lengths and labels)."""

    def __init__(self, job: RenderJob, bars: int) -> None:
        import matplotlib

        self.job, self.fig = job, style.new_figure(*TABULAR_SIZE, layout="constrained")
        self.ax = self.fig.subplots()
        cmap = matplotlib.colormaps[job.cmap]
        # Signed: the two ends of the diverging map (red positive, blue negative for RdBu_r).
        self.colors = (cmap(0.85), cmap(0.15)) if job.signed else (cmap(0.6), cmap(0.6))
        self.bars = self.ax.barh(np.arange(bars), np.zeros(bars), height=0.7)
        self.ax.invert_yaxis()  # largest |attribution| on top
        self.ax.axvline(0.0, color="0.3", linewidth=0.8)
        self.ax.set_xlabel("attribution")
        self.ax.set_ylabel(f"feature = {job.value_label}")
        self.ax.grid(axis="x", color="0.9")
        self.ax.set_axisbelow(True)
        self.note = self.fig.supxlabel(" ", fontsize=style.SMALL, color=style.MUTED)
        self.suptitle = self.fig.suptitle("")

    def draw(self, a: np.ndarray, x: np.ndarray, names: list[str], caption: str, path: Path,
             wrong: bool = False) -> Path:
        """Show one sample's top features and save it to ``path``."""
        order = feature_order(a, len(self.bars))
        for bar, value in zip(self.bars, a[order]):
            bar.set_width(value)
            bar.set_color(self.colors[0] if value >= 0 else self.colors[1])
        self.ax.set_yticks(np.arange(len(order)), feature_labels([names[i] for i in order], x[order]))
        self.ax.set_xlim(*bar_limits(a[order]))
        left_out = len(a) - len(order)
        note = f"{left_out} more features with smaller |attribution| not shown" if left_out else " "
        self.note.set_text(note)
        self.suptitle.set_text(style.fit_text(caption, TABULAR_SIZE[0] - 0.2))
        self.suptitle.set_color(style.MARK if wrong else "black")
        return save(self.fig, path)


def tabular_grid_size(n: int, k: int, captions: list[str] | None = None,
                      names: list[str] | None = None) -> tuple[float, float]:
    """The tabular grid's size in inches for ``n`` rows (samples) and ``k`` columns (features): room
    for the wrapped row labels on the left and the slanted feature names below."""
    label = max((len(line) for c in captions or [] for line in wrap_caption(c, ROW_CHARS).split("\n")),
                default=ROW_CHARS) * CHAR_WIDTH
    slant = max((len(name) for name in names or []), default=12) * CHAR_WIDTH * math.sin(math.radians(50))
    return whole_pixels(label + CELL[0] * k + 1.4), whole_pixels(CELL[1] * n + slant + 1.0)


def _tabular_grid(job: RenderJob, names: list[str]) -> Path:
    """Samples x top features by mean |attribution|, on one colour scale (or one per row)."""
    n = job.shown
    a = job.attributions[:n]
    cols = feature_order(a, TOP_COLUMNS)
    captions = [f"✗ {job.captions[i]}" if job.wrong(i) else job.captions[i] for i in range(n)]
    fig = style.new_figure(*tabular_grid_size(n, len(cols), captions, [names[i] for i in cols]),
                           layout="constrained")
    ax = fig.subplots()
    shared = job.style.scale == "shared"
    values = a[:, cols]
    if not shared:
        values = np.stack([relative_map(row, job.signed, job.style.clip) for row in values])
    vmin, vmax = color_limits(values, job.signed, job.style.clip) if shared else (-float(job.signed), 1.0)
    image = ax.imshow(values, cmap=job.cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(len(cols)), [names[i] for i in cols], rotation=50, ha="right",
                  rotation_mode="anchor")
    ax.set_yticks(np.arange(n), [wrap_caption(c, ROW_CHARS) for c in captions])
    for i, tick in enumerate(ax.get_yticklabels()):
        tick.set_color(style.MARK if job.wrong(i) else "black")
    ax.spines[["top", "right"]].set_visible(True)
    bar = fig.colorbar(image, ax=ax, extend="both" if job.signed else "max", shrink=min(1.0, 12 / max(n, 1)),
                       aspect=20)
    bar.set_label("attribution" if shared else f"attribution ÷ row's p{job.style.clip:g}")
    more = f"; top {len(cols)} of {len(names)} features by mean |attribution|" if len(cols) < len(names) else ""
    marks = (f"; ✗: misclassified ({sum(job.wrong(i) for i in range(n))} of {n})"
             if job.misclassified is not None else "")
    label_figure(fig, grid_title(job.title, n, len(job.stems)), scale_note(job) + more + marks)
    return save(fig, job.file("grid"))


def render_sequences(job: RenderJob) -> list[Path]:
    """One signal-over-relevance plot per sample and stacked small plots as the grid."""
    channels = job.inputs.shape[1]
    names = job.feature_names or [f"ch{i}" for i in range(channels)]
    relevance = job.attributions.sum(axis=1)
    vmax = sample_saturations(relevance, job.style.clip, job.style.scale)
    with styled():
        plot = _SequencePlot(job, names)
        paths = [plot.draw(i, relevance[i], float(vmax[i])) for i in range(len(relevance))]
        return [*paths, _sequence_grid(job, names, relevance, vmax)]


def _band_and_lines(
    ax: Axes, job: RenderJob, x: np.ndarray, names: list[str]
) -> tuple[AxesImage, list[Line2D]]:
    """A relevance band (placeholder data) behind one line per channel, lines outlined in white."""
    from matplotlib import patheffects

    length = x.shape[1]
    band = ax.imshow(np.zeros((1, length)), cmap=job.cmap, aspect="auto", interpolation="nearest",
                     alpha=job.style.alpha, extent=(-0.5, length - 0.5, 0.0, 1.0), zorder=0)
    outline = [patheffects.withStroke(linewidth=2.6, foreground="white")]
    lines = [ax.plot(np.arange(length), channel, color=LINE_COLORS[c % len(LINE_COLORS)], linewidth=1.4,
                     label=names[c], path_effects=outline)[0] for c, channel in enumerate(x)]
    ax.set_xlim(-0.5, length - 0.5)
    return band, lines


def _fit_band(ax: Axes, band: AxesImage, x: np.ndarray) -> None:
    """Set the y-limits to the signal with a margin and stretch the band over them."""
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    pad = 0.08 * (hi - lo) if hi > lo else 1.0
    ax.set_ylim(lo - pad, hi + pad)
    band.set_extent((-0.5, x.shape[1] - 0.5, lo - pad, hi + pad))


def _sequence_value_name(names: list[str]) -> str:
    return f"attribution, sum over {len(names)} channels" if len(names) > 1 else "attribution"


class _SequencePlot:
    """One figure reused for every sample: new line data, band data, colour limits and title."""

    def __init__(self, job: RenderJob, names: list[str]) -> None:
        self.job, self.fig = job, style.new_figure(*SEQUENCE_SIZE, layout="constrained")
        self.ax = self.fig.subplots()
        self.band, self.lines = _band_and_lines(self.ax, job, job.inputs[0], names)
        self.ax.set_xlabel("position")
        self.ax.set_ylabel(job.value_label)
        if len(names) > 1:  # above the plot, where it hides no data
            self.ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=min(len(names), 6),
                           frameon=False, borderaxespad=0.2)
        bar = self.fig.colorbar(self.band, ax=self.ax, extend="both" if job.signed else "max", aspect=15)
        bar.set_label(_sequence_value_name(names))
        self.fig.supxlabel(scale_note(job), fontsize=style.SMALL, color=style.MUTED)
        self.suptitle = self.fig.suptitle("")

    def draw(self, i: int, relevance: np.ndarray, vmax: float) -> Path:
        """Show sample ``i`` (colours saturating at ``vmax``) and save it."""
        job, x = self.job, self.job.inputs[i]
        for line, channel in zip(self.lines, x):
            line.set_ydata(channel)
        self.band.set_data(relevance[None, :])
        self.band.set_clim(-vmax if job.signed else 0.0, vmax)
        _fit_band(self.ax, self.band, x)
        self.suptitle.set_text(style.fit_text(flag_caption(job, i, job.captions[i]), SEQUENCE_SIZE[0] - 0.2))
        self.suptitle.set_color(style.MARK if job.wrong(i) else "black")
        mark_frame(self.ax, job.wrong(i))
        return save(self.fig, job.file(job.stems[i]))


def sequence_grid_size(n: int) -> tuple[float, float]:
    """The sequence grid's size in inches for ``n`` shown samples."""
    rows, cols = grid_shape(n, _sequence_cols(n))
    return cols * SEQUENCE_TILE[0] + 1.2, rows * SEQUENCE_TILE[1] + 1.0


def _sequence_cols(n: int) -> int:
    return 1 if n <= 8 else 2 if n <= 24 else 4


def _sequence_grid(job: RenderJob, names: list[str], relevance: np.ndarray, vmax: np.ndarray) -> Path:
    """Small stacked plots on one colour scale (or one per plot) sharing one colour bar."""
    n = job.shown
    rows, cols = grid_shape(n, _sequence_cols(n))
    fig = style.new_figure(*sequence_grid_size(n), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    shared, signed = job.style.scale == "shared", job.signed
    limit = float(vmax[0]) if shared else 1.0
    chars = int((SEQUENCE_TILE[0] - 0.1) / CHAR_WIDTH)
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_visible(False)
            continue
        band, lines = _band_and_lines(ax, job, job.inputs[i], names)
        band.set_data((relevance[i] if shared else relative_map(relevance[i], signed, job.style.clip))[None, :])
        band.set_clim(-limit if signed else 0.0, limit)
        _fit_band(ax, band, job.inputs[i])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(wrap_caption(flag_caption(job, i, job.captions[i]), chars), fontsize=style.SMALL, pad=2,
                     color=style.MARK if job.wrong(i) else "black")
        mark_frame(ax, job.wrong(i))
    bar = fig.colorbar(band, ax=list(axes[:n]), extend="both" if signed else "max",
                       shrink=min(1.0, 3.0 / rows), aspect=20)
    bar.set_label(_sequence_value_name(names) if shared else
                  f"{_sequence_value_name(names)} ÷ plot's p{job.style.clip:g}", fontsize=style.SMALL)
    bar.ax.tick_params(labelsize=style.SMALL)
    if len(names) > 1:
        fig.legend(handles=lines, loc="outside upper center", ncols=min(len(names), 6), frameon=False)
    note = scale_note(job)
    if job.misclassified is not None:
        note += f"\ndashed frame and ✗: misclassified ({sum(job.wrong(i) for i in range(n))} of {n})"
    label_figure(fig, grid_title(job.title, n, len(job.stems)), note)
    return save(fig, job.file("grid"))
