"""BEE's context: the model's penultimate features, projected to a fixed small dimension, with a bias."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_inputs, make_net
from xaibench.attribution.context import activations, context_layer, embed
from xaibench.core.errors import IncompatibleError, InputError


def test_default_context_is_the_input_of_the_last_linear_layer() -> None:
    model = make_net("image")
    x = make_inputs("image", n=5)
    features = activations(model, x, None)
    expected = model[:-1](x)  # everything before the final nn.Linear
    torch.testing.assert_close(features, expected)
    name, _, takes_input = context_layer(model, None)
    assert name == "6" and takes_input
    assert not model._forward_hooks and not model[6]._forward_hooks  # no hook left behind


def test_embedding_shape_bias_unit_length_and_batch_invariance() -> None:
    model = make_net("tabular")
    x = make_inputs("tabular", n=7)
    contexts = embed(model, x, None, dim=5)
    assert contexts.shape == (7, 5) and contexts.dtype == torch.float64
    assert torch.equal(contexts[:, -1], torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(contexts[:, :-1].norm(dim=1), torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(embed(model, x, None, dim=5, batch_size=2), contexts)
    torch.testing.assert_close(embed(model, x[3:], None, dim=5), contexts[3:])  # per input


def test_named_layer_output_and_errors() -> None:
    model = make_net("sequence")
    x = make_inputs("sequence", n=3)
    torch.testing.assert_close(activations(model, x, "1"), model[:2](x))
    with pytest.raises(InputError):
        embed(model, x, None, dim=1)
    conv_only = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3))
    with pytest.raises(IncompatibleError):
        embed(conv_only, x, None, dim=4)
