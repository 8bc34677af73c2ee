"""``xaibench evaluate``, ``report`` and ``metrics``, end to end.

The installed entry point (``cli``: an interpreter start each) runs evaluate in
test_evaluate_writes_a_run_whose_values_equal_the_library, report in test_report_rebuilds_from_the_run and
the metrics listing; the other tests are about what the commands compute or refuse and run the same
``main`` in this process (``cli_in_process``)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from xaibench.metrics import METRICS, compute

from tests.cli.conftest import SAMPLES
from xaibench.attribution import attribute
from xaibench.data import load_data, select
from xaibench.models import load_model

LOGREG = str(SAMPLES / "breast_cancer_logreg.pt")
SHAPES = str(SAMPLES / "shapes_cnn.pt")


def _evaluate(cli, out: Path, model: str, *args: str) -> dict:
    result = cli("evaluate", model, "--out", str(out), "--json", *args)
    assert result.code == 0, result.stderr
    return result.json()


def test_evaluate_writes_a_run_whose_values_equal_the_library(cli, tmp_path):
    out = tmp_path / "run"
    document = _evaluate(cli, out, LOGREG, "--methods", "saliency,integrated_gradients",
                         "--metrics", "deletion,sparseness,faithfulness_correlation", "-n", "8",
                         "-p", "integrated_gradients.n_steps=16", "-p", "deletion.substrate=mean",
                         "-p", "deletion.per_step=2")
    assert document["run_dir"] == str(out)
    names = {p.name for p in out.iterdir()}
    assert names >= {"run.json", "metrics.json", "metrics.csv", "report.md", "report.html",
                     "attributions.safetensors", "heatmaps"}
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["methods"] == ["saliency", "integrated_gradients"]
    assert list(summary["metrics"]) == ["deletion", "sparseness", "faithfulness_correlation"]
    assert summary["metrics"]["deletion"]["params"]["substrate"] == "mean"
    assert summary["metrics"]["deletion"]["params"]["per_step"] == 2  # typed, not the text "2"

    loaded = load_model(LOGREG)
    data = select(load_data("breast_cancer:test"), n=8)
    x = data.x.float()
    target = loaded.module(x).argmax(1)
    a = attribute("integrated_gradients", loaded.module, x, target=target, n_steps=16)
    for metric, params in (("deletion", {"substrate": "mean", "per_step": 2}), ("faithfulness_correlation", {})):
        expected = compute(metric, loaded.module, x, a, target=target,
                           generator=torch.Generator().manual_seed(0), **params).scores
        stored = torch.tensor(summary["results"]["integrated_gradients"][metric]["values"], dtype=torch.float64)
        torch.testing.assert_close(stored, expected, rtol=1e-5, atol=1e-6, equal_nan=True)
        entry = summary["results"]["integrated_gradients"][metric]
        low, high = entry["ci95"]
        assert low <= entry["mean"] <= high and entry["n"] + entry["nan"] == 8

    tensors = load_file(str(out / "attributions.safetensors"))
    torch.testing.assert_close(tensors["attributions/integrated_gradients"], a, rtol=1e-5, atol=1e-6)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 6 and {r["method"] for r in rows} == {"saliency", "integrated_gradients"}
    html = (out / "report.html").read_text()
    assert "integrated_gradients" in html and "faithfulness_correlation" in html
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == ["integrated_gradients", "saliency"]


def _assert_ranked_by(ranking: list[dict], metrics: dict, directions: dict[str, bool]) -> None:
    """metrics.json records each metric's direction as given, and the ranking orders by it."""
    for metric, higher in directions.items():
        assert metrics["metrics"][metric]["higher_is_better"] is higher, metric
        means = {m: metrics["results"][m][metric]["mean"] for m in metrics["methods"]}
        assert len(set(means.values())) == len(means)  # distinct means: one strict order
        best_first = sorted(means, key=means.get, reverse=higher)
        ranks = {row["method"]: row["ranks"][metric] for row in ranking}
        assert [ranks[m] for m in best_first] == [1.0, 2.0, 3.0], (metric, means, ranks)


def test_ranking_respects_directions(cli_in_process, tmp_path):
    # the published directions: RISE deletion lower is better, insertion higher; region perturbation's
    # AOPC of the probability drop is higher-better for MoRF and lower-better for LeRF (least relevant
    # regions removed first should not move the prediction)
    summary = _evaluate(cli_in_process, tmp_path / "run", LOGREG, "--methods", "saliency,random,input_x_gradient",
                        "--metrics", "deletion,insertion,region_perturbation",
                        "-p", "region_perturbation.order=lerf", "-n", "6")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    _assert_ranked_by(summary["ranking"], metrics,
                      {"deletion": False, "insertion": True, "region_perturbation": False})


def test_road_lerf_ranks_higher_accuracy_first(cli_in_process, tmp_path):
    # ROAD (Rong et al. 2022) scores the accuracy left after removing pixels: lower is better for MoRF,
    # higher for LeRF, whatever the metric class's default (MoRF) says
    summary = _evaluate(cli_in_process, tmp_path / "run", SHAPES, "--methods", "saliency,random,gradcam",
                        "--metrics", "road", "-p", "road.order=lerf", "-p", "road.percentages=10,30,50,70,90",
                        "-n", "6")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    _assert_ranked_by(summary["ranking"], metrics, {"road": True})


def test_categories_skip_what_cannot_run_and_named_metrics_must_run(cli_in_process, tmp_path):
    summary = _evaluate(cli_in_process, tmp_path / "a", LOGREG, "--methods", "saliency",
                        "--metrics", "localisation,sparseness", "-n", "4")
    skipped = {s["metric"] for s in summary["skipped"]}
    assert "pointing_game" in skipped and "sparseness" not in skipped
    named = cli_in_process("evaluate", LOGREG, "--methods", "saliency", "--metrics", "pointing_game", "-n", "4",
                           "--out", str(tmp_path / "b"))
    assert named.code == 2 and "masks" in named.stderr and not (tmp_path / "b").exists()


def test_a_pair_the_method_cannot_explain_is_skipped_and_the_rest_kept(cli_in_process, tmp_path):
    # input_invariance re-explains a model that shifts its input first; lrp refuses that subtraction
    summary = _evaluate(cli_in_process, tmp_path / "run", SHAPES, "--methods", "lrp,saliency",
                        "--metrics", "input_invariance,sparseness", "-n", "2")
    skipped = [(s["method"], s["metric"]) for s in summary["skipped"]]
    assert skipped == [("lrp", "input_invariance")]
    assert "sub" in summary["skipped"][0]["reason"]
    results = json.loads((tmp_path / "run" / "metrics.json").read_text())["results"]
    assert set(results["lrp"]) == {"sparseness"}
    assert set(results["saliency"]) == {"input_invariance", "sparseness"}
    assert "input_invariance" in (tmp_path / "run" / "report.md").read_text()


def test_localisation_runs_on_shapes_masks(cli_in_process, tmp_path):
    out = tmp_path / "run"
    _evaluate(cli_in_process, out, SHAPES, "--methods", "gradcam,random", "--metrics",
              "pointing_game,attribution_localisation", "-n", "6")
    results = json.loads((out / "metrics.json").read_text())["results"]
    assert results["gradcam"]["pointing_game"]["mean"] > results["random"]["pointing_game"]["mean"]


@pytest.mark.parametrize(("args", "message"), [
    (["--methods", "saliency", "--metrics", "delection"], "deletion"),
    (["--methods", "salency", "--metrics", "deletion"], "saliency"),
    (["--methods", "saliency", "--metrics", "deletion", "-p", "deletion.nope=1"], "nope"),
    (["--methods", "saliency", "--metrics", "deletion", "-p", "nothing=1"], "NAME.KEY"),
    (["--methods", "saliency", "--metrics", "category:nonsense"], "category"),
    (["--metrics", "deletion"], "--methods"),
    (["--methods", "saliency", "--metrics", "deletion", "-p", "deletion.substrate=bogus"], "substrate"),
    (["--methods", "saliency", "--metrics", "insertion", "-p", "insertion.substrate=blur"], "blur"),
    (["--methods", "saliency,gradcam", "--metrics", "deletion"], "gradcam does not apply"),
])
def test_bad_input_is_one_line_and_exit_2(cli_in_process, tmp_path, args, message):
    result = cli_in_process("evaluate", LOGREG, *args, "-n", "2", "--out", str(tmp_path / "run"))
    assert result.code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_existing_run_is_kept_without_overwrite(cli_in_process, tmp_path):
    out = tmp_path / "run"
    _evaluate(cli_in_process, out, LOGREG, "--methods", "saliency", "--metrics", "sparseness", "-n", "2")
    before = (out / "metrics.json").read_bytes()
    again = cli_in_process("evaluate", LOGREG, "--methods", "saliency", "--metrics", "complexity", "-n", "2",
                           "--out", str(out))
    assert again.code == 2 and (out / "metrics.json").read_bytes() == before


def test_reuses_attributions_of_an_explain_run(cli_in_process, tmp_path):
    explained = tmp_path / "explained"
    assert cli_in_process("explain", LOGREG, "--method", "saliency", "-n", "5", "--out", str(explained)).code == 0
    summary = _evaluate(cli_in_process, tmp_path / "run", LOGREG, "--attributions", str(explained),
                        "--metrics", "sparseness")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["methods"] == ["saliency"] and metrics["data"]["samples"] == 5
    a = load_file(str(explained / "attributions.safetensors"))["attributions"]
    expected = compute("sparseness", None, a, a, target=0).scores
    stored = torch.tensor(metrics["results"]["saliency"]["sparseness"]["values"], dtype=torch.float64)
    torch.testing.assert_close(stored, expected)
    assert summary["skipped"] == []


def test_reuse_refuses_other_inputs_targets_and_parameters(cli_in_process, tmp_path):
    explained = tmp_path / "explained"
    assert cli_in_process("explain", LOGREG, "--method", "integrated_gradients", "-n", "4", "-p", "n_steps=4",
                          "--out", str(explained)).code == 0
    cases = [(["--data", "breast_cancer:train"], "other inputs"), (["--target", "0"], "target"),
             (["-p", "integrated_gradients.n_steps=8"], "--attributions run")]
    for extra, message in cases:
        result = cli_in_process("evaluate", LOGREG, "--attributions", str(explained), "--metrics", "sparseness",
                                *extra, "--out", str(tmp_path / "run"))
        assert result.code == 2 and message in result.stderr, (extra, result.stderr)
    # robustness metrics re-explain with the reused run's parameters (n_steps=4), not the defaults
    _evaluate(cli_in_process, tmp_path / "ok", LOGREG, "--attributions", str(explained), "--metrics", "max_sensitivity")
    stored = json.loads((tmp_path / "ok" / "metrics.json").read_text())["results"]
    loaded = load_model(LOGREG)
    x = select(load_data("breast_cancer:test"), n=4).x.float()
    target = loaded.module(x).argmax(1)
    a = load_file(str(explained / "attributions.safetensors"))["attributions"]

    def explainer(model, inputs, t):
        return attribute("integrated_gradients", model, inputs, target=t, n_steps=4,
                         generator=torch.Generator().manual_seed(0))

    expected = compute("max_sensitivity", loaded.module, x, a, target=target, explainer=explainer,
                       generator=torch.Generator().manual_seed(0)).scores
    values = torch.tensor(stored["integrated_gradients"]["max_sensitivity"]["values"], dtype=torch.float64)
    torch.testing.assert_close(values, expected, rtol=1e-5, atol=1e-6)


def test_report_rebuilds_from_the_run(cli, cli_in_process, tmp_path):
    """The rebuild goes through the installed entry point; the run and the refusals run in process."""
    out = tmp_path / "run"
    _evaluate(cli_in_process, out, LOGREG, "--methods", "saliency", "--metrics", "sparseness", "-n", "2")
    (out / "report.html").unlink()
    result = cli("report", str(out), "--json")
    assert result.code == 0, result.stderr
    assert (out / "report.html").is_file() and result.json()["report_html"] == str(out / "report.html")
    assert cli_in_process("report", str(tmp_path)).code == 2
    (out / "metrics.json").write_text("{}")
    damaged = cli_in_process("report", str(out))
    assert damaged.code == 2 and "not an evaluate metrics.json" in damaged.stderr


def test_metrics_listing_without_torch(cli):
    listed = cli("metrics", "--json")
    assert listed.code == 0
    rows = listed.json()
    assert {r["name"] for r in rows} == set(METRICS.list())
    deletion = next(r for r in rows if r["name"] == "deletion")
    assert deletion["higher_is_better"] is False and deletion["category"] == "faithfulness"
    local = cli("metrics", "--category", "localisation", "--json").json()
    assert local and all("masks" in r["needs"] for r in local)
    assert cli("metrics", "--category", "nope").code == 2
    code = ("import sys; from xaibench.cli.app import main; sys.argv=['xaibench','metrics'];\n"
            "try:\n    main(['metrics'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch._C' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
