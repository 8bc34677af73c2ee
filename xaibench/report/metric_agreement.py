"""Do the metrics of an evaluate run agree, and can each one tell the methods apart?

Two questions a reader of a comparison report must answer before believing a ranking (Klein et al., 2024,
LATEC, found metrics' method rankings often contradict each other):

- agreement: Kendall's tau-b between every pair of metrics' method rankings (the report's ranks, ties
  included), over the methods ranked by both. +1: the two metrics order the methods alike; -1: in reverse;
  None: fewer than two common methods, or one metric ties them all.
- separation: a metric cannot separate the methods on this data when every method's mean lies inside
  every other method's 95% interval (equivalently: all means lie in the intersection of all intervals).
  Its ranking is then noise, and the report flags it.

Pure functions of the run summary (metrics.json); nothing here imports torch.
"""

from __future__ import annotations

import html
import math
from itertools import combinations
from typing import Any

from xaibench.report.charts import MISSING, as_float
from xaibench.report.markdown import inert, table

Summary = dict[str, Any]
NOT_SEPARATING = "cannot separate the methods: every method's mean lies inside every other's 95% interval"


def kendall_tau_b(first: list[float], second: list[float]) -> float | None:
    """Kendall's tau-b of two paired lists (ties allowed); None when it is undefined.

    tau_b = (C - D) / sqrt((C + D + T1) (C + D + T2)), with C / D the concordant / discordant pairs and
    T1 / T2 the pairs tied in the first list only / in the second list only (pairs tied in both count in
    neither), as scipy.stats.kendalltau's default variant.
    """
    if len(first) != len(second):
        raise ValueError("kendall_tau_b needs two lists of the same length")
    concordant = discordant = tied_first = tied_second = 0
    for i, j in combinations(range(len(first)), 2):
        a = (first[i] > first[j]) - (first[i] < first[j])
        b = (second[i] > second[j]) - (second[i] < second[j])
        if a and b:
            concordant += a == b
            discordant += a != b
        elif a:
            tied_second += 1
        elif b:
            tied_first += 1
    denominator = math.sqrt((concordant + discordant + tied_first) * (concordant + discordant + tied_second))
    return (concordant - discordant) / denominator if denominator else None


def rank_agreement(ranking: list[dict[str, Any]], metrics: list[str]) -> list[list[float | None]]:
    """The matrix of Kendall's tau-b between the metrics' method ranks (``ranking``: the summary's rows of
    ``{"method", "ranks": {metric: rank}}``); the diagonal is 1 where a metric ranks two or more methods
    and does not tie them all."""
    ranks = [row.get("ranks", {}) for row in ranking]
    matrix: list[list[float | None]] = [[None] * len(metrics) for _ in metrics]
    for i, first in enumerate(metrics):
        for j, second in enumerate(metrics[i:], start=i):
            common = [r for r in ranks if first in r and second in r]
            tau = kendall_tau_b([r[first] for r in common], [r[second] for r in common])
            matrix[i][j] = matrix[j][i] = tau
    return matrix


def separates(results: dict[str, dict[str, Any]], metric: str) -> bool | None:
    """Whether ``metric`` tells at least two methods apart: some method's mean lies outside another's 95%
    interval. None with fewer than two methods that have a mean and an interval."""
    bounds = []
    for stats in results.values():
        entry = (stats or {}).get(metric) or {}
        low, high = (list(entry.get("ci95") or []) + [None, None])[:2]
        values = (as_float(entry.get("mean")), as_float(low), as_float(high))
        if all(math.isfinite(v) for v in values):
            bounds.append(values)
    if len(bounds) < 2:
        return None
    means = [mean for mean, _, _ in bounds]
    return not (max(low for _, low, _ in bounds) <= min(means) and max(means) <= min(high for _, _, high in bounds))


def agreement(summary: Summary) -> dict[str, Any]:
    """The run's agreement record: metric names, the tau-b matrix (rows and columns in that order) and
    the metrics flagged as not separating the methods."""
    names = list(summary["metrics"])
    return {"metrics": names, "kendall_tau_b": rank_agreement(summary["ranking"], names),
            "not_separating": [n for n in names if separates(summary["results"], n) is False]}


# --- the report's section ---------------------------------------------------------------------------------

def _tau(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.2f}"


def markdown_lines(record: dict[str, Any]) -> list[str]:
    """The agreement section of a report.md from an ``agreement`` record: the tau-b matrix as a pipe
    table and the flagged metrics."""
    names = record["metrics"]
    lines = []
    if len(names) > 1:
        rows = [[inert(name), *map(_tau, row)] for name, row in zip(names, record["kendall_tau_b"], strict=True)]
        note = ("Kendall's tau-b between the metrics' method rankings, each ranked best first under its own "
                f"direction (+1: the same order, -1: reversed, {MISSING}: undefined).")
        lines += [*table(["metric", *map(inert, names)], rows), "", note, ""]
    flagged = record["not_separating"]
    lines.append(f"Not separating ({NOT_SEPARATING}): {', '.join(map(inert, flagged))}." if flagged
                 else "Every metric separates at least two methods.")
    return lines


def tau_color(value: float | None) -> str:
    """A cell tint for tau: blue for agreement, orange for reversal, white near 0 (readable in grey:
    the tint's lightness grows as |tau| falls)."""
    if value is None:
        return "#f2f2f2"
    strength = min(1.0, abs(value))
    end = (67, 147, 195) if value >= 0 else (230, 145, 56)
    rgb = (round(255 + (c - 255) * strength * 0.75) for c in end)
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def html_section_body(record: dict[str, Any]) -> str:
    """The agreement section of a report.html from an ``agreement`` record: the tau-b matrix as a tinted
    table and the flagged metrics."""
    names, flagged = record["metrics"], set(record["not_separating"])
    esc = html.escape
    parts = []
    if len(names) > 1:
        head = "".join(f'<th class="num">{esc(n).replace("_", "_<wbr>")}</th>' for n in names)
        rows = "".join(
            f"<tr><td>{esc(name)}{' ≈' if name in flagged else ''}</td>"
            + "".join(f'<td class="num" style="background:{tau_color(v)}">{_tau(v)}</td>' for v in row) + "</tr>"
            for name, row in zip(names, record["kendall_tau_b"], strict=True))
        parts.append(f'<div class="frame scroll"><table class="agreement"><thead><tr><th>metric</th>{head}</tr>'
                     f"</thead><tbody>{rows}</tbody></table></div>")
        parts.append('<p class="note">Kendall\'s tau-b between the metrics\' method rankings, each ranked best '
                     f"first under its own direction: +1 the same order (blue), -1 reversed (orange), {MISSING} "
                     "undefined. ≈ marks a metric that cannot separate the methods.</p>")
    parts.append(f"<p>Not separating ({esc(NOT_SEPARATING)}): <b>{esc(', '.join(sorted(flagged)))}</b>.</p>"
                 if flagged else "<p>Every metric separates at least two methods.</p>")
    return "\n".join(parts)
