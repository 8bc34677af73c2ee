"""Batched non-negative least squares: the codes of many rows against one dictionary, in torch.

Every row a (p,) of ``activations`` gets ``argmin_{u >= 0} ||a - u W||``, W (k, p). All rows share
the Gram matrix G = W W^T, so the problem is solved on the normal equations with block principal
pivoting (Kim & Park, "Fast nonnegative matrix factorization: an active-set-like method and
comparisons", SIAM J. Sci. Comput. 2011, Algorithm 2): each row keeps a passive set F, solves
G_FF u_F = (W a)_F exactly, and exchanges the coordinates that violate the optimality conditions
(u_F < 0, or a negative gradient y = G u - W a off F), all infeasible ones at once while their number
falls, then at most three more times, then one at a time (the backup rule that makes it terminate).
Rows are processed together: one batched ``torch.linalg.solve`` per exchange on the rows not yet
optimal. The result is the exact NNLS solution (``scipy.optimize.nnls``, which runs Lawson-Hanson per
row), not an iterative approximation.

Deliberate deviations: the search starts from the unconstrained solution (F = every coordinate)
rather than from u = 0, which saves exchanges when most codes are positive, as NMF codes usually are;
sign tests use a relative tolerance (``FEASIBILITY_TOL``) so that rounding noise on an exact zero does
not trigger exchanges; a ridge of ``RIDGE`` times the mean diagonal of G keeps G_FF invertible when
atoms are linearly dependent. Everything runs in float64 on the input's device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

#: Exchanges allowed per row; block principal pivoting usually needs a handful.
MAX_EXCHANGES = 200
#: Signs are tested against this fraction of the row's scale.
FEASIBILITY_TOL = 1e-10
#: Ridge added to G, relative to its mean diagonal.
RIDGE = 1e-12
#: Full exchanges tolerated without a drop in the number of infeasible coordinates (Kim & Park's 3).
FULL_EXCHANGE_TRIES = 3
#: Bound on the elements of one batch of k x k systems (rows per batch = this // k^2).
BATCH_ELEMENTS = 1 << 22


def nnls(activations: torch.Tensor, dictionary: torch.Tensor) -> torch.Tensor:
    """Non-negative least-squares codes of every row against ``dictionary``.

    Args:
        activations: A (m, p).
        dictionary: W (k, p), any sign.

    Returns:
        U (m, k) float32 on the activations' device, U >= 0, each row minimising ||a - u W||.
    """
    weights = dictionary.to(activations.device, torch.float64)
    gram = weights @ weights.T
    gram = gram + RIDGE * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    cross = activations.to(torch.float64) @ weights.T
    rows = max(1, BATCH_ELEMENTS // max(1, len(gram)) ** 2)
    if len(cross) == 0:
        return cross.float()
    return torch.cat([_pivot(gram, chunk) for chunk in cross.split(rows)]).float()


def _pivot(gram: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    """Block principal pivoting on rows ``cross`` = A W^T (r, k) with ``gram`` = W W^T (k, k)."""
    count, k = cross.shape
    passive = torch.ones(count, k, dtype=torch.bool, device=cross.device)
    codes, gradient = _solve_passive(gram, cross, passive)
    tries = torch.full((count,), FULL_EXCHANGE_TRIES, device=cross.device)
    fewest = torch.full((count,), k + 1, device=cross.device)
    scale = cross.abs().amax(1, keepdim=True)
    for _ in range(MAX_EXCHANGES):
        infeasible = _infeasible(codes, gradient, passive, scale)
        violations = infeasible.sum(1)
        todo = violations > 0
        if not bool(todo.any()):
            break
        fewer = todo & (violations < fewest)
        full = fewer | (todo & (tries >= 1))
        tries = torch.where(fewer, FULL_EXCHANGE_TRIES, torch.where(todo & ~fewer, tries - 1, tries))
        fewest = torch.where(fewer, violations, fewest)
        passive ^= torch.where(full[:, None], infeasible, _last_true(infeasible))
        rows = todo.nonzero().squeeze(1)
        codes[rows], gradient[rows] = _solve_passive(gram, cross[rows], passive[rows])
    return codes.clamp_min(0)


def _solve_passive(gram: torch.Tensor, cross: torch.Tensor, passive: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes with G_FF u_F = cross_F and u = 0 off F, and the gradient G u - cross off F (0 on F)."""
    mask = passive.to(gram.dtype)
    system = gram * (mask[:, :, None] * mask[:, None, :]) + torch.diag_embed(1 - mask)
    codes = torch.linalg.solve(system, (cross * mask).unsqueeze(-1)).squeeze(-1)
    gradient = (codes @ gram - cross) * (1 - mask)
    return codes, gradient


def _infeasible(codes: torch.Tensor, gradient: torch.Tensor, passive: torch.Tensor,
                scale: torch.Tensor) -> torch.Tensor:
    """Coordinates that break the KKT conditions: negative codes on F, negative gradient off F."""
    code_tol = FEASIBILITY_TOL * codes.abs().amax(1, keepdim=True)
    return (passive & (codes < -code_tol)) | (~passive & (gradient < -FEASIBILITY_TOL * scale))


def _last_true(mask: torch.Tensor) -> torch.Tensor:
    """Keep only the last True of each row (Kim & Park's backup rule exchanges the largest index)."""
    last = mask.shape[1] - 1 - mask.flip(1).to(torch.uint8).argmax(1)
    return torch.nn.functional.one_hot(last, mask.shape[1]).bool() & mask
