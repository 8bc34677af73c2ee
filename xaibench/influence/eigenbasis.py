"""Per-example gradients of a batch in a module's Kronecker eigenbasis, formed the cheaper way.

EK-FAC's eigenvalue correction, self-influence and the query side all need the rotated per-example
gradient Q_S^T G Q_A of each example, G = sum_p g_p a_p^T (``tracking``). It can be formed in two
orders (Grosse et al. 2023, section 2.2, note this for the corrected eigenvalues):

  rotate first   a' = a Q_A and g' = g Q_S per position, then Q_S^T G Q_A = sum_p g'_p a'_p^T;
                 per example P (in^2 + out^2) multiply-adds, plus P out in for the sum.
  rotate after   G first, then Q_S^T G Q_A: P out in + out^2 in + out in^2.

For a single position (a Linear, or a Conv2d on a 1x1 map) rotating first is always cheaper, and the
rotated matrix is the outer product g' a'^T, which the squares and weighted squares below never form:
sum_oi (g'_o a'_i)^2 w_oi = (g'^2)^T w (a'^2). Input columns that are zero padding in every example
(``Captured.support``) are left out of every product.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xaibench.influence.tracking import Captured, outer_sum


@dataclass(frozen=True)
class Basis:
    """One module's eigenvectors Q_S (out, out) and Q_A (in, in) in the compute dtype, on the compute
    device; both None for the strategies that do not rotate (identity, diagonal)."""

    s: torch.Tensor | None = None
    a: torch.Tensor | None = None


@dataclass(frozen=True)
class Rotated:
    """The rotated per-example gradients of a batch, as single-position factors ``g`` (B, out) and ``a``
    (B, in) with G_b = g_b a_b^T, or as matrices ``full`` (B, out, in).

    ``columns`` are the input columns the in axis holds: None for all of them, which it always is after
    a rotation by Q_A; without one, only the support (the rest are zero).
    """

    g: torch.Tensor | None
    a: torch.Tensor | None
    full: torch.Tensor | None
    columns: torch.Tensor | None

    def matrices(self) -> torch.Tensor:
        """(B, out, in) rotated per-example gradients."""
        return self.full if self.full is not None else self.g[:, :, None] * self.a[:, None, :]

    def square_sum(self) -> torch.Tensor:
        """sum_b G_b^2 elementwise: (out, in)."""
        if self.full is None:
            return self.g.square().T @ self.a.square()
        return self.full.square().sum(0)

    def weighted_squares(self, weights: torch.Tensor) -> torch.Tensor:
        """sum_oi G_b[o, i]^2 weights[o, i] per example: (B,). ``weights`` has the in axis's columns."""
        if self.full is None:
            return ((self.g.square() @ weights) * self.a.square()).sum(1)
        return self.full.square().flatten(1) @ weights.flatten()


def rotate(seen: Captured, basis: Basis, dtype: torch.dtype) -> Rotated:
    """The batch's per-example gradients rotated by ``basis`` (as they are without one), in ``dtype``."""
    a, g, columns = supported(seen, dtype)
    if basis.a is None:
        if a.shape[1] == 1:
            return Rotated(g[:, 0], a[:, 0], None, columns)
        return Rotated(None, None, outer_sum(g, a), columns)
    q_a = basis.a if columns is None else basis.a.index_select(0, columns)
    positions, outs, ins = a.shape[1], g.shape[2], a.shape[2]
    first = positions * (ins * q_a.shape[1] + outs * outs + outs * q_a.shape[1])
    after = positions * outs * ins + outs * outs * ins + outs * ins * q_a.shape[1]
    if positions == 1:
        return Rotated(g[:, 0] @ basis.s, a[:, 0] @ q_a, None, None)
    if first <= after:
        return Rotated(None, None, outer_sum(g @ basis.s, a @ q_a), None)
    return Rotated(None, None, basis.s.T @ outer_sum(g, a) @ q_a, None)


def supported(seen: Captured, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Activations on the support columns (B, P, in'), output gradients (B, P, out), both in ``dtype``,
    and the support (None: every column)."""
    columns = seen.support()
    a = seen.activations
    if columns is not None:
        a = a.index_select(2, columns)
    return a.to(dtype), seen.gradients.to(dtype), columns
