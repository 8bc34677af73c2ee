"""Concept metrics: relative_l2, sparsity, stability, fid, c_deletion, c_insertion, c_mufidelity.

Exact values on hand-built decompositions and on linear heads, where the curves and correlations can be
computed by hand; fid against its closed form for Gaussians with known moments and against
scipy.linalg.sqrtm; the family split (concept metrics refuse ``compute`` and ``evaluate`` skips them).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from xaibench.metrics import CATEGORIES, METRICS
from xaibench.metrics.concept import ConceptInputs, compute_concepts, frechet_distance
from xaibench.metrics.selection import Chosen, choose_metrics

from tests.cli.conftest import SAMPLES, run_cli
from xaibench.concepts.base import ConceptBank, Factorization
from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError

CONCEPT = ["c_deletion", "c_insertion", "c_mufidelity", "fid", "relative_l2", "sparsity", "stability"]


def bank(dictionary: torch.Tensor, offset: torch.Tensor | None = None) -> ConceptBank:
    offset = torch.zeros(dictionary.shape[1]) if offset is None else offset
    return ConceptBank("test", dictionary.float(), offset.float())


def exact(dictionary: torch.Tensor, codes: torch.Tensor, **fields: object) -> ConceptInputs:
    """Activations rebuilt exactly from ``codes`` and ``dictionary``."""
    return ConceptInputs(activations=codes @ dictionary, codes=codes, bank=bank(dictionary), **fields)


class LinearHead:
    """logits = mean over space of the codes, times ``weights`` (k, classes); counts rows per call."""

    def __init__(self, weights: torch.Tensor) -> None:
        self.weights = weights.double()
        self.most_rows = 0

    def __call__(self, codes: torch.Tensor) -> torch.Tensor:
        self.most_rows = max(self.most_rows, codes.shape[0])
        pooled = codes.double().flatten(1, -2).mean(1) if codes.ndim > 2 else codes.double()
        return pooled @ self.weights


def fidelity(head: LinearHead, image_codes: torch.Tensor, importances: torch.Tensor, target: object,
             batch_size: int | None = None) -> ConceptInputs:
    k = image_codes.shape[-1]
    return ConceptInputs(activations=torch.eye(k), codes=torch.eye(k), bank=bank(torch.eye(k)), head=head,
                         image_codes=image_codes, importances=importances, target=target,
                         batch_size=batch_size)


# ---------------------------------------------------------------------------------------------
# the family: registry, selection, listing


def test_concept_metrics_are_registered_apart() -> None:
    assert "concept" in CATEGORIES
    assert [name for name in METRICS if METRICS.get(name).concept] == CONCEPT
    for name in CONCEPT:
        cls = METRICS.get(name)
        assert cls.category == "concept" and cls.description and len(cls.__doc__) > 80
    directions = {name: METRICS.get(name).higher_is_better for name in CONCEPT}
    assert directions == {"c_deletion": False, "c_insertion": True, "c_mufidelity": True, "fid": False,
                          "relative_l2": False, "sparsity": False, "stability": True}


def test_compute_is_refused_with_one_line() -> None:
    with pytest.raises(IncompatibleError, match=r"^c_deletion is a concept metric: use xaibench concepts$"):
        METRICS.get("c_deletion")().compute(None, torch.zeros(2, 3), torch.zeros(2, 3), target=0)
    with pytest.raises(IncompatibleError, match="not a concept metric"):
        compute_concepts("deletion", exact(torch.eye(2), torch.eye(2)))


def test_evaluate_selection_skips_concept_metrics() -> None:
    attribution = [c.name for c in choose_metrics("all")]
    assert attribution and not set(attribution) & set(CONCEPT)
    assert "stability" not in [c.name for c in choose_metrics("*stab*")]  # a glob skips them silently
    assert choose_metrics("all", concept=True) == [Chosen(name, False) for name in CONCEPT]
    assert choose_metrics("fid,category:concept", concept=True)[0] == Chosen("fid", True)
    with pytest.raises(IncompatibleError, match="c_deletion is a concept metric: use xaibench concepts"):
        choose_metrics("faithfulness,c_deletion")
    with pytest.raises(IncompatibleError, match="category concept holds concept metrics"):
        choose_metrics("concept")
    with pytest.raises(IncompatibleError, match="matches only concept metrics"):
        choose_metrics("c_*")
    with pytest.raises(IncompatibleError, match="deletion is an attribution metric: use xaibench evaluate"):
        choose_metrics("deletion", concept=True)


def test_cli_lists_concept_metrics_and_evaluate_refuses_a_named_one(tmp_path) -> None:
    listed = run_cli("metrics", "--category", "concept", "--json", cwd=tmp_path)
    assert listed.code == 0, listed.stderr
    assert [row["name"] for row in listed.json()] == CONCEPT
    refused = run_cli("evaluate", str(SAMPLES / "breast_cancer_logreg.pt"), "--methods", "saliency",
                      "--metrics", "c_deletion", cwd=tmp_path)
    assert refused.code == 2
    assert refused.stderr.strip().splitlines()[-1].endswith("c_deletion is a concept metric: use xaibench concepts")


# ---------------------------------------------------------------------------------------------
# the decomposition


def test_relative_l2_exact_reconstruction_known_residual_and_offset() -> None:
    w = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]])
    u = torch.tensor([[1.0, 0.0], [2.0, 3.0], [0.5, 0.5]])
    assert compute_concepts("relative_l2", exact(w, u)).scores.tolist() == [0.0, 0.0, 0.0]
    # a = (3, 4, 0), rebuilt (3, 0, 0): residual 4, norm 5; a zero row is undefined
    residual = ConceptInputs(activations=torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]]),
                             codes=torch.tensor([[3.0], [1.0]]), bank=bank(torch.tensor([[1.0, 0.0, 0.0]])))
    scores = compute_concepts("relative_l2", residual).scores
    assert scores[0].item() == pytest.approx(0.8, abs=1e-12) and torch.isnan(scores[1])
    # the offset is part of the reconstruction (PCA's mean)
    shifted = ConceptInputs(activations=torch.tensor([[4.0, 3.0]]), codes=torch.tensor([[1.0]]),
                            bank=bank(torch.tensor([[1.0, 0.0]]), torch.tensor([3.0, 3.0])))
    assert compute_concepts("relative_l2", shifted).scores.tolist() == [0.0]


def test_sparsity_is_the_fraction_of_non_zero_codes() -> None:
    u = torch.tensor([[1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 1.0, 1.0]])
    inputs = exact(torch.eye(4), u)
    assert compute_concepts("sparsity", inputs).scores.tolist() == [0.5, 0.0, 1.0]
    assert compute_concepts("sparsity", inputs, eps="1.5").scores.tolist() == [0.25, 0.0, 0.0]
    with pytest.raises(InputError, match="eps"):
        compute_concepts("sparsity", inputs, eps=-1.0)


def gaussian_sample(mean: torch.Tensor, cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n rows whose sample mean and unbiased sample covariance are exactly ``mean`` and ``cov``."""
    z = torch.randn((n, mean.shape[0]), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # exactly white
    return z @ torch.linalg.cholesky(cov).T + mean


def test_fid_equals_the_closed_form() -> None:
    a = gaussian_sample(torch.tensor([0.0, 0.0], dtype=torch.float64), torch.diag(torch.tensor([4.0, 1.0])).double(), 50, 0)
    b = gaussian_sample(torch.tensor([1.0, 2.0], dtype=torch.float64), torch.diag(torch.tensor([1.0, 9.0])).double(), 50, 1)
    # commuting covariances: |mu_a - mu_b|^2 + sum (sqrt(s_a) - sqrt(s_b))^2 = 5 + (1 + 4)
    inputs = ConceptInputs(activations=a.float(), codes=b.float(), bank=bank(torch.eye(2)))
    assert compute_concepts("fid", inputs).scores.tolist() == pytest.approx([10.0], abs=1e-4)
    assert frechet_distance(a, b).item() == pytest.approx(10.0, abs=1e-10)
    assert frechet_distance(a, a).item() == pytest.approx(0.0, abs=1e-10)
    assert compute_concepts("fid", exact(torch.eye(2), a.float())).scores.tolist() == pytest.approx([0.0], abs=1e-5)


def test_fid_matches_scipy_sqrtm_for_non_commuting_covariances() -> None:
    s1 = torch.tensor([[2.0, 0.6, 0.0], [0.6, 1.0, 0.3], [0.0, 0.3, 0.5]], dtype=torch.float64)
    s2 = torch.tensor([[1.0, -0.4, 0.2], [-0.4, 3.0, 0.0], [0.2, 0.0, 0.7]], dtype=torch.float64)
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    a, b = gaussian_sample(mu1, s1, 40, 2), gaussian_sample(mu2, s2, 60, 3)
    cross = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    reference = 5.0 + np.trace(s1.numpy() + s2.numpy() - 2 * cross)
    assert frechet_distance(a, b).item() == pytest.approx(reference, abs=1e-10)


class PermutedRefit:
    """A deterministic 'decomposition': the reference atoms, permuted and scaled by the seed."""

    def __init__(self, atoms: torch.Tensor) -> None:
        self.atoms = atoms
        self.calls: list[tuple[torch.Tensor, int, int]] = []

    def __call__(self, activations: torch.Tensor, k: int, seed: int) -> Factorization:
        self.calls.append((activations, k, seed))
        order = torch.randperm(k, generator=torch.Generator().manual_seed(seed))
        dictionary = self.atoms[order] * torch.arange(1.0, k + 1)[:, None] * (seed + 1)
        return Factorization(torch.zeros(activations.shape[0], k), bank(dictionary))


def test_stability_is_one_for_atoms_refound_permuted_and_scaled() -> None:
    atoms = torch.rand((3, 5), generator=torch.Generator().manual_seed(0))
    activations = torch.arange(40.0).view(8, 5)
    refit = PermutedRefit(atoms)
    inputs = ConceptInputs(activations=activations, codes=torch.zeros(8, 3), bank=bank(atoms), seed=10, refit=refit)
    result = compute_concepts("stability", inputs)
    assert result.scores.tolist() == pytest.approx([1.0] * 5, abs=1e-12)
    assert [seed for _, _, seed in refit.calls] == [11, 12, 13, 14, 15]
    assert all(k == 3 and rows.shape == (8, 5) for rows, k, _ in refit.calls)
    for rows, _, _ in refit.calls:  # bootstrap rows are rows of the activations
        assert ((rows[:, None, :] == activations[None]).all(-1)).any(1).all()
    assert len({tuple(rows[:, 0].tolist()) for rows, _, _ in refit.calls}) > 1
    assert len(compute_concepts("stability", inputs, n_bootstrap=2).scores) == 2


def test_stability_of_one_rotated_atom() -> None:
    # e1 and e2 refound (swapped), e3 refound 60 degrees away: 1 - (0 + 0 + 0.5) / 3
    rotated = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [3**0.5 / 2, 0.0, 0.5]])
    inputs = ConceptInputs(activations=torch.rand(6, 3, generator=torch.Generator().manual_seed(1)),
                           codes=torch.zeros(6, 3), bank=bank(torch.eye(3)),
                           refit=lambda a, k, seed: Factorization(torch.zeros(a.shape[0], k), bank(rotated)))
    assert compute_concepts("stability", inputs, n_bootstrap=1).scores.tolist() == pytest.approx([5 / 6], abs=1e-7)


# ---------------------------------------------------------------------------------------------
# the importances


def test_deletion_and_insertion_curves_by_hand() -> None:
    # image 0: codes (1, 2, 3), target weights (3, 1, -1): contributions (3, 2, -3), logit 2
    # image 1: two positions whose mean is (2, 0, 1), target weights (0, 1, 2): contributions (0, 0, 2)
    weights = torch.tensor([[3.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    codes = torch.tensor([[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], [[4.0, 0.0, 0.0], [0.0, 0.0, 2.0]]])
    importances = torch.tensor([[3.0, 2.0, -3.0], [0.0, 0.0, 2.0]])  # image 1: ties keep concept order
    inputs = fidelity(LinearHead(weights), codes, importances, torch.tensor([0, 1]))
    deletion = compute_concepts("c_deletion", inputs)
    assert deletion.curve.tolist() == [[2.0, -1.0, -3.0, 0.0], [2.0, 0.0, 0.0, 0.0]]
    assert deletion.curve_x.tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert deletion.scores.tolist() == pytest.approx([-1.0, 1 / 3], abs=1e-12)
    insertion = compute_concepts("c_insertion", inputs)
    assert insertion.curve.tolist() == [[0.0, 3.0, 5.0, 2.0], [0.0, 2.0, 2.0, 2.0]]
    assert insertion.scores.tolist() == pytest.approx([3.0, 5 / 3], abs=1e-12)


def test_curves_with_probabilities_and_bounded_head_calls() -> None:
    weights = torch.tensor([[3.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])  # class 1's logit is always 0
    codes = torch.tensor([[1.0, 2.0, 3.0]])
    head = LinearHead(weights)
    inputs = fidelity(head, codes, torch.tensor([[3.0, 2.0, -3.0]]), 0, batch_size=3)
    curve = compute_concepts("c_deletion", inputs, output="probability").curve
    assert curve[0].tolist() == pytest.approx(torch.sigmoid(torch.tensor([2.0, -1.0, -3.0, 0.0])).tolist(), abs=1e-7)
    assert head.most_rows == 3
    with pytest.raises(UnknownNameError):
        compute_concepts("c_deletion", inputs, output="logits")


def occlusion_case(seed: int) -> tuple[LinearHead, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn((6, 4), generator=generator)
    codes = torch.rand((5, 2, 2, 6), generator=generator)
    target = torch.tensor([0, 1, 2, 3, 0])
    # occlusion = u_i * w_i,target for a linear head (u the spatial mean): the paper's exact importances
    importances = codes.double().mean((1, 2)) * weights.double().T[target]
    return LinearHead(weights), codes, importances, target


def test_mufidelity_is_one_for_occlusion_on_a_linear_head() -> None:
    head, codes, importances, target = occlusion_case(0)
    inputs = fidelity(head, codes, importances, target)
    result = compute_concepts("c_mufidelity", inputs, generator=torch.Generator().manual_seed(1))
    assert result.scores.tolist() == pytest.approx([1.0] * 5, abs=1e-12)
    reversed_ = fidelity(head, codes, -importances, target)
    assert compute_concepts("c_mufidelity", reversed_, subset_fraction=0.5).scores.tolist() == pytest.approx([-1.0] * 5, abs=1e-12)


def test_mufidelity_draws_from_the_generator_and_ignores_batch_size() -> None:
    head, codes, _, target = occlusion_case(2)
    noisy = torch.rand((5, 6), generator=torch.Generator().manual_seed(3))  # not exact: correlation < 1
    first = compute_concepts("c_mufidelity", fidelity(head, codes, noisy, target),
                             generator=torch.Generator().manual_seed(4), n_subsets=16)
    again = compute_concepts("c_mufidelity", fidelity(head, codes, noisy, target, batch_size=5),
                             generator=torch.Generator().manual_seed(4), n_subsets=16)
    other = compute_concepts("c_mufidelity", fidelity(head, codes, noisy, target),
                             generator=torch.Generator().manual_seed(5), n_subsets=16)
    assert again.scores.tolist() == pytest.approx(first.scores.tolist(), abs=1e-12)
    assert not torch.allclose(first.scores, other.scores)
    assert (first.scores < 1 - 1e-6).all()
    assert METRICS.get("c_mufidelity").stochastic and METRICS.get("stability").stochastic


def test_bad_inputs_are_input_errors() -> None:
    inputs = exact(torch.eye(3), torch.eye(3))
    with pytest.raises(InputError, match="codes must have shape"):
        compute_concepts("relative_l2", ConceptInputs(inputs.activations, torch.eye(2), inputs.bank))
    with pytest.raises(InputError, match="does not fit"):
        compute_concepts("sparsity", ConceptInputs(torch.eye(4)[:3], torch.eye(3), inputs.bank))
    with pytest.raises(InputError, match="NaN"):
        compute_concepts("fid", exact(torch.eye(3), torch.full((3, 3), float("nan"))))
    with pytest.raises(InputError, match="need a head"):
        compute_concepts("c_deletion", inputs)
    head, codes, importances, target = occlusion_case(0)
    with pytest.raises(InputError, match="importances must have shape"):
        compute_concepts("c_insertion", fidelity(head, codes, importances[:, :2], target))
    with pytest.raises(UnknownNameError):
        compute_concepts("relative_l2", inputs, no_such_parameter=1)
