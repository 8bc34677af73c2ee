"""The concept report of ``xaibench concepts``: ``report.html`` (self-contained) and ``report.md``.

Both are pure functions of the run summary and the figure PNGs already on disk. report.html has inline
CSS and the figures as data URIs (no script, nothing fetched), like the comparison report whose style
sheet it shares; report.md links the figures by relative path.

The summary keys read here (all required):
  model, layer, class, method, mode, importance  str (model: the model file's path; class: its name or
                                                  index; importance: the IMPORTANCES estimator's name)
  n_concepts, images, rows, seed                  int (rows: the activation rows factorised)
  versions                                        name -> version (python, torch, captum, xaibench)
  seconds                                         float, the run's wall time
  global_importance                               list of n_concepts floats
  metrics       name -> {"value": float | None, "higher_is_better": bool, "description": str,
                "ci95": [lo, hi] | None}
  clusters      ``cluster_graph``'s stats: one {"concept", "images", "prevalence", "reliability"} per
                concept
``figures`` maps names in ``FIGURES`` to PNG paths; a figure that is not given is said to be missing.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from xaibench.core.errors import InputError
from xaibench.report.charts import CSS, MISSING, arrow, fmt, interval, png_uri
from xaibench.report.clusters import embedding_name
from xaibench.report.comparison import write_atomic
from xaibench.report.concepts import concept_colors, importance_order
from xaibench.report.markdown import table as md_table
from xaibench.report.style import concept_label

HTML_FILE, MARKDOWN_FILE = "report.html", "report.md"
FIGURES = {  # name -> (section title, what the figure shows)
    "importance": ("Concept importance", ("Global importance of each concept for the class, its value printed "
                                          "at each bar; the axis is logarithmic (symmetric-logarithmic "
                                          "when a value is not positive) so that every bar shows.")),
    "montage": ("Concepts", "Each concept's most activating crops, rows by decreasing importance."),
    "maps": ("Concept maps", "Where each image's top concepts lie, in the concepts' colours."),
    "clusters": ("Strategic cluster graph", (
        "Each image's concept-importance vector embedded in 2-D ({embedding}), coloured by its most "
        "important concept. Prevalence: share of images whose top concept it is; reliability: the model's "
        "accuracy on them.")),
}
EXTRA_CSS = ("figure { margin: 0; } figure img { display: block; max-width: 100%; height: auto; }\n"
             "figure + .frame { margin-top: 14px; } section .frame { overflow: auto; }\n")
Summary = dict[str, Any]


def write_concept_report(out_dir: Path, summary: Summary, figures: dict[str, Path]) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``out_dir``, each atomically.

    Args:
        out_dir: the run directory; markdown image links are relative to it.
        summary: the keys listed in this module's docstring.
        figures: figure name (a key of ``FIGURES``) -> its PNG.

    Returns:
        (html path, markdown path).

    Raises:
        InputError: a figure name that is not in ``FIGURES``.
    """
    unknown = sorted(set(figures) - set(FIGURES))
    if unknown:
        raise InputError(f"unknown concept report figure(s) {', '.join(unknown)}; "
                         f"known: {', '.join(FIGURES)}")
    out_dir = Path(out_dir)
    page, md = out_dir / HTML_FILE, out_dir / MARKDOWN_FILE
    write_atomic(page, html_page(summary, {n: Path(p) for n, p in figures.items()}))
    write_atomic(md, markdown(summary, {n: Path(p) for n, p in figures.items()}, out_dir))
    return page, md


def title(summary: Summary) -> str:
    """The report's title: the model's name (its file's stem) and the class."""
    return f"Concepts of class {summary['class']} in {Path(str(summary['model'])).stem}"


def facts(summary: Summary) -> list[tuple[str, str]]:
    """(label, plain text) of the run's overview."""
    versions = ", ".join(f"{name} {version}" for name, version in summary["versions"].items())
    return [("Model", str(summary["model"])), ("Layer", str(summary["layer"])),
            ("Class", str(summary["class"])), ("Decomposition", str(summary["method"])),
            ("Mode", str(summary["mode"])), ("Importance", str(summary["importance"])),
            ("Concepts", str(summary["n_concepts"])),
            ("Data", f"{summary['images']} images, {summary['rows']} activation rows"),
            ("Seed", str(summary["seed"])), ("Versions", versions), ("Time", f"{fmt(summary['seconds'])} s")]


def caption(summary: Summary, name: str, drawn: bool) -> str:
    """What figure ``name`` shows or, for a cluster graph left out, why it was not drawn."""
    text = FIGURES[name][1]
    if name != "clusters":
        return text
    tops = [s for s in summary["clusters"] if s["images"]]
    if len(tops) > 1:
        return text.format(embedding=embedding_name(summary["images"]))
    shared = (f"{concept_label(tops[0]['concept'])} is the most important concept of all {tops[0]['images']} "
              f"images (reliability {_share(tops[0]['reliability'])}: the model's accuracy on them)")
    if drawn:
        return (f"{shared[0].upper()}{shared[1:]}, so the graph colours each image by the first importance rank "
                f"at which the images differ (its second concept, say); points embedded in 2-D "
                f"({embedding_name(summary['images'])}).")
    return f"Not drawn: {shared}, and every image ranks the concepts alike, so the graph would show one group."


def _share(value: float | None) -> str:
    return MISSING if value is None else f"{value:.0%}"


def concept_rows(summary: Summary) -> list[tuple[int, list[str]]]:
    """(concept, cells: importance, images, prevalence, reliability) by decreasing global importance."""
    stats = {s["concept"]: s for s in summary["clusters"]}
    importance = summary["global_importance"]
    rows = []
    for concept in importance_order(importance).tolist():
        s = stats.get(concept, {})
        prevalence, reliability = s.get("prevalence"), s.get("reliability")
        rows.append((concept, [fmt(importance[concept]), str(s.get("images", MISSING)), _share(prevalence),
                               _share(reliability)]))
    return rows


CONCEPT_HEAD = ["concept", "global importance", "images", "prevalence", "reliability"]
METRIC_HEAD = ["metric", "value", "95% interval", "direction"]


def _direction(higher_is_better: bool) -> str:
    return f"{arrow(higher_is_better)} {'higher' if higher_is_better else 'lower'} is better"


# --- html -------------------------------------------------------------------------------------------------

def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _section(key: str, heading: str, body: str) -> str:
    return f'<section id="{key}">\n<h2>{_esc(heading)}</h2>\n{body}\n</section>'


def _table(head: list[str], rows: list[list[str]], numeric: range = range(0)) -> str:
    """A framed table of ready HTML cells; the ``numeric`` columns are right-aligned."""
    def cell(tag: str, i: int, value: str) -> str:
        return f'<{tag} class="num">{value}</{tag}>' if i in numeric else f"<{tag}>{value}</{tag}>"

    header = "".join(cell("th", i, _esc(h)) for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="frame"><table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table></div>'


def html_page(summary: Summary, figures: dict[str, Path]) -> str:
    """The whole report.html."""
    colors = concept_colors(summary["global_importance"])
    extra = {"clusters": _html_concepts(summary, colors)}
    sections = [_html_facts(summary),
                *(_html_figure(n, figures.get(n), caption(summary, n, n in figures), extra.get(n, ""))
                  for n in FIGURES),
                _html_metrics(summary), _html_glossary(summary)]
    links = [("importance", "Importance"), ("montage", "Concepts"), ("maps", "Maps"),
             ("clusters", "Clusters"), ("metrics", "Metrics"), ("glossary", "Glossary")]
    nav = "".join(f'<a href="#{key}">{label}</a>' for key, label in links)
    return ('<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(title(summary))}</title>\n<style>{CSS}{EXTRA_CSS}</style>\n</head>\n<body>\n"
            f"<nav><div>{nav}</div></nav>\n<main>\n" + "\n".join(sections) + "\n</main>\n</body>\n</html>\n")


def _html_facts(summary: Summary) -> str:
    rows = "".join(f"<dt>{_esc(label)}</dt><dd>{_esc(value)}</dd>" for label, value in facts(summary))
    return f'<h1>{_esc(title(summary))}</h1>\n<section id="run"><dl class="facts">{rows}</dl></section>'


def _html_figure(name: str, path: Path | None, text: str, extra: str) -> str:
    """A figure's section: the PNG as a data URI and its caption ``text`` (or, missing, a note: ``text``
    when it says why, else that it was not drawn), then ``extra`` HTML."""
    heading = FIGURES[name][0]
    if path is None:
        note = text if text.startswith("Not drawn") else "Not drawn in this run."
        return _section(name, heading, f'<p class="muted">{_esc(note)}</p>{extra}')
    return _section(name, heading, f'<figure><img alt="{_esc(name)}" src="{png_uri(path.read_bytes())}">'
                                   f'<figcaption class="note">{_esc(text)}</figcaption></figure>{extra}')


def _html_concepts(summary: Summary, colors: list[str]) -> str:
    rows = [[f'<span class="swatch" style="background:{colors[c]}"></span>{concept_label(c)}', *map(_esc, cells)]
            for c, cells in concept_rows(summary)]
    note = '<p class="note">Concepts by decreasing global importance.</p>'
    return _table(CONCEPT_HEAD, rows, range(1, 5)) + note


def _html_metrics(summary: Summary) -> str:
    rows = [[f'<span title="{_esc(info.get("description", ""))}">{_esc(name)}</span>',
             _esc(fmt(info["value"])), _esc(interval(info)), _esc(_direction(info["higher_is_better"]))]
            for name, info in summary["metrics"].items()]
    if not rows:
        return _section("metrics", "Metrics", '<p class="muted">No metric was computed.</p>')
    return _section("metrics", "Metrics", _table(METRIC_HEAD, rows, range(1, 3)))


def _html_glossary(summary: Summary) -> str:
    rows = [[f"<b>{_esc(name)}</b>", _esc(_direction(info["higher_is_better"])),
             _esc(info.get("description", ""))] for name, info in summary["metrics"].items()]
    return _section("glossary", "Glossary", _table(["metric", "direction", "description"], rows))


# --- markdown ---------------------------------------------------------------------------------------------

def _md_text(text: str) -> str:
    """``text`` with ``<`` and ``&`` backslash-escaped, so that a name such as "<b>" is not read as HTML."""
    return text.replace("<", "\\<").replace("&", "\\&")


def markdown(summary: Summary, figures: dict[str, Path], folder: Path) -> str:
    """The whole report.md; figure links relative to ``folder``."""
    lines = [f"# {_md_text(title(summary))}", "",
             *(f"- {label}: {_md_text(value)}" for label, value in facts(summary))]
    for name, (heading, _) in FIGURES.items():
        path, text = figures.get(name), caption(summary, name, name in figures)
        link = f"![{name}]({quote(Path(os.path.relpath(path, folder)).as_posix())})" if path else "Not drawn."
        shown = [_md_text(text)] if text.startswith("Not drawn") else [link, "", _md_text(text)]
        lines += ["", f"## {heading}", "", *shown]
        if name == "clusters":
            rows = [[concept_label(c), *cells] for c, cells in concept_rows(summary)]
            lines += ["", *md_table(CONCEPT_HEAD, rows)]
    metrics = summary["metrics"].items()
    rows = [[name, fmt(info["value"]), interval(info), _direction(info["higher_is_better"])]
            for name, info in metrics]
    lines += ["", "## Metrics", "", *md_table(METRIC_HEAD, rows)]
    lines += ["", "## Glossary", "", *(f"- `{name}` ({_direction(info['higher_is_better'])}): "
                                       f"{info.get('description', '')}" for name, info in metrics)]
    return "\n".join(lines) + "\n"
