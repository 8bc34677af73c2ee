"""Checkpoints with crafted metadata, arguments or weights: one InputError line, nothing allocated."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from xaibench.core.errors import InputError
from xaibench.models import ModelMeta, load_model, save_checkpoint
from xaibench.models.archs import mlp

KWARGS = {"in_features": 6, "num_classes": 3, "hidden": 8}
META = ModelMeta(modality="tabular", input_shape=(6,), class_names=("a", "b", "c"), value_range=(-1.0, 1.0),
                 mean=(0.5,), std=(0.25,), dataset="toy", feature_names=tuple("uvwxyz"))


def _checkpoint(tmp_path: Path, **changes: Any) -> Path:
    """A valid mlp checkpoint with ``changes`` applied to its dict (``meta_<key>`` to its meta)."""
    path = tmp_path / "m.pt"
    torch.manual_seed(0)
    save_checkpoint(path, mlp(**KWARGS), arch="mlp", arch_kwargs=KWARGS, meta=META)
    stored = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if key.startswith("meta_"):
            stored["meta"][key.removeprefix("meta_")] = value
        else:
            stored[key] = value
    torch.save(stored, path)
    return path


def test_valid_metadata_round_trips(tmp_path: Path) -> None:
    assert load_model(_checkpoint(tmp_path)).meta == META


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("mean", "abc", "a list of finite numbers"),
    ("mean", ["a"], "a list of finite numbers"),
    ("mean", [], "a list of finite numbers"),
    ("std", [float("nan")], "a list of finite non-zero numbers"),
    ("std", [0.0], "a list of finite non-zero numbers"),
    ("value_range", [1.0], "two finite numbers (low, high)"),
    ("value_range", ["a", "b"], "two finite numbers (low, high)"),
    ("input_shape", "30", "a list of positive integers"),
    ("input_shape", [-30], "a list of positive integers"),
    ("input_shape", [True], "a list of positive integers"),
    ("class_names", [1, 2], "a list of texts"),
    ("feature_names", "uvwxyz", "a list of texts"),
    ("modality", "video", "one of image, tabular, sequence, text"),
    ("dataset", 5, "a text"),
])
def test_malformed_metadata_is_refused(tmp_path: Path, key: str, value: Any, expected: str) -> None:
    with pytest.raises(InputError) as info:
        load_model(_checkpoint(tmp_path, **{f"meta_{key}": value}))
    message = f"{tmp_path / 'm.pt'}: checkpoint meta {key!r} must be {expected}, got {value!r}"
    assert str(info.value) == message


def test_huge_architecture_arguments_allocate_nothing(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path, arch_kwargs={**KWARGS, "hidden": 10**6})  # 4 TB of weights if built
    with pytest.raises(InputError, match=r"m\.pt: the weights do not fit architecture "
                       r"'xaibench.models.archs:mlp' \(fc1.weight is \(8, 6\) in the file but "
                       r"\(1000000, 6\) in the model"):
        load_model(path)
    path = _checkpoint(tmp_path, arch_kwargs={**KWARGS, "hidden": 10**12})  # too large even to describe
    with pytest.raises(InputError, match=r"m\.pt: architecture 'xaibench.models.archs:mlp' cannot be built "
                       r"with \{'hidden': 1000000000000, 'in_features': 6, 'num_classes': 3\}: Storage size "
                       r"calculation overflowed"):
        load_model(path)


def test_sparse_weights_are_refused(tmp_path: Path) -> None:
    weights = mlp(**KWARGS).state_dict()
    path = _checkpoint(tmp_path, state_dict={k: v.to_sparse() for k, v in weights.items()})
    with pytest.raises(InputError, match=r"m\.pt: weight 'fc1.weight' is a sparse_coo tensor; "
                                         r"store dense tensors"):
        load_model(path)


def test_complex_weights_are_refused_without_a_warning(tmp_path: Path) -> None:
    weights = mlp(**KWARGS).state_dict()
    path = _checkpoint(tmp_path, state_dict={k: v.to(torch.complex64) for k, v in weights.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns that it discards the imaginary part
        with pytest.raises(InputError, match=r"m\.pt: the weights do not fit architecture "
                           r"'xaibench.models.archs:mlp' \(fc1.weight is torch.complex64 in the file but "
                           r"torch.float32 in the model; fc1.bias is torch.complex64"):
            load_model(path)
