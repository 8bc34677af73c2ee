"""Every job creates its tensors on the device of the model and data it meets (issue 18, point 6).

The model and the data live on the CPU (``--device cpu``) while torch's default device is "meta": a
tensor a job creates without an explicit device lands on "meta", where it has no values, and the run
fails: a meta tensor cannot meet a CPU one, be copied to the CPU, or be written. A GPU user would hit
the same tensors as CPU tensors meeting CUDA ones. Each job runs a representative slice: explain with
each method family, evaluate with each metric family, bee pretrain, concepts, influence fit / score /
self, and llm-explain replaying a recorded transcript; each run must succeed and write finite values on
the CPU. (tests/test_meta_device.py shows, method by method and metric by metric, that the values are
the same as without "meta".)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.cli.conftest import ROOT, SAMPLES, run_main

SHAPES, DIGITS = str(SAMPLES / "shapes_cnn.pt"), str(SAMPLES / "digits_cnn.pt")
MLP, LOGREG = str(SAMPLES / "breast_cancer_mlp.pt"), str(SAMPLES / "breast_cancer_logreg.pt")

#: (name, command lines run in order in one folder, the file whose tensors are compared)
JOBS = [
    ("explain-gradient", [["explain", DIGITS, "-m", "input_x_gradient", "-n", "2", "--out", "r"]], "r/attributions.safetensors"),
    ("explain-path", [["explain", DIGITS, "-m", "path_integrated_gradients", "-n", "2", "-p", "n_steps=4",
                       "-p", "baseline=train_sample", "--out", "r"]], "r/attributions.safetensors"),
    ("explain-noise", [["explain", DIGITS, "-m", "smoothgrad", "-n", "2", "-p", "n_samples=3", "--out", "r"]],
     "r/attributions.safetensors"),
    ("explain-perturbation", [["explain", SHAPES, "-m", "kernel_shap", "-n", "1", "-p", "n_samples=16",
                               "--out", "r"]], "r/attributions.safetensors"),
    ("explain-layer", [["explain", SHAPES, "-m", "gradcam", "-n", "2", "--out", "r"]], "r/attributions.safetensors"),
    ("explain-bee", [["explain", DIGITS, "-m", "bee", "-n", "2", "-p", "rounds=2", "-p", "n_steps=4", "--out", "r"]],
     "r/attributions.safetensors"),
    ("evaluate", [["evaluate", SHAPES, "--methods", "saliency", "-n", "2", "--metrics",
                   "deletion,max_sensitivity,random_logit,sparseness,pointing_game,completeness",
                   "-p", "max_sensitivity.samples=2", "--out", "r"]], "r/metrics.json"),
    ("evaluate-agreement", [["evaluate", LOGREG, "--methods", "saliency", "--reference", "coefficients", "-n", "2",
                             "--metrics", "feature_agreement,rank_correlation,faithfulness_correlation,infidelity",
                             "--out", "r"]], "r/metrics.json"),
    ("bee-pretrain", [["bee", "pretrain", DIGITS, "-n", "4", "-p", "rounds=2", "-p", "n_steps=4",
                       "--out", "p.safetensors"]], "p.safetensors"),
    ("concepts", [["concepts", DIGITS, "--class", "3", "-n", "8", "--n-concepts", "3", "--out", "r"]],
     "r/bank.safetensors"),
    ("influence", [["influence", "fit", MLP, "--train-n", "32", "--out", "f"],
                   ["influence", "score", MLP, "--factors", "f", "--train-n", "32", "-n", "2", "--out", "s"],
                   ["influence", "self", MLP, "--train-n", "32", "--out", "r"]], "s/scores.safetensors"),
    ("llm-explain", [["llm-explain", LOGREG, "--backend", "replay", "--transcript",
                      str(ROOT / "docs" / "llm-transcript.jsonl"), "--out", "r"]], "r/attributions.safetensors"),
]


@pytest.fixture
def meta_default() -> Iterator[None]:
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


def _values(path: Path) -> list[torch.Tensor]:
    if path.suffix == ".json":
        summary = json.loads(path.read_text())
        return [torch.tensor(v["values"], dtype=torch.float64, device="cpu")
                for per in summary["results"].values() for v in per.values()]
    return list(load_file(str(path)).values())


@pytest.mark.parametrize(("name", "lines", "output"), JOBS, ids=[job[0] for job in JOBS])
def test_a_job_runs_under_a_meta_default_device(name, lines, output, tmp_path, meta_default) -> None:
    folder = tmp_path / name
    folder.mkdir()
    for line in lines:
        result = run_main(*line, "--device", "cpu", cwd=folder)
        assert result.code == 0, (line, result.stderr)
    values = _values(folder / output)
    assert values and all(v.device.type == "cpu" for v in values)
    assert all(torch.isfinite(v.double()).all() or v.dtype == torch.float64 for v in values)
