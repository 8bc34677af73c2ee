"""Figures without pyplot: an Agg canvas per figure, so no global state leaks between calls.

matplotlib is imported inside the functions, so importing xaibench.report stays cheap. Sizes, fonts,
colours and file formats come from ``xaibench.report.style``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xaibench.report import style as figure_style
from xaibench.report.colors import HeatmapStyle

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = figure_style.DPI
CHAR_WIDTH = 0.062  # inches per caption character at style.SMALL points (DejaVu Sans, with margin)
MISCLASSIFIED = "✗ misclassified"
MAX_TILES = 64  # grids show at most this many samples; the title says when more were left out


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches at ``DPI`` with its own Agg canvas, axes placed by hand."""
    return figure_style.new_figure(width, height)


def add_axes(fig: Figure, left: float, bottom: float, width: float, height: float) -> Axes:
    """Axes at a rectangle given in inches from the figure's bottom-left corner.

    A fixed layout (instead of constrained/tight layout) keeps the output size exact and lets one
    figure be reused for every sample without re-running a layout engine.
    """
    fw, fh = fig.get_size_inches()
    return fig.add_axes((left / fw, bottom / fh, width / fw, height / fh))


def save(fig: Figure, path: Path, fmt: str | None = None) -> Path:
    """Write ``fig`` to ``path`` in ``fmt`` (default: the path's suffix) and return the path written."""
    return figure_style.save(fig, path, fmt)


def whole_pixels(inches: float) -> float:
    """``inches`` rounded to whole pixels at ``DPI``, so that a figure's pixel size is exact."""
    return round(inches * DPI) / DPI


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
    misclassified: list[bool] | None = None
    value_label: str = "input value"

    @property
    def cmap(self) -> str:
        """The colour map name for these attributions."""
        return self.style.cmap_for(self.signed)

    def file(self, stem: str) -> Path:
        """Where the figure ``stem`` goes, in the style's format."""
        return figure_style.figure_file(self.out_dir, stem, self.style.format)

    def wrong(self, i: int) -> bool:
        """Whether sample ``i`` is misclassified (False when that is unknown)."""
        return bool(self.misclassified[i]) if self.misclassified is not None else False

    @property
    def shown(self) -> int:
        """How many samples the grid shows."""
        return min(len(self.stems), MAX_TILES)


def scale_note(job: RenderJob) -> str:
    """Where colours saturate: one scale for all samples or one per sample."""
    clip = job.style.clip
    if job.style.scale == "shared":
        return f"one scale for all {len(job.stems)} samples, saturates at p{clip:g} of |attribution|"
    return f"each sample its own scale, saturates at its p{clip:g} of |attribution|"


def flag_caption(job: RenderJob, i: int, caption: str) -> str:
    """A caption, marked when the sample is misclassified (a text mark, not colour alone)."""
    return f"{MISCLASSIFIED} · {caption}" if job.wrong(i) else caption


def mark_frame(ax: Axes, wrong: bool) -> None:
    """A dashed frame in the style's MARK colour around a misclassified sample's axes."""
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(figure_style.MARK if wrong else "0.7")
        spine.set_linewidth(2.2 if wrong else 0.6)
        spine.set_linestyle((0, (3, 1.5)) if wrong else "-")


def label_figure(fig: Figure, title: str, note: str) -> None:
    """The figure's title on top and a small note at the bottom, both wrapped to its width."""
    width = fig.get_size_inches()[0] - 0.2
    fig.supxlabel(figure_style.fit_text(note, width, figure_style.SMALL), fontsize=figure_style.SMALL,
                  color=figure_style.MUTED)
    fig.suptitle(figure_style.fit_text(title, width))


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
