"""The comparison report's charts and the concept figures pass the mechanical figure checks
(``tests.report.figure_checks``: no clipped text, no label over another axes, no legend over data, the
labels a reader needs), and the curves tell every method apart, identical curves included."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from tests.report.figure_checks import figure_problems, recording
from tests.report.test_comparison import METHODS, synthetic_summary
from xaibench.report import charts, clusters, concepts
from xaibench.report.comparison import categories
from xaibench.report.curves import curve_figure, method_style

MANY = [f"method_{i}" for i in range(10)]


def many_methods(identical: bool) -> dict[str, Any]:
    """The synthetic summary with ten methods; their curves all alike when ``identical``."""
    summary = synthetic_summary()
    template = summary["results"]["saliency"]
    summary["methods"] = MANY
    summary["results"] = {}
    for i, method in enumerate(MANY):
        entry = copy.deepcopy(template)
        if not identical:
            for name in ("deletion", "insertion"):
                entry[name]["curve"]["mean"] = [v * (1 - 0.05 * i) for v in entry[name]["curve"]["mean"]]
        summary["results"][method] = entry
    return summary


@pytest.mark.parametrize("case", ["three", "ten", "ten identical"])
def test_comparison_charts_pass_the_figure_checks(case: str) -> None:
    summary = synthetic_summary() if case == "three" else many_methods(identical=case == "ten identical")
    colors = charts.method_colors(summary["methods"])
    for names in categories(summary).values():
        fig = charts.category_figure(summary, names, colors)
        assert figure_problems(fig, [f"{n} " for n in names]) == []
    for name in ("deletion", "insertion"):
        fig = curve_figure(summary, name, colors)
        labels = [name, "all methods", "mean over samples", "95% bootstrap band", *summary["methods"]]
        assert figure_problems(fig, labels) == []


def test_every_method_has_its_own_colour_line_style_and_marker() -> None:
    styles = {(charts.method_colors(MANY[:8])[m], method_style(i)["linestyle"], method_style(i)["marker"])
              for i, m in enumerate(MANY[:8])}
    assert len(styles) == 8
    assert len({method_style(i)["marker"] for i in range(8)}) == 8


def test_identical_curves_stay_visible_by_their_staggered_markers() -> None:
    """integrated_gradients and kernel_shap coincide on a linear model: their markers sit at different
    points of the curve, so the one drawn first still shows."""
    summary = many_methods(identical=True)
    fig = curve_figure(summary, "deletion", charts.method_colors(summary["methods"]))
    overview = fig.axes[0]
    marked = [tuple(np.asarray(line.get_xdata())[line.get_markevery()]) for line in overview.get_lines()]
    assert len(marked) == 10 and len(set(marked[:2])) == 2


def test_curve_bands_are_drawn_per_method_in_its_own_panel() -> None:
    summary = synthetic_summary()
    fig = curve_figure(summary, "deletion", charts.method_colors(METHODS))
    panels = [ax for ax in fig.axes[1:] if ax.axison]
    assert [ax.get_title() for ax in panels] == METHODS
    assert all(len(ax.collections) == 1 for ax in panels)  # one band each
    assert not fig.axes[0].collections  # none in the overview, where bands would pile up


def test_concept_figures_pass_the_figure_checks(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    rng = np.random.default_rng(0)
    k, importance = 8, np.array([0.000293, 0.965, 0.00102, 0.0224, 8.32e-05, 2.82e-05, 0.0171, 0.011])
    local = rng.random((16, k))  # top concepts differ
    one_top = local * importance
    one_top[:, 1] = 1.0  # concept 1 tops every image: coloured by the second concept
    correct = rng.random(16) > 0.2
    with recording(monkeypatch) as saved:
        concepts.write_concept_montage(tmp_path / "montage.png", rng.random((k, 4, 8, 8, 3)),
                                       rng.random((k, 4)), importance)
        concepts.write_importance_chart(tmp_path / "importance.png", importance)
        concepts.write_concept_maps(tmp_path / "maps.png", rng.random((16, 8, 8)), rng.random((16, k, 8, 8)),
                                    importance, local_importance=local)
        for name, scores in (("clusters.png", local), ("clusters-one.png", one_top)):
            embedding, _ = clusters.cluster_graph(scores, correct, seed=0)
            clusters.write_cluster_graph(tmp_path / name, embedding, scores, correct, importance)
    assert [s.path.name for s in saved] == ["montage.png", "importance.png", "maps.png", "clusters.png",
                                            "clusters-one.png"]
    problems = [f"{s.path.name}: {p}" for s in saved for p in s.problems]
    assert not problems, "\n".join(problems)
    needed = {"importance.png": ["log scale", "0.965", "2.82e-05", "concept 5"],
              "clusters.png": ["t-SNE 1", "t-SNE 2", "reliability", "top concept"],
              "clusters-one.png": ["second concept", "concept 1 first"]}
    for figure in saved:
        for label in needed.get(figure.path.name, []):
            assert any(label in text for text in figure.texts), (figure.path.name, label)
