"""The built-in architectures: logits of the right shape, one ReLU module per use, never in place."""

from __future__ import annotations

import pytest
import torch

from xaibench.models import ARCHITECTURES, archs

CASES = {  # name: (kwargs, sample shape, classes, parameter count)
    "digits_cnn": ({}, (1, 32, 32), 10, 11018),
    "shapes_cnn": ({}, (3, 64, 64), 5, 3 * 16 * 9 + 16 + 16 * 32 * 9 + 32 + 32 * 64 * 9 + 64
                   + 64 * 64 * 9 + 64 + 2 * (16 + 32 + 64 + 64) + 64 * 5 + 5),
    "mnist1d_cnn": ({}, (1, 40), 10, 1 * 32 * 3 + 32 + 2 * (32 * 32 * 3 + 32) + 320 * 10 + 10),
    "motifs_cnn": ({}, (1, 64), 4, 1 * 16 * 3 + 16 + 16 * 32 * 3 + 32 + 32 * 32 * 3 + 32 + 32 * 4 + 4),
    "mlp": ({"in_features": 30, "num_classes": 2}, (30,), 2, 30 * 32 + 32 + 32 * 32 + 32 + 32 * 2 + 2),
    "logreg": ({"in_features": 30, "num_classes": 2}, (30,), 2, 30 * 2 + 2),
}


REFERENCE_ARCHS = ("resnet18", "vit")  # tests/models/test_reference_archs.py
TEXT_ARCHS = ("text_transformer",)  # tests/models/test_text_transformer.py


def test_every_architecture_is_covered():
    assert ARCHITECTURES.list() == sorted([*CASES, *REFERENCE_ARCHS, *TEXT_ARCHS])


@pytest.mark.parametrize("name", sorted(CASES))
def test_architecture(name):
    kwargs, shape, classes, parameters = CASES[name]
    factory = ARCHITECTURES.get(name)
    assert getattr(archs, name) is factory and archs.reference(name) == f"xaibench.models.archs:{name}"
    torch.manual_seed(0)
    model = factory(**kwargs).eval()
    assert model(torch.rand(2, *shape)).shape == (2, classes)
    assert sum(p.numel() for p in model.parameters()) == parameters
    every_use = list(model.modules())
    assert len({id(m) for m in every_use}) == len(every_use)  # no module is reused
    relus = [m for m in every_use if isinstance(m, torch.nn.ReLU)]
    assert all(not relu.inplace for relu in relus)
    assert len(relus) == sum(name.startswith("relu") for name, _ in model.named_children())


def test_shapes_cnn_last_convolution_feeds_the_global_pool():
    names = [name for name, _ in archs.shapes_cnn().named_children()]
    assert names[-6:] == ["conv4", "bn4", "relu4", "global_pool", "flatten", "fc"]
