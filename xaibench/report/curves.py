"""The comparison report's curve figure: one metric's mean curves, every method told apart.

Per metric one figure: on the left every method's mean curve in one panel, each with its own colour,
line style and marker (markers staggered along the curve, so that identical curves still show both:
integrated gradients and kernel SHAP coincide on a linear model); on the right small multiples, one
panel per method, with its 95% percentile-bootstrap band (``xaibench.metrics.stats.bootstrap_band``,
inside the metric's range) over the other methods' means in grey. The legend sits below the panels,
off the data. Drawn with ``xaibench.report.style``; matplotlib is imported inside the functions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from xaibench.report import style

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MARKS_PER_CURVE = 6  # markers along a curve
SMALL_COLS = 3  # small multiples per row
WIDTH = 8.0  # inches: the report's content width at style.DPI
OVERVIEW_SHARE = 0.42  # of the width, for the all-methods panel
PANEL_HEIGHT = 1.55  # inches per row of small multiples
BAND_ALPHA = 0.3
CONTEXT = "0.82"  # the other methods' means in a small multiple


def method_style(index: int) -> dict[str, Any]:
    """Line style and marker of the ``index``-th method: the pair differs for the first 8 methods."""
    return {"linestyle": LINESTYLES[index % len(LINESTYLES)], "marker": MARKERS[index % len(MARKERS)]}


def _marks(points: int, index: int, methods: int) -> slice:
    """Every ``step``-th point gets a marker, starting at an offset spread evenly over the methods when
    the step leaves room for all, else alternating, so that neighbouring methods always differ."""
    step = max(1, math.ceil(points / MARKS_PER_CURVE))
    offset = (index * step) // methods if step >= methods else index % step
    return slice(offset, None, step)


def _curves(summary: dict[str, Any], name: str) -> dict[str, dict[str, np.ndarray]]:
    """method -> its curve arrays (x, mean, low, high; NaN for null), for the methods that have one."""
    out = {}
    for method in summary["methods"]:
        curve = (summary["results"].get(method, {}).get(name) or {}).get("curve")
        if curve:
            out[method] = {k: np.array([np.nan if v is None else float(v) for v in curve[k]])
                           for k in ("x", "mean", "low", "high")}
    return out


@style.with_style
def curve_figure(summary: dict[str, Any], name: str, colors: dict[str, str]) -> Figure:
    """One metric's curve figure (see the module docstring).

    Args:
        summary: the run summary (metrics.json): methods, metrics (curve_label, higher_is_better) and
            results with ``curve`` {"x", "mean", "low", "high"}.
        name: the metric.
        colors: a colour per method (``charts.method_colors``).
    """
    info, curves = summary["metrics"][name], _curves(summary, name)
    methods = [m for m in summary["methods"] if m in curves]
    rows = max(1, math.ceil(len(methods) / SMALL_COLS))
    fig = style.new_figure(WIDTH, max(2.6, rows * PANEL_HEIGHT) + 0.7, layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[OVERVIEW_SHARE, 1 - OVERVIEW_SHARE], wspace=0.02)
    overview = left.add_subplot()
    grid = right.subplots(rows, SMALL_COLS, sharex=True, sharey=True, squeeze=False)
    order = {m: i for i, m in enumerate(summary["methods"])}
    for method in methods:
        c, i = curves[method], order[method]
        overview.plot(c["x"], c["mean"], color=colors[method], linewidth=1.5, markersize=4.5,
                      markevery=_marks(len(c["x"]), i, len(methods)), label=style.method_label(method),
                      **method_style(i))
    overview.set_title("all methods")
    overview.set_xlabel(info.get("curve_label") or "step")
    overview.set_ylabel("mean over samples")
    _tidy(overview)
    for ax, method in zip(grid.ravel(), methods):
        _small_multiple(ax, curves, method, colors[method], order[method])
    for ax in grid.ravel()[len(methods):]:
        ax.set_axis_off()
    for ax in grid.ravel()[max(0, len(methods) - SMALL_COLS):len(methods)]:
        ax.xaxis.set_tick_params(labelbottom=True)  # the lowest panel of its column
    right.supxlabel(info.get("curve_label") or "step", fontsize=style.SMALL)
    right.supylabel("mean, 95% bootstrap band", fontsize=style.SMALL)
    fig.suptitle(style.metric_label(name, info["higher_is_better"]), fontsize=style.TITLE)
    if methods:
        fig.legend(*overview.get_legend_handles_labels(), loc="outside lower center",
                   ncols=min(len(methods), 5), frameon=False)
    return fig


def _small_multiple(ax: Axes, curves: dict[str, dict[str, np.ndarray]], method: str, color: str,
                    index: int) -> None:
    """One method's mean and band over the other methods' means in grey."""
    for other, c in curves.items():
        if other != method:
            ax.plot(c["x"], c["mean"], color=CONTEXT, linewidth=0.8)
    c = curves[method]
    ax.fill_between(c["x"], c["low"], c["high"], color=color, alpha=BAND_ALPHA, linewidth=0)
    ax.plot(c["x"], c["mean"], color=color, linewidth=1.3, linestyle=method_style(index)["linestyle"])
    ax.set_title(style.method_label(method), fontsize=style.SMALL)
    _tidy(ax)


def _tidy(ax: Axes) -> None:
    """Horizontal grid lines behind the data, small ticks."""
    ax.grid(axis="y", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=style.SMALL)
