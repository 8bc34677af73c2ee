"""Text classifiers through the installed entry point: a Hugging Face model directory built offline and
the shipped planted_text_transformer, explained token by token; evaluate with the planted evidence; the
refusals (custom code, pickled weights, mixed lengths, text for another model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.cli.conftest import SAMPLES
from tests.text_models import hf_model_dir

TEXT_MODEL = str(SAMPLES / "planted_text_transformer.pt")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hf_model_dir(tmp_path_factory.mktemp("hf") / "bert")


@pytest.mark.parametrize("method", ["saliency", "occlusion", "attention_rollout"])
def test_a_hugging_face_directory_is_explained_token_by_token(cli, tmp_path, hf_dir, method):
    out = tmp_path / method
    result = cli("explain", str(hf_dir), "--method", method, "--text", "the film was good",
                 "--text", "The plot was BAD", "--out", str(out), "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    rows = summary["tokens"]
    assert [row["tokens"] for row in rows] == [["the", "film", "was", "good"], ["the", "plot", "was", "bad"]]
    stored = load_file(out / "attributions.safetensors")
    assert stored["attributions"].shape == (2, 16, 4)  # the embedding width 16 by the 4 content tokens
    from xaibench.models.text import token_scores

    assert torch.tensor([row["scores"] for row in rows]).allclose(token_scores(stored["attributions"]), atol=1e-6)
    assert any(abs(v) > 0 for row in rows for v in row["scores"])
    assert {p.name for p in (out / "heatmaps").iterdir()} == {"sample_0000.png", "sample_0001.png", "tokens.html"}
    record = json.loads((out / "run.json").read_text())
    assert record["model"]["format"] == "huggingface" and record["model"]["meta"]["modality"] == "text"
    assert "positive" in record["model"]["meta"]["class_names"]


def test_the_shipped_text_model_prints_its_tokens_and_scores(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("explain", TEXT_MODEL, "--method", "integrated_gradients", "--text",
                 "the film was dull but the music was excellent", "--out", str(out))
    assert result.code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("#0"))
    assert "dull(" in line and "excellent(" in line
    page = (out / "heatmaps" / "tokens.html").read_text()
    assert "excellent" in page and "<script" not in page


def test_evaluate_compares_methods_against_the_planted_words(cli, tmp_path):
    out = tmp_path / "eval"
    result = cli("evaluate", TEXT_MODEL, "--methods", "integrated_gradients,occlusion,attention_rollout,random",
                 "--metrics", "pointing_game,comprehensiveness,sufficiency", "--n", "8", "--out", str(out), "--json")
    assert result.code == 0, result.stderr
    results = json.loads((out / "metrics.json").read_text())["results"]
    # the planted words decide the label: a faithful map points at one, a random one rarely does
    assert results["integrated_gradients"]["pointing_game"]["mean"] == 1.0
    assert results["random"]["pointing_game"]["mean"] < 0.5
    assert results["integrated_gradients"]["comprehensiveness"]["mean"] > results["random"]["comprehensiveness"]["mean"]
    assert (out / "heatmaps" / "occlusion" / "tokens.html").is_file()


def test_texts_of_different_lengths_are_explained_length_by_length(cli_in_process, tmp_path):
    texts = ["a great film", "the plot was dull and long", "an awful movie"]
    together = cli_in_process("explain", TEXT_MODEL, *[a for t in texts for a in ("--text", t)], "--json",
                              "--out", str(tmp_path / "together"))
    assert together.code == 0, together.stderr
    rows = together.json()["tokens"]
    assert [len(row["tokens"]) for row in rows] == [3, 6, 3]  # in the order given
    for text, row in zip(texts, rows, strict=True):
        alone = cli_in_process("explain", TEXT_MODEL, "--text", text, "--json", "--out", str(tmp_path / text))
        assert alone.json()["tokens"][0]["scores"] == pytest.approx(row["scores"], abs=1e-5)  # batch rounding
    stored = load_file(tmp_path / "together" / "attributions.safetensors")
    assert stored["attributions"].shape[-1] == 6 and stored["token_counts"].tolist() == [3, 6, 3]
    assert stored["attributions"][0, :, 3:].abs().max() == 0  # the shorter texts' padding
    mixed = cli_in_process("evaluate", TEXT_MODEL, *[a for t in texts for a in ("--text", t)], "--methods",
                           "saliency", "--metrics", "deletion", "--out", str(tmp_path / "eval"))
    assert mixed.code == 2 and "token lengths" in mixed.stderr and mixed.stderr.count("\n") == 1


def test_text_for_another_model_is_refused(cli_in_process, tmp_path):
    other = cli_in_process("explain", str(SAMPLES / "digits_cnn.pt"), "--text", "a great film")
    assert other.code == 2 and "--text needs a text model" in other.stderr
    data = cli_in_process("explain", TEXT_MODEL, "--data", "digits")
    assert data.code == 2 and "reads text" in data.stderr
    both = cli_in_process("explain", TEXT_MODEL, "--text", "a film", "--data", "planted_text:test")
    assert both.code == 2 and "either --text or --data" in both.stderr
    modality = cli_in_process("explain", TEXT_MODEL, "--text", "a film", "--modality", "image")
    assert modality.code == 2 and "this is a text model" in modality.stderr
    long = cli_in_process("explain", TEXT_MODEL, "--text", " ".join(["film"] * 70))
    assert long.code == 2 and "72 tokens with the special tokens, more than the model's 64" in long.stderr
    influence = cli_in_process("influence", "fit", TEXT_MODEL, "--out", str(tmp_path / "factors"))
    assert influence.code == 2 and "influence does not take text models" in influence.stderr
    assert not (tmp_path / "runs").exists()


def test_custom_code_and_pickled_weights_need_trust(cli_in_process, tmp_path, hf_dir):
    custom = tmp_path / "custom"
    custom.mkdir()
    for item in hf_dir.iterdir():
        (custom / item.name).write_bytes(item.read_bytes())
    config = json.loads((custom / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling.Model"}
    (custom / "config.json").write_text(json.dumps(config))
    refused = cli_in_process("explain", str(custom), "--text", "the film was good")
    assert refused.code == 2 and "--trust-model" in refused.stderr
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (pickled / name).write_bytes((hf_dir / name).read_bytes())
    torch.save(load_file(hf_dir / "model.safetensors"), pickled / "pytorch_model.bin")
    refused = cli_in_process("explain", str(pickled), "--text", "the film was good")
    assert refused.code == 2 and "pickled weights" in refused.stderr
    headless = tmp_path / "headless"  # the encoder without its trained classification head
    headless.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (headless / name).write_bytes((hf_dir / name).read_bytes())
    from safetensors.torch import save_file

    weights = {k: v for k, v in load_file(hf_dir / "model.safetensors").items() if not k.startswith("classifier")}
    save_file(weights, str(headless / "model.safetensors"), metadata={"format": "pt"})
    refused = cli_in_process("explain", str(headless), "--text", "the film was good")
    assert refused.code == 2 and "no trained weights for classifier.bias, classifier.weight" in refused.stderr
    tokenizer = cli_in_process("explain", str(hf_dir), "--tokenizer", str(hf_dir / "tokenizer.json"), "--text", "a")
    assert tokenizer.code == 2 and "leave out --arch and --tokenizer" in tokenizer.stderr
    assert not (tmp_path / "runs").exists()


def test_a_state_dict_with_a_tokenizer_file_and_a_named_embedding_layer(cli_in_process, tmp_path):
    from xaibench.models import load_model

    shipped = load_model(TEXT_MODEL).module
    torch.save(shipped.model.state_dict(), tmp_path / "weights.pt")
    shipped.tokenizer.tokenizer.save(str(tmp_path / "tokenizer.json"))
    args = ("explain", str(tmp_path / "weights.pt"), "--arch", "text_transformer", "--arch-arg", "vocab_size=69",
            "--tokenizer", str(tmp_path / "tokenizer.json"), "--text", "an awful film", "--json")
    found = cli_in_process(*args, "--out", str(tmp_path / "found"))
    named = cli_in_process(*args, "--out", str(tmp_path / "named"), "--layer", "token_embedding")
    listed = cli_in_process(*args, "--out", str(tmp_path / "listed"), "--layer", "model.token_embedding")  # inspect's name
    assert found.code == 0 and named.code == 0 and listed.code == 0, found.stderr + named.stderr + listed.stderr
    assert found.json()["tokens"] == named.json()["tokens"] == listed.json()["tokens"]
    assert found.json()["tokens"][0]["tokens"] == ["[UNK]", "awful", "film"]  # "an" is not in the vocabulary
    wrong = cli_in_process(*args, "--out", str(tmp_path / "wrong"), "--layer", "head")
    assert wrong.code == 2 and "not an nn.Embedding" in wrong.stderr
    image = cli_in_process("explain", str(SAMPLES / "digits_cnn.pt"), "--layer", "conv1", "--out", str(tmp_path / "img"))
    assert image.code == 2 and "not a text model" in image.stderr
