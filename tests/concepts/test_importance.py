"""Concept importance estimators: the linear-head theorem, Sobol' indices with known values, RISE's
expectation, and the shared contract (shapes, batch-size invariance, seeds, validation)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from xaibench.concepts.base import IMPORTANCES, ConceptBank
from xaibench.concepts.importance import global_importance, rise_masks, sobol_design
from xaibench.core.errors import IncompatibleError, InputError

NAMES = ["gradient_input", "integrated_gradients", "occlusion", "rise", "saliency", "sobol"]
K, P, CLASSES = 4, 6, 3


def importance(name: str, head: Callable[[torch.Tensor], torch.Tensor], codes: torch.Tensor,
               target: torch.Tensor | int, **kwargs: object) -> torch.Tensor:
    return IMPORTANCES.get(name)(head, codes, target, **kwargs)


def linear_problem(seed: int = 0) -> tuple[ConceptBank, torch.Tensor, torch.Tensor]:
    """A bank (W (K, P), offset b), and h's weights w (CLASSES, P) and bias c (CLASSES,)."""
    g = torch.Generator().manual_seed(seed)
    bank = ConceptBank("nmf", torch.randn(K, P, generator=g), torch.randn(P, generator=g))
    return bank, torch.randn(CLASSES, P, generator=g), torch.randn(CLASSES, generator=g)


def pooling_head(
    bank: ConceptBank, w: torch.Tensor, c: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Decode every position, average the activations over positions, then the linear layer h."""

    def head(codes: torch.Tensor) -> torch.Tensor:
        activations = bank.decode(codes)
        pooled = activations.reshape(activations.shape[0], -1, P).mean(1)
        return pooled @ w.T + c

    return head


def nonlinear_head(seed: int = 1) -> Callable[[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w1, w2 = torch.randn(K, 5, generator=g), torch.randn(5, CLASSES, generator=g)

    def head(codes: torch.Tensor) -> torch.Tensor:
        return torch.tanh(codes.reshape(codes.shape[0], -1, K) @ w1).mean(1) @ w2

    return head


# ---------------------------------------------------------------------------------------------
# the paper's theorem: a linear h


@pytest.mark.parametrize("spatial", [(), (3, 2), (5,)], ids=["pooled", "image", "sequence"])
def test_linear_head_closed_form(spatial: tuple[int, ...]) -> None:
    bank, w, c = linear_problem()
    head = pooling_head(bank, w, c)
    g = torch.Generator().manual_seed(2)
    codes = torch.rand((4, *spatial, K), generator=g) * 2
    target = torch.tensor([0, 2, 1, 2])
    # d logit_t / d mean(u)_i = W_i . w_t; every estimator sums over positions, so mean(u)_i counts once
    weight = (bank.dictionary.double() @ w.double().T).T[target]  # (N, K)
    mean_codes = codes.double().reshape(4, -1, K).mean(1)
    expected = (mean_codes * weight).float()
    for name in ("gradient_input", "occlusion", "integrated_gradients"):
        torch.testing.assert_close(importance(name, head, codes, target), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(importance("integrated_gradients", head, codes, target, n_steps=1,
                                          method="riemann_left"), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(importance("saliency", head, codes, target), weight.abs().float())


def test_integrated_gradients_completeness_on_a_nonlinear_head() -> None:
    head = nonlinear_head()
    codes = torch.rand((3, 2, 2, K), generator=torch.Generator().manual_seed(4))
    target = torch.tensor([0, 1, 2])
    total = importance("integrated_gradients", head, codes, target, n_steps=64).sum(1)
    rows = torch.arange(3)
    gap = head(codes)[rows, target] - head(torch.zeros_like(codes))[rows, target]
    torch.testing.assert_close(total, gap.detach(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Sobol' total indices


def test_sobol_additive_model_has_known_indices() -> None:
    # f(m) = sum a_i m_i with m uniform on [0, 1]^3: ST_i = a_i^2 / sum a_j^2. Scrambled Sobol' points
    # integrate these polynomials with an error of order 1/n (plain Monte-Carlo: about 0.03 * ST_i at
    # n = 1024); 5/n leaves a margin (largest error over 30 seeds: 1.5e-3).
    a = torch.tensor([1.0, 2.0, 3.0])
    n = 1024
    ours = importance("sobol", lambda m: (m @ a)[:, None], torch.ones(1, 3), 0, n_designs=n,
                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours[0], a**2 / (a**2).sum(), rtol=0, atol=5 / n)


def test_sobol_interaction_model_has_known_indices() -> None:
    # f(m) = m1 m2 + m3: Var f = 7/144 + 1/12 = 19/144, E[Var(f | m_-1)] = E[m2^2] / 12 = 1/36, so
    # ST = (4, 4, 12) / 19; an additive reading would give (0, 0, 1) - interactions count in both m1, m2.
    # Same tolerance argument as the additive case (largest error over 30 seeds: 2.6e-3).
    n = 1024
    codes = torch.full((2, 3), 1.0)
    ours = importance("sobol", lambda m: (m[:, 0] * m[:, 1] + m[:, 2])[:, None], codes, 0, n_designs=n,
                      generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, torch.tensor([[4.0, 4.0, 12.0]]).expand(2, 3) / 19, rtol=0, atol=5 / n)


def numpy_head(codes: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    return np.tanh(codes.reshape(codes.shape[0], -1, K) @ w1).mean(1) @ w2


def test_sobol_equals_a_numpy_jansen_loop_on_the_same_design() -> None:
    g = torch.Generator().manual_seed(1)
    w1, w2 = torch.randn(K, 5, generator=g), torch.randn(5, CLASSES, generator=g)
    codes = torch.rand((3, 2, K), generator=g) * 2
    target = [2, 0, 1]
    n = 64
    ours = importance("sobol", nonlinear_head(1), codes, torch.tensor(target), n_designs=n,
                      generator=torch.Generator().manual_seed(7))
    a, b = (x.double().numpy() for x in sobol_design(K, n, torch.Generator().manual_seed(7)))
    u, w1, w2 = codes.double().numpy(), w1.double().numpy(), w2.double().numpy()
    expected = np.zeros((3, K))
    for s in range(3):
        def f(masks: np.ndarray, s: int = s) -> np.ndarray:
            return numpy_head(u[s][None] * masks[:, None, :], w1, w2)[:, target[s]]

        f_a = f(a)
        for i in range(K):
            c = a.copy()
            c[:, i] = b[:, i]
            expected[s, i] = np.mean((f_a - f(c)) ** 2) / (2 * np.var(f_a, ddof=1))
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-4, atol=1e-6)
    assert expected.min() > 1e-3  # every concept moves the logit, so an all-zero result would fail


def test_sobol_design_is_a_sobol_sequence_in_the_unit_cube() -> None:
    a, b = sobol_design(3, 8, torch.Generator().manual_seed(0))
    assert a.shape == b.shape == (8, 3)
    # a scrambled Sobol' sequence of 2^m points has exactly one point in each 1/8 stratum of each axis
    for column in torch.cat([a, b], 1).T:
        assert sorted((column * 8).floor().int().tolist()) == list(range(8))


def test_sobol_constant_output_has_zero_indices() -> None:
    ours = importance("sobol", lambda m: torch.zeros(m.shape[0], 2), torch.ones(2, 3), 1, n_designs=8)
    torch.testing.assert_close(ours, torch.zeros(2, 3))


# ---------------------------------------------------------------------------------------------
# RISE


def test_rise_equals_its_formula_on_the_same_masks() -> None:
    head = nonlinear_head()
    codes = torch.rand((3, 2, K), generator=torch.Generator().manual_seed(3))
    target = torch.tensor([1, 0, 2])
    ours = importance("rise", head, codes, target, n_masks=50, p_keep=0.3,
                      generator=torch.Generator().manual_seed(9))
    masks = rise_masks(K, 50, 0.3, torch.Generator().manual_seed(9))
    expected = torch.stack([
        torch.stack([head((codes[s] * m)[None])[0, target[s]] * m for m in masks]).mean(0) / 0.3
        for s in range(3)])
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


def test_rise_converges_to_its_expectation_on_a_linear_head() -> None:
    # logit c + sum_j a_j u_j m_j: E[f m_i] / p = c + a_i u_i + p sum_{j != i} a_j u_j, here (2, 0.5, 3).
    # Each term f m_i / p has |value| <= 6.5 / p = 13, so the standard error at 2^14 masks is below 0.1;
    # the tolerance 0.3 is 3 of those and smaller than the gaps between the three expectations.
    a, c, p = torch.tensor([1.0, -2.0, 3.0]), 0.5, 0.5
    ours = importance("rise", lambda u: (u @ a + c)[:, None], torch.ones(1, 3), 0, n_masks=2**14, p_keep=p,
                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours[0], torch.tensor([2.0, 0.5, 3.0]), rtol=0, atol=0.3)


# ---------------------------------------------------------------------------------------------
# the shared contract


def test_registry_lists_the_six_estimators() -> None:
    assert IMPORTANCES.list() == NAMES
    assert all(IMPORTANCES.get(name).description for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spatial", [(), (2, 3), (4,)], ids=["pooled", "image", "sequence"])
def test_shape_dtype_and_batch_size_invariance(name: str, spatial: tuple[int, ...]) -> None:
    head = nonlinear_head()
    codes = torch.rand((5, *spatial, K), generator=torch.Generator().manual_seed(5)).double()
    target = torch.tensor([0, 1, 2, 1, 0])
    rows: list[int] = []

    def spy(u: torch.Tensor) -> torch.Tensor:
        rows.append(u.shape[0])
        return head(u)

    whole = importance(name, head, codes, target, generator=torch.Generator().manual_seed(3))
    assert whole.shape == (5, K) and whole.dtype == torch.float32
    for batch_size in (1, 7):
        rows.clear()
        chunked = importance(name, spy, codes, target, batch_size=batch_size,
                             generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(chunked, whole)
        assert max(rows) <= batch_size


@pytest.mark.parametrize("name", ["rise", "sobol"])
def test_seed_determinism(name: str) -> None:
    head = nonlinear_head()
    codes = torch.rand((2, K), generator=torch.Generator().manual_seed(6))

    def run(seed: int) -> torch.Tensor:
        return importance(name, head, codes, 0, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(11), run(11))
    assert not torch.allclose(run(11), run(12))
    assert torch.equal(importance(name, head, codes, 0), run(0))  # no generator: seed 0


def test_global_importance_is_the_mean_over_samples() -> None:
    local = torch.tensor([[1.0, 0.0, 4.0], [3.0, 2.0, -2.0]])
    assert torch.equal(global_importance(local), torch.tensor([2.0, 1.0, 1.0]))
    with pytest.raises(InputError):
        global_importance(torch.zeros(3))


def test_invalid_inputs() -> None:
    head = nonlinear_head()
    codes = torch.rand(2, K)
    with pytest.raises(InputError):
        importance("occlusion", head, torch.rand(K), 0)
    with pytest.raises(InputError):
        importance("occlusion", head, codes, torch.tensor([0, 1, 2]))
    with pytest.raises(InputError):
        importance("occlusion", head, codes.clone().fill_(float("nan")), 0)
    with pytest.raises(InputError):
        importance("sobol", head, codes, 0, batch_size=0)
    with pytest.raises(InputError):
        importance("sobol", head, codes, 0, n_designs=1)
    with pytest.raises(InputError):
        importance("rise", head, codes, 0, p_keep=0.0)
    with pytest.raises(InputError):
        importance("integrated_gradients", head, codes, 0, n_steps=0)
    with pytest.raises(IncompatibleError):
        importance("gradient_input", lambda u: head(u).detach(), codes, 0)
