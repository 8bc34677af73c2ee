"""Figures without pyplot: an Agg canvas per figure, so no global state leaks between calls.

matplotlib is imported inside the functions, so importing xaibench.report stays cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xaibench.report.colors import HeatmapStyle

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 120
MAX_TILES = 64  # grids show at most this many samples; the title says when more were left out


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches at ``DPI`` with its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def add_axes(fig: Figure, left: float, bottom: float, width: float, height: float) -> Axes:
    """Axes at a rectangle given in inches from the figure's bottom-left corner.

    A fixed layout (instead of constrained/tight layout) keeps the output size exact and lets one
    figure be reused for every sample without re-running a layout engine.
    """
    fw, fh = fig.get_size_inches()
    return fig.add_axes((left / fw, bottom / fh, width / fw, height / fh))


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` and return the path."""
    fig.savefig(path, dpi=DPI, format="png")
    return path


def grid_shape(n: int, max_cols: int) -> tuple[int, int]:
    """(rows, cols) for ``n`` tiles: a near-square grid with at most ``max_cols`` columns."""
    cols = max(1, min(max_cols, math.ceil(math.sqrt(n))))
    return math.ceil(n / cols), cols


def grid_title(title: str, shown: int, total: int) -> str:
    """The grid's title, saying how many samples were left out when the grid is truncated."""
    note = f"first {shown} of {total} samples" if shown < total else f"{total} samples"
    return f"{title}  ({note})" if title else note


@dataclass(frozen=True)
class RenderJob:
    """Everything a modality's renderer needs, validated by ``render_heatmaps``.

    Arrays are float64 numpy arrays of shape (N, *sample_shape); the lists have N entries.
    """

    attributions: np.ndarray
    inputs: np.ndarray
    signed: bool
    out_dir: Path
    stems: list[str]
    captions: list[str]
    feature_names: list[str] | None
    value_range: tuple[float, float] | None
    style: HeatmapStyle
    title: str

    @property
    def cmap(self) -> str:
        """The colour map name for these attributions."""
        return self.style.cmap_for(self.signed)

    @property
    def shown(self) -> int:
        """How many samples the grid shows."""
        return min(len(self.stems), MAX_TILES)
