"""Every bad input gets a one-line message on stderr, exit code 2, no traceback, and no run written."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli.conftest import SAMPLES, run_cli, run_main

DIGITS = str(SAMPLES / "digits_cnn.pt")
MLP = str(SAMPLES / "breast_cancer_mlp.pt")


class NoGradNet(torch.nn.Module):
    """A model whose output carries no gradient (as a wrapped non-differentiable model would)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(30, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.fc(x)


def _pickled_module(path: Path) -> Path:
    torch.save(torch.nn.Linear(30, 2), path)
    return path


@pytest.fixture
def cli(tmp_path: Path):
    """These refusals run ``main`` in this process (no interpreter start for each of ~30 cases);
    test_missing_model_file and test_debug_shows_traceback go through the installed entry point."""
    return lambda *args, **kw: run_main(*args, cwd=kw.pop("cwd", tmp_path), **kw)


def _assert_usage_error(result, *fragments: str) -> None:
    assert result.code == 2, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _no_run_written(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_missing_model_file(tmp_path):
    _assert_usage_error(run_cli("explain", str(tmp_path / "nope.pt"), cwd=tmp_path), "nope.pt")
    _no_run_written(tmp_path)


def test_corrupt_model_file(cli, tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a model")
    _assert_usage_error(cli("explain", str(bad)), "corrupt.pt")
    _no_run_written(tmp_path)


def test_pickle_without_trust_model(cli, tmp_path):
    path = _pickled_module(tmp_path / "module.pt")
    _assert_usage_error(cli("explain", str(path), "--data", "breast_cancer", "-n", "2"),
                        "--trust-model")
    _no_run_written(tmp_path)


def test_pickle_with_trust_model_runs(cli, tmp_path):
    path = _pickled_module(tmp_path / "module.pt")
    result = cli("explain", str(path), "--trust-model", "--data", "breast_cancer", "-n", "2",
                 "--method", "saliency", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["samples"] == 2


def test_input_shape_that_does_not_fit(cli, tmp_path):
    _assert_usage_error(cli("explain", DIGITS, "--data", "breast_cancer", "-n", "2"), "shape")
    _no_run_written(tmp_path)


def test_target_outside_classes(cli, tmp_path):
    _assert_usage_error(cli("explain", DIGITS, "-n", "2", "--target", "12"),
                        "target 12 is outside the model's 10 classes")
    _no_run_written(tmp_path)


def test_empty_selection(cli, tmp_path):
    _assert_usage_error(cli("explain", DIGITS, "--indices", "100000"), "no samples")
    _no_run_written(tmp_path)


def test_method_that_does_not_fit_the_modality(cli, tmp_path):
    _assert_usage_error(cli("explain", MLP, "--method", "gradcam", "-n", "2"), "gradcam", "tabular")
    _no_run_written(tmp_path)


def test_gradient_method_on_model_without_gradients(cli, tmp_path):
    path = tmp_path / "nograd.ts"
    torch.jit.script(NoGradNet()).save(str(path))
    _assert_usage_error(cli("explain", str(path), "--trust-model", "--data", "breast_cancer",
                            "-n", "2", "--method", "saliency"), "no gradients")
    _no_run_written(tmp_path)
    ok = cli("explain", str(path), "--trust-model", "--data", "breast_cancer", "-n", "2",
             "--method", "occlusion")
    assert ok.code == 0, ok.stderr


def test_nan_in_input(cli, tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 30)).astype(np.float32)
    x[1, 4] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.zeros(3, dtype=np.int64))
    _assert_usage_error(cli("explain", MLP, "--data", str(tmp_path / "nan.npz")), "NaN")
    _no_run_written(tmp_path)


def test_existing_output_directory_is_kept(cli, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _assert_usage_error(cli("explain", DIGITS, "-n", "1", "--out", str(out)), "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_failed_overwrite_leaves_existing_run(cli, tmp_path):
    out = tmp_path / "run"
    assert cli("explain", DIGITS, "-n", "1", "-m", "saliency", "--out", str(out)).code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = cli("explain", DIGITS, "-n", "1", "--out", str(out), "--overwrite", "--target", "99")
    _assert_usage_error(result, "outside")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["--method", "integrated_gradient"], "integrated_gradients"),
        (["--data", "digts"], "digits"),
        (["-p", "n_step=4"], "n_steps"),
    ],
)
def test_unknown_names_get_a_suggestion(cli, tmp_path, args, suggestion):
    _assert_usage_error(cli("explain", DIGITS, "-n", "1", *args), f"did you mean '{suggestion}'")
    _no_run_written(tmp_path)


def test_bad_parameter_value(cli, tmp_path):
    _assert_usage_error(cli("explain", DIGITS, "-n", "1", "-p", "n_steps=many"), "n_steps", "int")


def test_debug_shows_traceback(tmp_path):
    result = run_cli("explain", str(tmp_path / "nope.pt"), cwd=tmp_path, env={"XAIBENCH_DEBUG": "1"})
    assert result.code == 2
    assert "Traceback" in result.stderr


def test_unpickling_payload_never_runs_through_the_cli(cli, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Payload()))
    _assert_usage_error(cli("inspect", str(path)), "--trust-model")
    assert not marker.exists()


def test_labels_outside_the_classes(cli, tmp_path):
    x = np.zeros((2, 1, 32, 32), dtype=np.float32)
    np.savez(tmp_path / "labels.npz", x=x, y=np.array([3, 11]))
    _assert_usage_error(cli("explain", DIGITS, "--data", str(tmp_path / "labels.npz"), "-m", "saliency"),
                        "outside the model's 10 classes")
    _no_run_written(tmp_path)


def test_duplicate_indices(cli, tmp_path):
    _assert_usage_error(cli("explain", DIGITS, "--indices", "3,1-4"), "given twice")


def test_modality_that_contradicts_the_data(cli, tmp_path):
    _assert_usage_error(cli("explain", DIGITS, "--modality", "tabular"), "does not fit samples")


def test_parameters_xaibench_supplies_cannot_be_set(cli, tmp_path):
    _assert_usage_error(cli("explain", DIGITS, "-m", "expected_gradients", "-p", "references=x"),
                        "'references'", "supplied by xaibench")


def test_layer_option_only_for_layer_methods(cli, tmp_path):
    _assert_usage_error(cli("explain", DIGITS, "-m", "saliency", "--layer", "conv2"),
                        "is not a text model (and the method takes no layer)")
    _assert_usage_error(cli("explain", DIGITS, "-m", "gradcam", "--layer", "conv9"),
                        "did you mean 'conv")


def test_overwrite_refuses_a_directory_xaibench_did_not_write(cli, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    _assert_usage_error(cli("explain", DIGITS, "-n", "1", "--out", str(out), "--overwrite"),
                        "not written by xaibench")
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_heatmap_out_never_destroys_user_files_or_the_run(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("explain", DIGITS, "-n", "1", "-m", "saliency", "--out", str(run)).code == 0
    before = sorted(p.name for p in run.iterdir())
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("mine")
    _assert_usage_error(cli("heatmap", str(run), "--out", str(precious)), "--overwrite")
    _assert_usage_error(cli("heatmap", str(run), "--out", str(precious), "--overwrite"),
                        "not written by xaibench")
    assert [p.name for p in precious.iterdir()] == ["thesis.tex"]
    _assert_usage_error(cli("heatmap", str(run), "--out", str(run)), "inside the run")
    assert sorted(p.name for p in run.iterdir()) == before
    elsewhere = tmp_path / "elsewhere"
    assert cli("heatmap", str(run), "--out", str(elsewhere), "--style", "heatmap").code == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == ["grid.png", "sample_0000.png", "xaibench-manifest.json"]
    assert cli("heatmap", str(run), "--out", str(elsewhere), "--overwrite").code == 0
