"""Concept importance: attribution in concept space, registered in ``IMPORTANCES``.

Fel et al. (NeurIPS 2023, "A Holistic Approach to Unifying Automatic Concept Extraction and Concept
Importance Estimation") treat the importance of concept i as an attribution on the codes U: perturb U,
rebuild the activations U W + b, pass them through the rest of the model h and read the target logit.
Every estimator here has the signature

    fn(head, codes, target, *, batch_size=None, generator=None, **params) -> (N, k) float32

``head`` maps codes (N, *spatial, k) to logits (N, C) (``base.ConceptHead``: decode, then h); ``codes``
are pooled (N, k) or spatial (N, H, W, k) / (N, L, k), concept axis last; ``target`` is one class per
sample (or one int). Perturbing concept i scales ``codes[..., i]`` at every position by the same
factor, so a spatial code map is one variable per concept. ``batch_size`` bounds the rows of every head
call (samples, path points or perturbed copies); ``generator`` is the only source of randomness (rise
and sobol), and a missing one means ``torch.Generator().manual_seed(0)``, as for attribution methods.

Gradient estimators (gradient_input, saliency, integrated_gradients) need a differentiable head;
perturbation estimators (occlusion, rise, sobol) only call it. The perturbation masks (P, k) are shared
by all samples and drawn before any batching, so results do not depend on ``batch_size``. The paper's
result holds here exactly: with h linear, gradient_input, occlusion and integrated_gradients all equal
``u_i (W_i . w_target)`` (summed over positions for a head that sums or averages them linearly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench.attribution.base import as_target, require_gradients, target_gradients
from xaibench.attribution.draws import sample_seeds
from xaibench.attribution.path import quadrature, straight_path_integral
from xaibench.concepts.base import IMPORTANCES, ConceptHead
from xaibench.core.batches import row_slices
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


# ---------------------------------------------------------------------------------------------
# shared helpers


def _prepared(
    codes: torch.Tensor, target: torch.Tensor | int, batch_size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated float32 codes (detached) and an int64 target (N,) on the codes' device.

    Raises:
        InputError: for codes that are not a non-empty (N, *spatial, k) batch, non-finite codes, a
            target of the wrong shape or a batch size below 1.
    """
    if codes.ndim < 2 or codes.shape[0] == 0 or codes.shape[-1] == 0:
        raise InputError(f"codes must be a non-empty batch (N, *spatial, k), got {tuple(codes.shape)}")
    if not torch.isfinite(codes).all():
        raise InputError("codes contain NaN or infinite values")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    return codes.detach().float(), as_target(target, codes.shape[0]).to(codes.device)


def _per_concept(values: torch.Tensor) -> torch.Tensor:
    """(N, *spatial, k) -> (N, k): the sum over spatial positions (none for pooled codes)."""
    return values.reshape(values.shape[0], -1, values.shape[-1]).sum(1)


def _generator(generator: torch.Generator | None) -> torch.Generator:
    return torch.Generator().manual_seed(0) if generator is None else generator


DEFAULT_CODE_ELEMENTS = 1 << 19  # per head call without a batch size: about 2M decoded activations


def perturbed_scores(
    head: ConceptHead,
    codes: torch.Tensor,
    target: torch.Tensor,
    masks: torch.Tensor,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Target logits of every sample under every concept mask, (N, P), without gradients.

    Row ``n * P + j`` of the flattened (N * P) grid is ``codes[n] * masks[j]``, the mask broadcast over
    the spatial positions; the grid is evaluated in consecutive slices of at most ``batch_size`` rows,
    each built with one indexed product, so no (N, P, *spatial, k) tensor is ever materialised whole.

    Args:
        head: codes (rows, *spatial, k) -> logits (rows, C).
        codes: (N, *spatial, k) float32.
        target: class per sample, int64 (N,).
        masks: (P, k) factors, one per concept.
        batch_size: the most rows per head call; None caps each call at about ``DEFAULT_CODE_ELEMENTS``
            code values (one huge call was 2.7-3.3x slower than a per-design loop: its hundreds of MB of
            temporaries are mapped afresh by the allocator each time; benchmarks/concepts_cost.py).
    """
    n, n_masks, k = codes.shape[0], masks.shape[0], codes.shape[-1]
    if batch_size is None:
        batch_size = max(1, DEFAULT_CODE_ELEMENTS // codes[0].numel())
    masks = masks.to(codes)
    broadcast = (1,) * (codes.ndim - 2)
    scores = torch.empty(n * n_masks, dtype=torch.float32, device=codes.device)
    with torch.no_grad():
        for rows in row_slices(n * n_masks, batch_size):
            index = torch.arange(rows.start, rows.stop, device=codes.device)
            samples = index // n_masks
            scaled = codes[samples] * masks[index % n_masks].view(-1, *broadcast, k)
            scores[rows] = head(scaled).float().gather(1, target[samples, None]).squeeze(1)
    return scores.view(n, n_masks)


# ---------------------------------------------------------------------------------------------
# gradient estimators


@IMPORTANCES.register("gradient_input", description="codes x gradient of the target logit (Fel et al. 2023)")
def gradient_input(
    head: ConceptHead,
    codes: torch.Tensor,
    target: torch.Tensor | int,
    *,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gradient x input on the codes: ``sum over positions of u * d logit_target / d u``, (N, k).

    Shrikumar et al. (2016) applied to concept space as in Fel et al. (NeurIPS 2023), who prove it
    optimal for C-Deletion, C-Insertion and C-muFidelity when h is linear. It is the derivative of the
    logit with respect to a common scale of concept i at every position (at scale 1) times that scale.
    ``generator`` is unused (deterministic).
    """
    codes, target = _prepared(codes, target, batch_size)
    require_gradients(head, codes[:1])
    return _per_concept(codes * target_gradients(head, codes, target, batch_size))


@IMPORTANCES.register("saliency", description="absolute gradient of the target logit, summed over positions")
def saliency(
    head: ConceptHead,
    codes: torch.Tensor,
    target: torch.Tensor | int,
    *,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Saliency on the codes: ``sum over positions of |d logit_target / d u|``, (N, k).

    Simonyan et al. (ICLR workshop 2014) on the codes. Deliberate choice for spatial codes: the
    absolute value is taken per position before summing (the l1 norm of concept i's gradient map),
    so opposite-signed positions do not cancel; for pooled codes it is simply ``|gradient|``. With a
    linear h that averages positions it equals ``|W_i . w_target|``. ``generator`` is unused.
    """
    codes, target = _prepared(codes, target, batch_size)
    require_gradients(head, codes[:1])
    return _per_concept(target_gradients(head, codes, target, batch_size).abs())


@IMPORTANCES.register(
    "integrated_gradients", description="integrated gradients from zero codes (Sundararajan et al. 2017)")
def integrated_gradients(
    head: ConceptHead,
    codes: torch.Tensor,
    target: torch.Tensor | int,
    *,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    n_steps: int = 32,
    method: str = "gausslegendre",
) -> torch.Tensor:
    """Integrated gradients on the codes from the all-zero codes, summed over positions, (N, k).

    Sundararajan et al. (ICML 2017): ``u * integral_0^1 grad logit(alpha u) d alpha``, the integral by
    Gauss-Legendre quadrature with ``n_steps`` nodes by default (captum's default rule; any rule of
    ``attribution.path.quadrature`` by ``method``). The zero codes decode to the offset b (PCA's mean,
    zero activations otherwise). Path points go through the head in calls of at most ``batch_size``
    rows. ``generator`` is unused.

    Raises:
        InputError, UnknownNameError: for n_steps < 1 or an unknown quadrature.
    """
    codes, target = _prepared(codes, target, batch_size)
    alphas, weights = quadrature(method, n_steps)
    require_gradients(head, codes[:1])
    attributions = straight_path_integral(
        head, codes, torch.zeros_like(codes), target, alphas, weights, batch_size)
    return _per_concept(attributions)


# ---------------------------------------------------------------------------------------------
# perturbation estimators


@IMPORTANCES.register("occlusion", description="target logit drop when one concept is zeroed")
def occlusion(
    head: ConceptHead,
    codes: torch.Tensor,
    target: torch.Tensor | int,
    *,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``logit(u) - logit(u with concept i zeroed at every position)``, (N, k).

    Occlusion (Zeiler & Fergus, ECCV 2014) with one concept as the occluded unit, as in Fel et al.
    (NeurIPS 2023), where it equals gradient x input for a linear h. The intact codes and the k
    occlusions form one grid of N * (k + 1) rows. ``generator`` is unused.
    """
    codes, target = _prepared(codes, target, batch_size)
    k = codes.shape[-1]
    masks = torch.cat([torch.ones(1, k, device=codes.device), 1.0 - torch.eye(k, device=codes.device)])
    scores = perturbed_scores(head, codes, target, masks, batch_size)
    return scores[:, :1] - scores[:, 1:]


def rise_masks(k: int, n_masks: int, p_keep: float, generator: torch.Generator) -> torch.Tensor:
    """(n_masks, k) float32 binary masks, each concept kept independently with probability p_keep.

    Raises:
        InputError: for n_masks < 1 or p_keep outside (0, 1].
    """
    if n_masks < 1:
        raise InputError(f"n_masks must be at least 1, got {n_masks}")
    if not 0.0 < p_keep <= 1.0:
        raise InputError(f"p_keep must be in (0, 1], got {p_keep}")
    return (torch.rand((n_masks, k), generator=generator, device="cpu") < p_keep).float()


@IMPORTANCES.register("rise", description="RISE: score-weighted mean of random binary concept masks")
def rise(
    head: ConceptHead,
    codes: torch.Tensor,
    target: torch.Tensor | int,
    *,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    n_masks: int = 256,
    p_keep: float = 0.5,
) -> torch.Tensor:
    """RISE on concepts: ``importance_i = mean_j(logit(u * m_j) * m_j,i) / p_keep``, (N, k).

    Petsiuk, Das & Saenko (BMVC 2018), eq. 6: the Monte-Carlo estimate of ``E[f(u * M) M_i] / E[M_i]
    = E[f(u * M) | M_i = 1]`` with ``M_i ~ Bernoulli(p_keep)`` independent. The masks (``rise_masks``)
    are concept-level (one factor per concept for all positions, no upsampling), drawn once from
    ``generator`` and shared by all samples. For a linear h with logit ``c + sum_j a_j u_j`` the
    expectation is ``c + a_i u_i + p_keep * sum_{j != i} a_j u_j``: a constant shift plus the
    gradient-x-input term scaled by ``1 - p_keep``, so RISE ranks concepts like gradient x input there.
    """
    codes, target = _prepared(codes, target, batch_size)
    masks = rise_masks(codes.shape[-1], n_masks, p_keep, _generator(generator)).to(codes.device)
    scores = perturbed_scores(head, codes, target, masks, batch_size)
    return scores @ masks / (n_masks * p_keep)


def sobol_design(k: int, n_designs: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (n_designs, k) float32 matrices A and B in [0, 1]^k from one scrambled Sobol' sequence.

    As in Xplique's ``ScipySobolSequence``: the first ``n_designs`` points of a 2k-dimensional Sobol'
    sequence (``scipy.stats.qmc.Sobol``), split into columns [0, k) for A and [k, 2k) for B, which keeps
    A and B uncorrelated. Owen scrambling is seeded by one seed drawn from ``generator`` (Xplique does
    not scramble); scipy warns when ``n_designs`` is not a power of 2.

    Raises:
        InputError: for n_designs < 2.
    """
    from scipy.stats import qmc

    if n_designs < 2:
        raise InputError(f"n_designs must be at least 2, got {n_designs}")
    seed = sample_seeds(generator, 1)[0]
    points = qmc.Sobol(d=2 * k, scramble=True, rng=seed).random(n_designs)
    design = torch.from_numpy(points).float()
    return design[:, :k].contiguous(), design[:, k:].contiguous()


def jansen_total_indices(scores_a: torch.Tensor, scores_c: torch.Tensor) -> torch.Tensor:
    """Jansen's total Sobol' indices ``ST_i = sum_j (f(A_j) - f(C_i,j))^2 / (2 n Var f(A))``, (N, k).

    Jansen (Comput. Phys. Commun. 1999); the variance is the unbiased one of f(A), as in Xplique's
    ``JansenEstimator``. A sample whose f(A) is constant has no variance to share: its indices are 0.

    Args:
        scores_a: (N, n) outputs on A.
        scores_c: (N, k, n) outputs on C_i (A with column i taken from B).
    """
    n = scores_a.shape[-1]
    variance = scores_a.var(dim=-1, correction=1)[:, None]
    squared = (scores_a[:, None, :] - scores_c).square().sum(-1)
    return torch.where(variance > 0, squared / (2 * n * variance.clamp_min(1e-30)), 0.0)


@IMPORTANCES.register("sobol", description="total Sobol indices of concept masks, Jansen estimator (CRAFT)")
def sobol(
    head: ConceptHead,
    codes: torch.Tensor,
    target: torch.Tensor | int,
    *,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    n_designs: int = 32,
) -> torch.Tensor:
    """Total Sobol' indices of concept masks on the target logit, Jansen estimator, (N, k).

    CRAFT (Fel et al., CVPR 2023), after Fel et al. (NeurIPS 2021, "Look at the Variance!"): masks
    ``m`` in [0, 1]^k multiply the codes, and ``ST_i = E[(f(A) - f(A_B^i))^2] / (2 Var f)`` measures the
    share of the logit's variance that involves concept i, interactions included. A and B come from a
    scrambled Sobol' sequence (``sobol_design``, shared by all samples); ``A_B^i`` is A with column i
    from B. One grid of N * n_designs * (k + 1) rows (A, then the k matrices C_i) goes through the head
    in calls of at most ``batch_size`` rows. Deliberate deviation from Xplique: f(B) is not computed,
    since the Jansen total index does not use it.
    """
    codes, target = _prepared(codes, target, batch_size)
    k = codes.shape[-1]
    a, b = sobol_design(k, n_designs, _generator(generator))
    replaced = torch.eye(k, dtype=torch.bool, device=a.device)[:, None, :]  # (k, 1, k): column i of C_i from B
    c = torch.where(replaced, b[None], a[None])  # (k, n, k)
    masks = torch.cat([a, c.reshape(k * n_designs, k)])
    scores = perturbed_scores(head, codes, target, masks, batch_size)
    return jansen_total_indices(scores[:, :n_designs], scores[:, n_designs:].view(-1, k, n_designs))


def global_importance(local: torch.Tensor) -> torch.Tensor:
    """Class-level importance (k,): the mean of the per-sample importances (N, k), as CRAFT averages
    the Sobol' indices of a class's images."""
    if local.ndim != 2 or local.shape[0] == 0:
        raise InputError(f"local importances must be (N, k) with N >= 1, got {tuple(local.shape)}")
    return local.float().mean(0)
