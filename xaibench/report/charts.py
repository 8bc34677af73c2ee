"""The look of the comparison report: number formatting, colours, the page's style sheet and charts.

Charts (metric means per category, metric curves) are PNG data URIs drawn with matplotlib's
object-oriented API on Agg canvases (no pyplot, no global state), imported inside the functions so
that importing this module stays cheap. A method has one colour (``method_colors``) everywhere in a
report, so it is recognisable across tables and charts.
"""

from __future__ import annotations

import base64
import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from xaibench.report import style

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CHART_DPI = style.DPI
PANEL = (2.0, 1.7)  # inches per metric panel of a category figure
PANEL_COLS = 4  # panels per row: four fit the report's 1200 px content width at CHART_DPI
MISSING = "—"  # a value that does not exist, in tables
NO_BAR = "n/a"  # the same in a bar chart, where a dash would read as a bar of height 0
RANK_COLORS = ((198, 239, 206), (250, 250, 250), (255, 214, 210))  # cell tints: best, middle, worst rank
CSS = """
:root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --zebra: #f8f9fb; --head: #eef1f5;
  --accent: #2f6fde; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f6f9; color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 0 20px 48px; }
nav { position: sticky; top: 0; z-index: 5; background: rgba(255,255,255,.94);
  border-bottom: 1px solid var(--line); }
nav div { max-width: 1240px; margin: 0 auto; padding: 8px 20px; display: flex; gap: 18px; }
nav a { color: var(--muted); text-decoration: none; font-weight: 500; } nav a:hover { color: var(--accent); }
h1 { font-size: 24px; margin: 24px 0 6px; } h2 { font-size: 18px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 18px 0 8px; text-transform: capitalize; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 18px 20px;
  margin-top: 18px; box-shadow: 0 1px 2px rgba(16,24,40,.04); scroll-margin-top: 48px; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
.facts dt, .muted, .note, .cat { color: var(--muted); } .facts dd { margin: 0; }
.note { font-size: 12.5px; margin: 8px 0 0; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f1f3f6;
  padding: 1px 5px; border-radius: 4px; }
.frame { border: 1px solid var(--line); border-radius: 8px; } .scroll { overflow: auto; max-height: 80vh; }
table { border-collapse: separate; border-spacing: 0; width: 100%; }
th, td { padding: 7px 9px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top;
  background: #fff; }
tbody tr:nth-child(even) td { background: var(--zebra); } tbody tr:last-child td { border-bottom: 0; }
thead th { position: sticky; top: 0; z-index: 1; background: var(--head); font-weight: 600;
  vertical-align: bottom; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
thead th.num { white-space: normal; } table.ranking thead th { font-size: 12.5px; padding: 7px 7px; }
table.ranking tbody td.cell { background: var(--tint); }
table.ranking th:first-child, table.ranking td:first-child { position: sticky; left: 0; z-index: 2;
  white-space: nowrap; }
table.ranking thead th:first-child { z-index: 3; }
td.best { font-weight: 700; box-shadow: inset 0 0 0 2px #2e9e57; }
table.ranking tr.total td { font-weight: 700; border-bottom: 2px solid var(--line); }
.dir { color: var(--accent); font-weight: 700; white-space: nowrap; }
.cat { display: block; font-weight: 400; font-size: 11.5px; text-transform: capitalize; }
.pos { display: inline-block; width: 1.6em; color: var(--muted); }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 3px; margin-right: 7px;
  vertical-align: -1px; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 0 0 4px; font-size: 13px; }
img.chart { display: block; max-width: 100%; height: auto; }
.curves { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 12px; }
.curves { display: grid; gap: 14px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 10px; }
.tiles figure { margin: 0; } .tiles img { display: block; width: 100%; height: auto; }
.tiles figcaption { font-size: 12px; color: var(--muted); }
.heatmap-method h3 { text-transform: none; }
@media print {
  body { background: #fff; font-size: 11px; } nav { display: none; } main { max-width: none; padding: 0; }
  section { border: 0; box-shadow: none; padding: 0; margin-top: 12px; }
  .scroll { max-height: none; overflow: visible; } thead th { position: static; }
  img.chart, figure, tr { break-inside: avoid; }
  .tiles { grid-template-columns: 1fr 1fr; }
  .heatmap-method { break-inside: avoid; } .paged .heatmap-method { break-before: page; }
}
pre { background: #f6f8fa; padding: 10px; border-radius: 6px; overflow: auto; font-size: 12px; }
"""


def arrow(higher_is_better: bool) -> str:
    """The direction arrow of a metric: ↑ when higher is better, ↓ when lower is better."""
    return "↑" if higher_is_better else "↓"


def fmt(value: Any) -> str:
    """A number to 3 significant digits (1000-9999 as integers, not 1e+03); "—" for null or NaN."""
    number = as_float(value)
    if not math.isfinite(number):
        return MISSING
    return f"{number:.0f}" if 1e3 <= abs(number) < 1e4 else f"{number:.3g}"


def mean_std(stats: dict[str, Any] | None) -> str:
    """ "mean ± std", the mean alone without a std, "—" without a mean."""
    stats = stats or {}
    mean, std = fmt(stats.get("mean")), fmt(stats.get("std"))
    return mean if MISSING in (mean, std) else f"{mean} ± {std}"


def interval(stats: dict[str, Any] | None) -> str:
    """ "[lo, hi]" of the 95% interval, "—" when it is undefined."""
    lo, hi = ((stats or {}).get("ci95") or [None, None])
    return MISSING if lo is None and hi is None else f"[{fmt(lo)}, {fmt(hi)}]"


def method_colors(methods: list[str]) -> dict[str, str]:
    """A hex colour per method by its position: the style's colour-blind-safe palette (Okabe-Ito),
    tab20 beyond its length; curves add a line style and a marker per method (``curves``)."""
    if len(methods) <= len(style.PALETTE):
        return {method: style.color(i) for i, method in enumerate(methods)}
    import matplotlib
    from matplotlib.colors import to_hex

    cmap = matplotlib.colormaps["tab20"]
    return {method: to_hex(cmap(i % cmap.N)) for i, method in enumerate(methods)}


def rank_color(rank: float, ranked: int) -> str:
    """The cell colour of ``rank`` of ``ranked``: green for the best through white to red for the worst."""
    t = 0.0 if ranked < 2 else (rank - 1) / (ranked - 1)
    (start, end), u = (RANK_COLORS[:2], 2 * t) if t <= 0.5 else (RANK_COLORS[1:], 2 * t - 1)
    return "#" + "".join(f"{round(a + (b - a) * u):02x}" for a, b in zip(start, end))


def png_uri(data: bytes) -> str:
    """A ``data:`` URI holding PNG bytes, for an ``<img src>`` that needs no other file."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def as_float(value: Any) -> float:
    """``value`` as a float, NaN for null."""
    return math.nan if value is None else float(value)


def category_chart(summary: dict[str, Any], metrics: list[str], colors: dict[str, str]) -> str:
    """``category_figure`` as a PNG data URI."""
    return figure_uri(category_figure(summary, metrics, colors))


@style.with_style
def category_figure(summary: dict[str, Any], metrics: list[str], colors: dict[str, str]) -> Figure:
    """Small multiples for one category: a panel per metric with a bar per method.

    Bars are the means over samples, whiskers the 95% intervals; a method without a mean gets "n/a".
    The methods' legend is left to the page (the colours are the same in every chart).

    Args:
        summary: the run summary (metrics.json).
        metrics: the category's metric names, in the order to draw them.
        colors: a colour per method (``method_colors``).
    """
    cols = min(len(metrics), PANEL_COLS)
    rows = math.ceil(len(metrics) / cols)
    fig = chart_figure(cols * PANEL[0], rows * PANEL[1])
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, metrics):
        _bar_panel(ax, summary, name, colors)
    for ax in axes[len(metrics):]:
        ax.remove()
    return fig


def _bar_panel(ax: Axes, summary: dict[str, Any], name: str, colors: dict[str, str]) -> None:
    """One metric: a bar per method at its mean with 95% interval whiskers."""
    methods = summary["methods"]
    stats = [summary["results"].get(m, {}).get(name) or {} for m in methods]
    means = np.array([as_float(s.get("mean")) for s in stats])
    lo, hi = (np.array([as_float((s.get("ci95") or [None, None])[k]) for s in stats]) for k in (0, 1))
    x = np.arange(len(methods))
    shown = np.isfinite(means)
    ax.bar(x[shown], means[shown], width=0.72, color=[colors[m] for m, ok in zip(methods, shown) if ok])
    whiskers = shown & np.isfinite(lo) & np.isfinite(hi)
    # Clipped at 0: a bootstrap interval need not contain the mean, but error bars cannot be negative.
    spread = np.maximum(0.0, np.vstack([means - lo, hi - means])[:, whiskers])
    ax.errorbar(x[whiskers], means[whiskers], yerr=spread, fmt="none", ecolor="0.25", elinewidth=1,
                capsize=3)
    for i in np.flatnonzero(~shown):
        ax.text(i, 0.0, NO_BAR, ha="center", va="bottom", color="0.45", fontsize=style.SMALL)
    ax.axhline(0.0, color="0.55", linewidth=0.8)
    ax.set_xticks([])
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.set_title(style.metric_label(name, summary["metrics"][name]["higher_is_better"]), fontsize=style.FONT)
    tidy_axes(ax)


def curve_chart(summary: dict[str, Any], name: str, colors: dict[str, str]) -> str:
    """One metric's curves as a data URI: all methods' means, then a panel per method with its 95%
    percentile-bootstrap band (``curves.curve_figure``)."""
    from xaibench.report.curves import curve_figure

    return figure_uri(curve_figure(summary, name, colors))


def tidy_axes(ax: Axes) -> None:
    """A light look: horizontal grid lines behind the data, no top or right spine, small ticks."""
    ax.grid(axis="y", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)


def chart_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure of ``width`` x ``height`` inches with its own Agg canvas."""
    return style.new_figure(width, height, layout="constrained")


def figure_uri(fig: Figure) -> str:
    """Render ``fig`` as PNG into a data URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=CHART_DPI, metadata={"Software": None})
    return png_uri(buffer.getvalue())
