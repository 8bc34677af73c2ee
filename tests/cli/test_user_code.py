"""A researcher's own code through the CLI: ``--arch module:factory`` finds a module in the current folder,
and a pickle whose class cannot be imported names the missing module (exit 2, one line)."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.cli.conftest import run_cli, run_main
from tests.models.test_user_code import NET

CNN = """
from torch import nn

def make_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(4), nn.Flatten(),
                         nn.Linear(4 * 16, num_classes))
"""



def _import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_state_dict_with_a_module_in_the_current_folder(tmp_path):
    (tmp_path / "mymodule.py").write_text(CNN)
    torch.manual_seed(0)
    model = _import_file(tmp_path / "mymodule.py", f"mymodule_{uuid.uuid4().hex[:8]}").make_cnn().eval()
    torch.save(model.state_dict(), tmp_path / "cnn.pt")
    result = run_cli("explain", "cnn.pt", "--arch", "mymodule:make_cnn", "--data", "digits", "-n", "3",
                     "-m", "saliency", "--out", "run", "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    tensors = load_file(str(tmp_path / "run" / "attributions.safetensors"))
    with torch.no_grad():  # the run used the user's module with the saved weights
        assert torch.equal(tensors["predictions"], model(tensors["inputs"]).argmax(1))


def test_pickle_whose_class_module_is_missing(tmp_path):
    name = f"mymodels_{uuid.uuid4().hex[:8]}"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / f"{name}.py").write_text(NET)
    torch.save(_import_file(tmp_path / "code" / f"{name}.py", name).Net(), tmp_path / "net.pt")
    del sys.modules[name]
    result = run_main("inspect", "net.pt", "--trust-model", cwd=tmp_path)
    assert result.code == 2
    assert result.stderr == (f"error: net.pt: the pickled model needs module '{name}' (No module named '{name}'); "
                             "run from the folder that holds it or add it to PYTHONPATH\n")
    found = run_main("inspect", "../net.pt", "--trust-model", "--json", cwd=tmp_path / "code")
    assert found.code == 0 and found.json()["parameters"] == 8
    del sys.modules[name]
