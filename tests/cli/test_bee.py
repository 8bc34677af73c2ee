"""``xaibench bee pretrain`` / ``bee report`` and ``explain --method bee`` with a policy, end to end.

``bee report`` goes through the installed entry point (``cli``) in test_pretrain_explain_and_report; the rest
runs the same ``main`` in this process (``cli_in_process``). ``bee pretrain`` starts in fresh interpreters
under torchrun in tests/cli/test_distributed.py."""

from __future__ import annotations

import json

from tests.cli.conftest import SAMPLES
from xaibench.attribution.policy import ThompsonPolicy

MLP = str(SAMPLES / "breast_cancer_mlp.pt")
LOGREG = str(SAMPLES / "breast_cancer_logreg.pt")
FAST = ["-p", "rounds=2", "-p", "n_steps=4"]


def test_pretrain_explain_and_report(cli, cli_in_process, tmp_path):
    policy = tmp_path / "mlp-deletion.safetensors"
    result = cli_in_process("bee", "pretrain", MLP, "--metric", "deletion", "-n", "8", *FAST, "--out", str(policy),
                            "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["samples"] == 8 and summary["metric"] == "deletion"
    assert list(summary["distribution"]) == ["zero", "constant", "uniform", "gaussian"]  # no blur on tabular
    assert abs(sum(summary["distribution"].values()) - 1) < 1e-3
    loaded, meta = ThompsonPolicy.load(policy)
    assert meta["metric"] == "deletion" and meta["samples"] == "8" and loaded.arms == tuple(summary["distribution"])

    explained = cli_in_process("explain", MLP, "--method", "bee", "-p", f"policy={policy}", *FAST, "-n", "3",
                               "--out", str(tmp_path / "run"))
    assert explained.code == 0, explained.stderr
    details = json.loads((tmp_path / "run" / "run.json").read_text())["method"]["details"]["bee"]
    assert details["metric"] == "deletion" and len(details["chosen"]) == 3
    assert set(details["chosen"]) <= set(loaded.arms) and abs(sum(details["distribution"].values()) - 1) < 1e-3
    wrong = cli_in_process("explain", MLP, "--method", "bee", "-p", f"policy={policy}", "-p", "metric=insertion",
                           "-n", "2", "--out", str(tmp_path / "wrong"))
    assert wrong.code == 2 and "insertion" in wrong.stderr

    evaluated = cli_in_process("evaluate", MLP, "--methods", "bee,saliency", "-p", "bee.rounds=2", "-p",
                               "bee.n_steps=4", "--metrics", "sparseness", "-n", "3", "--out", str(tmp_path / "eval"))
    assert evaluated.code == 0, evaluated.stderr
    noted = json.loads((tmp_path / "eval" / "metrics.json").read_text())["details"]
    assert list(noted) == ["bee"] and len(noted["bee"]["bee"]["chosen"]) == 3

    chart = tmp_path / "arms.png"
    reported = cli("bee", "report", MLP, str(policy), "-n", "8", "--out", str(chart), "--json")
    assert reported.code == 0, reported.stderr
    assert chart.read_bytes().startswith(b"\x89PNG") and "deletion" in reported.json()["distributions"]


def test_pretrain_never_replaces_other_files(cli_in_process, tmp_path):
    policy = tmp_path / "p.safetensors"
    assert cli_in_process("bee", "pretrain", MLP, "-n", "4", *FAST, "--out", str(policy)).code == 0
    again = cli_in_process("bee", "pretrain", MLP, "-n", "4", *FAST, "--out", str(policy))
    assert again.code == 2 and "--overwrite" in again.stderr
    assert cli_in_process("bee", "pretrain", MLP, "-n", "4", *FAST, "--out", str(policy), "--overwrite").code == 0
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    refused = cli_in_process("bee", "pretrain", MLP, "-n", "4", *FAST, "--out", str(notes), "--overwrite")
    assert refused.code == 2 and notes.read_text() == "mine"
    bad = cli_in_process("bee", "pretrain", MLP, "--metric", "max_sensitivity", "-n", "4", "--out", str(tmp_path / "x"))
    assert bad.code == 2 and "model alone" in bad.stderr


def test_a_policy_trained_for_another_model_file_is_refused_unless_meant(cli_in_process, tmp_path):
    policy = tmp_path / "logreg-deletion.safetensors"  # same data, arms and context size; another model
    assert cli_in_process("bee", "pretrain", LOGREG, "-n", "8", *FAST, "--out", str(policy)).code == 0
    run = tmp_path / "run"
    refused = cli_in_process("explain", MLP, "--method", "bee", "-p", f"policy={policy}", *FAST, "-n", "2", "--out", str(run))
    assert refused.code == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert str(policy) in refused.stderr and MLP in refused.stderr  # names both files
    assert "policy_any_model=true" in refused.stderr and not run.exists()
    evaluated = cli_in_process("evaluate", MLP, "--methods", "bee", "-p", f"bee.policy={policy}", "-p", "bee.rounds=2",
                    "--metrics", "sparseness", "-n", "2", "--out", str(tmp_path / "eval"))
    assert evaluated.code == 2 and str(policy) in evaluated.stderr and not (tmp_path / "eval").exists()

    meant = cli_in_process("explain", MLP, "--method", "bee", "-p", f"policy={policy}", "-p", "policy_any_model=true", *FAST,
                "-n", "2", "--out", str(run))
    assert meant.code == 0, meant.stderr  # the model's own policy needs no flag: test_pretrain_explain_and_report
