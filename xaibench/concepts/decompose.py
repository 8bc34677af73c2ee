"""The five concept decompositions of Fel et al. (NeurIPS 2023), registered in ``DECOMPOSITIONS``.

Each is dictionary learning on a layer's activations A (n, p) ~ U W + b with its own constraints
(REFERENCES.md section 4): nmf (U, W >= 0; CRAFT, ICE), kmeans (U one-hot; ACE), pca (W orthonormal,
b the mean), sparse (sparse U, atoms of norm <= 1) and semi_nmf (U >= 0, W signed). Factorisations run in
scikit-learn on float64 copies, except semi-NMF, which scikit-learn lacks and which runs here in torch.
``encode`` computes the codes of new activations against a learned bank, batched (non-negative least
squares in ``xaibench.concepts.nnls``), so concept maps can be drawn at every spatial position.

Classes are frozen dataclasses: their fields are hyper-parameters with documented defaults, their
metadata class attributes; an instance holds no learned state. Tensors come in and go out as float32
on the activations' device.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from xaibench.concepts.base import DECOMPOSITIONS, ConceptBank, Factorization
from xaibench.concepts.nnls import nnls
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
    import torch
else:
    torch = lazy_import("torch")

#: Ding, Li & Jordan's initialisation: k-means indicators plus this constant.
SEMI_NMF_INIT_OFFSET = 0.2
#: Keeps the multiplicative update's denominator away from zero.
SEMI_NMF_EPS = 1e-12
#: Semi-NMF computes its error (to test convergence) every this many iterations.
SEMI_NMF_CHECK_EVERY = 10


@DECOMPOSITIONS.register("nmf", description="non-negative matrix factorisation (CRAFT, ICE): codes and "
                                            "concepts >= 0; needs non-negative activations")
@dataclass(frozen=True)
class NMF:
    """Non-negative matrix factorisation, scikit-learn's coordinate-descent solver.

    Lee & Seung (Nature 1999); CRAFT (Fel et al., CVPR 2023) and ICE (Zhang et al., AAAI 2021) use it
    on post-ReLU activations. Initialised as scikit-learn chooses by default: NNDSVDa (deterministic)
    when k <= min(n, p), else random from the seed. Fitted codes are scikit-learn's, from its last
    sweep, so ``encode`` (exact NNLS against the final dictionary) matches them only as closely as the
    solver converged. scikit-learn's defaults for the solver: on 5,000 x 256 activations, k = 10, a
    100x tighter tolerance costs 7x the time for a 2% lower error.

    Attributes:
        max_iter: solver sweeps.
        tol: scikit-learn's stopping tolerance on the projected gradient, relative to its start.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    nonnegative_codes: ClassVar[bool] = True
    nonnegative_dictionary: ClassVar[bool] = True
    needs_nonnegative_activations: ClassVar[bool] = True

    max_iter: int = 200
    tol: float = 1e-4

    def fit(self, activations: torch.Tensor, k: int, seed: int) -> Factorization:
        """Learn k non-negative concepts; raises InputError for negative activations."""
        from sklearn.decomposition import NMF as SklearnNMF
        from threadpoolctl import threadpool_limits

        _check_fit(activations, k, self.name)
        if (low := float(activations.min())) < 0:
            raise InputError(f"nmf needs non-negative activations (minimum {low:.3g}); take them after a "
                             "ReLU or use semi_nmf")
        init = "nndsvda" if k <= min(activations.shape) else "random"
        model = SklearnNMF(n_components=k, init=init, solver="cd", max_iter=self.max_iter,
                           tol=self.tol, random_state=seed)
        # One BLAS thread: coordinate descent's small products ran 2-3x slower and erratic with two
        # (benchmarks/concepts_cost.py). max_iter bounds the cost on purpose; the metrics report the fit.
        with _quiet(), threadpool_limits(1, user_api="blas"):
            codes = model.fit_transform(_numpy(activations))
        return _factorization(self.name, codes, model.components_, activations)

    def encode(self, activations: torch.Tensor, bank: ConceptBank) -> torch.Tensor:
        """Non-negative least-squares codes against the bank (exact; see ``nnls``)."""
        _check_encode(activations, bank, self.name)
        return nnls(activations, bank.dictionary)


@DECOMPOSITIONS.register("kmeans", description="k-means clustering (ACE): one-hot codes, concepts are "
                                               "the cluster centres")
@dataclass(frozen=True)
class KMeans:
    """K-means, scikit-learn's Lloyd algorithm with k-means++ seeding.

    As in ACE (Ghorbani et al., NeurIPS 2019) and CRAFT's comparison, U is the one-hot cluster
    assignment and W the centres, so U W replaces each row by its centre. One k-means++ start, which
    is what scikit-learn's default ``n_init="auto"`` runs with k-means++.

    Attributes:
        max_iter: Lloyd iterations.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    nonnegative_codes: ClassVar[bool] = True
    nonnegative_dictionary: ClassVar[bool] = False
    needs_nonnegative_activations: ClassVar[bool] = False

    max_iter: int = 300

    def fit(self, activations: torch.Tensor, k: int, seed: int) -> Factorization:
        """Cluster into k groups; codes are the one-hot labels, the bank the centres."""
        from sklearn.cluster import KMeans as SklearnKMeans

        _check_fit(activations, k, self.name)
        model = SklearnKMeans(n_clusters=k, n_init=1, max_iter=self.max_iter, random_state=seed)
        labels = torch.from_numpy(model.fit_predict(_numpy(activations))).to(activations.device)
        codes = torch.nn.functional.one_hot(labels.long(), k).float()
        return Factorization(codes, _bank(self.name, model.cluster_centers_, activations))

    def encode(self, activations: torch.Tensor, bank: ConceptBank) -> torch.Tensor:
        """One-hot of the nearest centre (squared Euclidean distance; ties go to the lower index)."""
        _check_encode(activations, bank, self.name)
        rows = activations.to(torch.float64)
        centres = bank.dictionary.to(rows.device, torch.float64)
        distance = centres.square().sum(1) - 2 * rows @ centres.T
        return torch.nn.functional.one_hot(distance.argmin(1), bank.k).float()


@DECOMPOSITIONS.register("pca", description="principal component analysis: orthonormal concepts, dense "
                                            "signed codes, offset = the mean")
@dataclass(frozen=True)
class PCA:
    """Principal component analysis, scikit-learn's PCA without whitening.

    W holds the k leading principal directions (orthonormal rows, scikit-learn's sign convention),
    b the mean, U = (A - b) W^T. The seed matters only when scikit-learn picks its randomised solver
    (large inputs).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    nonnegative_codes: ClassVar[bool] = False
    nonnegative_dictionary: ClassVar[bool] = False
    needs_nonnegative_activations: ClassVar[bool] = False

    def fit(self, activations: torch.Tensor, k: int, seed: int) -> Factorization:
        """The k leading principal components; needs k <= the number of features."""
        from sklearn.decomposition import PCA as SklearnPCA

        _check_fit(activations, k, self.name)
        if k > activations.shape[1]:
            raise InputError(f"pca finds at most {activations.shape[1]} concepts (one per feature), "
                             f"got k={k}")
        model = SklearnPCA(n_components=k, random_state=seed)
        codes = model.fit_transform(_numpy(activations))
        return _factorization(self.name, codes, model.components_, activations, offset=model.mean_)

    def encode(self, activations: torch.Tensor, bank: ConceptBank) -> torch.Tensor:
        """The projection (A - b) W^T."""
        _check_encode(activations, bank, self.name)
        rows = activations.to(torch.float64)
        centred = rows - bank.offset.to(rows.device, torch.float64)
        return (centred @ bank.dictionary.to(rows.device, torch.float64).T).float()


@DECOMPOSITIONS.register("sparse", description="sparse dictionary learning: lasso codes, atoms of norm "
                                               "<= 1")
@dataclass(frozen=True)
class SparseDictionary:
    """Sparse dictionary learning (Mairal et al., JMLR 2010), scikit-learn's batch DictionaryLearning.

    Minimises 0.5 ||A - U W||^2 + alpha ||U||_1 over codes and atoms of norm <= 1, with coordinate
    descent for the lasso codes both in fitting and in ``encode`` (the same solver and alpha), and
    returns as fitted codes those of a final encoding against the final dictionary (scikit-learn's
    are from before its last dictionary update), so ``encode`` reproduces them.

    Deliberate deviation: each row is scaled to unit norm before fitting and encoding and its codes
    scaled back, so alpha is relative to the row's norm and codes scale with the activations. A bank
    carries no data scale, and an absolute alpha (scikit-learn's default 1) would mean anything from
    "all codes zero" to "no sparsity" depending on the layer. The dictionary then weighs every row's
    direction equally. Default alpha 0.1: the lasso zeroes every code when alpha >= max_i |<w_i, a>|,
    which is at most 1 for unit rows and atoms, so 0.1 keeps an atom only where it explains at least a
    tenth of the row (its correlation with the residual), and shrinks each kept code by a tenth of the
    row's norm.

    The batch algorithm rather than MiniBatchDictionaryLearning: on small synthetic problems with a
    known orthonormal dictionary the online version often stalls in a mixture of atoms where the batch
    one recovers them. ``tol`` 1e-4 (scikit-learn's is 1e-8): on 5,000 x 256 activations, k = 10, it
    stops after about 12 iterations, within 0.1% of the objective that 1e-6 reaches after 51.
    scikit-learn's per-row lasso has a fixed duality-gap tolerance of 1e-8 and warns for each
    row that misses it within ``lasso_max_iter`` sweeps; those warnings are silenced.

    Attributes:
        alpha: the l1 weight, relative to each row's norm.
        max_iter: dictionary-learning iterations.
        tol: stop when the objective drops by less than this fraction in an iteration.
        lasso_max_iter: coordinate-descent sweeps per lasso.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    nonnegative_codes: ClassVar[bool] = False
    nonnegative_dictionary: ClassVar[bool] = False
    needs_nonnegative_activations: ClassVar[bool] = False

    alpha: float = 0.1
    max_iter: int = 200
    tol: float = 1e-4
    lasso_max_iter: int = 1000

    def fit(self, activations: torch.Tensor, k: int, seed: int) -> Factorization:
        """Learn k atoms and encode the rows against them."""
        from sklearn.decomposition import DictionaryLearning

        _check_fit(activations, k, self.name)
        model = DictionaryLearning(n_components=k, alpha=self.alpha, max_iter=self.max_iter, tol=self.tol,
                                   fit_algorithm="cd", transform_algorithm="lasso_cd",
                                   transform_alpha=self.alpha, transform_max_iter=self.lasso_max_iter,
                                   random_state=seed)
        with _quiet():
            model.fit(_numpy(_unit_rows(activations)[0]))
        bank = _bank(self.name, model.components_, activations)
        return Factorization(self.encode(activations, bank), bank)

    def encode(self, activations: torch.Tensor, bank: ConceptBank) -> torch.Tensor:
        """Lasso codes (coordinate descent, alpha relative to each row's norm)."""
        from sklearn.decomposition import sparse_encode

        _check_encode(activations, bank, self.name)
        rows, norms = _unit_rows(activations)
        with _quiet():
            codes = sparse_encode(_numpy(rows), _numpy(bank.dictionary), algorithm="lasso_cd",
                                  alpha=self.alpha, max_iter=self.lasso_max_iter)
        return torch.from_numpy(codes).to(activations.device, torch.float32) * norms.float()


@DECOMPOSITIONS.register("semi_nmf", description="semi-NMF (Ding, Li & Jordan 2010): codes >= 0, signed "
                                                 "concepts; any activations")
@dataclass(frozen=True)
class SemiNMF:
    """Semi-non-negative matrix factorisation (Ding, Li & Jordan, TPAMI 2010, section 3), in torch.

    In their notation X = F G^T with G >= 0; here U = G, W = F^T. Initialisation as in the paper:
    k-means (scikit-learn, one k-means++ start from the seed) cluster indicators plus 0.2. Then
    alternately W = (U^T U)^+ U^T A (the exact least-squares update) and the paper's multiplicative
    update U <- U * sqrt(((A W^T)^+ + U (W W^T)^-) / ((A W^T)^- + U (W W^T)^+)), with
    M^+ = (|M| + M) / 2 and M^- = (|M| - M) / 2. Every ``SEMI_NMF_CHECK_EVERY`` iterations the squared
    error ||A - U W||^2 is computed; the iteration stops when it fell by less than ``tol`` of itself
    since the previous check, or after ``max_iter`` iterations. Float64 on the activations' device;
    deterministic for a seed.

    Multiplicative updates converge slowly: on 5,000 x 256 synthetic activations, k = 10, the relative
    error is 0.095 after 1,000 iterations where alternating exact NNLS reaches 0.085 in 10 (NMF: 0.085).
    So the default, a deliberate deviation, is ``updates="nnls"``: exact NNLS codes
    (``xaibench.concepts.nnls``) in place of the multiplicative step, the same alternating scheme and
    the same objective with an exact inner solve; ``updates="multiplicative"`` is the paper's.

    Deliberate deviation: the fitted codes are the exact non-negative least-squares codes against
    the least-squares W of the last iterate (as ``encode`` computes them) instead of the last
    multiplicative iterate; this can only lower the error and makes ``encode`` reproduce them.

    Attributes:
        max_iter: iterations of the two updates.
        tol: the relative decrease of the squared error, per check, below which the iteration stops.
        updates: "nnls" (exact codes at every iteration, default) or "multiplicative" (the paper).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    nonnegative_codes: ClassVar[bool] = True
    nonnegative_dictionary: ClassVar[bool] = False
    needs_nonnegative_activations: ClassVar[bool] = False

    max_iter: int = 1000
    tol: float = 1e-5
    updates: Literal["multiplicative", "nnls"] = "nnls"

    def __post_init__(self) -> None:
        if self.updates not in ("multiplicative", "nnls"):
            raise InputError(f"semi_nmf updates are 'multiplicative' or 'nnls', got {self.updates!r}")

    def fit(self, activations: torch.Tensor, k: int, seed: int) -> Factorization:
        """Learn k signed concepts with non-negative codes."""
        _check_fit(activations, k, self.name)
        rows = activations.to(torch.float64)
        codes = self._initial_codes(activations, k, seed).to(rows)
        error = float("inf")
        for step in range(1, self.max_iter + 1):
            dictionary = _least_squares_dictionary(rows, codes)
            codes = self._update_codes(rows, codes, dictionary)
            if step % SEMI_NMF_CHECK_EVERY == 0:
                previous, error = error, float((rows - codes @ dictionary).square().sum())
                if error >= (1 - self.tol) * previous:
                    break
        bank = _bank(self.name, _least_squares_dictionary(rows, codes), activations)
        return Factorization(self.encode(activations, bank), bank)

    def encode(self, activations: torch.Tensor, bank: ConceptBank) -> torch.Tensor:
        """Non-negative least-squares codes against the signed bank."""
        _check_encode(activations, bank, self.name)
        return nnls(activations, bank.dictionary)

    def _update_codes(self, rows: torch.Tensor, codes: torch.Tensor, dictionary: torch.Tensor) -> torch.Tensor:
        if self.updates == "nnls":
            return nnls(rows, dictionary).to(rows)
        return _multiplicative_codes(rows, codes, dictionary)

    @staticmethod
    def _initial_codes(activations: torch.Tensor, k: int, seed: int) -> torch.Tensor:
        """K-means cluster indicators plus ``SEMI_NMF_INIT_OFFSET`` (the paper's start)."""
        labels = KMeans().fit(activations, k, seed).codes
        return labels + SEMI_NMF_INIT_OFFSET


def _least_squares_dictionary(rows: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """W = (U^T U)^+ U^T A: the least-squares dictionary for fixed codes."""
    return torch.linalg.pinv(codes.T @ codes, hermitian=True) @ (codes.T @ rows)


def _multiplicative_codes(rows: torch.Tensor, codes: torch.Tensor, dictionary: torch.Tensor) -> torch.Tensor:
    """Ding, Li & Jordan's multiplicative update of the non-negative factor (transposed)."""
    cross, gram = rows @ dictionary.T, dictionary @ dictionary.T
    numerator = cross.clamp_min(0) + codes @ (-gram).clamp_min(0)
    denominator = (-cross).clamp_min(0) + codes @ gram.clamp_min(0)
    return codes * (numerator / denominator.clamp_min(SEMI_NMF_EPS)).sqrt()


def _check_fit(activations: torch.Tensor, k: int, method: str) -> None:
    """InputError unless activations are a finite (n, p) matrix with 1 <= k <= n."""
    if activations.ndim != 2:
        raise InputError(f"{method} needs activations shaped (rows, features), got {tuple(activations.shape)}")
    if not 1 <= k <= activations.shape[0]:
        raise InputError(f"{method} needs 1 <= k <= {activations.shape[0]} rows, got k={k}")
    if not bool(torch.isfinite(activations).all()):
        raise InputError(f"{method} got activations with NaN or infinite values")


def _check_encode(activations: torch.Tensor, bank: ConceptBank, method: str) -> None:
    """InputError unless activations are (m, p) for the bank's p and the bank is this method's."""
    if bank.method != method:
        raise InputError(f"a {bank.method} concept bank cannot be encoded with {method}")
    if activations.ndim != 2 or activations.shape[1] != bank.dictionary.shape[1]:
        raise InputError(f"{method} encodes activations shaped (rows, {bank.dictionary.shape[1]}), got "
                         f"{tuple(activations.shape)}")


def _unit_rows(activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows scaled to unit norm (zero rows kept) in float64, and the norms (m, 1) to scale back."""
    rows = activations.to(torch.float64)
    norms = rows.norm(dim=1, keepdim=True)
    norms = torch.where(norms > 0, norms, torch.ones_like(norms))
    return rows / norms, norms


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence scikit-learn's ConvergenceWarning (NMF's max_iter, the sparse coder's per-row lasso): the
    iteration limits are deliberate and the concept metrics measure the reconstruction."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float64 numpy copy for scikit-learn."""
    return tensor.detach().to("cpu", torch.float64).numpy()


def _bank(method: str, dictionary: np.ndarray | torch.Tensor, like: torch.Tensor,
          offset: np.ndarray | None = None) -> ConceptBank:
    """A float32 ConceptBank on ``like``'s device (offset zeros unless given)."""
    weights = torch.as_tensor(dictionary, device=like.device).to(torch.float32)
    shift = (torch.zeros(weights.shape[1], device=like.device) if offset is None
             else torch.as_tensor(offset, device=like.device))
    return ConceptBank(method, weights, shift.to(like.device, torch.float32))


def _factorization(method: str, codes: np.ndarray, dictionary: np.ndarray, like: torch.Tensor,
                   offset: np.ndarray | None = None) -> Factorization:
    """Codes and bank from scikit-learn's arrays, as float32 tensors on ``like``'s device."""
    return Factorization(torch.from_numpy(codes).to(like.device, torch.float32),
                         _bank(method, dictionary, like, offset))
