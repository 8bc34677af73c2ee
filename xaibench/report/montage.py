"""Influence montages: each query beside its top proponents and opponents; the top self-influence examples.

Images are shown in raw value space (``denormalise``), captions carry each example's label and score, and
the title states the sign convention so that a reader never has to guess it. The title is wrapped to the
figure's width (it never runs past the edge); proponents are framed blue and opponents vermillion
(``style.HELPS`` / ``style.HURTS``: apart under every colour deficiency), and their columns are named in
text as well.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xaibench.data.prepare import Prepared, denormalise
from xaibench.report import style
from xaibench.report._canvas import add_axes, grid_shape, new_figure, save
from xaibench.report.colors import to_display

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TILE, GAP, CAPTION = 1.15, 0.12, 0.42  # inches
MAX_QUERIES = 8
HELPS, HURTS = style.HELPS, style.HURTS
TITLE_POINTS = 8
CHAR_WIDTH = 0.075  # inches per title character at TITLE_POINTS (DejaVu Sans, with margin)
LINE = 0.15  # inches per title line


def header(text: str, width: float) -> tuple[str, float]:
    """``text`` wrapped to ``width`` inches, and the height in inches the wrapped lines need."""
    lines = [line for part in text.split("\n")
             for line in textwrap.wrap(part, max(20, int((width - 0.2) / CHAR_WIDTH)))]
    return "\n".join(lines), len(lines) * LINE + 0.2


def _images(prepared: Prepared) -> np.ndarray:
    return denormalise(prepared.inputs, prepared.meta).detach().double().numpy()


def _tile(fig: Figure, left: float, bottom: float, image: np.ndarray, caption: str, color: str,
          value_range: tuple[float, float] | None, dashed: bool = False) -> None:
    ax = add_axes(fig, left, bottom + CAPTION, TILE, TILE)
    shown = to_display(image, value_range)
    ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(color)
        spine.set_linewidth(2)
        if dashed:
            spine.set_linestyle((0, (3, 1.5)))
    fig.text((left + TILE / 2) / fig.get_size_inches()[0], (bottom + CAPTION - 0.05) / fig.get_size_inches()[1],
             caption, ha="center", va="top", fontsize=7, color=color)


@style.with_style
def write_influence_montage(path: Path, summary: dict[str, Any], queries: Prepared, train: Prepared) -> Path:
    """Rows: a query, then its proponents (green), then its opponents (red), with labels and scores."""
    records = summary["queries"][:MAX_QUERIES]
    k = max((len(r["proponents"]) for r in records), default=0)
    columns = 1 + 2 * k
    row_height = TILE + CAPTION + GAP
    width = columns * (TILE + GAP) + 2 * GAP + 0.3
    title, title_height = header(
        f"Influence ({summary['strategy']}, measurement: {summary['measurement']}). "
        f"Blue: top proponents (help the prediction). Vermillion: top opponents (work against it). "
        f"Showing {len(records)} of {len(summary['queries'])} queries.", width)
    fig = new_figure(width, len(records) * row_height + 0.3 + title_height)
    query_images, train_images = _images(queries), _images(train)
    position = {int(i): p for p, i in enumerate(train.data.indices.tolist())}
    value_range = train.meta.value_range
    for row, record in enumerate(records):
        bottom = (len(records) - 1 - row) * row_height + GAP
        caption = f"query #{record['index']}\nlabel {record['label']} · pred {record['prediction']}"
        _tile(fig, GAP, bottom, query_images[row], caption, "#333333", value_range)
        for column, (kind, color) in enumerate((("proponents", HELPS), ("opponents", HURTS))):
            for j, example in enumerate(record[kind]):
                left = GAP + (1 + column * k + j) * (TILE + GAP) + 0.3 * (column + 1) / 2
                caption = f"#{example['index']} label {example['label']}\n{example['score']:+.3g}"
                _tile(fig, left, bottom, train_images[position[example["index"]]], caption, color, value_range)
    heading = (len(records) * row_height + 0.05) / fig.get_size_inches()[1]
    for column, (kind, color) in enumerate((("proponents", HELPS), ("opponents", HURTS))):
        left = GAP + (1 + column * k) * (TILE + GAP) + 0.3 * (column + 1) / 2
        fig.text(left / width, heading, f"top {k} {kind}", color=color, fontsize=9, fontweight="bold")
    fig.text(0.1 / width, 1 - 0.1 / fig.get_size_inches()[1], title, fontsize=TITLE_POINTS, va="top")
    return save(fig, path)


@style.with_style
def write_self_montage(path: Path, summary: dict[str, Any], train: Prepared, max_cols: int = 8) -> Path:
    """The training examples with the highest self-influence, highest first (likely mislabelled)."""
    ranked = summary["ranking"]
    rows, cols = grid_shape(len(ranked), max_cols)
    width = cols * (TILE + GAP) + GAP
    title, title_height = header(
        f"Highest self-influence ({summary['strategy']}) of {summary['samples']} training examples: "
        "likely mislabelled or atypical.\n✗ and dashed vermillion frame: label differs from the model's "
        "prediction.", width)
    fig = new_figure(width, rows * (TILE + CAPTION + GAP) + title_height)
    images = _images(train)
    position = {int(i): p for p, i in enumerate(train.data.indices.tolist())}
    for n, example in enumerate(ranked):
        row, col = divmod(n, cols)
        bottom = (rows - 1 - row) * (TILE + CAPTION + GAP) + GAP
        wrong = example["label"] != example["prediction"]
        caption = (f"{'✗ ' if wrong else ''}{n + 1}. #{example['index']} label {example['label']}\n"
                   f"pred {example['prediction']} · {example['self_influence']:.3g}")
        _tile(fig, GAP + col * (TILE + GAP), bottom, images[position[example["index"]]], caption,
              HURTS if wrong else style.NEUTRAL, train.meta.value_range, dashed=wrong)
    fig.text(0.1 / width, 1 - 0.1 / fig.get_size_inches()[1], title, fontsize=TITLE_POINTS, va="top")
    return save(fig, path)
