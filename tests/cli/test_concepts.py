"""``xaibench concepts`` end to end: test_concepts_writes_bank_metrics_figures_and_report goes through the
installed entry point, the others run the same ``main`` in this process (``cli_in_process``)."""

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
    assert summary["split"].startswith("cut:")  # digits_cnn is an nn.Sequential
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
    model_rows, head_rows = json.loads((run / "run.json").read_text())["memory"]["passes"]
    assert model_rows["sample_shape"] == [1, 32, 32] and head_rows["sample_shape"] == [32, 8, 8]
    assert head_rows["rows_per_pass"] > model_rows["rows_per_pass"]  # h, after relu3, costs less per row


def test_class_images_are_found_by_the_labels_without_a_pass_over_the_data(cli_in_process, monkeypatch):
    import xaibench.jobs.concepts as job

    prepared, real = [], job.prepare

    def counting(*args, **kwargs):  # the samples each prepare (and so each model pass) covers
        out = real(*args, **kwargs)
        prepared.append(len(out.data))
        return out

    monkeypatch.setattr(job, "prepare", counting)
    result = cli_in_process("concepts", CNN, "--class", "3", "-n", "6", "-k", "2", "--importance", "occlusion",
                            "--out", "run", "--json")
    assert result.code == 0, result.stderr
    assert prepared[:2] == [1, 6]  # one image for the class names, then the six of class 3
    assert result.json()["images"] == 6


def test_concepts_bad_input_is_one_line_and_exit_2(cli_in_process, tmp_path):
    for args, message in [
        (("--class", "eleven"), "neither a class name nor an index"),
        (("--class", "3", "--method", "ica"), "ica"),
        (("--class", "3", "--layer", "fc", "--method", "nmf"), "non-negative activations"),
    ]:
        result = cli_in_process("concepts", CNN, *args, "-n", "4", "-k", "2", "--out", "bad")
        assert result.code == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "bad").exists()


def test_concepts_format_svg_writes_vector_figures_beside_the_report_pngs(cli_in_process, tmp_path):
    from xaibench.report.style import is_xaibench_figure

    result = cli_in_process("concepts", CNN, "--class", "3", "-n", "8", "-k", "3", "--importance", "occlusion",
                            "--format", "svg", "--out", "run")
    assert result.code == 0, result.stderr
    run = tmp_path / "run"
    figures = [p.stem for p in run.glob("*.png")]
    assert {"montage", "importance", "maps"} <= set(figures)
    for stem in figures:  # every PNG the report embeds has its svg beside it
        assert is_xaibench_figure(run / f"{stem}.png") and is_xaibench_figure(run / f"{stem}.svg"), stem
    assert json.loads((run / "run.json").read_text())["config"]["format"] == "svg"
    manifest = json.loads((run / "xaibench-manifest.json").read_text())["files"]
    assert {f"{stem}.svg" for stem in figures} <= set(manifest)
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and ".svg" not in html
    assert "](montage.png)" in (run / "report.md").read_text()

    bad = cli_in_process("concepts", CNN, "--class", "3", "-n", "4", "-k", "2", "--format", "tiff",
                         "--out", "bad")
    assert bad.code == 2 and "tiff" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert not (tmp_path / "bad").exists()


def test_a_saved_bank_draws_concept_maps_for_new_images(cli_in_process, tmp_path):
    from xaibench.concepts.extract import concept_maps, encode_maps
    from xaibench.concepts.split import feature_maps, split_model
    from xaibench.data.prepare import Selection, prepare
    from xaibench.jobs.concepts import load_bank
    from xaibench.models import load_model

    assert cli_in_process("concepts", CNN, "--class", "3", "-n", "8", "-k", "3", "--importance", "occlusion",
                          "--out", "run").code == 0
    bank, layer = load_bank(tmp_path / "run")
    saved = load_file(str(tmp_path / "run" / "bank.safetensors"))
    assert layer == "relu3" and bank.method == "nmf" and torch.equal(bank.dictionary, saved["dictionary"])
    loaded = load_model(CNN)
    fresh = prepare(loaded, Selection(data="digits:test", n=5))
    split = split_model(loaded.module, layer, fresh.inputs[:2])
    maps = concept_maps(split, bank, fresh.inputs)
    assert maps.shape == (5, 3, 32, 32) and (maps >= -1e-6).all()
    codes = encode_maps(feature_maps(split, fresh.inputs, None), bank, None)  # (5, 8, 8, 3)
    torch.testing.assert_close(maps, torch.nn.functional.interpolate(
        codes.movedim(-1, 1), size=(32, 32), mode="bilinear", align_corners=False))
    train = prepare(loaded, Selection(data="digits:train"))
    threes = torch.nonzero(train.data.y == 3).flatten()[:8]  # the images the run used
    again = encode_maps(feature_maps(split, train.inputs[threes], None), bank, None)
    torch.testing.assert_close(again, saved["image_codes"], rtol=1e-4, atol=1e-5)
