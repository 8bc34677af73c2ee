"""Mechanical checks of a drawn matplotlib Figure, for every figure type xaibench writes.

    problems = figure_problems(fig, labels=["attribution"])   # [] when the figure passes
    assert_figure_ok(fig, labels=[...])                       # the same, as an assertion
    with recording(monkeypatch) as saved: ...                 # check every figure at the moment it is saved

What is checked, with matplotlib's renderer extents (``Artist.get_window_extent``):
- every visible, non-empty Text lies inside the figure (nothing clipped by the edge);
- axes titles, axis labels, tick labels and figure-level texts (suptitle, supxlabel) do not overlap
  another visible axes (a caption touching the image above it, a label under a colour bar);
- no legend overlaps the data area of a visible axes (it may sit beside or above the plot);
- every expected label occurs in some visible text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOLERANCE = 1.0  # pixels: antialiasing and rounding of extents


@dataclass
class SavedFigure:
    """One figure as it was at the moment it was saved."""

    path: Path
    problems: list[str]
    texts: list[str] = field(default_factory=list)
    axes: list[tuple[float, float, float, float]] = field(default_factory=list)  # (x0, y0, x1, y1) pixels
    size: tuple[float, float] = (0.0, 0.0)  # (width, height) pixels


def _undrawn_tick_labels(fig: Any) -> set[int]:
    """ids of tick labels matplotlib keeps but does not draw: ticks outside the view limits, and every
    tick of a hidden axes (a tick label's own ``axes`` attribute is not always set)."""
    from matplotlib.text import Text

    undrawn: set[int] = set()
    for ax in fig.axes:
        if not ax.get_visible():
            undrawn |= {id(text) for text in ax.findobj(Text)}
            continue
        for axis in ax._axis_map.values():
            drawn = {id(tick) for tick in axis._update_ticks()}
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if id(tick) not in drawn:
                    undrawn |= {id(tick.label1), id(tick.label2)}
    return undrawn


def visible_texts(fig: Any) -> list[Any]:
    """Every Text in ``fig`` that is drawn: visible, non-empty, inside a visible axes if any."""
    from matplotlib.text import Text

    undrawn = _undrawn_tick_labels(fig)
    found = []
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip() or id(text) in undrawn:
            continue
        if text.axes is not None and not text.axes.get_visible():
            continue
        found.append(text)
    return found


def _overlap(a: Any, b: Any) -> bool:
    """Whether two display-space boxes overlap by more than TOLERANCE pixels each way."""
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > TOLERANCE) and (min(a.y1, b.y1) - max(a.y0, b.y0) > TOLERANCE)


def _axes_texts(ax: Any, undrawn: set[int]) -> list[Any]:
    """The texts that belong outside ``ax``'s data area: titles, axis labels and tick labels."""
    texts = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
    texts += ax.get_xticklabels() + ax.get_yticklabels()
    return [t for t in texts if t.get_visible() and t.get_text().strip() and id(t) not in undrawn]


def figure_problems(fig: Any, labels: Iterable[str] = ()) -> list[str]:
    """Everything wrong with ``fig`` that the module docstring lists, one line each."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    problems = []
    texts = visible_texts(fig)
    for text in texts:
        box = text.get_window_extent(renderer)
        if (box.x0 < frame.x0 - TOLERANCE or box.y0 < frame.y0 - TOLERANCE
                or box.x1 > frame.x1 + TOLERANCE or box.y1 > frame.y1 + TOLERANCE):
            problems.append(f"text clipped by the figure edge: {text.get_text()[:60]!r} at "
                            f"({box.x0:.0f}, {box.y0:.0f})-({box.x1:.0f}, {box.y1:.0f}) in {frame.width:.0f}x"
                            f"{frame.height:.0f}")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    areas = {ax: ax.get_window_extent(renderer) for ax in axes}
    undrawn = _undrawn_tick_labels(fig)
    outside = [(ax, t) for ax in axes for t in _axes_texts(ax, undrawn)]
    outside += [(None, t) for t in (fig._suptitle, fig._supxlabel, fig._supylabel)
                if t is not None and t.get_visible() and t.get_text().strip()]
    for owner, text in outside:
        box = text.get_window_extent(renderer)
        for ax in axes:
            if ax is not owner and _overlap(box, areas[ax]):
                problems.append(f"text overlaps another axes: {text.get_text()[:60]!r}")
                break
    for legend in [*fig.legends, *(ax.get_legend() for ax in axes)]:
        if legend is None or not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        for ax in axes:
            if _overlap(box, areas[ax]):
                names = ", ".join(t.get_text() for t in legend.get_texts())[:60]
                problems.append(f"legend ({names}) overlaps an axes' data area")
                break
    words = [t.get_text() for t in texts]
    for label in labels:
        if not any(label in word for word in words):
            problems.append(f"missing label {label!r}")
    return problems


def assert_figure_ok(fig: Any, labels: Iterable[str] = ()) -> None:
    """Fail with every problem ``figure_problems`` finds."""
    problems = figure_problems(fig, labels)
    assert not problems, "\n".join(problems)


@contextlib.contextmanager
def recording(monkeypatch: Any) -> Iterator[list[SavedFigure]]:
    """Check every figure xaibench saves (``xaibench.report.style.save``) at the moment it is saved.

    Yields the list that fills with one SavedFigure per file written.
    """
    from xaibench.report import style

    saved: list[SavedFigure] = []
    real = style.save

    def checked_save(fig: Any, path: Path, fmt: str | None = None) -> Path:
        written = real(fig, path, fmt)
        problems = figure_problems(fig)
        boxes = [tuple(ax.get_window_extent().extents) for ax in fig.axes if ax.get_visible()]
        saved.append(SavedFigure(written, problems, [t.get_text() for t in visible_texts(fig)], boxes,
                                 (fig.bbox.width, fig.bbox.height)))
        return written

    monkeypatch.setattr(style, "save", checked_save)
    yield saved
