"""Comparison reports of an evaluate run: the method ranking, ``report.md`` and ``report.html``.

Everything here is a pure function of the run summary (the dict stored as metrics.json: title, model,
data, methods, metrics, results, ranking, skipped, seed, created, versions) plus heatmap PNGs already
on disk. report.html is one self-contained file: inline CSS, charts and heatmaps as data URIs, no
script, nothing fetched from elsewhere, so it can be mailed or archived on its own.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from xaibench.report import charts, metric_agreement
from xaibench.report.charts import (
    CSS,
    MISSING,
    arrow,
    as_float,
    fmt,
    interval,
    mean_std,
)
from xaibench.report.markdown import code as md_code
from xaibench.report.markdown import inert
from xaibench.report.markdown import table as md_table

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
GRID_FILE = "grid.png"  # what render_heatmaps writes beside the per-sample PNGs
MAX_HEATMAPS = 6  # per method in the HTML heatmap section
PRINT_SHARED = 2  # up to this many methods share printed pages; with more, a page per method
# Means this close count as ties (same rank, all outlined when best): the methods' means differ by less
# than the report prints (3 significant digits) and far less than their bootstrap intervals; measured:
# integrated_gradients and kernel_shap on breast_cancer_logreg differ by up to 3e-4 relative.
TIE_RTOL, TIE_ATOL = 1e-3, 1e-12
TIES = f"means within {TIE_RTOL:.1%} of each other (relative) are ties and share the average of their ranks"
Summary = dict[str, Any]  # the run summary, as metrics.json holds it
Heatmaps = dict[str, list[Path]]  # method -> its heatmap PNGs


def rank_methods(
    results: dict[str, dict[str, Any]], metrics: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Rank the methods per metric by mean and order them by their mean rank.

    Args:
        results: method -> metric -> statistics with a "mean" (null when undefined).
        metrics: metric -> metadata with "higher_is_better".

    Returns:
        ``{"method", "mean_rank", "ranks": {metric: rank}}`` per method, best (lowest mean rank) first,
        ties by name. Rank 1 is the best mean; means within ``TIE_RTOL`` of each other (``tied``) share
        the average of the ranks they span; a method with a null mean for a metric gets no rank for
        it, and ``mean_rank`` is None (listed last) for a method without any rank.
    """
    ranks: dict[str, dict[str, float]] = {method: {} for method in results}
    for name, info in metrics.items():
        means = {method: as_float((stats.get(name) or {}).get("mean")) for method, stats in results.items()}
        finite = {method: mean for method, mean in means.items() if math.isfinite(mean)}
        for method, rank in _average_ranks(finite, info["higher_is_better"]).items():
            ranks[method][name] = rank
    rows = [{"method": method, "mean_rank": sum(r.values()) / len(r) if r else None, "ranks": r}
            for method, r in ranks.items()]
    return sorted(rows, key=lambda row: (row["mean_rank"] is None, row["mean_rank"] or 0.0, row["method"]))


def tied(a: float, b: float) -> bool:
    """Whether two metric means count as a tie: within ``TIE_RTOL`` relative (``TIE_ATOL`` near 0)."""
    return math.isclose(a, b, rel_tol=TIE_RTOL, abs_tol=TIE_ATOL)


def _average_ranks(values: dict[str, float], higher_is_better: bool) -> dict[str, float]:
    """Rank 1 for the best value; a tie block over positions p..p+c-1 all get p + (c-1)/2.

    Values are taken best first; a block holds the values ``tied`` to its first (best) value, so a
    block never spans more than ``TIE_RTOL`` and the result does not depend on the input order.
    """
    ordered = sorted(values, key=lambda key: (-values[key] if higher_is_better else values[key], key))
    ranks: dict[str, float] = {}
    start = 0
    while start < len(ordered):
        stop = start + 1
        while stop < len(ordered) and tied(values[ordered[start]], values[ordered[stop]]):
            stop += 1
        ranks.update({key: start + 1 + (stop - start - 1) / 2 for key in ordered[start:stop]})
        start = stop
    return ranks


def categories(summary: Summary) -> dict[str, list[str]]:
    """Category -> metric names, both in the order the metrics were evaluated."""
    groups: dict[str, list[str]] = {}
    for name, info in summary["metrics"].items():
        groups.setdefault(info["category"], []).append(name)
    return groups


def ranking_order(summary: Summary) -> list[dict[str, Any]]:
    """The summary's ranking rows, followed by any method the ranking lacks (with no ranks)."""
    rows = list(summary["ranking"])
    listed = {row["method"] for row in rows}
    missing = [m for m in summary["methods"] if m not in listed]
    return rows + [{"method": m, "mean_rank": None, "ranks": {}} for m in missing]


def _stats(summary: Summary, method: str, metric: str) -> dict[str, Any] | None:
    return summary["results"].get(method, {}).get(metric)


def _md_metric_header(summary: Summary, name: str) -> str:
    return f"{inert(name)} {arrow(summary['metrics'][name]['higher_is_better'])}{_flag(summary, name)}"


def _flag(summary: Summary, name: str) -> str:
    """" ≈" after a metric that cannot separate the methods (``metric_agreement.separates``)."""
    return " ≈" if metric_agreement.separates(summary["results"], name) is False else ""


# --- markdown ---------------------------------------------------------------------------------------------

def write_markdown(summary: Summary, path: Path, heatmaps: Heatmaps | None = None) -> Path:
    """Write report.md: title, ranking, a table per category, skipped pairs and heatmap grid links.

    Args:
        summary: the run summary (metrics.json).
        path: the file to write (atomically); image links are relative to its folder.
        heatmaps: method -> its heatmap PNGs; each method links its ``grid.png`` (listed, or found beside
            the PNGs) or, without one, its first ``MAX_HEATMAPS`` images. None: no heatmap section.

    Returns:
        ``path``.
    """
    path = Path(path)
    lines = [f"# {inert(summary['title'])}", "", *_md_facts(summary), "", "## Ranking", "", *_md_ranking(summary),
             "", "## Metric agreement", "", *metric_agreement.markdown_lines(metric_agreement.agreement(summary))]
    for category, names in categories(summary).items():
        lines += ["", f"## {inert(category.capitalize())}", "", *_md_category(summary, names)]
    lines += ["", "## Skipped", "", *_md_skipped(summary)]
    if heatmaps is not None:
        lines += ["", "## Heatmaps", "", *_md_heatmaps(heatmaps, path.parent)]
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def _md_facts(summary: Summary) -> list[str]:
    model, data = summary["model"], summary["data"]
    versions = ", ".join(f"{inert(k)} {inert(v)}" for k, v in summary.get("versions", {}).items())
    return [f"- model: {md_code(model['path'])} (sha256 {md_code(str(model.get('sha256', ''))[:12])})",
            f"- data: {inert(data['name'])}:{inert(data['split'])}, {inert(data['samples'])} samples",
            f"- seed {inert(summary['seed'])}, created {inert(summary['created'])}", f"- versions: {versions}"]


def _md_ranking(summary: Summary) -> list[str]:
    names = list(summary["metrics"])
    rows = [[inert(r["method"]), fmt(r["mean_rank"]), *(mean_std(_stats(summary, r["method"], n)) for n in names)]
            for r in ranking_order(summary)]
    table = md_table(["method", "mean rank", *(_md_metric_header(summary, n) for n in names)], rows)
    return [*table, "", ("Cells: mean ± std over samples; ↑ higher is better, ↓ lower is better; "
                         f"mean rank over the metrics (1 = best); {TIES}; ≈ {metric_agreement.NOT_SEPARATING}.")]


def _md_category(summary: Summary, names: list[str]) -> list[str]:
    rows = [[inert(method), *(_md_cell(_stats(summary, method, n)) for n in names)] for method in summary["methods"]]
    return md_table(["method", *(_md_metric_header(summary, n) for n in names)], rows)


def _md_cell(stats: dict[str, Any] | None) -> str:
    """ "mean [lo, hi]", noting how many samples gave no finite value."""
    if stats is None or not math.isfinite(as_float(stats.get("mean"))):
        return MISSING
    undefined = f" ({stats['nan']} NaN)" if stats.get("nan") else ""
    return f"{fmt(stats['mean'])} {interval(stats)}{undefined}"


def _md_skipped(summary: Summary) -> list[str]:
    skipped = summary.get("skipped") or []
    lines = [f"- {md_code(s['method'])} × {md_code(s['metric'])}: {inert(s['reason'])}" for s in skipped]
    return lines or ["Nothing was skipped."]


def _md_heatmaps(heatmaps: Heatmaps, folder: Path) -> list[str]:
    lines: list[str] = []
    for method, paths in heatmaps.items():
        grid = _grid_image(paths)
        images = [grid] if grid is not None else _samples(paths)[:MAX_HEATMAPS]
        lines += [f"![{inert(method)}]({quote(Path(os.path.relpath(p, folder)).as_posix())})" for p in images]
    return lines or ["No heatmaps."]


def _grid_image(paths: list[Path]) -> Path | None:
    """The method's grid.png: listed among its heatmaps or lying beside them."""
    listed = [Path(p) for p in paths if Path(p).name == GRID_FILE]
    candidates = listed + [Path(p).parent / GRID_FILE for p in paths[:1]]
    return next((p for p in candidates if p.is_file()), None)


def _samples(paths: list[Path]) -> list[Path]:
    """The per-sample heatmaps (everything but a grid)."""
    return [Path(p) for p in paths if Path(p).name != GRID_FILE]


# --- html -------------------------------------------------------------------------------------------------

def write_html(summary: Summary, path: Path, heatmaps: Heatmaps) -> Path:
    """Write report.html, one self-contained page (inline CSS, images as data URIs, no script).

    Sections: header facts, ranking table, bar charts per category, curves, heatmaps, skipped pairs and
    a glossary of the metrics.

    Args:
        summary: the run summary (metrics.json).
        path: the file to write (atomically).
        heatmaps: method -> its per-sample heatmap PNGs (a ``grid.png`` among them is ignored); the first
            ``MAX_HEATMAPS`` of each method are shown, one row per method, one sample per column.

    Returns:
        ``path``.
    """
    colors = charts.method_colors(summary["methods"])
    sections = [_html_facts(summary), _html_ranking(summary, colors),
                _section("agreement", "Metric agreement", metric_agreement.html_section_body(metric_agreement.agreement(summary))),
                _html_charts(summary, colors),
                _html_curves(summary, colors), _html_heatmaps(heatmaps, colors), _html_skipped(summary),
                _html_glossary(summary)]
    links = [("ranking", "Ranking"), ("agreement", "Agreement"), ("charts", "Metrics"), ("curves", "Curves"), ("heatmaps", "Heatmaps"),
             ("skipped", "Skipped"), ("glossary", "Glossary")]
    nav = "".join(f'<a href="#{key}">{label}</a>' for key, label in links)
    page = ('<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(summary['title'])}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<nav><div>{nav}</div></nav>\n<main>\n" + "\n".join(sections) + "\n</main>\n</body>\n</html>\n")
    write_atomic(Path(path), page)
    return Path(path)


WIDE = 8  # with more metrics than this the ranking lists metrics as rows


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}">\n<h2>{_esc(title)}</h2>\n{body}\n</section>'


def _table(head: list[str], rows: list[str], cls: str = "") -> str:
    """A framed table from header labels (HTML) and ready ``<tr>`` rows, scrolling inside its frame
    with the header in view."""
    header = "".join(cell if cell.startswith("<th") else f"<th>{cell}</th>" for cell in head)
    return (f'<div class="frame scroll"><table class="{cls}"><thead><tr>{header}</tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table></div>")


def _swatch(method: str, colors: dict[str, str]) -> str:
    color = colors.get(method, "#999")
    return f'<span class="swatch" style="background:{color}"></span>{_esc(method)}'


def _html_facts(summary: Summary) -> str:
    model, data = summary["model"], summary["data"]
    sha = _esc(str(model.get("sha256", ""))[:12])
    versions = " · ".join(f"{_esc(k)} {_esc(v)}" for k, v in summary.get("versions", {}).items())
    facts = [("Model", f"<code>{_esc(model['path'])}</code> · sha256 <code>{sha}</code>"),
             ("Data", f"{_esc(data['name'])} · {_esc(data['split'])} · {_esc(data['samples'])} samples"),
             ("Methods", _esc(", ".join(summary["methods"]))), ("Seed", _esc(summary["seed"])),
             ("Created", _esc(summary["created"])), ("Versions", versions)]
    rows = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    meta = _esc(json.dumps(model.get("meta", {}), indent=2, default=str))
    return (f"<h1>{_esc(summary['title'])}</h1>\n<section id=\"run\"><dl class=\"facts\">{rows}</dl>"
            f"<details><summary>Model metadata</summary><pre>{meta}</pre></details></section>")


def _html_ranking(summary: Summary, colors: dict[str, str]) -> str:
    names = list(summary["metrics"])
    rows = ranking_order(summary)
    best = {n: min((r["ranks"][n] for r in rows if n in r["ranks"]), default=None) for n in names}
    if len(names) > WIDE:
        table = _ranking_by_metric(summary, colors, rows, best)
    else:
        head = ["method", '<th class="num">mean rank</th>', *(_metric_th(summary, n) for n in names)]
        body = [f'<tr><td><span class="pos">{position}</span>{_swatch(row["method"], colors)}</td>'
                f'<td class="num">{fmt(row["mean_rank"])}</td>'
                + "".join(_rank_cell(summary, row, n, best[n]) for n in names) + "</tr>"
                for position, row in enumerate(rows, start=1)]
        table = _table(head, body, "ranking")
    note = ('<p class="note">Cells: mean over samples (hover for std, 95% interval and counts), tinted by '
            "rank from green (best) to red (worst); the best value per metric is outlined, every one of "
            "them when several tie. ↑ higher is better, ↓ lower is better. Mean rank: mean of the "
            f"per-metric ranks (1 = best); {_esc(TIES)}; ≈ {_esc(metric_agreement.NOT_SEPARATING)}.</p>")
    return _section("ranking", "Ranking", table + note)


def _ranking_by_metric(summary: Summary, colors: dict[str, str], rows: list[dict[str, Any]],
                       best: dict[str, float | None]) -> str:
    """The ranking with metrics as rows and methods (best first) as columns: fits the page for many
    metrics, where one column per metric would not."""
    head = ["metric", *(f'<th class="num"><span class="pos">{position}</span>{_swatch(row["method"], colors)}</th>'
                        for position, row in enumerate(rows, start=1))]
    mean_rank = ('<tr class="total"><td>mean rank</td>'
                 + "".join(f'<td class="num">{fmt(row["mean_rank"])}</td>' for row in rows) + "</tr>")
    body = [f'<tr><td title="{_esc(info.get("description", ""))}">{_metric_label(name, info, _flag(summary, name))}</td>'
            + "".join(_rank_cell(summary, row, name, best[name]) for row in rows) + "</tr>"
            for name, info in summary["metrics"].items()]
    return _table(head, [mean_rank, *body], "ranking")


def _metric_label(name: str, info: dict[str, Any], flag: str = "") -> str:
    """A metric's name (breakable after underscores), its direction arrow, ``flag`` and its category."""
    return (f'{_esc(name).replace("_", "_<wbr>")}&nbsp;<span class="dir">{arrow(info["higher_is_better"])}'
            f'{flag}</span><span class="cat">{_esc(info["category"])}</span>')


def _metric_th(summary: Summary, name: str) -> str:
    """A metric's column header."""
    info = summary["metrics"][name]
    label = _metric_label(name, info, _flag(summary, name))
    return f'<th class="num" title="{_esc(info.get("description", ""))}">{label}</th>'


def _rank_cell(summary: Summary, row: dict[str, Any], name: str, best: float | None) -> str:
    """One ranking cell: the mean, tinted by the method's rank, outlined when it is the best."""
    stats = _stats(summary, row["method"], name) or {}
    rank = row["ranks"].get(name)
    if rank is None:
        return f'<td class="num muted">{MISSING}</td>'
    ranked = sum(1 for r in summary["ranking"] if name in r["ranks"])
    tip = (f"rank {fmt(rank)} of {ranked} · {mean_std(stats)} · 95% {interval(stats)} · "
           f"n={stats.get('n', 0)}, NaN={stats.get('nan', 0)}")
    cls = "num cell best" if rank == best else "num cell"
    return (f'<td class="{cls}" style="--tint:{charts.rank_color(rank, ranked)}" title="{_esc(tip)}">'
            f"{fmt(stats.get('mean'))}</td>")


def _legend(summary: Summary, colors: dict[str, str]) -> str:
    items = "".join(f"<span>{_swatch(m, colors)}</span>" for m in summary["methods"])
    return f'<div class="legend">{items}</div>'


def _html_charts(summary: Summary, colors: dict[str, str]) -> str:
    parts = [f'<h3>{_esc(category)}</h3>\n<img class="chart" alt="{_esc(category)} metrics" '
             f'src="{charts.category_chart(summary, names, colors)}">'
             for category, names in categories(summary).items()]
    note = ('<p class="note">Bars: mean over samples; whiskers: 95% interval; n/a: no value. '
            "↑ higher is better, ↓ lower is better.</p>")
    return _section("charts", "Metrics by category", _legend(summary, colors) + "\n".join(parts) + note)


def _html_curves(summary: Summary, colors: dict[str, str]) -> str:
    names = [n for n in summary["metrics"]
             if any((_stats(summary, m, n) or {}).get("curve") for m in summary["methods"])]
    images = "".join(f'<img class="chart" alt="{_esc(name)} curve" '
                     f'src="{charts.curve_chart(summary, name, colors)}">' for name in names)
    if not names:
        return _section("curves", "Curves", '<p class="muted">No metric has a curve.</p>')
    note = ('<p class="note">Left: every method\'s mean curve over the samples (its own colour, line style '
            "and marker); right: a panel per method with its 95% percentile-bootstrap band of the mean, "
            "which stays inside the metric's range (grey: the other methods' means).</p>")
    return _section("curves", "Curves", f'<div class="curves">{images}</div>{note}')


def _html_heatmaps(heatmaps: Heatmaps, colors: dict[str, str]) -> str:
    """A block per method with its first samples as large tiles, the same samples in the same order in
    every block (matched by file name); printed, each block is kept on one page, and with more than
    ``PRINT_SHARED`` methods each starts a page of its own."""
    shown = {method: _samples(paths)[:MAX_HEATMAPS] for method, paths in heatmaps.items()}
    stems = list(dict.fromkeys(p.stem for paths in shown.values() for p in paths))[:MAX_HEATMAPS]
    if not stems:
        return _section("heatmaps", "Heatmaps", '<p class="muted">No heatmaps.</p>')
    blocks = []
    for method, paths in shown.items():
        by_stem = {p.stem: p for p in paths}
        tiles = "".join(_heatmap_tile(method, s, by_stem.get(s)) for s in stems)
        blocks.append(f'<div class="heatmap-method"><h3>{_swatch(method, colors)}</h3>'
                      f'<div class="tiles">{tiles}</div></div>')
    paged = len(shown) > PRINT_SHARED
    note = (f'<p class="note">The first {len(stems)} samples of each method, in the same order for every '
            f"method{'; printed, each method starts a page' if paged else ''}.</p>")
    body = f'<div class="{"paged" if paged else "shared"}">{"".join(blocks)}</div>'
    return _section("heatmaps", "Heatmaps", note + body)


def _heatmap_tile(method: str, stem: str, path: Path | None) -> str:
    if path is None:
        return f'<figure class="muted">{MISSING}<figcaption>{_esc(stem)}: none</figcaption></figure>'
    return (f'<figure><img alt="{_esc(method)} {_esc(stem)}" src="{charts.png_uri(path.read_bytes())}">'
            f"<figcaption>{_esc(stem)}</figcaption></figure>")


def _html_skipped(summary: Summary) -> str:
    skipped = summary.get("skipped") or []
    if not skipped:
        return _section("skipped", "Skipped", '<p class="muted">Nothing was skipped.</p>')
    rows = [f"<tr><td>{_esc(s['method'])}</td><td>{_esc(s['metric'])}</td><td>{_esc(s['reason'])}</td></tr>"
            for s in skipped]
    return _section("skipped", "Skipped", _table(["method", "metric", "reason"], rows))


def _html_glossary(summary: Summary) -> str:
    rows = []
    for name, info in summary["metrics"].items():
        direction = "↑ higher is better" if info["higher_is_better"] else "↓ lower is better"
        params = " ".join(f"<code>{_esc(k)}={_esc(v)}</code>" for k, v in (info.get("params") or {}).items())
        rows.append(f"<tr><td><b>{_esc(name)}</b></td><td>{_esc(info['category'])}</td><td>{direction}</td>"
                    f"<td>{_esc(info.get('description', ''))}</td><td>{params or MISSING}</td></tr>")
    head = ["metric", "category", "direction", "description", "parameters"]
    return _section("glossary", "Glossary", _table(head, rows))


# --- files ------------------------------------------------------------------------------------------------

def write_atomic(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to a temporary file beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_reports(summary: Summary, run_dir: Path, heatmaps: Heatmaps) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``run_dir``, each atomically.

    Args:
        summary: the run summary (metrics.json).
        run_dir: the run directory; markdown image links are relative to it.
        heatmaps: method -> its heatmap PNGs (see ``write_html`` and ``write_markdown``).

    Returns:
        (markdown path, html path).
    """
    run_dir = Path(run_dir)
    return (write_markdown(summary, run_dir / MARKDOWN_FILE, heatmaps),
            write_html(summary, run_dir / HTML_FILE, heatmaps))
