"""Concept decompositions on synthetic activations A = U0 W0 built from a known dictionary.

Each method must rebuild A as well as its constraints allow and recover W0 up to permutation and
scale where they make it identifiable: nmf on a separable problem (every concept owns a feature and
appears alone in some row), pca on orthogonal W0 with uncorrelated codes of distinct variances (an
exact SVD), kmeans on rows that are the centres themselves, sparse dictionary learning on orthonormal
W0 with two-sparse codes (the lasso then soft-thresholds, so the error is known). Semi-NMF's signed
dictionary is not identifiable, so only its reconstruction is checked. Atoms are matched with the
Hungarian algorithm on cosine similarity. NNLS codes are checked against scipy.optimize.nnls.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.optimize import nnls as scipy_nnls

from xaibench.concepts.base import (
    DECOMPOSITIONS,
    ConceptBank,
    Decomposition,
    Factorization,
)
from xaibench.concepts.decompose import SemiNMF, SparseDictionary
from xaibench.concepts.nnls import nnls
from xaibench.core.errors import InputError

NAMES = ["kmeans", "nmf", "pca", "semi_nmf", "sparse"]


def decomposition(name: str) -> Decomposition:
    return DECOMPOSITIONS.get(name)()


def relative_error(fitted: Factorization, activations: torch.Tensor) -> float:
    return float((fitted.bank.decode(fitted.codes) - activations).norm() / activations.norm())


def matched(dictionary: torch.Tensor, truth: torch.Tensor, signed: bool = False
            ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Hungarian matching of atoms on cosine similarity (its absolute value when signs are free):
    fitted atom rows[i] is true atom cols[i], with cosine cosines[i]."""
    cosine = torch.nn.functional.normalize(dictionary, dim=1) @ torch.nn.functional.normalize(truth, dim=1).T
    rows, cols = linear_sum_assignment((cosine.abs() if signed else cosine).numpy(), maximize=True)
    return rows, cols, cosine[rows, cols]


def separable(signed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A (120, 16) = U0 W0, k = 4; W0 >= 0 (or signed) with a private feature per concept, U0 >= 0
    half zeros with one pure row per concept."""
    g = torch.Generator().manual_seed(0)
    k, p, n = 4, 16, 120
    dictionary = torch.rand(k, p, generator=g) * (torch.rand(k, p, generator=g) < 0.5)
    if signed:
        dictionary = torch.randn(k, p, generator=g)
    dictionary[:, :k] = torch.eye(k)
    codes = torch.rand(n, k, generator=g) * (torch.rand(n, k, generator=g) < 0.5)
    codes[:k] = torch.eye(k)
    return codes @ dictionary, dictionary


def orthonormal_rows(k: int, p: int, g: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(p, k, generator=g, dtype=torch.float64))[0].T


def test_registry_lists_the_five_with_their_constraints() -> None:
    assert DECOMPOSITIONS.list() == NAMES
    flags = {name: (cls.nonnegative_codes, cls.nonnegative_dictionary, cls.needs_nonnegative_activations)
             for name, cls in DECOMPOSITIONS.items()}
    assert flags == {"kmeans": (True, False, False), "nmf": (True, True, True), "pca": (False, False, False),
                     "semi_nmf": (True, False, False), "sparse": (False, False, False)}
    assert all(cls.name == name and cls.description for name, cls in DECOMPOSITIONS.items())


def test_nmf_recovers_a_separable_dictionary() -> None:
    activations, truth = separable()
    fitted = decomposition("nmf").fit(activations, 4, seed=0)
    assert relative_error(fitted, activations) < 1e-4  # scikit-learn's default tolerance: 6e-5
    assert (fitted.codes >= 0).all() and (fitted.bank.dictionary >= 0).all()
    assert torch.equal(fitted.bank.offset, torch.zeros(16))
    assert matched(fitted.bank.dictionary, truth)[2].min() >= 0.9999
    # scikit-learn's codes come from its last sweep; exact NNLS against the final W is within its tolerance
    torch.testing.assert_close(decomposition("nmf").encode(activations, fitted.bank), fitted.codes,
                               atol=1e-4, rtol=0)


def test_nmf_with_more_concepts_than_features_starts_at_random() -> None:
    activations = torch.rand(30, 3, generator=torch.Generator().manual_seed(8))
    first, second = (decomposition("nmf").fit(activations, 5, seed=seed) for seed in (0, 1))
    assert relative_error(first, activations) < 1e-2
    assert not torch.equal(first.bank.dictionary, second.bank.dictionary)  # the seed drives the start


@pytest.mark.parametrize(("signed", "updates", "bound"), [
    (False, "multiplicative", 1e-6), (True, "multiplicative", 2e-4), (True, "nnls", 1e-6)])
def test_semi_nmf_reconstructs_with_nonnegative_codes(signed: bool, updates: str, bound: float) -> None:
    """Near exact; multiplicative updates are slow on signed data (1.7e-4 after 1000 iterations)."""
    activations, _ = separable(signed)
    assert bool((activations < 0).any()) == signed
    method = SemiNMF(updates=updates)
    fitted = method.fit(activations, 4, seed=0)
    assert relative_error(fitted, activations) < bound
    assert (fitted.codes >= 0).all()
    assert torch.equal(method.encode(activations, fitted.bank), fitted.codes)


def test_pca_recovers_an_orthogonal_dictionary_its_codes_and_the_mean() -> None:
    g = torch.Generator().manual_seed(1)
    n, k, p = 50, 4, 12
    centred = torch.randn(n, k, generator=g, dtype=torch.float64)
    basis = torch.linalg.qr(centred - centred.mean(0))[0]  # orthonormal columns, each summing to 0
    codes = basis * torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=torch.float64)
    truth, mean = orthonormal_rows(k, p, g), torch.randn(p, generator=g, dtype=torch.float64)
    activations = (codes @ truth + mean).float()
    method = decomposition("pca")
    fitted = method.fit(activations, k, seed=0)
    signs = torch.sign((fitted.bank.dictionary.double() * truth).sum(1))  # components in variance order
    torch.testing.assert_close(fitted.bank.dictionary.double(), truth * signs[:, None], atol=1e-5, rtol=0)
    torch.testing.assert_close(fitted.bank.offset.double(), mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(fitted.codes.double(), codes * signs, atol=1e-5, rtol=0)
    assert relative_error(fitted, activations) < 1e-6
    torch.testing.assert_close(method.encode(activations, fitted.bank), fitted.codes, atol=1e-5, rtol=0)


def test_kmeans_finds_the_centres_exactly() -> None:
    g = torch.Generator().manual_seed(2)
    centres = 3 * torch.randn(5, 8, generator=g)
    labels = torch.randperm(60, generator=g) % 5
    activations = centres[labels]
    method = decomposition("kmeans")
    fitted = method.fit(activations, 5, seed=0)
    rows, cols, _ = matched(fitted.bank.dictionary, centres)
    torch.testing.assert_close(fitted.bank.dictionary[rows], centres[cols], atol=1e-6, rtol=0)
    assert torch.equal(fitted.codes.argmax(1), torch.as_tensor(rows)[torch.as_tensor(cols).argsort()][labels])
    assert torch.equal(fitted.codes.sum(1), torch.ones(60))
    torch.testing.assert_close(fitted.bank.decode(fitted.codes), activations, atol=1e-6, rtol=0)
    assert torch.equal(method.encode(activations, fitted.bank), fitted.codes)
    nudged = activations + 0.01 * torch.randn(activations.shape, generator=g)
    assert torch.equal(method.encode(nudged, fitted.bank), fitted.codes)


def soft_threshold(codes: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return codes.sign() * (codes.abs() - threshold).clamp_min(0)


def test_sparse_encode_is_the_lasso_soft_threshold_for_an_orthonormal_bank() -> None:
    g = torch.Generator().manual_seed(3)
    atoms = orthonormal_rows(4, 10, g).float()
    activations = torch.randn(30, 10, generator=g)
    codes = SparseDictionary().encode(activations, ConceptBank("sparse", atoms, torch.zeros(10)))
    expected = soft_threshold(activations @ atoms.T, 0.1 * activations.norm(dim=1, keepdim=True))
    torch.testing.assert_close(codes, expected, atol=1e-5, rtol=0)
    assert (codes == 0).any()  # the threshold bites on this data
    torch.testing.assert_close(SparseDictionary().encode(3 * activations, ConceptBank("sparse", atoms,
                                                         torch.zeros(10))), 3 * codes, atol=1e-5, rtol=0)


def test_sparse_recovers_an_orthonormal_dictionary_and_the_code_support() -> None:
    g = torch.Generator().manual_seed(0)
    n, k, p = 150, 6, 24
    truth = orthonormal_rows(k, p, g).float()
    support = torch.zeros(n, k, dtype=torch.bool)
    support[torch.arange(n)[:, None], torch.rand(n, k, generator=g).argsort(1)[:, :2]] = True
    sign = torch.where(torch.rand(n, k, generator=g) < 0.5, -1.0, 1.0)
    true_codes = (1 + torch.rand(n, k, generator=g)) * sign * support
    activations = true_codes @ truth
    method = SparseDictionary()
    fitted = method.fit(activations, k, seed=0)
    rows, cols, cosines = matched(fitted.bank.dictionary, truth, signed=True)
    assert cosines.abs().min() >= 0.999
    codes = torch.zeros_like(fitted.codes)
    codes[:, cols] = fitted.codes[:, rows] * cosines.sign()
    assert torch.equal(codes != 0, support)
    # with the true atoms the lasso shrinks both codes by 0.1 |a|: relative error 0.1 sqrt(2) per row;
    # the learned atoms are within a degree of the true ones, so the errors are close to it
    errors = (fitted.bank.decode(fitted.codes) - activations).norm(dim=1) / activations.norm(dim=1)
    assert float(errors.mean()) == pytest.approx(0.1 * math.sqrt(2), abs=2e-3)
    torch.testing.assert_close(errors, torch.full((n,), 0.1 * math.sqrt(2)), atol=8e-3, rtol=0)
    torch.testing.assert_close(codes, soft_threshold(true_codes, 0.1 * activations.norm(dim=1, keepdim=True)),
                               atol=5e-2, rtol=0)
    assert torch.equal(method.encode(activations, fitted.bank), fitted.codes)


@pytest.mark.parametrize("signed", [False, True])
def test_nnls_equals_scipy(signed: bool) -> None:
    g = torch.Generator().manual_seed(4)
    dictionary = torch.randn(8, 20, generator=g) if signed else torch.rand(8, 20, generator=g)
    activations = torch.randn(200, 20, generator=g) if signed else torch.rand(200, 20, generator=g)
    expected = np.stack([scipy_nnls(dictionary.double().numpy().T, row)[0] for row in activations.double().numpy()])
    codes = nnls(activations, dictionary)
    assert (expected == 0).mean() > 0.3  # many active constraints
    np.testing.assert_allclose(codes.numpy(), expected, atol=1e-6, rtol=0)


def test_nnls_with_a_repeated_atom_reaches_scipys_residual() -> None:
    g = torch.Generator().manual_seed(5)
    dictionary = torch.rand(5, 12, generator=g)
    dictionary = torch.cat([dictionary, dictionary[:1]])  # rank 5: codes not unique, the residual is
    activations = torch.rand(40, 12, generator=g)
    codes = nnls(activations, dictionary)
    residual = (activations - codes @ dictionary).norm(dim=1)
    expected = [scipy_nnls(dictionary.double().numpy().T, row)[1] for row in activations.double().numpy()]
    np.testing.assert_allclose(residual.numpy(), expected, atol=1e-5, rtol=0)


def test_nmf_encode_equals_scipy_nnls_on_its_bank() -> None:
    activations, _ = separable()
    fitted = decomposition("nmf").fit(activations, 3, seed=0)  # k too small: a lossy fit, many zeros
    new = torch.rand(50, 16, generator=torch.Generator().manual_seed(6))
    weights = fitted.bank.dictionary.double().numpy().T
    expected = np.stack([scipy_nnls(weights, row)[0] for row in new.double().numpy()])
    np.testing.assert_allclose(decomposition("nmf").encode(new, fitted.bank).numpy(), expected, atol=1e-6, rtol=0)


def test_nmf_refuses_negative_activations() -> None:
    activations, _ = separable(signed=True)
    with pytest.raises(InputError, match="^nmf needs non-negative activations") as err:
        decomposition("nmf").fit(activations, 4, seed=0)
    assert "\n" not in str(err.value)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # nmf on random data
@pytest.mark.parametrize("name", NAMES)
def test_fit_is_deterministic_for_a_seed_and_float32(name: str) -> None:
    activations = torch.rand(60, 10, generator=torch.Generator().manual_seed(7))
    first, second = (decomposition(name).fit(activations, 3, seed=11) for _ in range(2))
    for tensor, shape in ((first.codes, (60, 3)), (first.bank.dictionary, (3, 10)), (first.bank.offset, (10,))):
        assert tensor.dtype == torch.float32 and tensor.shape == shape
    assert first.bank.method == name
    assert torch.equal(first.codes, second.codes)
    assert torch.equal(first.bank.dictionary, second.bank.dictionary)
    assert torch.equal(first.bank.offset, second.bank.offset)


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_input_error(name: str) -> None:
    method = decomposition(name)
    activations = torch.rand(6, 4)
    with pytest.raises(InputError, match="k <= 6"):
        method.fit(activations, 7, seed=0)
    with pytest.raises(InputError, match="NaN"):
        method.fit(torch.where(activations > 0.5, float("nan"), activations), 2, seed=0)
    bank = ConceptBank(name, torch.rand(2, 4), torch.zeros(4))
    with pytest.raises(InputError, match=r"\(rows, 4\)"):
        method.encode(torch.rand(3, 5), bank)
    other = "pca" if name != "pca" else "nmf"
    with pytest.raises(InputError, match=f"a {other} concept bank"):
        method.encode(activations, ConceptBank(other, torch.rand(2, 4), torch.zeros(4)))


def test_semi_nmf_refuses_unknown_updates() -> None:
    with pytest.raises(InputError, match="'multiplicative' or 'nnls'"):
        SemiNMF(updates="adam")  # type: ignore[arg-type]
