"""``xaibench explain``, ``heatmap``, ``inspect`` and the listings, end to end.

The installed entry point (``cli``: an interpreter start each) runs explain in
test_explain_writes_a_complete_run, heatmap in test_heatmap_reexport, inspect and the listings; the other
tests are about what the commands do and run the same ``main`` in this process (``cli_in_process``)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.cli.conftest import ROOT, SAMPLES
from xaibench.attribution import METHODS, attribute
from xaibench.data import load_data
from xaibench.models import load_model

PNG = b"\x89PNG\r\n\x1a\n"


def _explain(cli, tmp_path: Path, model: str, *args: str) -> tuple[Path, dict]:
    out = tmp_path / "run"
    result = cli("explain", str(SAMPLES / model), "--out", str(out), "--json", *args)
    assert result.code == 0, result.stderr
    return out, result.json()


def test_explain_writes_a_complete_run(cli, tmp_path):
    out, summary = _explain(cli, tmp_path, "digits_cnn.pt", "-n", "3", "-p", "n_steps=16")
    assert summary["run_dir"] == str(out) and summary["samples"] == 3
    record = json.loads((out / "run.json").read_text())
    assert record["command"] == "explain"
    assert record["seed"] == 0
    assert set(record["versions"]) == {"python", "torch", "captum", "xaibench"}
    model_bytes = (SAMPLES / "digits_cnn.pt").read_bytes()
    assert record["model"]["sha256"] == hashlib.sha256(model_bytes).hexdigest()
    assert record["method"]["params"]["n_steps"] == "16"
    assert set(record["timings"]) >= {"load", "attribute", "heatmaps"}
    tensors = load_file(str(out / "attributions.safetensors"))
    assert tensors["attributions"].shape == (3, 1, 32, 32)
    assert torch.equal(tensors["targets"], tensors["predictions"])
    heatmaps = sorted(p.name for p in (out / "heatmaps").iterdir())
    assert heatmaps == ["grid.png", "sample_0000.png", "sample_0001.png", "sample_0002.png"]
    assert all((out / "heatmaps" / name).read_bytes().startswith(PNG) for name in heatmaps)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_cli_attributions_equal_the_library(cli_in_process, tmp_path):
    out, _ = _explain(cli_in_process, tmp_path, "digits_cnn.pt", "--indices", "4-6", "--target", "label",
                      "-m", "integrated_gradients", "-p", "n_steps=8", "--batch-size", "5")
    tensors = load_file(str(out / "attributions.safetensors"))
    data = load_data("digits:test")
    model = load_model(SAMPLES / "digits_cnn.pt").module
    expected = attribute("integrated_gradients", model, data.x[4:7], target=data.y[4:7], n_steps=8)
    torch.testing.assert_close(tensors["attributions"], expected)
    assert torch.equal(tensors["labels"], data.y[4:7])


def test_explain_logistic_regression_is_weight_times_input(cli_in_process, tmp_path):
    out, _ = _explain(cli_in_process, tmp_path, "breast_cancer_logreg.pt", "-n", "4", "-m", "input_x_gradient")
    tensors = load_file(str(out / "attributions.safetensors"))
    module = load_model(SAMPLES / "breast_cancer_logreg.pt").module
    weight = [p for p in module.parameters() if p.ndim == 2][0].detach()
    expected = weight[tensors["targets"]] * tensors["inputs"]
    torch.testing.assert_close(tensors["attributions"], expected)


@pytest.mark.parametrize(("model", "method", "shape"), [
    ("shapes_cnn.pt", "gradcam", (2, 3, 64, 64)),
    ("mnist1d_cnn.pt", "saliency", (2, 1, 40)),
    ("breast_cancer_mlp.pt", "occlusion", (2, 30)),
])
def test_each_modality(cli_in_process, tmp_path, model, method, shape):
    out, _ = _explain(cli_in_process, tmp_path, model, "-n", "2", "-m", method)
    assert load_file(str(out / "attributions.safetensors"))["attributions"].shape == shape
    assert len(list((out / "heatmaps").glob("sample_*.png"))) == 2


def test_default_run_directory_and_human_output(cli_in_process, tmp_path):
    result = cli_in_process("explain", str(SAMPLES / "digits_cnn.pt"), "-n", "1", "-m", "saliency")
    assert result.code == 0, result.stderr
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("explain-digits_cnn-saliency-")
    assert "heatmaps" in result.stdout and str(Path("runs") / runs[0].name) in result.stdout


def test_heatmap_reexport(cli, cli_in_process, tmp_path):
    """The re-export goes through the installed entry point; the run and the refusals run in process."""
    out, _ = _explain(cli_in_process, tmp_path, "digits_cnn.pt", "-n", "2", "-m", "saliency")
    before = (out / "heatmaps" / "sample_0000.png").read_bytes()
    result = cli("heatmap", str(out), "--style", "masked", "--cmap", "viridis", "--clip", "95",
                 "--json")
    assert result.code == 0, result.stderr
    files = result.json()["files"]
    assert sorted(Path(f).name for f in files) == ["grid.png", "sample_0000.png", "sample_0001.png"]
    assert (out / "heatmaps" / "sample_0000.png").read_bytes() != before
    bad = cli_in_process("heatmap", str(out), "--style", "blurry")
    assert bad.code == 2 and "blurry" in bad.stderr
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == sorted(Path(f).name for f in files)
    assert cli_in_process("heatmap", str(tmp_path)).code == 2


def test_methods_listing(cli):
    result = cli("methods", "--json")
    assert result.code == 0, result.stderr
    rows = {row["name"]: row for row in result.json()}
    assert set(rows) == set(METHODS.list())
    assert rows["gradcam"]["modalities"] == ["image", "sequence"]
    tabular = cli("methods", "--modality", "tabular", "--json").json()
    assert "gradcam" not in {row["name"] for row in tabular}


def test_inspect(cli):
    result = cli("inspect", str(SAMPLES / "digits_cnn.pt"), "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    module = load_model(SAMPLES / "digits_cnn.pt").module
    assert summary["format"] == "checkpoint"
    assert summary["parameters"] == sum(p.numel() for p in module.parameters())
    assert summary["meta"]["input_shape"] == [1, 32, 32]
    assert summary["layers"][-1]["output_shape"] == [1, 10]


@pytest.mark.parametrize("argv", [["--help"], ["methods", "--json"]])
def test_help_and_listing_do_not_import_torch(argv):
    code = (
        "import sys\n"
        f"sys.argv = ['xaibench', *{argv!r}]\n"
        "from xaibench.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit as done:\n    assert done.code == 0, done.code\n"
        "assert 'torch._C' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "xaibench", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "0.1.0"


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if "pytest" in line).strip()
    assert command in readme


def test_metadata_is_inferred_and_overridable_for_models_without_it(cli_in_process, tmp_path):
    module = load_model(SAMPLES / "breast_cancer_mlp.pt").module
    path = tmp_path / "mlp.ts"
    torch.jit.trace(module, torch.zeros(1, 30)).save(str(path))
    common = ("explain", str(path), "--trust-model", "--data", "breast_cancer", "-n", "1", "--json")
    result = cli_in_process(*common, "--out", str(tmp_path / "a"), "--classes", "no,yes")
    assert result.code == 0, result.stderr
    meta = json.loads((tmp_path / "a" / "run.json").read_text())["model"]["meta"]
    assert meta["class_names"] == ["no", "yes"]
    assert meta["modality"] == "tabular" and meta["input_shape"] == [30]
    assert meta["feature_names"][0] == "mean radius"  # inferred from the data
    inferred = cli_in_process(*common, "--out", str(tmp_path / "b"))
    assert inferred.code == 0, inferred.stderr
    meta = json.loads((tmp_path / "b" / "run.json").read_text())["model"]["meta"]
    assert meta["class_names"] == ["malignant", "benign"]
    wrong_classes = cli_in_process(*common, "--classes", "3")
    assert wrong_classes.code == 2 and "2 outputs but 3 class names" in wrong_classes.stderr
    wrong_shape = cli_in_process(*common, "--input-shape", "31")
    assert wrong_shape.code == 2 and "(30,) but the model expects (31,)" in wrong_shape.stderr
    wrong_modality = cli_in_process(*common, "--modality", "images")
    assert wrong_modality.code == 2 and "did you mean 'image'" in wrong_modality.stderr


def test_signed_maps_are_drawn_signed_and_reexport_records_the_style(cli_in_process, tmp_path):
    out, _ = _explain(cli_in_process, tmp_path, "digits_cnn.pt", "-n", "1", "-m", "saliency", "-p", "abs=false")
    spec = json.loads((out / "run.json").read_text())["heatmaps"]
    assert spec["signed"] is True and spec["style"]["style"] == "overlay"
    assert cli_in_process("heatmap", str(out), "--style", "masked", "--alpha", "0.3").code == 0
    spec = json.loads((out / "run.json").read_text())["heatmaps"]
    assert spec["style"] == {"style": "masked", "cmap": None, "clip": 99.0, "alpha": 0.3, "scale": "shared",
                             "format": "png"}


def test_default_selection_is_sixteen_samples(cli_in_process, tmp_path):
    _, summary = _explain(cli_in_process, tmp_path, "breast_cancer_logreg.pt", "-m", "saliency")
    assert summary["samples"] == 16


def test_bare_weights_with_arch_and_arch_args(cli_in_process, tmp_path):
    from safetensors.torch import save_file

    loaded = load_model(SAMPLES / "breast_cancer_logreg.pt")
    weights = tmp_path / "logreg.safetensors"
    save_file({k: v.contiguous() for k, v in loaded.module.state_dict().items()}, str(weights))
    args = ("--arch", "logreg", "--arch-arg", "in_features=30", "--arch-arg", "num_classes=2")
    result = cli_in_process("explain", str(weights), *args, "--data", "breast_cancer", "-n", "3",
                            "-m", "input_x_gradient", "--out", str(tmp_path / "w"), "--json")
    assert result.code == 0, result.stderr
    reference, _ = _explain(cli_in_process, tmp_path / "ref", "breast_cancer_logreg.pt", "-n", "3",
                            "-m", "input_x_gradient")
    torch.testing.assert_close(load_file(str(tmp_path / "w" / "attributions.safetensors"))["attributions"],
                               load_file(str(reference / "attributions.safetensors"))["attributions"])
    inspected = cli_in_process("inspect", str(weights), *args, "--json")
    assert inspected.code == 0 and inspected.json()["parameters"] == 62


def test_path_method_with_a_training_baseline_family(cli_in_process, tmp_path):
    """train_sample needs training data: explain loads it for the path method, as for expected_gradients."""
    out = tmp_path / "run"
    result = cli_in_process("explain", str(SAMPLES / "breast_cancer_logreg.pt"), "--method",
                            "path_integrated_gradients", "-p", "baseline=train_sample", "-n", "3", "--out", str(out))
    assert result.code == 0, result.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["method"]["params"]["baseline"] == "train_sample"
    # logistic regression: attributions are w (x - b) with b a training row, so not w x
    tensors = load_file(str(out / "attributions.safetensors"))
    loaded = load_model(SAMPLES / "breast_cancer_logreg.pt")
    plain = attribute("path_integrated_gradients", loaded.module, tensors["inputs"], target=tensors["targets"])
    assert not torch.allclose(tensors["attributions"], plain)
    refused = cli_in_process("explain", str(SAMPLES / "breast_cancer_logreg.pt"), "--method", "integrated_gradients",
                             "-p", "baseline=train_sample", "-n", "1", "--out", str(tmp_path / "no"))
    assert refused.code == 2 and "unknown baseline" in refused.stderr
