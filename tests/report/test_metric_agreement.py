"""Metric agreement (Kendall's tau-b between metrics' method rankings) and the not-separating flag."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import kendalltau

from tests.report.test_comparison import stats, synthetic_summary
from xaibench.report.comparison import rank_methods, write_reports
from xaibench.report.metric_agreement import (
    NOT_SEPARATING,
    agreement,
    kendall_tau_b,
    rank_agreement,
    separates,
    tau_color,
)


def test_tau_b_by_hand() -> None:
    assert kendall_tau_b([1, 2, 3], [1, 2, 3]) == 1.0
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == -1.0
    # pairs (0,1): concordant; (0,2): tied in the second only; (1,2): discordant -> (1 - 1) / ...
    assert kendall_tau_b([1, 2, 3], [1, 3, 1]) == 0.0
    # pairs: (0,1) tied in the first only, (0,2) concordant, (1,2) concordant: 2 / sqrt(2 * 3)
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6), abs=1e-15)
    assert kendall_tau_b([2, 2, 2], [1, 2, 3]) is None
    assert kendall_tau_b([1], [1]) is None


def test_tau_b_equals_scipy_with_ties() -> None:
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(2, 9)
        first = [rng.choice([1.0, 1.5, 2.0, 3.0, 4.0]) for _ in range(n)]
        second = [rng.choice([1.0, 2.0, 2.5, 3.0]) for _ in range(n)]
        expected = kendalltau(first, second).statistic
        found = kendall_tau_b(first, second)
        if math.isnan(expected):
            assert found is None
        else:
            assert found == pytest.approx(expected, abs=1e-12)


def test_rank_agreement_matrix_uses_the_report_ranks() -> None:
    summary = synthetic_summary()
    names = list(summary["metrics"])
    matrix = rank_agreement(summary["ranking"], names)
    deletion, insertion, sensitivity = (names.index(n) for n in ("deletion", "insertion", "max_sensitivity"))
    assert matrix[deletion][insertion] == matrix[insertion][deletion] == 1.0  # ig < occlusion < saliency both
    assert matrix[deletion][deletion] == 1.0
    ranks = {row["method"]: row["ranks"] for row in summary["ranking"]}
    methods = list(ranks)
    expected = kendalltau([ranks[m]["deletion"] for m in methods],
                          [ranks[m]["max_sensitivity"] for m in methods]).statistic
    assert matrix[deletion][sensitivity] == pytest.approx(expected, abs=1e-12)
    # local_lipschitz has no mean for integrated_gradients: tau over the two methods both rank
    lipschitz = names.index("local_lipschitz")
    # deletion: occlusion (0.2) before saliency (0.3); local_lipschitz: saliency (1.5) before occlusion (2.5)
    assert matrix[deletion][lipschitz] == -1.0


def _summary(means: dict[str, tuple[float, float, float]]) -> dict[str, Any]:
    """One lower-is-better metric "m" with the given (mean, low, high) per method."""
    metrics = {"m": {"category": "faithfulness", "higher_is_better": False}}
    results = {method: {"m": {"mean": mean, "ci95": [low, high]}} for method, (mean, low, high) in means.items()}
    return {"metrics": metrics, "results": results, "ranking": rank_methods(results, metrics)}


def test_separation_flag() -> None:
    inside = {"a": (0.50, 0.40, 0.60), "b": (0.55, 0.45, 0.70), "c": (0.45, 0.30, 0.55)}
    assert separates(_summary(inside)["results"], "m") is False
    edge = {**inside, "c": (0.45, 0.30, 0.50)}  # b's mean 0.55 is outside c's interval
    assert separates(_summary(edge)["results"], "m") is True
    boundary = {**inside, "c": (0.45, 0.30, 0.55)}  # a mean on an interval's end counts as inside
    assert separates(_summary(boundary)["results"], "m") is False
    assert separates(_summary({"a": inside["a"]})["results"], "m") is None
    missing = _summary({**inside, "d": (0.0, 0.0, 0.0)})
    missing["results"]["d"]["m"] = {"mean": None, "ci95": [None, None]}
    assert separates(missing["results"], "m") is False  # a method without a mean is left out
    assert agreement(_summary(inside))["not_separating"] == ["m"]
    assert agreement(_summary(edge))["not_separating"] == []


def test_tau_colors_are_ordered_by_strength() -> None:
    def lightness(color: str) -> int:
        return sum(int(color[i:i + 2], 16) for i in (1, 3, 5))

    assert tau_color(0.0) == "#ffffff"
    assert lightness(tau_color(1.0)) < lightness(tau_color(0.5)) < lightness(tau_color(0.1))
    assert lightness(tau_color(-1.0)) < lightness(tau_color(-0.5))
    assert tau_color(1.0) != tau_color(-1.0)


def test_reports_show_the_matrix_and_flag(tmp_path: Path) -> None:
    summary = synthetic_summary()
    # make sparseness unable to separate: saliency's and integrated_gradients' means inside each other's
    summary["results"]["saliency"]["sparseness"] = stats(0.41, False)
    summary["results"]["integrated_gradients"]["sparseness"] = stats(0.40, False)
    summary["ranking"] = rank_methods(summary["results"], summary["metrics"])
    markdown, page = write_reports(summary, tmp_path, {})
    text = markdown.read_text()
    section = text.split("## Metric agreement")[1].split("\n## ")[0]
    assert "| metric | deletion | insertion | max_sensitivity | local_lipschitz | sparseness |" in section
    assert "| deletion | +1.00 | +1.00 |" in section
    assert f"Not separating ({NOT_SEPARATING}): sparseness." in section
    assert "sparseness ↑ ≈" in text.split("## Metric agreement")[0]  # flagged in the ranking header
    assert "deletion ↓ ≈" not in text
    html = page.read_text()
    assert '<section id="agreement">' in html and 'href="#agreement"' in html
    assert "<b>sparseness</b>" in html
