"""A researcher's own CNN in every format, on their own image folder, through the CLI.

Nothing is trained: a small CNN is built here and saved as a state_dict beside the module that defines
it (``--arch ownnet:make``, found in the current folder), as TorchScript, as a torch.export program and
as a pickled module (safetensors with ``--arch`` is tested in test_explain.py). It runs on an image
folder that holds two of its ten classes (``3/`` and ``7/``) at 48x48 while the model takes 32x32
(``--resize 32``); ``--classes 10`` names its classes 0..9. Labels and targets must be the model's class
indices 3 and 7, never the folders' positions 0 and 1.

The commands run the CLI's ``main`` in this process, each with ``ownnet`` dropped from ``sys.modules`` and
with the current folder not on ``sys.path`` (as in an installed console script), so each must find the
module from the current folder itself; tests/cli/test_user_code.py does the same through the entry point.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.cli.conftest import run_main

MODULE = textwrap.dedent("""
    import torch
    from torch import nn


    class OwnNet(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))

        def forward(self, x):
            return self.head(self.features(x))


    def make(num_classes=10):
        torch.manual_seed(0)
        return OwnNet(num_classes)
""")
LABELS = [3, 3, 3, 7, 7, 7]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module file, the model in four formats and the image folder, in one folder."""
    folder = tmp_path_factory.mktemp("own")
    (folder / "ownnet.py").write_text(MODULE)
    sys.path.insert(0, str(folder))
    try:
        model = importlib.import_module("ownnet").make().eval()
        example = torch.rand(2, 3, 32, 32)
        torch.save(model.state_dict(), folder / "weights.pt")
        torch.jit.script(model).save(str(folder / "scripted.pt"))
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(folder / "exported.pt2"))
        torch.save(model, folder / "pickled.pt")  # refers to ownnet.OwnNet: found from the current folder
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("ownnet", None)
    pixels = np.random.default_rng(0).integers(0, 256, size=(6, 48, 48, 3), dtype=np.uint8)
    for i, label in enumerate(LABELS):
        (folder / "images" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[i]).save(folder / "images" / str(label) / f"img{i}.png")
    return folder


FORMATS = {
    "state_dict": ["weights.pt", "--arch", "ownnet:make"],
    "torchscript": ["scripted.pt", "--trust-model"],
    "export": ["exported.pt2", "--trust-model"],
    "pickle": ["pickled.pt", "--trust-model"],
}
DATA = ["--data", "images", "--classes", "10", "--resize", "32", "--target", "label"]


def _commands(model: list[str]) -> dict[str, list[str]]:
    return {
        "saliency": ["explain", *model, "-m", "saliency", *DATA, "--out", "saliency"],
        "gradcam": ["explain", *model, "-m", "gradcam", *DATA, "--out", "gradcam"],
        "evaluate": ["evaluate", *model, "--methods", "saliency,random", "--metrics", "deletion,sparseness",
                     *DATA, "--out", "evaluate"],
        "concepts": ["concepts", *model, "--class", "3", "--layer", "features.4", "--n-concepts", "2",
                     "--data", "images", "--classes", "10", "--resize", "32", "--out", "concepts"],
    }


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_explains_evaluates_and_extracts_concepts(workspace: Path, tmp_path: Path, fmt: str):
    for name in ("ownnet.py", "images"):
        (tmp_path / name).symlink_to(workspace / name)
    (tmp_path / FORMATS[fmt][0]).symlink_to(workspace / FORMATS[fmt][0])
    assert "" not in sys.path and all(Path(entry).resolve() != tmp_path.resolve() for entry in sys.path)
    results = {}
    for name, args in _commands(FORMATS[fmt]).items():
        sys.modules.pop("ownnet", None)  # found afresh from the current folder by every command
        path = list(sys.path)
        results[name] = run_main(*args, cwd=tmp_path)
        assert sys.path == path  # the folder was on the import path only while importing
    sys.modules.pop("ownnet", None)
    layered = ("gradcam", "concepts")
    for name, result in results.items():
        if fmt == "torchscript" and name in layered:  # TorchScript runs no Python hooks: refused, saying why
            assert result.code == 2, (name, result.stderr)
            assert result.stderr.count("\n") == 1 and ".pt2" in result.stderr, result.stderr
            assert not (tmp_path / name).exists()
            continue
        assert result.code == 0, (name, result.stderr)
    for run in ("saliency", "evaluate") + (() if fmt == "torchscript" else ("gradcam",)):
        stored = load_file(str(tmp_path / run / "attributions.safetensors"))
        assert stored["labels"].tolist() == LABELS, run
        assert stored["targets"].tolist() == LABELS, run
        assert stored["inputs"].shape[1:] == (3, 32, 32)
        record = json.loads((tmp_path / run / "run.json").read_text())
        assert record["data"]["preprocessing"]["resize"] == [32]
    if fmt != "torchscript":
        summary = json.loads((tmp_path / "concepts" / "concepts.json").read_text())
        assert summary["class"] == "3" and summary["images"] == 3 and summary["layer"] == "features.4"
