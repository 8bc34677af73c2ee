"""Comparison reports: exact ranks by hand, a self-contained HTML page, markdown tables, both files."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xaibench.report.comparison import (
    fmt,
    rank_methods,
    write_html,
    write_markdown,
    write_reports,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METHODS = ["saliency", "integrated_gradients", "occlusion"]
# name: (category, higher_is_better, curve label)
METRICS = {
    "deletion": ("faithfulness", False, "fraction of features removed"),
    "insertion": ("faithfulness", True, "fraction of features inserted"),
    "max_sensitivity": ("robustness", False, None),
    "local_lipschitz": ("robustness", False, None),
    "sparseness": ("complexity", True, None),
}
# method -> metric -> mean; None: undefined for every sample
MEANS: dict[str, dict[str, float | None]] = {
    "saliency": {"deletion": 0.30, "insertion": 0.60, "max_sensitivity": 0.20, "local_lipschitz": 1.5,
                 "sparseness": 0.40},
    "integrated_gradients": {"deletion": 0.10, "insertion": 0.80, "max_sensitivity": 0.20,
                             "local_lipschitz": None, "sparseness": 0.50},
    "occlusion": {"deletion": 0.20, "insertion": 0.70, "max_sensitivity": 0.05, "local_lipschitz": 2.5,
                  "sparseness": 0.30},
}


def stats(mean: float | None, curve: bool) -> dict[str, Any]:
    """Statistics of one (method, metric) pair around ``mean``, with a curve when asked."""
    if mean is None:
        return {"mean": None, "std": None, "ci95": [None, None], "n": 0, "nan": 8, "values": [None] * 8,
                "seconds": 0.1, "curve": None}
    x = np.linspace(0.0, 1.0, 11)
    mid = mean + (1 - x) * 0.5
    return {"mean": mean, "std": 0.05, "ci95": [mean - 0.02, mean + 0.03], "n": 8, "nan": 0,
            "values": [mean] * 8, "seconds": 0.2,
            "curve": {"x": x.tolist(), "mean": mid.tolist(), "low": (mid - 0.05).tolist(),
                      "high": (mid + 0.05).tolist()} if curve else None}


def synthetic_summary() -> dict[str, Any]:
    """3 methods, 5 metrics in 3 categories, 2 of them with curves, one null mean, one skipped pair."""
    metrics = {name: {"category": category, "higher_is_better": higher,
                      "description": f"what {name} measures",
                      "params": {"substrate": "zero"} if curve else {}, "curve_label": curve}
               for name, (category, higher, curve) in METRICS.items()}
    results = {m: {name: stats(mean, METRICS[name][2] is not None) for name, mean in MEANS[m].items()}
               for m in METHODS}
    del results["occlusion"]["sparseness"]
    return {
        "title": "shapes_cnn · shapes:test · 8 samples",
        "model": {"path": "models/shapes_cnn.pt", "sha256": "ab" * 32, "meta": {"modality": "image"}},
        "data": {"name": "shapes", "split": "test", "samples": 8, "indices": list(range(8))},
        "methods": METHODS, "metrics": metrics, "results": results,
        "ranking": rank_methods(results, metrics),
        "skipped": [{"method": "occlusion", "metric": "sparseness", "reason": "too slow | on purpose"}],
        "seed": 0, "created": "2024-01-01T00:00:00+00:00",
        "versions": {"python": "3.11", "xaibench": "0.1.0"},
    }


def dummy_png(path: Path, value: float) -> Path:
    """A tiny real PNG drawn with matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(0.4, 0.3), dpi=50)
    FigureCanvasAgg(fig)
    fig.add_subplot().imshow(np.full((4, 4), value), vmin=0, vmax=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


@pytest.fixture(scope="module")
def heatmaps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """saliency: 7 samples and a grid (only 6 shown); the others: 2 samples each, occlusion's listed in
    reverse order (columns still match samples by name)."""
    root = tmp_path_factory.mktemp("run") / "heatmaps"
    counts = {"saliency": 7, "integrated_gradients": 2, "occlusion": 2}
    maps = {m: [dummy_png(root / m / f"sample_{i:04d}.png", i / 7) for i in range(n)]
            for m, n in counts.items()}
    maps["saliency"].append(dummy_png(root / "saliency" / "grid.png", 0.5))
    maps["occlusion"].reverse()
    return maps


@pytest.fixture(scope="module")
def page(heatmaps: dict[str, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_html(synthetic_summary(), tmp_path_factory.mktemp("html") / "report.html", heatmaps)
    return path.read_text(encoding="utf-8")


# --- ranking ----------------------------------------------------------------------------------------------

def test_ranks_respect_direction_share_ties_and_skip_nulls() -> None:
    results = {
        "a": {"up": {"mean": 0.9}, "down": {"mean": 0.3}, "flat": {"mean": 0.2}},
        "b": {"up": {"mean": 0.5}, "down": {"mean": 0.1}, "flat": {"mean": 0.2}},
        "c": {"up": {"mean": 0.5}, "down": {"mean": None}, "flat": {"mean": 0.2}},
    }
    metrics = {"up": {"higher_is_better": True}, "down": {"higher_is_better": False},
               "flat": {"higher_is_better": True}}
    ranking = rank_methods(results, metrics)
    assert [row["method"] for row in ranking] == ["a", "b", "c"]
    by_method = {row["method"]: row for row in ranking}
    assert by_method["a"]["ranks"] == {"up": 1.0, "down": 2.0, "flat": 2.0}
    assert by_method["b"]["ranks"] == {"up": 2.5, "down": 1.0, "flat": 2.0}
    assert by_method["c"]["ranks"] == {"up": 2.5, "flat": 2.0}  # null mean: no rank for "down"
    assert by_method["a"]["mean_rank"] == pytest.approx(5 / 3)
    assert by_method["b"]["mean_rank"] == pytest.approx(5.5 / 3)
    assert by_method["c"]["mean_rank"] == pytest.approx(2.25)


def test_equal_mean_ranks_are_ordered_by_name_and_unranked_methods_come_last() -> None:
    results = {"z": {"m": {"mean": 2.0}, "n": {"mean": 1.0}}, "q": {"m": None, "n": {"mean": float("nan")}},
               "p": {"m": {"mean": 1.0}, "n": {"mean": 2.0}}}
    metrics = {"m": {"higher_is_better": True}, "n": {"higher_is_better": True}}
    ranking = rank_methods(results, metrics)
    assert [(row["method"], row["mean_rank"]) for row in ranking] == [("p", 1.5), ("z", 1.5), ("q", None)]
    assert ranking[2]["ranks"] == {}


def test_numbers_have_three_significant_digits_and_missing_values_a_dash() -> None:
    assert [fmt(v) for v in (0.123456, 12.345, 1234.5, 123456.0, 0.000123, 0.0, -2.5)] == [
        "0.123", "12.3", "1234", "1.23e+05", "0.000123", "0", "-2.5"]
    assert fmt(None) == fmt(float("nan")) == fmt(float("inf")) == "—"


def test_importing_the_reports_loads_neither_torch_nor_matplotlib() -> None:
    # The package may register torch as a lazy module; torch._C appears only when torch really loads.
    code = ("import sys, xaibench.report.comparison; "
            "assert not {'torch._C', 'matplotlib'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- html -------------------------------------------------------------------------------------------------

def test_html_is_self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<link\b", page, flags=re.I)
    assert not re.search(r"<script\b", page, flags=re.I)
    assert not re.search(r"url\(", page, flags=re.I)  # no fonts or images pulled in from CSS
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_html_embeds_charts_curves_and_at_most_six_heatmaps_per_method(page: str) -> None:
    images = re.findall(r'<img class="chart" alt="([^"]*)"', page)
    assert images == ["faithfulness metrics", "robustness metrics", "complexity metrics",
                      "deletion curve", "insertion curve"]
    shown = re.findall(r'<img alt="(\w+) (sample_\d+)"', page)
    assert shown == [("saliency", f"sample_{i:04d}") for i in range(6)] + [
        (m, f"sample_{i:04d}") for m in ("integrated_gradients", "occlusion") for i in range(2)]
    for uri in re.findall(r'src="data:image/png;base64,([^"]*)"', page):
        assert base64.b64decode(uri)[:8] == PNG_SIGNATURE


def test_html_names_every_method_and_metric(page: str) -> None:
    for name in [*METHODS, *METRICS, "faithfulness", "robustness", "complexity", "too slow | on purpose"]:
        assert name in page, name
    assert "what local_lipschitz measures" in page
    assert "<code>substrate=zero</code>" in page


def test_html_outlines_the_best_value_of_each_metric(page: str) -> None:
    best = re.findall(r'<td class="num cell best"[^>]*>([^<]*)</td>', page)
    # deletion (↓) 0.1, insertion (↑) 0.8, max_sensitivity (↓) 0.05, local_lipschitz (↓) 1.5,
    # sparseness (↑) 0.5
    assert sorted(best) == sorted(["0.1", "0.8", "0.05", "1.5", "0.5"])
    assert page.count('class="num muted">—</td>') == 2  # the null mean and the skipped pair


# --- markdown and files ------------------------------------------------------------------------------------

def test_markdown_tables_and_links(heatmaps: dict[str, list[Path]]) -> None:
    run_dir = heatmaps["saliency"][0].parents[2]
    text = write_markdown(synthetic_summary(), run_dir / "report.md", heatmaps).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "# shapes_cnn · shapes:test · 8 samples"
    assert ("| method | mean rank | deletion ↓ | insertion ↑ | max_sensitivity ↓ | local_lipschitz ↓ "
            "| sparseness ↑ |") in lines
    # integrated_gradients ranks 1, 1, 2.5, -, 1 -> 1.375; occlusion 2, 2, 1, 2, - -> 1.75;
    # saliency 3, 3, 2.5, 1, 2 -> 2.3.
    ranking_rows = [line for line in lines if line.startswith("| ") and " ± " in line]
    assert ranking_rows == [
        "| integrated_gradients | 1.38 | 0.1 ± 0.05 | 0.8 ± 0.05 | 0.2 ± 0.05 | — | 0.5 ± 0.05 |",
        "| occlusion | 1.75 | 0.2 ± 0.05 | 0.7 ± 0.05 | 0.05 ± 0.05 | 2.5 ± 0.05 | — |",
        "| saliency | 2.3 | 0.3 ± 0.05 | 0.6 ± 0.05 | 0.2 ± 0.05 | 1.5 ± 0.05 | 0.4 ± 0.05 |",
    ]
    assert "| method | max_sensitivity ↓ | local_lipschitz ↓ |" in lines
    assert "| integrated_gradients | 0.2 [0.18, 0.23] | — |" in lines
    assert "- `occlusion` × `sparseness`: too slow | on purpose" in lines
    # grid.png where there is one, else the shown samples; paths relative to the report
    assert "![saliency](heatmaps/saliency/grid.png)" in lines
    assert "![occlusion](heatmaps/occlusion/sample_0001.png)" in lines


def test_write_reports_writes_both_files_atomically(heatmaps: dict[str, list[Path]], tmp_path: Path) -> None:
    summary = synthetic_summary()
    (tmp_path / "report.md").write_text("old")
    md, page = write_reports(summary, tmp_path, heatmaps)
    assert (md, page) == (tmp_path / "report.md", tmp_path / "report.html")
    assert md.read_text(encoding="utf-8").startswith("# shapes_cnn")
    assert page.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md"]  # no temp files


def test_many_metrics_turn_the_ranking_into_metric_rows(tmp_path: Path) -> None:
    """With more metrics than fit as columns (comparison.WIDE), each metric is a row and the methods,
    best first, are the columns; the best value per metric stays outlined."""
    summary = synthetic_summary()
    for i in range(6):  # 11 metrics in all
        name = f"extra_{i}"
        summary["metrics"][name] = {"category": "complexity", "higher_is_better": True,
                                    "description": name, "params": {}, "curve_label": None}
        for rank, method in enumerate(METHODS):
            summary["results"][method][name] = stats(float(rank + i), False)
    summary["ranking"] = rank_methods(summary["results"], summary["metrics"])
    text = write_html(summary, tmp_path / "report.html", {}).read_text(encoding="utf-8")
    ranking = text[text.index('<section id="ranking">'):text.index("</section>", text.index('id="ranking"'))]
    header = ranking[ranking.index("<thead>"):ranking.index("</thead>")]
    order = [row["method"] for row in summary["ranking"]]
    assert [header.index(m) for m in order] == sorted(header.index(m) for m in order)
    rows = re.findall(r"<tr>(.*?)</tr>", ranking[ranking.index("<tbody>"):])
    assert len(rows) == len(summary["metrics"])
    assert all(name.replace("_", "_<wbr>") in row for name, row in zip(summary["metrics"], rows))
    best_extra = re.findall(r'class="num cell best"[^>]*>([^<]*)<', rows[-1])
    assert best_extra == [fmt(7.0)]  # extra_5: occlusion's 2 + 5, the highest


# --- ties, curves, printable heatmaps -------------------------------------------------------------------------

def test_means_within_the_tie_tolerance_share_rank_and_outline(tmp_path: Path) -> None:
    """integrated_gradients and kernel_shap on breast_cancer_logreg: equal to 3 digits, apart by up to 3e-4
    relative (the values below are that run's), so neither is ranked above the other."""
    from xaibench.report.comparison import TIE_RTOL, TIES

    results = {"integrated_gradients": {"deletion": {"mean": 0.3602559185043598},
                                        "max_sensitivity": {"mean": 0.16602843136338458}},
               "kernel_shap": {"deletion": {"mean": 0.3602576271106954},
                               "max_sensitivity": {"mean": 0.16597637111101043}},
               "saliency": {"deletion": {"mean": 0.763}, "max_sensitivity": {"mean": 0.16597637111101043 * 0.99}}}
    metrics = {"deletion": {"higher_is_better": False}, "max_sensitivity": {"higher_is_better": False}}
    by_method = {row["method"]: row for row in rank_methods(results, metrics)}
    assert by_method["integrated_gradients"]["ranks"] == {"deletion": 1.5, "max_sensitivity": 2.5}
    assert by_method["kernel_shap"]["ranks"] == {"deletion": 1.5, "max_sensitivity": 2.5}
    assert by_method["saliency"]["ranks"] == {"deletion": 3.0, "max_sensitivity": 1.0}  # 1% apart: no tie
    assert TIE_RTOL == 1e-3 and "0.1%" in TIES
    summary = synthetic_summary()
    summary["results"]["occlusion"]["deletion"] = stats(0.1 * (1 + TIE_RTOL / 2), True)  # ties 0.1
    summary["ranking"] = rank_methods(summary["results"], summary["metrics"])
    page = write_html(summary, tmp_path / "report.html", {}).read_text(encoding="utf-8")
    best = re.findall(r'<td class="num cell best"[^>]*title="([^"]*)"', page)
    assert sum(tip.startswith("rank 1.5 of 3") for tip in best) == 2  # both tied deletion cells outlined
    assert TIES in page
    markdown = write_markdown(summary, tmp_path / "report.md").read_text(encoding="utf-8")
    assert TIES in markdown


def test_a_chain_of_near_values_does_not_tie_ends_apart_by_more_than_the_tolerance() -> None:
    step = 0.6e-3  # a ~ b and b ~ c, but a and c differ by 1.2e-3 relative
    results = {m: {"x": {"mean": 1.0 + i * step}} for i, m in enumerate("abc")}
    ranking = rank_methods(results, {"x": {"higher_is_better": True}})
    assert {row["method"]: row["ranks"]["x"] for row in ranking} == {"c": 1.5, "b": 1.5, "a": 3.0}


def test_heatmaps_print_as_large_tiles_a_page_per_method_when_many(page: str,
                                                                   heatmaps: dict[str, list[Path]],
                                                                   tmp_path: Path) -> None:
    section = page[page.index('<section id="heatmaps">'):]
    assert 'class="paged"' in section and section.count('class="heatmap-method"') == 3  # 3 > PRINT_SHARED
    assert "hover to enlarge" not in page and "img:hover" not in page  # nothing only a mouse can show
    assert "@media print" in page and ".paged .heatmap-method { break-before: page; }" in page
    two = {m: heatmaps[m] for m in ("integrated_gradients", "occlusion")}
    shared = write_html(synthetic_summary(), tmp_path / "r.html", two).read_text(encoding="utf-8")
    assert 'class="shared"' in shared and 'class="paged"' not in shared
