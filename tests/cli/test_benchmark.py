"""``xaibench benchmark SUITE.yaml``: a resumable grid and its leaderboard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import wilcoxon

from tests.cli.conftest import SAMPLES
from xaibench.report.comparison import rank_methods
from xaibench.report.leaderboard import RELIABLE_MC, holm

SUITE = f"""
name: tiny
seed: 0
n: 8
methods: [saliency, integrated_gradients]
metrics: [deletion, sparseness]
params: {{integrated_gradients: {{n_steps: 8}}}}
meta: {{n: 8, perturbations: 1}}
models:
  - path: {SAMPLES / "breast_cancer_logreg.pt"}
  - path: {SAMPLES / "synthetic_linear_mlp.pt"}
    name: linear
    metrics: [deletion, feature_agreement]
    reference: ground_truth
"""


def test_holm_by_hand() -> None:
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    assert holm([0.9, 0.8]) == [1.0, 1.0]


def _cells(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text() for p in sorted((out / "cells").glob("*/*/run.json"))}


def test_benchmark_runs_resumes_and_ranks(cli, tmp_path: Path) -> None:
    suite, out = tmp_path / "suite.yaml", tmp_path / "board"
    suite.write_text(SUITE)
    first = cli("benchmark", str(suite), "--out", str(out), "--json")
    assert first.code == 0, first.stderr
    assert sorted(first.json()["computed"]) == ["breast_cancer_logreg/evaluate", "breast_cancer_logreg/meta",
                                               "linear/evaluate", "linear/meta"]
    board = json.loads((out / "leaderboard.json").read_text())
    for model in board["models"]:
        cell = "breast_cancer_logreg" if model["name"] == "breast_cancer_logreg" else "linear"
        evaluate = json.loads((out / "cells" / cell / "evaluate" / "metrics.json").read_text())
        meta = json.loads((out / "cells" / cell / "meta" / "meta_evaluation.json").read_text())
        ranks = {r["method"]: r["ranks"] for r in rank_methods(evaluate["results"], evaluate["metrics"])}
        tests = []
        for row in model["metrics"]:
            assert row["mc"] == meta["scores"][row["metric"]]["mc"]
            for entry in row["ranking"]:
                assert entry["rank"] == ranks[entry["method"]][row["metric"]]
                if entry["method"] != row["best"]:
                    values = evaluate["results"][entry["method"]][row["metric"]]["values"]
                    best = evaluate["results"][row["best"]][row["metric"]]["values"]
                    p = 1.0 if values == best else wilcoxon(values, best, zero_method="zsplit").pvalue
                    tests.append((entry["p_holm"], p))
        assert [found for found, _ in tests] == pytest.approx(holm([p for _, p in tests]), abs=1e-12)
        reliable = [r["metric"] for r in model["metrics"] if r["mc"] > RELIABLE_MC and r["separates"]]
        assert sorted(r["metric"] for r in model["reliable"]) == sorted(reliable)
    assert "## linear" in (out / "leaderboard.md").read_text()
    assert "Metric agreement" in (out / "leaderboard.html").read_text()

    before = _cells(out)
    again = cli("benchmark", str(suite), "--out", str(out), "--json")
    assert again.code == 0, again.stderr
    assert again.json()["computed"] == [] and len(again.json()["reused"]) == 4
    assert _cells(out) == before  # nothing was recomputed

    (out / "cells" / "linear" / "meta.cell.json").unlink()  # as if stopped before the cell was recorded
    suite.write_text(SUITE.replace("n: 8\nmethods", "n: 6\nmethods"))  # every evaluate cell changes
    third = cli("benchmark", str(suite), "--out", str(out), "--json")
    assert third.code == 0, third.stderr
    assert sorted(third.json()["computed"]) == ["breast_cancer_logreg/evaluate", "linear/evaluate", "linear/meta"]
    assert json.loads((out / "cells" / "linear" / "evaluate" / "metrics.json").read_text())["data"]["samples"] == 6


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\nmodels: []\n", "models must be a non-empty list"),
    ("name: x\nmethods: [a, b]\nmodels:\n  - path: nowhere.pt\n", "no model file"),
    ("name: x\ncolour: red\nmodels: []\n", "unknown key 'colour'"),
    ((f"name: x\nmethods: [saliency, gradient]\nmodels:\n  - path: {SAMPLES / 'breast_cancer_logreg.pt'}\n"
      f"  - path: {SAMPLES / 'breast_cancer_logreg.pt'}\n"), "share the name"),
    ("name: ../x\nmodels: []\n", "not a plain name"),
    ("[unclosed\n", "cannot read suite"),
])
def test_bad_suites_are_one_line_and_exit_2(cli_in_process, tmp_path: Path, text: str, message: str) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    result = cli_in_process("benchmark", str(suite), "--out", str(tmp_path / "board"))
    assert result.code == 2
    assert message in result.stderr and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "board").exists()


def test_a_folder_of_something_else_is_refused(cli_in_process, tmp_path: Path) -> None:
    suite, out = tmp_path / "suite.yaml", tmp_path / "board"
    suite.write_text(SUITE)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = cli_in_process("benchmark", str(suite), "--out", str(out))
    assert result.code == 2 and "not a benchmark folder" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
