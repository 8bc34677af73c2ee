"""Per-example gradients rebuilt from hooked activations and output gradients equal autograd's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.influence.helpers import SequenceMLP, autograd_gradients, tiny_cnn, tiny_mlp
from xaibench.core.errors import InputError
from xaibench.influence.task import ClassificationTask
from xaibench.influence.tracking import capture, select_modules, tracked

TASK = ClassificationTask()


@pytest.mark.parametrize("build, shape", [(tiny_mlp, (6,)), (tiny_cnn, (2, 7, 7)), (SequenceMLP, (5, 4))])
def test_per_example_gradients_equal_autograd(build, shape):
    model = build() if build is not SequenceMLP else SequenceMLP().double()
    inputs = torch.randn(5, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 2, 1, 1, 0])
    modules = select_modules(model)
    seen, _ = capture(model, modules, inputs, lambda out: TASK.loss(out, targets))
    expected = autograd_gradients(model, modules, inputs, targets, TASK.loss)
    assert list(seen) == list(expected)
    for name in modules:
        torch.testing.assert_close(seen[name].per_example(), expected[name], rtol=1e-10, atol=1e-12)


def test_shared_module_called_twice_sums_both_calls():
    layer = nn.Linear(3, 3).double()
    model = nn.Sequential(layer, nn.Tanh(), layer)
    inputs = torch.randn(4, 3, dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 0])
    seen, _ = capture(model, {"0": layer}, inputs, lambda out: TASK.loss(out, targets))
    expected = autograd_gradients(model, {"0": layer}, inputs, targets, TASK.loss)
    torch.testing.assert_close(seen["0"].per_example(), expected["0"])


def test_hooks_are_removed_even_after_an_error():
    model = tiny_mlp()
    modules = select_modules(model)
    with pytest.raises(RuntimeError, match="boom"), tracked(modules):
        assert all(m._forward_hooks for m in modules.values())
        raise RuntimeError("boom")
    assert not any(m._forward_hooks for m in model.modules())

    def failing(outputs: torch.Tensor) -> torch.Tensor:
        raise ValueError("bad objective")

    with pytest.raises(ValueError, match="bad objective"):  # fails after the forward, inside the hooks
        capture(model, modules, torch.randn(2, 6, dtype=torch.float64), failing)
    assert not any(m._forward_hooks for m in model.modules())


def test_module_selection_by_glob_and_clear_errors():
    model = tiny_cnn()
    assert list(select_modules(model)) == ["0", "2", "5"]
    assert list(select_modules(model, ["5", "0"])) == ["0", "5"]  # model order, not pattern order
    with pytest.raises(InputError, match="matches no module"):
        select_modules(model, "conv*")
    with pytest.raises(InputError, match="only nn.Linear and nn.Conv2d"):
        select_modules(model, "1")  # a ReLU
    grouped = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2))
    with pytest.raises(InputError, match="grouped"):
        select_modules(grouped)
    with pytest.raises(InputError, match="no nn.Linear or nn.Conv2d"):
        select_modules(nn.Sequential(nn.ReLU()))
