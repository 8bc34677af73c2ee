"""The labelled neighbourhood an LLM sees (Kroeger et al. 2023, section 3)."""

from __future__ import annotations

import pytest
import torch

from xaibench.core.errors import InputError
from xaibench.llm.neighbourhood import neighbourhood


def logistic() -> torch.nn.Linear:
    """logit_1 - logit_0 = 4 * (x0 - 5): class 1 grows with feature 0 only; feature 1 is ignored."""
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
        model.bias.copy_(torch.tensor([0.0, -20.0]))
    return model


def test_keeps_the_least_and_most_confident_samples_scaled_and_labelled():
    low, high = torch.tensor([0.0, -1.0]), torch.tensor([10.0, 1.0])
    x = torch.tensor([5.0, 0.0])  # scaled (0.5, 0.5): on the decision boundary
    hood = neighbourhood(logistic(), x, 1, low, high, torch.Generator().manual_seed(0), n_samples=2000)
    assert torch.equal(hood.point, torch.tensor([0.5, 0.5]))
    assert hood.samples.shape == (16, 2) and torch.equal(hood.samples, hood.samples.round(decimals=3))
    assert torch.equal(hood.outputs, (hood.samples[:, 0] > 0.5).long())  # the model's hard labels
    probability = torch.sigmoid(4 * (low[0] + hood.samples[:, 0] * 10 - 5))
    torch.testing.assert_close(hood.probabilities, probability)
    assert int(hood.outputs.sum()) == 8  # 8 lowest and 8 highest class-1 probability


def test_seeded_and_independent_of_the_batch_size():
    args = (logistic(), torch.tensor([5.0, 0.0]), 1, torch.tensor([0.0, -1.0]), torch.tensor([10.0, 1.0]))
    one = neighbourhood(*args, torch.Generator().manual_seed(3), n_samples=500)
    other = neighbourhood(*args, torch.Generator().manual_seed(3), n_samples=500, batch_size=7)
    assert torch.equal(one.samples, other.samples) and torch.equal(one.outputs, other.outputs)
    different = neighbourhood(*args, torch.Generator().manual_seed(4), n_samples=500)
    assert not torch.equal(one.samples, different.samples)


def test_bad_requests():
    with pytest.raises(InputError, match="tabular"):
        neighbourhood(logistic(), torch.zeros(1, 2), 1, torch.zeros(2), torch.ones(2), torch.Generator())
    with pytest.raises(InputError, match="cannot keep"):
        neighbourhood(logistic(), torch.zeros(2), 1, torch.zeros(2), torch.ones(2), torch.Generator(), n_samples=10)


def test_the_query_is_one_more_sample_and_the_point_is_labelled():
    model, low, high = logistic(), torch.tensor([0.0, -1.0]), torch.tensor([10.0, 1.0])
    hood = neighbourhood(model, torch.tensor([6.0, 0.0]), 1, low, high, torch.Generator().manual_seed(1),
                         n_samples=300)
    assert hood.point_output == 1  # x0 = 6 > 5: class 1
    assert hood.query.shape == (2,) and not (hood.samples == hood.query).all(dim=1).any()
    assert hood.query_output == int(hood.query[0] > 0.5)
    assert int(neighbourhood(model, torch.tensor([6.0, 0.0]), 0, low, high, torch.Generator(),
                             n_samples=300).point_output) == 0


class Recording(torch.nn.Module):
    """logit_1 - logit_0 = x0 - 5 (probabilities well apart in float32), keeping every batch it labels."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
            self.linear.bias.copy_(torch.tensor([0.0, -5.0]))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return self.linear(x)


@pytest.mark.parametrize(("n_low", "n_high"), [(8, 8), (3, 5)])
def test_keeps_exactly_the_least_and_most_confident_samples_of_the_draw(n_low: int, n_high: int):
    model = Recording()
    hood = neighbourhood(model, torch.tensor([5.0, 0.0]), 1, torch.tensor([0.0, -1.0]), torch.tensor([10.0, 1.0]),
                         torch.Generator().manual_seed(0), n_samples=600, n_low=n_low, n_high=n_high,
                         batch_size=128)
    drawn = model.seen[:-1]  # the last call labels the point itself
    assert sum(batch.shape[0] for batch in drawn) == 600
    with torch.no_grad():  # batch by batch, as the sampler called it: the same floats
        ordered = torch.cat([model.linear(batch).softmax(dim=1)[:, 1] for batch in drawn]).sort().values
    assert ordered[n_low - 1] < ordered[n_low] and ordered[-n_high - 1] < ordered[-n_high]  # no ties at the cut
    expected = torch.cat([ordered[:n_low], ordered[600 - n_high:]])
    assert torch.equal(hood.probabilities.sort().values, expected)
    assert hood.outputs.tolist() == (hood.probabilities > 0.5).long().tolist()
