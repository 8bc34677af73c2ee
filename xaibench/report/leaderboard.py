"""The leaderboard of a benchmark suite: per model, the methods ranked under each metric with paired
significance, each metric's reliability from the meta-evaluation, and the metrics' agreement.

Per model and metric the best method is the one with the best mean; every other method is compared with it
on the samples both scored (two-sided Wilcoxon signed-rank test, zero differences split), and the p-values
of all comparisons of one model are Holm-corrected together. A method is marked worse when its corrected
p-value is below ``ALPHA``. A metric counts as reliable on a model when its meta-consistency (MC) exceeds
``RELIABLE_MC`` (a metric that ignores the attribution scores 0.5: resilience 1, reactivity 0) and it
separates the methods (``metric_agreement.separates``).

Pure functions of the cells' summaries (an evaluate run's metrics.json, a meta-evaluate run's
meta_evaluation.json); report.html is self-contained.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from xaibench.report import charts, metric_agreement
from xaibench.report.charts import CSS, MISSING, arrow, as_float, fmt
from xaibench.report.comparison import rank_methods, write_atomic
from xaibench.report.markdown import inert
from xaibench.report.markdown import table as md_table

ALPHA = 0.05
RELIABLE_MC = 0.6
FILES = ("leaderboard.json", "leaderboard.md", "leaderboard.html")


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: the i-th smallest p times (m - i), made monotone, capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for position, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - position) * p_values[index]))
        adjusted[index] = running
    return adjusted


def paired_p(first: list[Any], second: list[Any]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value over the samples with a finite value in both (1.0 when all
    differences are zero); None with fewer than two such samples."""
    import warnings

    from scipy.stats import wilcoxon

    pairs = [(as_float(a), as_float(b)) for a, b in zip(first, second, strict=True)]
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 2:
        return None
    if all(a == b for a, b in pairs):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(wilcoxon([a for a, _ in pairs], [b for _, b in pairs], zero_method="zsplit").pvalue)


def model_board(name: str, evaluate: dict[str, Any], meta: dict[str, Any] | None) -> dict[str, Any]:
    """One model's part of the leaderboard."""
    results, metrics = evaluate["results"], evaluate["metrics"]
    ranking = rank_methods(results, metrics)
    ranks = {row["method"]: row["ranks"] for row in ranking}
    rows, tests = [], []
    for metric, info in metrics.items():
        scored = [m for m in evaluate["methods"] if metric in ranks.get(m, {})]
        best = min(scored, key=lambda m: (ranks[m][metric], m)) if scored else None
        entries = []
        for method in scored:
            stats = results[method][metric]
            entry = {"method": method, "mean": stats.get("mean"), "ci95": stats.get("ci95"),
                     "rank": ranks[method][metric], "p_holm": None, "worse": False}
            if method != best:
                p = paired_p(stats.get("values") or [], results[best][metric].get("values") or [])
                if p is not None:
                    tests.append((entry, p))
            entries.append(entry)
        scores = (meta or {}).get("scores", {}).get(metric) or {}
        rows.append({"metric": metric, "higher_is_better": bool(info["higher_is_better"]),
                     "category": info.get("category"), "mc": scores.get("mc"),
                     "resilience": scores.get("resilience"), "reactivity": scores.get("reactivity"),
                     "separates": metric_agreement.separates(results, metric), "best": best,
                     "ranking": sorted(entries, key=lambda e: (e["rank"], e["method"]))})
    for (entry, _), adjusted in zip(tests, holm([p for _, p in tests]), strict=True):
        entry["p_holm"], entry["worse"] = adjusted, adjusted < ALPHA
    reliable = sorted((r for r in rows if r["mc"] is not None and r["mc"] > RELIABLE_MC and r["separates"]),
                      key=lambda r: -r["mc"])
    return {"name": name, "title": evaluate.get("title"), "methods": evaluate["methods"], "metrics": rows,
            "reliable": [{"metric": r["metric"], "mc": r["mc"], "best": r["best"]} for r in reliable],
            "agreement": metric_agreement.agreement({**evaluate, "ranking": ranking})}


def leaderboard(suite: str, cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole leaderboard from the cells' ``{"name", "evaluate", "meta"}``."""
    return {"suite": suite, "alpha": ALPHA, "reliable_mc": RELIABLE_MC,
            "models": [model_board(c["name"], c["evaluate"], c["meta"]) for c in cells]}


# --- markdown and html --------------------------------------------------------------------------------------

def verdict(board: dict[str, Any]) -> str:
    """One sentence: the reliable metrics on this model and the best method under each."""
    if not board["reliable"]:
        return "No metric is reliable here (MC above the threshold and separating the methods)."
    parts = [f"{r['metric']} (MC {r['mc']:.2f}: best {r['best']})" for r in board["reliable"]]
    return "Reliable here: " + "; ".join(parts) + "."


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return MISSING
    mark = " †" if entry["worse"] else ""
    return f"{fmt(entry['mean'])} ({fmt(entry['rank'])}){mark}"


def _metric_label(row: dict[str, Any]) -> str:
    return f"{row['metric']} {arrow(row['higher_is_better'])}{' ≈' if row['separates'] is False else ''}"


LEGEND = (f"Cells: mean (rank, 1 = best); † significantly worse than the metric's best method (paired Wilcoxon, "
          f"Holm-corrected over the model's comparisons, p < {ALPHA}); ≈ {metric_agreement.NOT_SEPARATING}; "
          f"MC: the metric's meta-consistency on this model (1 = reliable; an attribution-blind metric scores 0.5).")


def markdown(board: dict[str, Any]) -> str:
    lines = [f"# Leaderboard: {inert(board['suite'])}", "", inert(LEGEND)]
    for model in board["models"]:
        by_method = {m: {} for m in model["methods"]}
        for row in model["metrics"]:
            for entry in row["ranking"]:
                by_method[entry["method"]][row["metric"]] = entry
        rows = [[inert(_metric_label(row)), fmt(row["mc"]),
                 *(_cell(by_method[m].get(row["metric"])) for m in model["methods"])] for row in model["metrics"]]
        lines += ["", f"## {inert(model['name'])}", "", inert(model["title"] or ""), "", inert(verdict(model)), "",
                  *md_table(["metric", "MC", *map(inert, model["methods"])], rows), "", "Metric agreement:", "",
                  *metric_agreement.markdown_lines(model["agreement"])]
    return "\n".join(lines) + "\n"


def page(board: dict[str, Any]) -> str:
    esc = html.escape
    sections = []
    for model in board["models"]:
        head = "".join(f"<th>{esc(h)}</th>" for h in ["metric", "MC", *model["methods"]])
        body = []
        for row in model["metrics"]:
            ranked = len(row["ranking"])
            cells = {e["method"]: e for e in row["ranking"]}
            top = min((e["rank"] for e in row["ranking"]), default=None)
            tds = "".join(
                f'<td class="num cell{" best" if e["rank"] == top else ""}" style="--tint:{charts.rank_color(e["rank"], ranked)}"'
                f' title="p (Holm) vs best: {fmt(e["p_holm"])}">{esc(_cell(e))}</td>' if (e := cells.get(m)) else
                f'<td class="num muted">{MISSING}</td>' for m in model["methods"])
            body.append(f"<tr><td>{esc(_metric_label(row))}</td><td class=\"num\">{esc(fmt(row['mc']))}</td>{tds}</tr>")
        sections.append(
            f'<section id="{esc(model["name"])}"><h2>{esc(model["name"])}</h2><p>{esc(model["title"] or "")}</p>'
            f"<p><b>{esc(verdict(model))}</b></p>"
            f'<div class="frame scroll"><table class="ranking"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div><h3>Metric agreement</h3>"
            f"{metric_agreement.html_section_body(model['agreement'])}</section>")
    return ('<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>Leaderboard: {esc(board['suite'])}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>Leaderboard: {esc(board['suite'])}</h1>\n<p class=\"note\">{esc(LEGEND)}</p>\n"
            + "\n".join(sections) + "\n</main>\n</body>\n</html>\n")


def write_leaderboard(board: dict[str, Any], folder: Path) -> list[Path]:
    """leaderboard.json, .md and .html in ``folder``, each written atomically."""
    paths = [Path(folder) / name for name in FILES]
    write_atomic(paths[0], json.dumps(board, indent=1) + "\n")
    write_atomic(paths[1], markdown(board))
    write_atomic(paths[2], page(board))
    return paths
