"""Factors equal their definitions, computed independently from torch.func per-example gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from tests.influence.helpers import autograd_gradients, tiny_cnn, tiny_mlp
from xaibench.core.errors import InputError
from xaibench.influence import (
    ClassificationTask,
    FitConfig,
    Preconditioner,
    RegressionTask,
    fit_factors,
)
from xaibench.influence.tracking import select_modules

TASK = ClassificationTask()


def data(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def empirical(strategy: str, **extra) -> FitConfig:
    return FitConfig(strategy=strategy, fisher="empirical", batch_size=5, **extra)


def with_ones(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)


def test_kfac_covariances_and_eigendecomposition():
    model, (x, y) = tiny_mlp(), data()
    factors = fit_factors(model, TASK, x, y, empirical("kfac"))
    grads = autograd_gradients(model, select_modules(model), x, y, TASK.loss)
    hidden = torch.tanh(model[0](x)).detach()
    for name, acts in (("0", with_ones(x)), ("2", with_ones(hidden))):
        a_cov = acts.T @ acts / len(x)
        out_grads = grads[name][:, :, -1]  # a Linear's output gradient is its bias gradient
        s_cov = out_grads.T @ out_grads / len(x)
        for side, expected in (("A", a_cov), ("S", s_cov)):
            vectors, values = factors.module(name, f"{side}_vectors"), factors.module(name, f"{side}_values")
            torch.testing.assert_close(vectors @ torch.diag(values) @ vectors.T, expected)


def test_ekfac_and_diagonal_eigenvalues_follow_their_definitions():
    model, (x, y) = tiny_mlp(), data()
    ekfac = fit_factors(model, TASK, x, y, empirical("ekfac"))
    diagonal = fit_factors(model, TASK, x, y, empirical("diagonal"))
    grads = autograd_gradients(model, select_modules(model), x, y, TASK.loss)
    for name, g in grads.items():
        q_s, q_a = ekfac.module(name, "S_vectors"), ekfac.module(name, "A_vectors")
        torch.testing.assert_close(ekfac.module(name, "lambda"), (q_s.T @ g @ q_a).pow(2).mean(0))
        torch.testing.assert_close(diagonal.module(name, "lambda"), g.pow(2).mean(0))


def flat_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d logits / d params, (N, C, D) in the (module, out, in+1) order the exact strategy uses."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    parts = [torch.cat([jac[f"{name}.weight"], jac[f"{name}.bias"][..., None]], dim=3).flatten(2)
             for name in ("0", "2")]  # each (N, C, out * (in + 1))
    return torch.cat(parts, dim=2)


def test_exact_true_fisher_is_the_gauss_newton_matrix():
    model, (x, y) = tiny_mlp(), data(6)
    factors = fit_factors(model, TASK, x, y, FitConfig(strategy="exact", batch_size=4))
    fisher = factors.tensors["exact/fisher"]
    jac = flat_jacobian(model, x)
    p = model(x).softmax(1).detach()
    hessian = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # of cross-entropy w.r.t. the logits
    expected = torch.einsum("ncd,nck,nke->de", jac, hessian, jac) / len(x)
    torch.testing.assert_close(fisher, expected)


def test_exact_empirical_fisher_and_regression_gauss_newton():
    model, (x, y) = tiny_mlp(), data(6)
    factors = fit_factors(model, TASK, x, y, empirical("exact"))
    flat = torch.cat([g.flatten(1) for g in autograd_gradients(model, select_modules(model), x, y,
                                                                TASK.loss).values()], dim=1)
    torch.testing.assert_close(factors.tensors["exact/fisher"], flat.T @ flat / len(x))
    regression = fit_factors(model, RegressionTask(), x, torch.zeros(6, 3, dtype=torch.float64),
                             FitConfig(strategy="exact"))
    jac = flat_jacobian(model, x)
    torch.testing.assert_close(regression.tensors["exact/fisher"],
                               2 * torch.einsum("ncd,nce->de", jac, jac) / len(x))


def test_one_example_makes_kfac_and_ekfac_exact():
    # One example at one position: its Fisher g g^T (x) a a^T is exactly Kronecker-factored.
    model, (x, y) = tiny_mlp(), data(1)
    grads = autograd_gradients(model, {"2": model[2]}, x, y, TASK.loss)
    conditioned = {}
    for strategy in ("kfac", "ekfac", "exact"):
        factors = fit_factors(model, TASK, x, y, empirical(strategy, modules=("2",)))
        conditioned[strategy] = Preconditioner(factors, 1e-3).apply(grads)["2"].double()
    torch.testing.assert_close(conditioned["kfac"], conditioned["exact"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(conditioned["ekfac"], conditioned["exact"], rtol=1e-4, atol=1e-6)


def test_preconditioners_invert_their_explicit_matrices():
    model, (x, y) = tiny_mlp(), data()
    grads = autograd_gradients(model, {"2": model[2]}, x[:2], y[:2], TASK.loss)["2"]
    damping = 0.05
    for strategy in ("kfac", "ekfac"):
        factors = fit_factors(model, TASK, x, y, empirical(strategy, modules=("2",)))
        q = torch.kron(factors.module("2", "S_vectors"), factors.module("2", "A_vectors"))
        if strategy == "kfac":
            values = torch.kron(factors.module("2", "S_values"), factors.module("2", "A_values"))
        else:
            values = factors.module("2", "lambda").flatten()
        matrix = q @ torch.diag(values) @ q.T + damping * torch.eye(len(values), dtype=torch.float64)
        expected = torch.linalg.solve(matrix, grads.flatten(1).T).T.reshape(grads.shape)
        got = Preconditioner(factors, damping).apply({"2": grads})["2"].double()
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("strategy", ["diagonal", "kfac", "ekfac"])
def test_factors_depend_on_neither_batch_nor_chunk_size(strategy):
    model, (x, y) = tiny_cnn(), (torch.randn(11, 2, 7, 7, dtype=torch.float64), torch.randint(0, 3, (11,)))
    one = fit_factors(model, TASK, x, y, FitConfig(strategy=strategy, batch_size=11))
    other = fit_factors(model, TASK, x, y, FitConfig(strategy=strategy, batch_size=3, chunk_size=4))
    # Compared through what they do: eigenvectors of repeated eigenvalues are not unique.
    probes = {name: torch.randn(2, *shape, dtype=torch.float64) for name, shape in one.shapes.items()}
    expected, got = Preconditioner(one, 1e-3).apply(probes), Preconditioner(other, 1e-3).apply(probes)
    for name in probes:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-6, atol=1e-8)


def test_true_fisher_labels_come_from_the_model_and_the_seed():
    model, (x, y) = tiny_mlp(), data(40)
    first = fit_factors(model, TASK, x, y, FitConfig(strategy="diagonal", seed=3))
    again = fit_factors(model, TASK, x, y, FitConfig(strategy="diagonal", seed=3))
    other = fit_factors(model, TASK, x, y, FitConfig(strategy="diagonal", seed=4))
    assert torch.equal(first.module("0", "lambda"), again.module("0", "lambda"))
    assert not torch.equal(first.module("0", "lambda"), other.module("0", "lambda"))


def test_bad_configurations_are_input_errors():
    with pytest.raises(InputError, match="unknown strategy"):
        FitConfig(strategy="lissa")
    with pytest.raises(InputError, match="fisher"):
        FitConfig(fisher="sampled")
    big = nn.Sequential(nn.Linear(200, 200))
    with pytest.raises(InputError, match="exact strategy"):
        fit_factors(big, TASK, torch.randn(2, 200), torch.tensor([0, 1]), FitConfig(strategy="exact"))
