"""``xaibench meta-evaluate`` end to end through the installed entry point."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tests.cli.conftest import SAMPLES
from xaibench.metrics.meta_evaluation import MetaParams, consistency_scores

LOGREG = str(SAMPLES / "breast_cancer_logreg.pt")


def test_meta_evaluate_writes_a_ranked_report(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli("meta-evaluate", LOGREG, "--metrics", "deletion,sparseness", "--methods",
                 "saliency,integrated_gradients", "-n", "8", "-k", "2", "--out", str(out), "--json")
    assert result.code == 0, result.stderr
    document = result.json()
    summary = json.loads((out / "meta_evaluation.json").read_text())
    assert document["ranking"] == summary["ranking"]
    assert sorted(summary["ranking"]) == ["deletion", "sparseness"]
    mcs = [summary["scores"][name]["mc"] for name in summary["ranking"]]
    assert mcs == sorted(mcs, reverse=True)
    for name in summary["ranking"]:  # the stored scores are the summary of the stored per-draw values
        assert summary["scores"][name] == consistency_scores(summary["tests"], name)
        for test in summary["tests"].values():
            assert len(test[name]["iec"]) == 2 and all(len(row) == 2 for row in test[name]["iac"])
    assert summary["perturbations"] == dataclasses.asdict(MetaParams(perturbations=2))
    report = (out / "report.md").read_text()
    assert report.splitlines()[0].startswith("# Meta-evaluation: breast_cancer_logreg")
    assert "| deletion ↓ |" in report and "| sparseness ↑ |" in report
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "meta-evaluate" and run["methods"] == ["saliency", "integrated_gradients"]


def test_one_method_is_refused(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli("meta-evaluate", LOGREG, "--methods", "saliency", "--out", str(out))
    assert result.code == 2
    assert result.stderr.strip().count("\n") == 0 and "at least two --methods" in result.stderr
    assert not out.exists()
