"""The fast paths (padding columns left out, squares through position pairs, contraction without
per-example matrices) equal the definitions computed from autograd's per-example gradients."""

from __future__ import annotations

import pytest
import torch

from tests.influence.helpers import autograd_gradients, padded_cnn, tiny_cnn
from xaibench.influence import ClassificationTask, FitConfig, Influence, Preconditioner, ScoreConfig, fit_factors
from xaibench.influence.footprint import Footprint, ModuleShape
from xaibench.influence.scores import contract
from xaibench.influence.tracking import capture, select_modules

TASK = ClassificationTask()


def data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 3, 3, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def test_support_names_the_columns_that_padding_leaves_zero():
    model, (x, y) = padded_cnn(), data(5)
    seen = capture(model, select_modules(model), x, lambda out: TASK.loss(out, y))[0]
    taps = [4, 5, 7, 8]  # of a 3x3 kernel at stride 2 on a 2x2 map: the bottom-right 2x2
    assert seen["0"].support() is None and seen["7"].support() is None
    assert seen["2"].support().tolist() == [c * 9 + t for c in range(3) for t in taps]
    assert seen["4"].support().tolist() == [4, 13, 22, 31, 36]  # centre taps, then the bias column
    for name in ("2", "4"):
        outside = torch.ones(seen[name].activations.shape[2], dtype=torch.bool)
        outside[seen[name].support()] = False
        padding = seen[name].activations[:, :, outside]
        assert padding.numel() and torch.equal(padding, torch.zeros_like(padding))
    shapes = Footprint.of(model, x[:1], exact_limit=20_000).modules
    assert shapes == (ModuleShape(4, 19, 19, 3), ModuleShape(1, 27, 12, 4), ModuleShape(1, 37, 5, 5),
                      ModuleShape(1, 6, 6, 3))


@pytest.mark.parametrize("strategy", ["diagonal", "kfac", "ekfac"])
def test_factors_and_scores_on_padded_maps_follow_their_definitions(strategy):
    model, (x, y), (q, t) = padded_cnn(), data(9), data(3, seed=1)
    factors = fit_factors(model, TASK, x, y, FitConfig(strategy=strategy, fisher="empirical", batch_size=4))
    modules = select_modules(model)
    train, query = (autograd_gradients(model, modules, *pair, TASK.loss) for pair in ((x, y), (q, t)))
    for name, g in train.items():
        if strategy == "kfac":  # the eigenpairs rebuild A, zero rows and columns included
            a = capture(model, modules, x, lambda out: TASK.loss(out, y))[0][name].activations.flatten(0, 1)
            vectors, values = factors.module(name, "A_vectors"), factors.module(name, "A_values")
            torch.testing.assert_close(vectors @ torch.diag(values) @ vectors.T, a.T @ a / len(a))
            torch.testing.assert_close(vectors.T @ vectors, torch.eye(len(values), dtype=torch.float64))
        elif strategy == "ekfac":
            q_s, q_a = factors.module(name, "S_vectors"), factors.module(name, "A_vectors")
            torch.testing.assert_close(factors.module(name, "lambda"), (q_s.T @ g @ q_a).pow(2).mean(0))
        else:
            torch.testing.assert_close(factors.module(name, "lambda"), g.pow(2).mean(0))
    influence = Influence(model, TASK, factors, ScoreConfig(damping=1e-2, batch_size=4))
    conditioned = Preconditioner(factors, 1e-2).apply(query)  # full matrices, no shortcut
    pairwise, own = influence.pairwise(q, t, x, y), influence.self_influence(x, y)
    for index, name in enumerate(modules):
        expected = conditioned[name].flatten(1) @ train[name].flatten(1).T
        torch.testing.assert_close(pairwise[index].double(), expected, rtol=1e-5, atol=1e-8)
        own_expected = (Preconditioner(factors, 1e-2).apply(train)[name] * train[name]).flatten(1).sum(1)
        torch.testing.assert_close(own[index].double(), own_expected, rtol=1e-5, atol=1e-8)


def test_both_contractions_give_the_gradient_dot_products():
    model = tiny_cnn()
    x = torch.randn(5, 2, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 1, 0])
    seen = capture(model, select_modules(model), x, lambda out: TASK.loss(out, y))[0]["0"]  # 16 positions
    for queries in (2, 12):  # 2 x 16 < 16 + 2 + 100: no per-example matrices; 12 x 16 > 128: per example
        query = torch.randn(queries, 3, 19, dtype=torch.float64, generator=torch.Generator().manual_seed(queries))
        torch.testing.assert_close(contract(query, seen), query.flatten(1) @ seen.per_example().flatten(1).T)


def test_query_blocks_give_the_same_scores():
    model, (x, y), (q, t) = padded_cnn(), data(7), data(5, seed=3)
    factors = fit_factors(model, TASK, x, y, FitConfig(strategy="ekfac", batch_size=3))
    whole = Influence(model, TASK, factors, ScoreConfig(batch_size=3)).pairwise(q, t, x, y)
    blocks = Influence(model, TASK, factors, ScoreConfig(batch_size=3, query_batch_size=1, query_block=2))
    torch.testing.assert_close(blocks.pairwise(q, t, x, y), whole, rtol=1e-6, atol=1e-9)


def test_an_eigendecomposition_that_fails_to_converge_falls_back_to_the_svd(monkeypatch):
    model, (x, y) = padded_cnn(), data(6)
    expected = fit_factors(model, TASK, x, y, FitConfig(strategy="kfac", fisher="empirical"))

    def fails(matrix: torch.Tensor) -> None:
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "eigh", fails)
    factors = fit_factors(model, TASK, x, y, FitConfig(strategy="kfac", fisher="empirical"))
    for key, vectors in factors.tensors.items():
        if key.endswith("_vectors"):
            values = factors.tensors[key.replace("vectors", "values")]
            reference = expected.tensors[key] @ torch.diag(expected.tensors[key.replace("vectors", "values")]) \
                @ expected.tensors[key].T
            torch.testing.assert_close(vectors @ torch.diag(values) @ vectors.T, reference)
            assert bool((values[1:] >= values[:-1]).all())
    assert {how["driver"] for how in factors.decompositions.values()} == {"svd"}
    assert {how["driver"] for how in expected.decompositions.values()} == {"eigh"}


def test_factors_json_says_how_each_covariance_was_decomposed(tmp_path):
    import json

    from xaibench.influence.storage import load_factors, save_factors

    model, (x, y) = padded_cnn(), data(6)
    factors = fit_factors(model, TASK, x, y, FitConfig(strategy="ekfac", fisher="empirical"))
    save_factors(tmp_path, factors, {"fit": 1})
    described = json.loads((tmp_path / "factors.json").read_text())["eigendecompositions"]
    assert set(described) == {f"{name}/{side}" for name in factors.shapes for side in ("A", "S")}
    zero_rows = {key: how["zero_rows"] for key, how in described.items()}
    for key, count in zero_rows.items():  # the split-off rows: unit eigenvectors of eigenvalue 0, first
        units = factors.tensors[f"{key}_vectors"][:, :count]
        assert bool((factors.tensors[f"{key}_values"][:count] == 0).all())
        assert bool((units.abs().sum(0) == 1).all() and (units.abs().amax(0) == 1).all())
    assert any(count > 0 for count in zero_rows.values())  # the padded CNN has inputs that are always 0
    loaded, _ = load_factors(tmp_path)
    assert loaded.tensors.keys() == factors.tensors.keys()
