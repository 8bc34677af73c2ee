"""The text metrics: ERASER comprehensiveness and sufficiency against a direct reading of their definition,
and token-substitution sensitivity on cases whose answer is known."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from xaibench.metrics import compute
from xaibench.metrics.eraser import rationale_sizes

from tests.conftest import make_inputs, make_text_model
from xaibench.core.errors import InputError

TARGET = torch.tensor([0, 1, 2, 1])


def test_rationale_sizes_round_up_and_keep_one_feature():
    assert rationale_sizes("1,5,10,20,50", 12).tolist() == [1, 1, 2, 3, 6]
    assert rationale_sizes("1,5,10,20,50", 100).tolist() == [1, 5, 10, 20, 50]
    assert rationale_sizes("25,100", 6).tolist() == [2, 6]
    for bad in ("0,5", "5,1", "x", "150", " , "):
        with pytest.raises(InputError, match="bins"):
            rationale_sizes(bad, 12)


def _probability(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).softmax(dim=1).gather(1, TARGET[:, None]).squeeze(1).double()


@pytest.mark.parametrize("keep", [False, True])
def test_comprehensiveness_and_sufficiency_follow_their_definition(keep):
    model, x = make_text_model(0), make_inputs("text")
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    tokens = a.sum(dim=1)  # a token's relevance: its attribution summed over the embedding
    order = tokens.argsort(dim=1, descending=True, stable=True)
    full = _probability(model, x)
    differences = []
    for k in (1, 1, 1, 2, 3):  # ceil of 1, 5, 10, 20, 50% of 6 tokens
        rationale = torch.zeros_like(tokens, dtype=torch.bool).scatter(1, order[:, :k], True)
        kept = rationale if keep else ~rationale  # tokens left as they are; the others become the mask token
        differences.append(full - _probability(model, x * kept.unsqueeze(1)))
    expected = torch.stack(differences, dim=1)
    name = "sufficiency" if keep else "comprehensiveness"
    result = compute(name, model, x, a, target=TARGET)
    torch.testing.assert_close(result.curve, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(result.scores, expected.mean(dim=1), rtol=1e-6, atol=1e-7)
    assert result.curve_x.tolist() == [1 / 6, 1 / 6, 1 / 6, 2 / 6, 3 / 6]


class _Fixed(nn.Module):
    """A text model stand-in: class 0 always wins unless ``flip`` says the first channel sum decides."""

    input_modality = "text"

    def __init__(self, vectors: torch.Tensor, flip: bool) -> None:
        super().__init__()
        self.vectors, self.flip = vectors, flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x[:, 0].sum(dim=1)
        second = (lead > 100.0).float() * 10.0 if self.flip else torch.zeros_like(lead)
        return torch.stack([torch.ones_like(lead), second], dim=1)

    def token_vectors(self) -> torch.Tensor:
        return self.vectors

    def substitutes(self) -> torch.Tensor:
        return torch.tensor([1])  # one substitute: every draw gives the same copy


def test_substitution_sensitivity_on_known_substitutions():
    x = torch.ones((2, 3, 4))
    vectors = torch.zeros((2, 3))
    vectors[1] = 1000.0  # the only substitute token: its embedding is huge
    explain_identity = lambda _model, inputs, _target: inputs.clone()
    # every copy has all four tokens replaced by the substitute, which keeps class 0
    result = compute("substitution_sensitivity", _Fixed(vectors, flip=False), x, x.clone(), target=0,
                     explainer=explain_identity, samples=3, tokens=4)
    # token scores go from 3 (three ones) to 3000 at each of the 4 tokens: |2997 * 2| / |3 * 2| = 999
    torch.testing.assert_close(result.scores, torch.full((2,), 999.0, dtype=torch.float64))
    # the same copies flip the prediction: none is kept, so no score
    flipped = compute("substitution_sensitivity", _Fixed(vectors, flip=True), x, x.clone(), target=0,
                      explainer=explain_identity, samples=3, tokens=4)
    assert torch.isnan(flipped.scores).all()
    constant = compute("substitution_sensitivity", _Fixed(vectors, flip=False), x, x.clone(), target=0,
                       explainer=lambda _m, inputs, _t: torch.ones_like(inputs), samples=3, tokens=1)
    assert constant.scores.tolist() == [0.0, 0.0]
