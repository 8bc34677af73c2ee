"""Fel et al. (NeurIPS 2023), the optimality theorem: with the decomposition at the penultimate layer
(a linear head), gradient x input orders concepts by their exact contribution u_i (W_i . w_c), so no
other estimator's order gives a lower C-Deletion or a higher C-Insertion curve."""

from __future__ import annotations

import torch
from xaibench.metrics.concept import ConceptInputs, compute_concepts

from xaibench.concepts import IMPORTANCES, ConceptBank


def test_gradient_input_is_best_on_c_deletion_and_c_insertion_for_a_linear_head():
    gen = torch.Generator().manual_seed(0)
    k, p, classes, n = 6, 8, 3, 10
    bank = ConceptBank("nmf", torch.rand(k, p, generator=gen), torch.zeros(p))
    linear = torch.nn.Linear(p, classes)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(classes, p, generator=gen))

    def head(codes: torch.Tensor) -> torch.Tensor:  # mean-pool positions, then the linear classifier
        return linear(bank.decode(codes).mean(dim=(1, 2)))

    codes = torch.rand(n, 4, 4, k, generator=gen)
    target = torch.randint(0, classes, (n,), generator=gen)
    contribution = codes.mean(dim=(1, 2)) * (bank.dictionary @ linear.weight.detach().T)[:, target].T
    scores = {}
    for name in IMPORTANCES.list():
        local = IMPORTANCES.get(name)(head, codes, target, generator=torch.Generator().manual_seed(1))
        inputs = ConceptInputs(activations=torch.rand(4, p), codes=torch.rand(4, k), bank=bank, head=head,
                               image_codes=codes, importances=local, target=target)
        scores[name] = {metric: compute_concepts(metric, inputs).scores for metric in ("c_deletion", "c_insertion")}
    torch.testing.assert_close(IMPORTANCES.get("gradient_input")(head, codes, target), contribution)
    best = scores["gradient_input"]
    for name, other in scores.items():
        assert (best["c_deletion"] <= other["c_deletion"] + 1e-6).all(), name
        assert (best["c_insertion"] >= other["c_insertion"] - 1e-6).all(), name
    worse = [name for name in scores if (scores[name]["c_deletion"] > best["c_deletion"] + 1e-6).any()]
    assert set(worse) >= {"saliency", "rise"}  # the comparison can fail: some estimators order differently
