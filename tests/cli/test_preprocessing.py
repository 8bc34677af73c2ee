"""Preprocessing flags for user data (--resize, --center-crop, --mean, --std, --normalize), end to end: the
model gets the resized, normalised images, run.json records the flags, ``xaibench heatmap`` draws over the
images as the user knows them, and every command that reads data applies the same flags.

One explain run goes through the installed entry point; the rest run ``main`` in this process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.cli.conftest import SAMPLES, run_main
from xaibench.data import load_data
from xaibench.data.transforms import PRESETS, resize_images, resize_masks

DIGITS = str(SAMPLES / "digits_cnn.pt")  # input (1, 32, 32)
SHAPES = str(SAMPLES / "shapes_cnn.pt")  # input (3, 64, 64)
LOGREG = str(SAMPLES / "breast_cancer_logreg.pt")


def _large_digits(root: Path) -> Path:
    """Two digits-test images each of the classes 3 and 7 as 64x64 PNGs in class folders."""
    data = load_data("digits:test")
    for digit in (3, 7):
        for rank, position in enumerate(torch.nonzero(data.y == digit).flatten()[:2].tolist()):
            pixels = (data.x[position, 0] * 255).round().to(torch.uint8).numpy()
            (root / str(digit)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).resize((64, 64), Image.BILINEAR).save(root / str(digit) / f"{rank}.png")
    return root


@pytest.fixture(scope="module")
def resized_run(tmp_path_factory) -> Path:
    """explain over 64x64 PNGs with a 32x32 model: --resize 32 --mean 0.5 --std 0.25."""
    root = tmp_path_factory.mktemp("resized")
    folder = _large_digits(root / "digits64")
    out = root / "run"
    result = run_main("explain", DIGITS, "--data", str(folder), "-m", "saliency", "--resize", "32", "--mean",
                      "0.5", "--std", "0.25", "--out", str(out), "--json", cwd=root)
    assert result.code == 0, result.stderr
    return out


def _refused(result, message: str) -> None:
    assert result.code == 2, (result.code, result.stderr)
    assert result.stderr.strip().splitlines() == [f"error: {message}"]


def test_resized_images_reach_the_model_normalised_and_the_run_records_the_flags(resized_run):
    record = json.loads((resized_run / "run.json").read_text())
    flags = {"preset": None, "mean": [0.5], "std": [0.25], "resize": [32], "center_crop": None}
    assert record["config"]["selection"]["preprocessing"] == record["data"]["preprocessing"] == flags
    meta = record["model"]["meta"]
    assert (meta["mean"], meta["std"], meta["input_shape"]) == ([0.5], [0.25], [1, 32, 32])
    files = sorted((resized_run.parent / "digits64").rglob("*.png"))
    raw = np.stack([np.asarray(Image.fromarray(np.asarray(Image.open(f), dtype=np.float32) / 255, mode="F")
                               .resize((32, 32), Image.BILINEAR)) for f in files])  # PIL, not xaibench
    inputs = load_file(str(resized_run / "attributions.safetensors"))["inputs"]
    assert inputs.shape == (4, 1, 32, 32)
    np.testing.assert_allclose(inputs[:, 0].numpy(), (raw - 0.5) / 0.25, atol=1e-4)


def test_heatmap_redraws_over_the_denormalised_images(resized_run, tmp_path):
    result = run_main("heatmap", str(resized_run), "--out", str(tmp_path / "again"))
    assert result.code == 0, result.stderr
    names = sorted(p.name for p in (resized_run / "heatmaps").glob("*.png"))
    assert len(names) == 5
    for name in names:  # explain drew over the raw resized images; the redraw must see the same
        first, again = (np.asarray(Image.open(d / name)) for d in (resized_run / "heatmaps", tmp_path / "again"))
        assert np.array_equal(first, again), name


def test_evaluate_reusing_the_run_takes_its_preprocessing(resized_run, tmp_path):
    result = run_main("evaluate", DIGITS, "--attributions", str(resized_run), "--metrics", "sparseness",
                      "--out", str(tmp_path / "eval"), "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    record = json.loads((tmp_path / "eval" / "run.json").read_text())
    assert record["data"]["preprocessing"]["resize"] == [32] and record["model"]["meta"]["mean"] == [0.5]


def test_a_tampered_recorded_preprocessing_is_refused(resized_run, tmp_path):
    run = Path(shutil.copytree(resized_run, tmp_path / "run"))
    record = json.loads((run / "run.json").read_text())
    record["data"]["preprocessing"]["std"] = [0]
    (run / "run.json").write_text(json.dumps(record))
    result = run_main("evaluate", DIGITS, "--attributions", str(run), "--metrics", "sparseness", cwd=tmp_path)
    _refused(result, f"{run / 'run.json'}: data.preprocessing: --std values must be above 0, got 0")
    assert not (tmp_path / "runs").exists()


def test_imagenet_preset_resize_and_crop_on_shapes_with_masks(tmp_path):
    result = run_main("explain", SHAPES, "-n", "2", "-m", "saliency", "--normalize", "imagenet", "--resize", "128",
                      "--center-crop", "64", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.code == 0, result.stderr
    data = load_data("shapes:test").select([0, 1])
    raw = resize_images(data.x, (128, 128))[..., 32:96, 32:96]
    mean, std = (torch.tensor(v).reshape(1, 3, 1, 1) for v in PRESETS["imagenet"])
    stored = load_file(str(tmp_path / "run" / "attributions.safetensors"))
    assert torch.allclose(stored["inputs"], (raw - mean) / std, atol=1e-5)
    masks = resize_masks(data.masks, (128, 128))[..., 32:96, 32:96]
    assert torch.equal(stored["masks"].bool(), masks) and masks.any()
    meta = json.loads((tmp_path / "run" / "run.json").read_text())["model"]["meta"]
    assert (meta["mean"], meta["std"]) == tuple(list(v) for v in PRESETS["imagenet"])


def test_unresized_large_images_are_refused_with_the_resize_that_fits(tmp_path):
    folder = _large_digits(tmp_path / "digits64")
    _refused(run_main("explain", DIGITS, "--data", str(folder), cwd=tmp_path),
             "data samples have shape (1, 64, 64) but the model expects (1, 32, 32); --resize 32x32 resizes the "
             "images to fit")


@pytest.mark.parametrize(("flags", "message"), [
    (("--std", "0"), "--std values must be above 0, got 0.0"),
    (("--mean", "0.5,x"), "--mean takes comma-separated numbers such as 0.485,0.456,0.406, got '0.5,x'"),
    (("--normalize", "imagenet"), ("--normalize imagenet gives 3 mean values but the samples have 1 channel; "
                                   "give 1 value")),
    (("--resize", "32x0"), "--resize takes a positive size N or HxW, got 32x0"),
])
def test_bad_values_exit_2_in_one_line(flags, message, tmp_path):
    _refused(run_main("explain", DIGITS, "-n", "2", *flags, cwd=tmp_path), message)
    assert not (tmp_path / "runs").exists()


CROP = "--center-crop 33x33 is larger than the images, 32x32 (height x width, after any --resize)"


@pytest.mark.parametrize("command", [
    ("explain", DIGITS), ("evaluate", DIGITS, "--methods", "saliency"), ("bee", "pretrain", DIGITS),
    ("bee", "report", DIGITS, "p.st"),
    ("concepts", DIGITS, "--class", "3"), ("influence", "fit", DIGITS), ("influence", "self", DIGITS),
    ("influence", "score", DIGITS, "--factors", "none"),
], ids=lambda command: " ".join(command[:2]) if command[0] in ("bee", "influence") else command[0])
def test_every_command_that_reads_data_applies_the_flags(command, tmp_path):
    _refused(run_main(*command, "--center-crop", "33", cwd=tmp_path), CROP)


def test_llm_explain_applies_the_flags(tmp_path):
    _refused(run_main("llm-explain", LOGREG, "--resize", "8", cwd=tmp_path),
             "--resize applies to images (N, C, H, W), but breast_cancer holds tabular data of shape (1, 30)")


def test_influence_queries_get_the_same_preprocessing(tmp_path):
    folder = _large_digits(tmp_path / "digits64")
    fit = run_main("influence", "fit", DIGITS, "--train-n", "8", "--strategy", "identity", "--resize", "32",
                   "--out", str(tmp_path / "factors"), cwd=tmp_path)
    assert fit.code == 0, fit.stderr
    score = run_main("influence", "score", DIGITS, "--factors", str(tmp_path / "factors"), "--train-n", "8",
                     "--query", str(folder), "--resize", "32", "-n", "2", "--out", str(tmp_path / "run"),
                     "--json", cwd=tmp_path)
    assert score.code == 0, score.stderr
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["config"]["query"]["preprocessing"]["resize"] == [32]
    assert record["train"]["preprocessing"]["resize"] == [32]


def test_reference_samples_drawn_from_the_data_are_preprocessed_too(tmp_path):
    folder = _large_digits(tmp_path / "digits64")  # expected_gradients draws its baselines from this folder
    result = run_main("explain", DIGITS, "--data", str(folder), "-m", "expected_gradients", "-p", "n_samples=4",
                      "-n", "1", "--resize", "32", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.code == 0, result.stderr
