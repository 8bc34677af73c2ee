"""Reports of a meta-evaluate run: the metrics ranked by how far they can be trusted on the model.

Pure functions of the run summary (meta_evaluation.json); report.html is self-contained (inline CSS and a
chart as a data URI, no script).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from xaibench.report import charts
from xaibench.report.charts import CSS, MISSING, arrow
from xaibench.report.comparison import write_atomic
from xaibench.report.markdown import inert
from xaibench.report.markdown import table as md_table

Summary = dict[str, Any]
PARTS = ("IAC_NR", "IAC_AR", "IEC_NR", "IEC_AR")
EXPLAINED = (
    "Each metric is scored on explanations of the model and of perturbed copies (MetaQuantus, Hedström et al. "
    "2023). Resilience: minor noise that keeps the predictions (weights x N(1, {model_resilience}^2), inputs + "
    "U(±{input_resilience})) should not move the scores (IAC_NR: Wilcoxon p-value between the scores before and "
    "after; IEC_NR: share of the methods' per-sample order kept). Reactivity: disruptive noise that changes "
    "the predictions (weights x N(1, {model_adversary}^2), inputs + U(±{input_adversary})) should make them "
    "worse (IAC_AR: 1 - p; IEC_AR: share of scores that got worse). MC: the mean of the four, per perturbation "
    "type, then over model and input; 1 is ideal. {perturbations} draws per test; only samples whose "
    "prediction the draw kept (resilience) or changed (adversary) count."
)


def _num(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f}"


def rows(summary: Summary) -> list[list[str]]:
    """One row per metric in ranking order: name, MC, resilience, reactivity, then MC and its four parts
    for the model and the input tests."""
    out = []
    for name in summary["ranking"]:
        scores = summary["scores"][name]
        cells = [_num(scores["mc"]), _num(scores["resilience"]), _num(scores["reactivity"])]
        for kind in ("model", "input"):
            cells += [_num(scores[kind]["MC"]), *(_num(scores[kind][p]) for p in PARTS)]
        out.append([f"{name} {arrow(summary['metrics'][name]['higher_is_better'])}", *cells])
    return out


HEADER = ["metric", "MC", "resilience", "reactivity",
          *(f"{kind} {part}" for kind in ("model", "input") for part in ("MC", *PARTS))]


def markdown(summary: Summary) -> str:
    """report.md: the facts, the table of metrics best first, and how to read it."""
    lines = [f"# Meta-evaluation: {inert(summary['title'])}", "",
             f"- methods: {inert(', '.join(summary['methods']))}", f"- seed {inert(summary['seed'])}", "",
             *md_table(HEADER, [[inert(r[0]), *r[1:]] for r in rows(summary)]), "",
             inert(EXPLAINED.format(**summary["perturbations"]))]
    skipped = summary.get("skipped") or []
    if skipped:
        lines += ["", "Skipped: " + "; ".join(inert(f"{s['metric']}: {s['reason']}") for s in skipped)]
    return "\n".join(lines) + "\n"


def resilience_chart(summary: Summary) -> str:
    """Resilience against reactivity, one labelled point per metric (top right is reliable)."""
    fig = charts.chart_figure(5.0, 4.0)
    ax = fig.add_subplot()
    for name in summary["ranking"]:
        scores = summary["scores"][name]
        if scores["resilience"] is None or scores["reactivity"] is None:
            continue
        ax.scatter(scores["resilience"], scores["reactivity"], color="#1f4e79", s=28, zorder=3)
        ax.annotate(name, (scores["resilience"], scores["reactivity"]), xytext=(4, 3),
                    textcoords="offset points", fontsize=8)
    ax.set(xlim=(-0.02, 1.05), ylim=(-0.02, 1.05), xlabel="resilience (noise leaves the scores)",
           ylabel="reactivity (disruption worsens them)")
    ax.grid(alpha=0.3)
    charts.tidy_axes(ax)
    return charts.figure_uri(fig)


def page(summary: Summary) -> str:
    """report.html: header, the table, the resilience / reactivity chart and the explanation."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f'<td class="{"num" if i else ""}">{esc(c)}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows(summary))
    text = esc(EXPLAINED.format(**summary["perturbations"]))
    return ('<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>Meta-evaluation: {esc(summary['title'])}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>Meta-evaluation: {esc(summary['title'])}</h1>\n"
            f"<p>Methods: {esc(', '.join(summary['methods']))} · seed {esc(str(summary['seed']))}</p>\n"
            f'<div class="frame scroll"><table class="ranking"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>\n"
            f'<img class="chart" alt="resilience against reactivity" src="{resilience_chart(summary)}">\n'
            f'<p class="note">{text}</p>\n</main>\n</body>\n</html>\n')


def write_meta_reports(summary: Summary, run_dir: Path) -> tuple[Path, Path]:
    """Write report.md and report.html into ``run_dir``, each atomically."""
    md, page_path = Path(run_dir) / "report.md", Path(run_dir) / "report.html"
    write_atomic(md, markdown(summary))
    write_atomic(page_path, page(summary))
    return md, page_path
