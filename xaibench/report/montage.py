"""Influence montages: each query beside its top proponents and opponents; the top self-influence examples.

Images are shown in raw value space (``denormalise``), captions carry each example's label and score, and
the title states the sign convention so that a reader never has to guess it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xaibench.data.prepare import Prepared, denormalise
from xaibench.report._canvas import add_axes, grid_shape, new_figure, save
from xaibench.report.colors import to_display

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TILE, GAP, CAPTION, HEADER = 1.15, 0.12, 0.42, 0.75  # inches
MAX_QUERIES = 8
HELPS, HURTS = "#1a7f37", "#b42318"


def _images(prepared: Prepared) -> np.ndarray:
    return denormalise(prepared.inputs, prepared.meta).detach().double().numpy()


def _tile(fig: Figure, left: float, bottom: float, image: np.ndarray, caption: str, color: str,
          value_range: tuple[float, float] | None) -> None:
    ax = add_axes(fig, left, bottom + CAPTION, TILE, TILE)
    shown = to_display(image, value_range)
    ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(2)
    fig.text((left + TILE / 2) / fig.get_size_inches()[0], (bottom + CAPTION - 0.05) / fig.get_size_inches()[1],
             caption, ha="center", va="top", fontsize=7, color=color)


def write_influence_montage(path: Path, summary: dict[str, Any], queries: Prepared, train: Prepared) -> Path:
    """Rows: a query, then its proponents (green), then its opponents (red), with labels and scores."""
    records = summary["queries"][:MAX_QUERIES]
    k = max((len(r["proponents"]) for r in records), default=0)
    columns = 1 + 2 * k
    row_height = TILE + CAPTION + GAP
    width = columns * (TILE + GAP) + 2 * GAP + 0.3
    fig = new_figure(width, len(records) * row_height + HEADER)
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
    top = (len(records) * row_height + HEADER * 0.55) / fig.get_size_inches()[1]
    fig.text(0.01, top, f"Influence ({summary['strategy']}, measurement: {summary['measurement']}). "
             f"Green: top proponents (help the prediction). Red: top opponents (work against it). "
             f"Showing {len(records)} of {len(summary['queries'])} queries.", fontsize=8, va="bottom")
    return save(fig, path)


def write_self_montage(path: Path, summary: dict[str, Any], train: Prepared, max_cols: int = 8) -> Path:
    """The training examples with the highest self-influence, highest first (likely mislabelled)."""
    ranked = summary["ranking"]
    rows, cols = grid_shape(len(ranked), max_cols)
    fig = new_figure(cols * (TILE + GAP) + GAP, rows * (TILE + CAPTION + GAP) + HEADER)
    images = _images(train)
    position = {int(i): p for p, i in enumerate(train.data.indices.tolist())}
    for n, example in enumerate(ranked):
        row, col = divmod(n, cols)
        bottom = (rows - 1 - row) * (TILE + CAPTION + GAP) + GAP
        color = HURTS if example["label"] != example["prediction"] else "#333333"
        caption = (f"{n + 1}. #{example['index']} label {example['label']}\n"
                   f"pred {example['prediction']} · {example['self_influence']:.3g}")
        _tile(fig, GAP + col * (TILE + GAP), bottom, images[position[example["index"]]], caption, color,
              train.meta.value_range)
    fig.text(0.01, 1 - 0.35 * HEADER / fig.get_size_inches()[1],
             f"Highest self-influence ({summary['strategy']}) of {summary['samples']} training examples:\n"
             "likely mislabelled or atypical. Red: label differs from the model's prediction.",
             fontsize=8, va="top")
    return save(fig, path)
