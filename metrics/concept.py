"""Concept metrics: how good a concept decomposition is, and how faithful its concept importances are.

Fel et al. (NeurIPS 2023, "A Holistic Approach to Unifying Automatic Concept Extraction and Concept
Importance Estimation") score a dictionary A ~ U W + b learned on a layer's activations with
reconstruction (relative_l2), sparsity, stability and fid, and score concept importances with the
concept-space twins of the faithfulness metrics: c_deletion, c_insertion and c_mufidelity.

These metrics do not take (model, inputs, attributions): they take a ``ConceptInputs`` through
``compute_concepts`` (or the functional ``compute_concepts(name, inputs)``); their ``compute`` raises
IncompatibleError, and ``xaibench evaluate`` never selects them (see ``selection``). Scores are 1-D,
float64, on the CPU: one per activation row (relative_l2, sparsity), one per bootstrap subset
(stability), one for the whole set (fid), or one per image (c_deletion, c_insertion, c_mufidelity).

The fidelity metrics score the target class's logit by default (``output="probability"`` for its
softmax): with a linear head the logit is linear in the codes, which is the setting of the paper's
theorem (gradient x input is optimal for C-Deletion, C-Insertion and C-muFidelity there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xaibench.metrics.base import METRICS, Metric, MetricResult
from xaibench.metrics.stats import normalised_auc, pearson

from xaibench.attribution.base import as_target, parse_params
from xaibench.attribution.path import sample_chunks
from xaibench.concepts.base import DECOMPOSITIONS, ConceptBank, ConceptHead, Factorization
from xaibench.core.batches import row_slices
from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

#: refit(activations (m, p), k, seed) -> Factorization: a decomposition's ``fit`` (stability refits it)
Refit = Callable[["torch.Tensor", int, int], Factorization]
#: what the fidelity metrics read from the head's logits
OUTPUTS = ("logit", "probability")


@dataclasses.dataclass(frozen=True)
class ConceptInputs:
    """What the concept metrics score.

    Attributes:
        activations: A, (n, p), the layer activations the bank was fitted on.
        codes: U, (n, k), their codes.
        bank: the learned dictionary; ``bank.method`` names the decomposition.
        head: codes (N, *spatial, k) -> logits (N, classes); needed by the fidelity metrics.
        image_codes: (N, *spatial, k) codes of each explained image, for the fidelity metrics.
        importances: (N, k) local concept importances of those images, for the fidelity metrics.
        target: (N,) (or one int) the explained class per image, for the fidelity metrics.
        batch_size: the most rows per head call; None for one call.
        seed: the seed the bank was fitted with; stability refits with seed + 1, seed + 2, ...
        refit: fits the decomposition again for stability; None uses
            ``DECOMPOSITIONS.get(bank.method)().fit``.
    """

    activations: torch.Tensor
    codes: torch.Tensor
    bank: ConceptBank
    head: ConceptHead | None = None
    image_codes: torch.Tensor | None = None
    importances: torch.Tensor | None = None
    target: torch.Tensor | int | None = None
    batch_size: int | None = None
    seed: int = 0
    refit: Refit | None = None

    @property
    def decomposition(self) -> str:
        """The DECOMPOSITIONS name of the bank's method."""
        return self.bank.method


class ConceptMetric(Metric):
    """Base of the concept metrics: category "concept", scored through ``compute_concepts``.

    ``needs_model`` here means the metric runs the head on image codes (the fidelity metrics).
    """

    category = "concept"
    concept = True
    needs_model = False

    def compute(self, *args: Any, **kwargs: Any) -> MetricResult:
        """Refused: a concept metric scores a decomposition, not an attribution."""
        raise IncompatibleError(f"{self.name} is a concept metric: use xaibench concepts")

    def compute_concepts(self, inputs: ConceptInputs, *, generator: torch.Generator | None = None,
                         **params: Any) -> MetricResult:
        """Score ``inputs`` (see ``ConceptInputs``).

        Args:
            generator: the only source of randomness; a fixed default seed when None.
            **params: metric parameters; strings are converted to the declared types.

        Raises:
            InputError: shapes that do not match, NaN, a bad parameter, a missing head or importances.
        """
        parsed = parse_params(self.Params, params, owner=f"metric {self.name!r}")
        checked = validated(inputs, fidelity=self.needs_model)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        return _finished(self._compute_concepts(checked, parsed, generator), self.name)

    def _compute_concepts(self, inputs: ConceptInputs, params: Any, generator: torch.Generator) -> MetricResult:
        raise NotImplementedError


def compute_concepts(metric: str, inputs: ConceptInputs, /, **kwargs: Any) -> MetricResult:
    """Functional form: ``compute_concepts("c_deletion", inputs, output="probability")``."""
    cls = METRICS.get(metric)
    if not cls.concept:
        raise IncompatibleError(f"{metric} is not a concept metric: use xaibench evaluate")
    return cls().compute_concepts(inputs, **kwargs)


def validated(inputs: ConceptInputs, *, fidelity: bool) -> ConceptInputs:
    """``inputs`` checked (shapes, finite values, what the fidelity metrics need), detached float32.

    Raises:
        InputError: naming the first problem found.
    """
    a, u, w = inputs.activations, inputs.codes, inputs.bank.dictionary
    if a.ndim != 2 or a.shape[0] == 0:
        raise InputError(f"activations must be a non-empty (n, p) matrix, got shape {tuple(a.shape)}")
    if w.ndim != 2 or w.shape[1] != a.shape[1] or tuple(inputs.bank.offset.shape) != (a.shape[1],):
        raise InputError(f"the concept bank {tuple(w.shape)} does not fit activations {tuple(a.shape)}")
    if tuple(u.shape) != (a.shape[0], w.shape[0]):
        raise InputError(f"codes must have shape {(a.shape[0], w.shape[0])}, got {tuple(u.shape)}")
    if inputs.batch_size is not None and inputs.batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {inputs.batch_size}")
    checked = dataclasses.replace(inputs, activations=_finite(a, "activations"), codes=_finite(u, "codes"))
    return _fidelity_inputs(checked) if fidelity else checked


def _fidelity_inputs(inputs: ConceptInputs) -> ConceptInputs:
    if inputs.head is None or inputs.image_codes is None or inputs.importances is None or inputs.target is None:
        raise InputError("the concept fidelity metrics need a head, image codes, importances and a target")
    codes, k = inputs.image_codes, inputs.bank.k
    if codes.ndim < 2 or codes.shape[0] == 0 or codes.shape[-1] != k:
        raise InputError(f"image codes must be a non-empty (N, *spatial, {k}) tensor, got {tuple(codes.shape)}")
    if tuple(inputs.importances.shape) != (codes.shape[0], k):
        raise InputError(f"importances must have shape {(codes.shape[0], k)}, got "
                         f"{tuple(inputs.importances.shape)}")
    return dataclasses.replace(
        inputs, image_codes=_finite(codes, "image codes"), importances=_finite(inputs.importances, "importances"),
        target=as_target(inputs.target, codes.shape[0]))


def _finite(values: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(values).all():
        raise InputError(f"{what} contain NaN or infinite values")
    return values.detach().float()


def _finished(result: MetricResult, name: str) -> MetricResult:
    # a wrong shape is a bug in the metric, not a user error
    if result.scores.ndim != 1:
        raise AssertionError(f"{name} returned scores of shape {tuple(result.scores.shape)}")
    if result.curve is not None and (result.curve.ndim != 2 or result.curve.shape[0] != result.scores.shape[0]):
        raise AssertionError(f"{name} returned a curve of shape {tuple(result.curve.shape)}")
    return MetricResult(
        scores=result.scores.detach().double().cpu(),
        curve=None if result.curve is None else result.curve.detach().double().cpu(),
        curve_x=None if result.curve_x is None else result.curve_x.detach().double().cpu())


# ---------------------------------------------------------------------------------------------
# the decomposition: reconstruction, sparsity, stability, fid


@METRICS.register("relative_l2")
class RelativeL2(ConceptMetric):
    """Relative l2 reconstruction error (Fel et al., NeurIPS 2023): ``||a - (u W + b)|| / ||a||`` per
    activation row. The paper reports ``||A - U W||_F / ||A||_F`` over the whole matrix; per row gives
    a distribution whose rows can be inspected. NaN for an all-zero activation row. Lower is better.
    """

    higher_is_better = False
    description = "per row ||a - decode(u)|| / ||a||: how well the concepts rebuild the activations"

    def _compute_concepts(self, inputs: ConceptInputs, params: Any, generator: torch.Generator) -> MetricResult:
        a = inputs.activations.double()
        residual = (a - inputs.bank.decode(inputs.codes.double())).norm(dim=1)
        norm = a.norm(dim=1)
        return MetricResult(scores=torch.where(norm > 0, residual / norm, torch.full_like(norm, float("nan"))))


@METRICS.register("sparsity")
class Sparsity(ConceptMetric):
    """Code sparsity (Fel et al., NeurIPS 2023: ``||U||_0 / |U|``): per activation row, the fraction of
    the k codes whose magnitude exceeds ``eps`` (0: strictly non-zero). Its mean over rows is the
    paper's matrix-wide fraction. Lower is sparser, hence better (K-means scores 1/k, PCA close to 1).
    """

    higher_is_better = False
    description = "per row fraction of non-zero codes |u_i| > eps (lower is sparser)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """eps: codes with |u| <= eps count as zero."""

        eps: float = 0.0

    def _compute_concepts(self, inputs: ConceptInputs, params: Any, generator: torch.Generator) -> MetricResult:
        if params.eps < 0:
            raise InputError(f"sparsity needs eps >= 0, got {params.eps}")
        return MetricResult(scores=(inputs.codes.abs() > params.eps).double().mean(dim=1))


@METRICS.register("stability")
class Stability(ConceptMetric):
    """Dictionary stability (Fel et al., NeurIPS 2023): refit the decomposition on ``n_bootstrap``
    bootstrap samples of the activations (n rows drawn with replacement by the generator; fit seeds
    seed + 1, seed + 2, ...), match each refitted dictionary's atoms to the reference bank's with the
    Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on the cosine distance
    ``1 - cos(w_i, w'_j)``, and score each sample ``1 - mean matched distance``. One score per
    bootstrap sample; 1 when every refit finds the same atoms up to permutation and positive scale.
    The distance is signed, as in the paper: an atom refitted with its sign flipped counts as distance 2.
    Higher is better.
    """

    stochastic = True
    description = "1 - mean cosine distance of Hungarian-matched atoms of bootstrap refits"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """n_bootstrap: how many bootstrap samples to refit on."""

        n_bootstrap: int = 5

    def _compute_concepts(self, inputs: ConceptInputs, params: Any, generator: torch.Generator) -> MetricResult:
        if params.n_bootstrap < 1:
            raise InputError(f"stability needs n_bootstrap >= 1, got {params.n_bootstrap}")
        refit = inputs.refit or DECOMPOSITIONS.get(inputs.decomposition)().fit
        n = inputs.activations.shape[0]
        picks = torch.randint(0, n, (params.n_bootstrap, n), generator=generator, device="cpu")
        scores = [matched_similarity(inputs.bank.dictionary,
                                     refit(inputs.activations[rows.to(inputs.activations.device)],
                                           inputs.bank.k, inputs.seed + 1 + i).bank.dictionary)
                  for i, rows in enumerate(picks)]
        return MetricResult(scores=torch.tensor(scores, dtype=torch.float64, device="cpu"))


def matched_similarity(reference: torch.Tensor, other: torch.Tensor) -> float:
    """1 - mean cosine distance between the rows of ``reference`` (k, p) and ``other`` (k', p) matched
    one to one by the Hungarian algorithm (min(k, k') pairs); an all-zero atom is at distance 1."""
    from scipy.optimize import linear_sum_assignment

    unit = torch.nn.functional.normalize
    distance = 1 - unit(reference.double().cpu(), dim=1) @ unit(other.double().cpu(), dim=1).T
    rows, cols = linear_sum_assignment(distance.numpy())
    return 1.0 - float(distance[torch.as_tensor(rows, device="cpu"), torch.as_tensor(cols, device="cpu")].mean())


@METRICS.register("fid")
class Fid(ConceptMetric):
    """Frechet distance between Gaussian fits of the activations A and of their reconstructions
    decode(U) (Fel et al., NeurIPS 2023, after Heusel et al.'s FID): ``||mu_1 - mu_2||^2 +
    tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))`` with unbiased covariances, in float64. The trace of the matrix
    square root is taken as the sum of the square roots of the eigenvalues of the symmetric
    ``S_1^(1/2) S_2 S_1^(1/2)`` (same eigenvalues as S_1 S_2), which avoids ``scipy.linalg.sqrtm``'s
    complex round-off. One score for the whole set; lower is better.
    """

    higher_is_better = False
    description = "Frechet distance between Gaussian fits of the activations and their reconstructions"

    def _compute_concepts(self, inputs: ConceptInputs, params: Any, generator: torch.Generator) -> MetricResult:
        if inputs.activations.shape[0] < 2:
            raise InputError("fid needs at least 2 activation rows for a covariance")
        rebuilt = inputs.bank.decode(inputs.codes.double())
        return MetricResult(scores=frechet_distance(inputs.activations, rebuilt).reshape(1))


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Frechet distance between Gaussian fits (mean, unbiased covariance) of the rows of ``a`` (n, p) and
    ``b`` (m, p); a float64 scalar."""
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root = psd_sqrt(cov_a)
    cross = root @ cov_b @ root
    cross_trace = torch.linalg.eigvalsh((cross + cross.T) / 2).clamp_min(0).sqrt().sum()
    return (a.mean(0) - b.mean(0)).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross_trace


def psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative round-off
    eigenvalues clamped to 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


# ---------------------------------------------------------------------------------------------
# the importances: c_deletion, c_insertion, c_mufidelity


@dataclasses.dataclass(frozen=True)
class CurveParams:
    """output: the head's score of the target, "logit" (default) or "probability" (softmax)."""

    output: str = "logit"


@METRICS.register("c_deletion")
class CDeletion(ConceptMetric):
    """C-Deletion (Fel et al., NeurIPS 2023; RISE's deletion in concept space): per image, zero its
    concepts one at a time in decreasing order of importance (at every spatial position, ties broken
    by concept index) and record the head's target score before the first removal and after each;
    the score is the trapezoid area under that curve over the fraction of concepts removed (k + 1
    points from 0 to 1). The target's logit by default, where the paper's theorem holds (RISE and
    ``deletion`` use the probability: ``output="probability"``). Zeroing a code leaves the bank's
    offset (PCA's mean). Lower is better.
    """

    higher_is_better = False
    needs_model = True
    curve_label = "fraction of concepts removed"
    description = "AUC of the class score as concepts are removed in decreasing importance (Fel et al.)"
    Params = CurveParams

    def _compute_concepts(self, inputs: ConceptInputs, params: Any, generator: torch.Generator) -> MetricResult:
        return _concept_curve(inputs, params.output, insert=False)


@METRICS.register("c_insertion")
class CInsertion(ConceptMetric):
    """C-Insertion (Fel et al., NeurIPS 2023; RISE's insertion in concept space): per image, start from
    all codes zero and restore its concepts one at a time in decreasing order of importance, recording
    the head's target score (logit by default, as c_deletion) at each of the k + 1 steps; the score is
    the trapezoid area under the curve over the fraction of concepts inserted. Higher is better.
    """

    needs_model = True
    curve_label = "fraction of concepts inserted"
    description = "AUC of the class score as concepts are added in decreasing importance (Fel et al.)"
    Params = CurveParams

    def _compute_concepts(self, inputs: ConceptInputs, params: Any, generator: torch.Generator) -> MetricResult:
        return _concept_curve(inputs, params.output, insert=True)


def _concept_curve(inputs: ConceptInputs, output: str, *, insert: bool) -> MetricResult:
    ranks = importance_ranks(inputs.importances)
    k = ranks.shape[1]
    removed = ranks[:, None, :] < torch.arange(k + 1, device=ranks.device)[None, :, None]  # (N, k + 1, k)
    curve = masked_scores(inputs, removed if insert else ~removed, output)
    return MetricResult(normalised_auc(curve), curve, torch.arange(k + 1, dtype=torch.float64, device="cpu") / k)


def importance_ranks(importances: torch.Tensor) -> torch.Tensor:
    """Each concept's position in decreasing order of importance, (N, k) int64; 0 is the most
    important; ties keep the concept order."""
    order = torch.argsort(importances, dim=1, descending=True, stable=True)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


@METRICS.register("c_mufidelity")
class CMuFidelity(ConceptMetric):
    """C-muFidelity (Fel et al., NeurIPS 2023; Bhatt et al., IJCAI 2020, muFidelity in concept space):
    per image, draw ``n_subsets`` random concept subsets of ``max(1, round(subset_fraction * k))``
    concepts, zero each subset's codes, and take the Pearson correlation between the drop of the
    head's target score (logit by default, as c_deletion) and the sum of the subset's importances.
    Subsets have exactly that size (Xplique's muFidelity draws each element with probability
    ``subset_percent``); the default fraction 0.2 is Xplique's. Xplique correlates with Spearman and
    turns NaN into 0; Bhatt et al. define Pearson, used here, and a constant side gives NaN. With a
    linear head and occlusion importances the score is exactly 1. Higher is better.
    """

    needs_model = True
    stochastic = True
    description = "Pearson correlation of the score drop and the importance sum of random concept subsets"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """n_subsets: random subsets per image; subset_fraction: share of the k concepts zeroed per
        subset; output: "logit" or "probability"."""

        n_subsets: int = 128
        subset_fraction: float = 0.2
        output: str = "logit"

    def _compute_concepts(self, inputs: ConceptInputs, params: Any, generator: torch.Generator) -> MetricResult:
        if params.n_subsets < 2 or not 0 < params.subset_fraction <= 1:
            raise InputError("c_mufidelity needs n_subsets >= 2 and 0 < subset_fraction <= 1, got "
                             f"{params.n_subsets} and {params.subset_fraction}")
        n, k = inputs.importances.shape
        size = max(1, round(params.subset_fraction * k))
        draws = torch.rand((n, params.n_subsets, k), generator=generator, device="cpu").to(inputs.importances.device)
        zeroed = torch.zeros_like(draws, dtype=torch.bool).scatter_(2, draws.topk(size, dim=2).indices, True)
        keep = torch.cat([torch.ones_like(zeroed[:, :1]), ~zeroed], dim=1)  # the unperturbed codes first
        scores = masked_scores(inputs, keep, params.output)
        drops = scores[:, :1] - scores[:, 1:]
        sums = (inputs.importances.double()[:, None, :] * zeroed).sum(dim=2).cpu()
        return MetricResult(scores=pearson(drops, sums))


def masked_scores(inputs: ConceptInputs, keep: torch.Tensor, output: str) -> torch.Tensor:
    """The head's target score on each image's codes under each of its concept masks, (N, S) float64.

    Args:
        keep: (N, S, k) bool; mask s of image n keeps the concepts marked True at every spatial
            position and zeroes the others. Evaluated in head calls of at most ``batch_size`` rows.
    """
    if output not in OUTPUTS:
        raise UnknownNameError.for_name("output", output, list(OUTPUTS))
    codes = inputs.image_codes
    n, copies, k = keep.shape
    out = torch.empty((n, copies), dtype=torch.float64, device="cpu")
    for samples in sample_chunks(n, copies, inputs.batch_size):
        masks = keep[samples].to(codes).view(-1, copies, *([1] * (codes.ndim - 2)), k)
        rows = (codes[samples].unsqueeze(1) * masks).flatten(0, 1)
        targets = inputs.target[samples].repeat_interleave(copies)
        scores = [head_scores(inputs.head, rows[r], targets[r], output)
                  for r in row_slices(rows.shape[0], inputs.batch_size)]
        out[samples] = torch.cat(scores).view(-1, copies).double().cpu()
    return out


def head_scores(head: ConceptHead, codes: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """Per row of ``codes``: the target's logit, or its softmax probability. No gradients."""
    with torch.no_grad():
        logits = head(codes).double()
    if output == "probability":
        logits = logits.softmax(dim=1)
    return logits.gather(1, target.to(logits.device)[:, None]).squeeze(1)
