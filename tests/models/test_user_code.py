"""The user's own code is imported as ``python -m`` would (current folder first, sys.path restored);
what cannot be imported is named, with the fix; a file's architecture still needs --trust-model."""

from __future__ import annotations

import importlib.util
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from xaibench.core.errors import InputError, UntrustedModelError
from xaibench.models import load_model
from xaibench.models.checkpoint import resolve_architecture

CNN = """
from torch import nn

def make_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, num_classes))
"""

NET = """
from torch import nn

class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x)
"""


@pytest.fixture
def unique() -> Iterator[str]:
    """A module name no other test imports, forgotten (sys.modules) after the test."""
    name = f"usermod_{uuid.uuid4().hex[:8]}"
    yield name
    for key in [k for k in sys.modules if k == name or k.startswith(f"{name}.") or k == f"helper_{name}"]:
        del sys.modules[key]


@pytest.fixture
def path_kept() -> Iterator[None]:
    before = list(sys.path)
    yield
    assert sys.path == before


def _write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(source)
    return path


def _arch(ref: str):
    return resolve_architecture(ref, trusted=True, source="--arch")


def test_module_in_the_current_folder_is_found(tmp_path, monkeypatch, unique, path_kept):
    _write(tmp_path, unique, CNN)
    monkeypatch.chdir(tmp_path)
    factory = _arch(f"{unique}:make_cnn")
    assert factory.__module__ == unique
    assert sys.modules[unique].__file__ == str(tmp_path / f"{unique}.py")
    assert factory(num_classes=3)(torch.zeros(1, 1, 4, 4)).shape == (1, 3)


def test_missing_module_says_where_it_looked_and_how_to_fix_it(tmp_path, monkeypatch, unique, path_kept):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as error:
        _arch(f"{unique}:make_cnn")
    assert str(error.value) == (
        f"architecture '{unique}:make_cnn': cannot import module '{unique}' (No module named '{unique}'); "
        f"xaibench looks in the current folder ({tmp_path}) and on PYTHONPATH: run from the folder that holds "
        f"{unique}.py (or package {unique}/), add that folder to PYTHONPATH, "
        f"or name the file: --arch path/to/{unique}.py:FACTORY")


def test_missing_dependency_of_the_module_is_named(tmp_path, monkeypatch, unique, path_kept):
    _write(tmp_path, unique, "import no_such_dependency_xyz\n" + CNN)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=re.escape(
            f"importing module '{unique}' failed: it needs module 'no_such_dependency_xyz' "
            "(No module named 'no_such_dependency_xyz'); install it or add its folder to PYTHONPATH")):
        _arch(f"{unique}:make_cnn")


def test_broken_module_is_an_input_error(tmp_path, monkeypatch, unique, path_kept):
    _write(tmp_path, unique, "def make_cnn(:\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=f"importing module '{unique}' failed: SyntaxError: "):
        _arch(f"{unique}:make_cnn")


def test_module_file_by_path_imports_its_siblings(tmp_path, monkeypatch, unique, path_kept):
    helper = f"helper_{unique}"
    _write(tmp_path / "models", helper, CNN)
    path = _write(tmp_path / "models", unique, f"from {helper} import make_cnn\n")
    monkeypatch.chdir(tmp_path)  # the file's folder is searched, not (only) the current one
    factory = _arch(f"{path}:make_cnn")
    assert factory.__module__ == helper
    assert sys.modules[unique].__file__ == str(path)


def test_module_file_whose_name_is_taken(tmp_path, path_kept):
    path = _write(tmp_path, "json", CNN)
    with pytest.raises(InputError, match=re.escape(
            f"{path}: the module name 'json' is already taken by {sys.modules['json'].__file__}; rename the file")):
        _arch(f"{path}:make_cnn")


@pytest.mark.parametrize("name, reason", [
    ("missing.py", "is not a Python file"), ("my-model.py", "'my-model' cannot be imported as a Python module"),
])
def test_module_file_refusals(tmp_path, name, reason, path_kept):
    if name != "missing.py":
        (tmp_path / name).write_text(CNN)
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / name}")) as error:
        _arch(f"{tmp_path / name}:make_cnn")
    assert reason in str(error.value)


def test_checkpoint_naming_a_local_module_still_needs_trust(tmp_path, monkeypatch, unique, path_kept):
    """The current folder widens where a module is found, not who may name one: never a file unless trusted."""
    marker = tmp_path / "ran"
    _write(tmp_path, unique, f"open({str(marker)!r}, 'w').close()\n" + CNN)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(32, 10))
    checkpoint = {"format": "xaibench-checkpoint", "version": 1, "arch": f"{unique}:make_cnn",
                  "arch_kwargs": {}, "state_dict": model.state_dict(), "meta": {}}
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UntrustedModelError, match="--trust-model"):
        load_model(tmp_path / "ckpt.pt")
    assert not marker.exists() and unique not in sys.modules
    loaded = load_model(tmp_path / "ckpt.pt", trust_model=True)
    assert marker.exists() and type(loaded.module[0]) is torch.nn.Conv2d


def _pickle_net(tmp_path: Path, name: str) -> Path:
    """A torch.save'd instance of ``name``.Net, whose module is then forgotten by this process."""
    source = _write(tmp_path / "code", name, NET)
    spec = importlib.util.spec_from_file_location(name, source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    torch.save(module.Net(), tmp_path / "net.pt")
    del sys.modules[name]
    return tmp_path / "net.pt"


def test_pickle_whose_module_is_missing_names_it(tmp_path, monkeypatch, unique, path_kept):
    path = _pickle_net(tmp_path, unique)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as error:
        load_model(path, trust_model=True)
    assert str(error.value) == (f"{path}: the pickled model needs module '{unique}' (No module named '{unique}'); "
                                "run from the folder that holds it or add it to PYTHONPATH")


def test_pickle_class_module_is_found_in_the_current_folder(tmp_path, monkeypatch, unique, path_kept):
    path = _pickle_net(tmp_path, unique)
    monkeypatch.chdir(tmp_path / "code")
    loaded = load_model(path, trust_model=True)
    assert (type(loaded.module).__module__, type(loaded.module).__name__, loaded.format) == (unique, "Net", "pickle")


def test_pickle_whose_class_is_gone_names_it(tmp_path, monkeypatch, unique, path_kept):
    path = _pickle_net(tmp_path, unique)
    (tmp_path / "code" / f"{unique}.py").write_text("x = 1\n")  # the module, without its class
    monkeypatch.chdir(tmp_path / "code")
    with pytest.raises(InputError, match=re.escape(
            f"{path}: the pickled model needs 'Net' from module '{unique}', which has no such name "
            f"({tmp_path / 'code' / unique}.py); use the version of the module the model was saved with")):
        load_model(path, trust_model=True)


def test_pickle_of_a_class_from_a_script(tmp_path, path_kept):
    main = sys.modules["__main__"]
    Net = type("ScriptNet", (torch.nn.Linear,), {"__module__": "__main__"})
    main.ScriptNet = Net  # pickle looks the class up where it says it lives
    try:
        torch.save(Net(2, 2), tmp_path / "script.pt")
    finally:
        del main.ScriptNet
    with pytest.raises(InputError, match=re.escape(
            "the pickled model's class 'ScriptNet' was defined in the script that saved it (__main__)")):
        load_model(tmp_path / "script.pt", trust_model=True)


@pytest.mark.parametrize("ref", [":make_cnn", "mymodule:"])
def test_architecture_with_an_empty_part(ref):
    with pytest.raises(InputError, match=re.escape(
            f"architecture {ref!r} must be NAME, module:factory or path/to/file.py:factory")):
        _arch(ref)
