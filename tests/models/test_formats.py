"""Every model format loads to a module with the original's outputs; unsafe content never runs."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import make_inputs, make_net
from xaibench.core.errors import InputError, UnknownNameError, UntrustedModelError
from xaibench.models import MODEL_FORMATS, ModelMeta, ModelSource, load_model, save_checkpoint
from xaibench.models.archs import mlp

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

META = ModelMeta(modality="tabular", input_shape=(6,), class_names=("a", "b", "c"),
                 value_range=(-1.0, 1.0), dataset="toy", feature_names=tuple("uvwxyz"))


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return mlp(6, 3, hidden=8).eval()


def _assert_same_outputs(loaded: torch.nn.Module, original: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        assert torch.equal(loaded(x), original(x))


def test_formats_and_their_safety():
    assert {name: MODEL_FORMATS.get(name).safe for name in MODEL_FORMATS} == {
        "checkpoint": True, "state_dict": True, "safetensors": True,
        "torchscript": False, "export": False, "pickle": False,
    }


def test_checkpoint(tmp_path):
    model, path = _mlp(), tmp_path / "model.pt"
    save_checkpoint(path, model, arch="mlp", arch_kwargs={"in_features": 6, "num_classes": 3,
                                                          "hidden": 8}, meta=META)
    loaded = load_model(path)
    assert (loaded.format, loaded.meta, loaded.path) == ("checkpoint", META, str(path))
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not loaded.module.training
    _assert_same_outputs(loaded.module, model, make_inputs("tabular"))


@pytest.mark.parametrize("kind", ["state_dict", "safetensors"])
def test_bare_weights_need_an_architecture(tmp_path, kind):
    model = _mlp()
    path = tmp_path / ("w.pt" if kind == "state_dict" else "w.safetensors")
    if kind == "state_dict":
        torch.save(model.state_dict(), path)
    else:
        save_file(model.state_dict(), path)
    with pytest.raises(InputError, match=r"w\.\w+ holds .* pass --arch NAME \(one of: digits_cnn"):
        load_model(path)
    loaded = load_model(path, arch="mlp", arch_kwargs={"in_features": 6, "num_classes": 3, "hidden": 8})
    assert (loaded.format, loaded.meta) == (kind, ModelMeta())
    _assert_same_outputs(loaded.module, model, make_inputs("tabular"))


def test_user_given_module_factory_is_trusted(tmp_path):
    model, path = make_net("image"), tmp_path / "w.safetensors"
    save_file(model.state_dict(), path)
    loaded = load_model(path, arch="tests.conftest:small_net", arch_kwargs={"modality": "image"})
    _assert_same_outputs(loaded.module, model, make_inputs("image"))


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_needs_trust(tmp_path, how):
    model, x, path = make_net("image"), make_inputs("image"), tmp_path / "model.ts"
    compiled = torch.jit.script(model) if how == "script" else torch.jit.trace(model, x)
    compiled.save(str(path))
    with pytest.raises(UntrustedModelError, match="model.ts is a TorchScript archive.*--trust-model"):
        load_model(path)
    loaded = load_model(path, trust_model=True)
    assert loaded.format == "torchscript"
    _assert_same_outputs(loaded.module, model, x)


@pytest.mark.parametrize("dynamic", [False, True])
def test_exported_program_needs_trust(tmp_path, dynamic):
    model, path = make_net("sequence"), tmp_path / "model.pt2"
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.export.save(torch.export.export(model, (make_inputs("sequence", n=2),), dynamic_shapes=shapes),
                      path)
    with pytest.raises(UntrustedModelError, match="model.pt2 is a torch.export program"):
        load_model(path)
    loaded = load_model(path, trust_model=True)
    assert loaded.format == "export" and not loaded.module.training
    assert loaded.module.batch_size is None  # a static program that is shown to run at any batch size
    _assert_same_outputs(loaded.module, model, make_inputs("sequence", n=5))


def test_pickled_module_needs_trust(tmp_path):
    model, path = _mlp(), tmp_path / "full.pt"
    torch.save(model, path)
    with pytest.raises(UntrustedModelError, match="full.pt is a pickled Python object; loading it "
                       "can run code from the file; pass --trust-model only for files you trust"):
        load_model(path)
    loaded = load_model(path, trust_model=True)
    assert (loaded.format, loaded.meta) == ("pickle", ModelMeta())
    _assert_same_outputs(loaded.module, model, make_inputs("tabular"))


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch '{self.marker}'",)


WRITERS = {
    "pickle": lambda obj, path: path.write_bytes(pickle.dumps(obj)),
    "torch.save": lambda obj, path: torch.save(obj, path),
    "torch.save legacy": lambda obj, path: torch.save(obj, path, _use_new_zipfile_serialization=False),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_malicious_pickle_never_runs_without_trust(tmp_path, writer):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    WRITERS[writer](Payload(marker), path)
    with pytest.raises(UntrustedModelError, match="--trust-model"):
        load_model(path)
    assert not marker.exists()
    with pytest.raises(InputError):  # trusted, the payload runs (so the check above can fail)
        load_model(path, trust_model=True)
    assert marker.exists()


def _checkpoint(arch: str, arch_kwargs: dict, state_dict: dict, version: int = 1) -> dict:
    return {"format": "xaibench-checkpoint", "version": version, "arch": arch,
            "arch_kwargs": arch_kwargs, "state_dict": state_dict, "meta": {}}


@pytest.mark.parametrize(
    "arch", ["os:system", "xaibench.models.archs:_conv_blocks", "tests.conftest:small_net"])
def test_checkpoint_naming_foreign_code_needs_trust(tmp_path, arch):
    marker, path = tmp_path / "pwned", tmp_path / "ckpt.pt"
    kwargs = {"command": f"touch '{marker}'"} if arch == "os:system" else {"modality": "image"}
    torch.save(_checkpoint(arch, kwargs, make_net("image").state_dict()), path)
    with pytest.raises(UntrustedModelError, match=f"names architecture '{arch}'.*--trust-model"):
        load_model(path)
    assert not marker.exists()


def test_trusted_or_user_chosen_architecture(tmp_path):
    model, path = make_net("image"), tmp_path / "ckpt.pt"
    torch.save(_checkpoint("tests.conftest:small_net", {"modality": "image"}, model.state_dict()), path)
    _assert_same_outputs(load_model(path, trust_model=True).module, model, make_inputs("image"))
    torch.save(_checkpoint("os:system", {"modality": "image"}, model.state_dict()), path)
    _assert_same_outputs(load_model(path, arch="tests.conftest:small_net").module, model,
                         make_inputs("image"))


def _junk(tmp_path: Path) -> dict[str, Path]:
    checkpoint = tmp_path / "good.pt"
    save_checkpoint(checkpoint, _mlp(), arch="mlp", arch_kwargs={"in_features": 6, "num_classes": 3,
                                                                 "hidden": 8}, meta=META)
    files = {
        "empty.pt": b"",
        "random.pt": bytes(range(256)) * 3,
        "text.pt": b"hello, this is not a model\n",
        "zip-magic.pt": b"PK\x03\x04 this is not a model",
        "truncated.pt": checkpoint.read_bytes()[:400],
        "bad.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}",
        "junk.pt2": b"not an archive",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "folder.pt").mkdir()
    return {name: tmp_path / name for name in [*files, "folder.pt", "missing.pt"]}


def test_corrupt_missing_and_empty_files(tmp_path):
    for name, path in _junk(tmp_path).items():
        with pytest.raises(InputError) as error:
            load_model(path, trust_model=True, arch="mlp")
        assert type(error.value) is InputError, name
        assert name in str(error.value) and "\n" not in str(error.value)


def test_files_holding_no_model(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(InputError, match="list.pt holds a Python 'list', not a model"):
        load_model(path)
    torch.save(_checkpoint("mlp", {}, _mlp().state_dict(), version=2), path)
    with pytest.raises(InputError, match="checkpoint version 2 is not supported"):
        load_model(path)


def test_weights_that_do_not_fit(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(_mlp().state_dict(), path)
    mismatch = (r"do not fit architecture 'mlp' \(fc1.weight is \(8, 6\) in the file but \(32, 6\) in "
                r"the model; fc1.bias is \(8,\) in the file but \(32,\) in the model\)")
    with pytest.raises(InputError, match=mismatch):
        load_model(path, arch="mlp", arch_kwargs={"in_features": 6, "num_classes": 3})
    with pytest.raises(InputError, match="missing fc.weight, fc.bias; unexpected fc1.weight, fc1.bias, "
                       "fc2.weight and 3 more"):
        load_model(path, arch="logreg", arch_kwargs={"in_features": 6, "num_classes": 3})
    with pytest.raises(InputError, match="architecture 'logreg' does not accept"):
        load_model(path, arch="logreg", arch_kwargs={"features": 6})
    with pytest.raises(UnknownNameError, match="did you mean 'mlp'"):
        load_model(path, arch="mpl")


def test_file_name_that_is_not_utf8_loads_and_is_shown_escaped(tmp_path):
    path = tmp_path / os.fsdecode(b"model\xff.pt")  # a Linux file name with a byte that is not UTF-8
    save_checkpoint(path, _mlp(), arch="mlp", arch_kwargs={"in_features": 6, "num_classes": 3,
                                                           "hidden": 8}, meta=META)
    loaded = load_model(path)
    assert loaded.path == str(tmp_path / "model\\xff.pt")  # printable, writable as UTF-8
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ModelSource(str(path)).stem == "model\\xff"  # default run directory names use it
    assert ModelSource(str(path)).load().format == "checkpoint"

