"""summarize(): layers with their output shapes, exact parameter counts, hooks always removed."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_inputs, make_net
from xaibench.core.errors import InputError
from xaibench.models import LoadedModel, ModelMeta, summarize
from xaibench.models.archs import digits_cnn

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

DIGITS_LAYERS = [  # (name, type, output shape, parameters) of digits_cnn on a (1, 32, 32) input
    ("conv1", "Conv2d", [1, 8, 32, 32], 1 * 8 * 9 + 8),
    ("relu1", "ReLU", [1, 8, 32, 32], 0),
    ("pool1", "MaxPool2d", [1, 8, 16, 16], 0),
    ("conv2", "Conv2d", [1, 16, 16, 16], 8 * 16 * 9 + 16),
    ("relu2", "ReLU", [1, 16, 16, 16], 0),
    ("pool2", "MaxPool2d", [1, 16, 8, 8], 0),
    ("conv3", "Conv2d", [1, 32, 8, 8], 16 * 32 * 9 + 32),
    ("relu3", "ReLU", [1, 32, 8, 8], 0),
    ("pool3", "MaxPool2d", [1, 32, 4, 4], 0),
    ("flatten", "Flatten", [1, 512], 0),
    ("fc", "Linear", [1, 10], 512 * 10 + 10),
]


def _loaded(module: torch.nn.Module, meta: ModelMeta = ModelMeta(),
            fmt: str = "checkpoint") -> LoadedModel:
    return LoadedModel(module.eval(), meta, fmt, "model.pt", "0" * 64)


def _no_hooks_left(module: torch.nn.Module) -> bool:
    return all(not m._forward_hooks for m in module.modules())


def test_digits_cnn_layers_and_parameter_count():
    module = digits_cnn()
    module.fc.requires_grad_(False)
    meta = ModelMeta(modality="image", input_shape=(1, 32, 32))
    summary = summarize(_loaded(module, meta))
    layers = [(la["name"], la["type"], la["output_shape"], la["params"]) for la in summary["layers"]]
    assert layers == DIGITS_LAYERS
    assert summary["parameters"] == 11018
    assert summary["trainable"] == 11018 - 5130
    assert (summary["format"], summary["meta"], summary["input_shape"]) == (
        "checkpoint", meta.to_dict(), [1, 32, 32])
    assert _no_hooks_left(module)


def test_shapes_need_an_input_shape():
    module = make_net("tabular")
    assert [la["output_shape"] for la in summarize(_loaded(module))["layers"]] == [None] * 5
    shapes = [la["output_shape"] for la in summarize(_loaded(module), (6,))["layers"]]
    assert shapes == [[1, 8], [1, 8], [1, 8], [1, 8], [1, 3]]


class Failing(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def test_hooks_are_removed_when_the_forward_fails():
    module = torch.nn.Sequential(torch.nn.Linear(6, 4), Failing())
    with pytest.raises(InputError, match=r"does not run on inputs of shape \(6,\): boom"):
        summarize(_loaded(module), (6,))
    assert _no_hooks_left(module)
    with pytest.raises(InputError, match=r"shape \(5,\)"):  # a shape that does not fit
        summarize(_loaded(torch.nn.Sequential(torch.nn.Linear(6, 4))), (5,))


def test_torchscript_and_batch_fixed_exported_modules_are_listed_without_shapes():
    model, x = make_net("image"), make_inputs("image", n=2)
    expected = sum(p.numel() for p in model.parameters())
    scripted = torch.jit.script(model)
    summary = summarize(_loaded(scripted, fmt="torchscript"), (2, 8, 8))
    assert [(la["type"], la["output_shape"]) for la in summary["layers"]][:2] == [
        ("Conv2d", None), ("ReLU", None)]
    assert summary["parameters"] == expected
    from xaibench.models.exported import ExportedModule
    from xaibench.models.exported_layers import unflattened

    program = torch.export.export(model, (x,))
    exported = ExportedModule(unflattened(program), 2)  # runs in chunks of 2: hooks would see the chunks
    summary = summarize(_loaded(exported, fmt="export"), (2, 8, 8))
    assert summary["parameters"] == expected
    assert all(la["output_shape"] is None for la in summary["layers"])
    assert summary["layers"] == [{**la, "output_shape": None}
                                 for la in summarize(_loaded(model), (2, 8, 8))["layers"]]
