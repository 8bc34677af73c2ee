"""save_checkpoint: what it stores, atomic replacement, and the arguments it refuses."""

from __future__ import annotations

import pytest
import torch

from xaibench.core.errors import UnknownNameError
from xaibench.models import ModelMeta, save_checkpoint
from xaibench.models.archs import logreg

META = ModelMeta(modality="tabular", input_shape=(4,), class_names=("x", "y"))


def test_stored_dict(tmp_path):
    model, path = logreg(4, 2), tmp_path / "m.pt"
    save_checkpoint(path, model, arch="logreg", arch_kwargs={"in_features": 4, "num_classes": 2},
                    meta=META)
    stored = torch.load(path, weights_only=True)
    assert {k: v for k, v in stored.items() if k != "state_dict"} == {
        "format": "xaibench-checkpoint", "version": 1, "arch": "xaibench.models.archs:logreg",
        "arch_kwargs": {"in_features": 4, "num_classes": 2},
        "meta": {**ModelMeta().to_dict(), "modality": "tabular", "input_shape": [4],
                 "class_names": ["x", "y"]},
    }
    assert stored["state_dict"].keys() == {"fc.weight", "fc.bias"}
    assert torch.equal(stored["state_dict"]["fc.weight"], model.fc.weight)


def test_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    path.write_bytes(b"previous")
    save_checkpoint(path, logreg(4, 2), arch="logreg", arch_kwargs={}, meta=META)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    before = path.read_bytes()

    def fail(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, logreg(4, 2), arch="logreg", arch_kwargs={}, meta=META)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_refused_arguments(tmp_path):
    with pytest.raises(UnknownNameError, match="did you mean 'logreg'"):
        save_checkpoint(tmp_path / "m.pt", logreg(4, 2), arch="logrec", arch_kwargs={}, meta=META)
    with pytest.raises(TypeError, match="plain values, got a dtype"):
        save_checkpoint(tmp_path / "m.pt", logreg(4, 2), arch="logreg", arch_kwargs={"d": torch.float32},
                        meta=META)
    assert not any(tmp_path.iterdir())
