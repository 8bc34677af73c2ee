"""``xaibench concepts`` end to end through the installed entry point."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from tests.cli.conftest import SAMPLES

CNN = str(SAMPLES / "digits_cnn.pt")


def test_concepts_writes_bank_metrics_figures_and_report(cli, tmp_path):
    result = cli("concepts", CNN, "--class", "3", "-n", "12", "-k", "4", "--importance", "occlusion",
                 "--out", "run", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["layer"] == "relu3" and summary["class"] == "3" and summary["images"] == 12
    assert summary["rows"] == 12 * 25  # CRAFT's 5 x 5 grid of quarter-size crops per image
    run = tmp_path / "run"
    tensors = load_file(str(run / "bank.safetensors"))
    assert tensors["dictionary"].shape == (4, 32) and (tensors["dictionary"] >= 0).all()
    assert tensors["image_codes"].shape == (12, 8, 8, 4) and tensors["local_importance"].shape == (12, 4)
    torch.testing.assert_close(tensors["importance"], tensors["local_importance"].mean(0))
    assert summary["global_importance"] == [float(v) for v in tensors["importance"]]
    assert set(summary["metrics"]) == {"relative_l2", "sparsity", "stability", "fid", "c_deletion",
                                       "c_insertion", "c_mufidelity"}
    assert 0 <= summary["metrics"]["relative_l2"]["value"] < 1
    assert json.loads((run / "concepts.json").read_text())["metrics"] == summary["metrics"]
    for figure in ("montage", "importance", "maps", "clusters"):
        assert (run / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="montage.png"' not in html


def test_concepts_bad_input_is_one_line_and_exit_2(cli, tmp_path):
    for args, message in [
        (("--class", "eleven"), "neither a class name nor an index"),
        (("--class", "3", "--method", "ica"), "ica"),
        (("--class", "3", "--layer", "fc", "--method", "nmf"), "non-negative activations"),
    ]:
        result = cli("concepts", CNN, *args, "-n", "4", "-k", "2", "--out", "bad")
        assert result.code == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "bad").exists()
