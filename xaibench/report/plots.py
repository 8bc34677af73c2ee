"""Tabular bar charts and sequence relevance bands, per sample and as a grid.

Tabular: features ranked by |attribution| (as in Lundberg & Lee, 2017, "A Unified Approach to
Interpreting Model Predictions", NeurIPS, whose force/bar plots order features by magnitude), each bar
labelled "name = input value". Sequences: the signal drawn over its relevance as a coloured band.
The image style (overlay / heatmap / masked) does not apply here; colour map, clip and alpha do.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xaibench.report._canvas import RenderJob, add_axes, grid_shape, grid_title, new_figure, save
from xaibench.report.colors import color_limits, feature_order, relative_map

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage
    from matplotlib.lines import Line2D

TOP_BARS = 20  # bars per tabular sample
TOP_COLUMNS = 30  # features in the tabular grid
TABULAR_SIZE = (7.2, 5.4)  # inches
SEQUENCE_SIZE = (7.2, 3.2)
SEQUENCE_TILE = (3.4, 1.3)
CELL = (0.25, 0.225)  # inches per tabular grid cell (feature, sample): whole pixels at 120 dpi
MATRIX_AT = (3.3, 1.9)  # inches: room for sample captions on the left, feature names below
LINE_COLORS = ("black", "#1b7837", "#762a83", "#8c510a", "#01665e", "#c51b7d")


def feature_labels(names: list[str], values: np.ndarray) -> list[str]:
    """'name = value' with the value to 3 significant digits."""
    return [f"{name} = {value:.3g}" for name, value in zip(names, values)]


def bar_limits(values: np.ndarray) -> tuple[float, float]:
    """x-limits for a bar chart: the values' range extended to include 0, with an 8% margin."""
    lo, hi = min(0.0, float(np.nanmin(values))), max(0.0, float(np.nanmax(values)))
    margin = 0.08 * (hi - lo) if hi > lo else 1.0
    return lo - (margin if lo < 0 else 0.0), hi + (margin if hi > 0 or lo == 0 else 0.0)


def render_tabular(job: RenderJob) -> list[Path]:
    """One horizontal bar chart per sample and a samples x features matrix as ``grid.png``."""
    n_features = job.inputs.shape[1]
    names = job.feature_names or [f"x{i}" for i in range(n_features)]
    chart = _BarChart(job, min(TOP_BARS, n_features))
    paths = [chart.draw(a, x, names, caption, job.out_dir / f"{stem}.png")
             for a, x, caption, stem in zip(job.attributions, job.inputs, job.captions, job.stems)]
    return [*paths, _tabular_grid(job, names)]


class _BarChart:
    """One bar chart figure reused for every sample (same number of bars, new lengths and labels)."""

    def __init__(self, job: RenderJob, bars: int) -> None:
        import matplotlib

        self.job, self.fig = job, new_figure(*TABULAR_SIZE)
        self.ax = add_axes(self.fig, 2.9, 0.75, 4.0, 4.25)
        cmap = matplotlib.colormaps[job.cmap]
        # Signed: the two ends of the diverging map (red positive, blue negative for RdBu_r).
        self.colors = (cmap(0.85), cmap(0.15)) if job.signed else (cmap(0.6), cmap(0.6))
        self.bars = self.ax.barh(np.arange(bars), np.zeros(bars), height=0.7)
        self.ax.invert_yaxis()  # largest |attribution| on top
        self.ax.axvline(0.0, color="0.3", linewidth=0.8)
        self.ax.set_xlabel("attribution")
        self.ax.grid(axis="x", color="0.9")
        self.ax.set_axisbelow(True)
        self.ax.tick_params(axis="y", labelsize=8)
        self.note = self.fig.text(0.5, 0.02, "", ha="center", fontsize=8, color="0.35")
        self.suptitle = self.fig.suptitle("", fontsize=11)

    def draw(self, a: np.ndarray, x: np.ndarray, names: list[str], caption: str, path: Path) -> Path:
        """Show one sample's top features and save it to ``path``."""
        order = feature_order(a, len(self.bars))
        for bar, value in zip(self.bars, a[order]):
            bar.set_width(value)
            bar.set_color(self.colors[0] if value >= 0 else self.colors[1])
        self.ax.set_yticks(np.arange(len(order)), feature_labels([names[i] for i in order], x[order]))
        self.ax.set_xlim(*bar_limits(a[order]))
        left_out = len(a) - len(order)
        note = f"{left_out} more features with smaller |attribution| not shown" if left_out else ""
        self.note.set_text(note)
        self.suptitle.set_text(caption)
        return save(self.fig, path)


def tabular_grid_size(n: int, k: int) -> tuple[float, float]:
    """The tabular grid's size in inches for ``n`` rows (samples) and ``k`` columns (features)."""
    return MATRIX_AT[0] + CELL[0] * k + 1.1, MATRIX_AT[1] + CELL[1] * n + 0.7


def _tabular_grid(job: RenderJob, names: list[str]) -> Path:
    """Samples x top features by mean |attribution|, one colour scale for the whole matrix."""
    n = job.shown
    a = job.attributions[:n]
    cols = feature_order(a, TOP_COLUMNS)
    width, height = tabular_grid_size(n, len(cols))
    fig = new_figure(width, height)
    ax = add_axes(fig, *MATRIX_AT, CELL[0] * len(cols), CELL[1] * n)
    vmin, vmax = color_limits(a[:, cols], job.signed, job.style.clip)
    image = ax.imshow(a[:, cols], cmap=job.cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(len(cols)), [names[i] for i in cols], rotation=60, ha="right",
                  rotation_mode="anchor", fontsize=7)
    ax.set_yticks(np.arange(n), [textwrap.shorten(c, 48) for c in job.captions[:n]], fontsize=7)
    bar_height = min(CELL[1] * n, 3.0)
    cax = add_axes(fig, width - 0.95, MATRIX_AT[1] + CELL[1] * n - bar_height, 0.15, bar_height)
    bar = fig.colorbar(image, cax=cax, extend="both" if job.signed else "max")
    bar.ax.set_title(f"attribution\n(clip p{job.style.clip:g})", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    left_out = len(cols) < len(names)
    more = f", top {len(cols)} of {len(names)} features by mean |attribution|" if left_out else ""
    fig.suptitle(grid_title(job.title, n, len(job.stems)) + more, fontsize=10)
    return save(fig, job.out_dir / "grid.png")


def render_sequences(job: RenderJob) -> list[Path]:
    """One signal-over-relevance plot per sample and stacked small plots as ``grid.png``."""
    channels = job.inputs.shape[1]
    names = job.feature_names or [f"ch{i}" for i in range(channels)]
    plot = _SequencePlot(job, names)
    paths = [plot.draw(a, x, caption, job.out_dir / f"{stem}.png")
             for a, x, caption, stem in zip(job.attributions, job.inputs, job.captions, job.stems)]
    return [*paths, _sequence_grid(job, names)]


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


class _SequencePlot:
    """One figure reused for every sample: new line data, band data, colour limits and title."""

    def __init__(self, job: RenderJob, names: list[str]) -> None:
        self.job, self.fig = job, new_figure(*SEQUENCE_SIZE)
        self.ax = add_axes(self.fig, 0.75, 0.55, 5.45, 2.25)
        self.band, self.lines = _band_and_lines(self.ax, job, job.inputs[0], names)
        self.ax.set_xlabel("position")
        if len(names) > 1:
            self.ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
        bar = self.fig.colorbar(self.band, cax=add_axes(self.fig, 6.4, 0.55, 0.15, 2.25),
                                extend="both" if job.signed else "max")
        bar.set_label("attribution" + (", sum over channels" if len(names) > 1 else ""), fontsize=8)
        self.suptitle = self.fig.suptitle("", fontsize=11)

    def draw(self, a: np.ndarray, x: np.ndarray, caption: str, path: Path) -> Path:
        """Show one sample and save it to ``path``."""
        for line, channel in zip(self.lines, x):
            line.set_ydata(channel)
        relevance = a.sum(axis=0)
        self.band.set_data(relevance[None, :])
        self.band.set_clim(*color_limits(relevance, self.job.signed, self.job.style.clip))
        _fit_band(self.ax, self.band, x)
        self.suptitle.set_text(caption)
        return save(self.fig, path)


def sequence_grid_size(n: int) -> tuple[float, float]:
    """The sequence grid's size in inches for ``n`` shown samples."""
    rows, cols = grid_shape(n, _sequence_cols(n))
    return cols * SEQUENCE_TILE[0] + 1.1, rows * SEQUENCE_TILE[1] + 0.6


def _sequence_cols(n: int) -> int:
    return 1 if n <= 8 else 2 if n <= 24 else 4


def _sequence_grid(job: RenderJob, names: list[str]) -> Path:
    """Small stacked plots, each band scaled on its own, sharing one colour bar."""
    n = job.shown
    rows, cols = grid_shape(n, _sequence_cols(n))
    fig = new_figure(*sequence_grid_size(n))
    for i in range(n):
        r, c = divmod(i, cols)
        ax = add_axes(fig, 0.25 + c * SEQUENCE_TILE[0], 0.15 + (rows - 1 - r) * SEQUENCE_TILE[1],
                      SEQUENCE_TILE[0] - 0.2, SEQUENCE_TILE[1] - 0.35)
        band, _ = _band_and_lines(ax, job, job.inputs[i], names)
        band.set_data(relative_map(job.attributions[i].sum(axis=0), job.signed, job.style.clip)[None, :])
        band.set_clim(-1.0 if job.signed else 0.0, 1.0)
        _fit_band(ax, band, job.inputs[i])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(textwrap.shorten(job.captions[i], 60), fontsize=7, pad=2)
    _grid_colorbar(fig, band, job, cols * SEQUENCE_TILE[0] + 0.3, rows * SEQUENCE_TILE[1] + 0.15)
    fig.suptitle(grid_title(job.title, n, len(job.stems)), fontsize=10)
    return save(fig, job.out_dir / "grid.png")


def _grid_colorbar(fig: Figure, mappable: AxesImage, job: RenderJob, left: float, top: float) -> None:
    """A colour bar for per-sample scaled maps, hanging from ``top`` at ``left`` (inches)."""
    height = min(2.0, top - 0.3)
    bar = fig.colorbar(mappable, cax=add_axes(fig, left, top - height, 0.15, height))
    bar.set_label(f"attribution / p{job.style.clip:g} of |attribution|, per plot", fontsize=7)
    bar.ax.tick_params(labelsize=7)
