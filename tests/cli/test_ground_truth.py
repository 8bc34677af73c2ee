"""``xaibench evaluate --reference ground_truth``: methods scored against the data's known attributions.

The installed entry point (``cli``) scores the generating model of synthetic_linear, where the values are
known exactly; the refusal and the sequence masks run ``main`` in this process (``cli_in_process``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from xaibench.metrics import compute

from tests.cli.conftest import SAMPLES
from xaibench.data import load_data, select
from xaibench.models import ModelMeta, save_checkpoint
from xaibench.models.archs import logreg

WEIGHTS = torch.tensor([2.0, -1.5, 1.0, -0.75, 0.5, 1.25, -1.0, 0.0, 0.0, 0.0])  # synthetic.LINEAR_WEIGHTS


def _generating_model(path: Path) -> str:
    """synthetic_linear's own score as a two-class logistic model: logits (-s/2, s/2)."""
    model = logreg(10, 2)
    with torch.no_grad():
        model.fc.weight.copy_(torch.stack([-WEIGHTS / 2, WEIGHTS / 2]))
        model.fc.bias.zero_()
    meta = ModelMeta(modality="tabular", input_shape=(10,), class_names=("negative", "positive"),
                     dataset="synthetic_linear")
    save_checkpoint(path, model, arch="logreg", arch_kwargs={"in_features": 10, "num_classes": 2}, meta=meta)
    return str(path)


def _top3(values: torch.Tensor) -> set[int]:
    return set(values.abs().argsort(descending=True)[:3].tolist())


def test_gradient_x_input_agrees_exactly_with_the_ground_truth_of_its_generating_model(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("evaluate", _generating_model(tmp_path / "linear.pt"), "--methods", "input_x_gradient,saliency",
                 "--metrics", "feature_agreement,sign_agreement,rank_agreement", "--reference", "ground_truth",
                 "--target", "label", "-n", "16", "--out", str(out), "--json")
    assert result.code == 0, result.stderr
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["reference"] == "ground_truth" and summary["methods"] == ["input_x_gradient", "saliency"]
    for metric in ("feature_agreement", "sign_agreement", "rank_agreement"):
        assert summary["results"]["input_x_gradient"][metric]["values"] == [1.0] * 16
    data = select(load_data("synthetic_linear:test"), n=16)
    tensors = load_file(str(out / "attributions.safetensors"))
    assert torch.equal(tensors["ground_truth"], data.ground_truth)
    assert torch.equal(tensors["attributions/input_x_gradient"], data.ground_truth / 2)
    # saliency ranks by |w| whatever x is: its top 3 is {0, 1, 5}; the truth's is by |w_i x_i|
    expected = [len(_top3(WEIGHTS) & _top3(truth)) / 3 for truth in data.ground_truth]
    assert summary["results"]["saliency"]["feature_agreement"]["values"] == expected
    assert len(set(expected)) > 1  # the samples differ, so the reference is each sample's own truth


def test_ground_truth_reference_on_data_without_one_is_one_line_and_exit_2(cli_in_process, tmp_path):
    result = cli_in_process("evaluate", str(SAMPLES / "breast_cancer_logreg.pt"), "--methods", "saliency",
                            "--metrics", "feature_agreement", "--reference", "ground_truth", "-n", "4",
                            "--out", str(tmp_path / "run"))
    assert result.code == 2
    assert result.stderr.strip().splitlines() == [(
        "error: --reference ground_truth needs data with ground-truth attributions and this data has none "
        "(the synthetic_* datasets have them)")]
    assert not (tmp_path / "run").exists()


def test_motif_positions_serve_as_sequence_masks_and_reference(cli_in_process, tmp_path):
    out = tmp_path / "run"
    result = cli_in_process("evaluate", str(SAMPLES / "synthetic_motifs_cnn.pt"), "--methods", "saliency",
                            "--metrics", "pointing_game,feature_agreement", "--reference", "ground_truth",
                            "--indices", "7,3,12,40", "--out", str(out))
    assert result.code == 0, result.stderr
    data = select(load_data("synthetic_motifs:test"), indices="7,3,12,40")
    tensors = load_file(str(out / "attributions.safetensors"))
    attributions, target = tensors["attributions/saliency"], tensors["targets"]
    results = json.loads((out / "metrics.json").read_text())["results"]["saliency"]
    expected = {"pointing_game": compute("pointing_game", None, data.x, attributions, target=target,
                                         masks=data.masks),
                "feature_agreement": compute("feature_agreement", None, data.x, attributions, target=target,
                                             reference=data.masks[:, None].float())}
    for metric, value in expected.items():
        assert results[metric]["values"] == value.scores.tolist()
