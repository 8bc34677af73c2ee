"""Per-example gradients of a batch in a module's Kronecker eigenbasis, formed the cheaper way.

EK-FAC's eigenvalue correction, self-influence and the query side all need the rotated per-example
gradient Q_S^T G Q_A of each example, G = sum_p g_p a_p^T (``tracking``). It can be formed in two
orders, and ``rotate`` takes the one with fewer multiply-adds:

  rotate first   a' = a Q_A and g' = g Q_S per position, then Q_S^T G Q_A = sum_p g'_p a'_p^T;
                 per example P (in^2 + out^2) multiply-adds, plus P out in for the sum.
  rotate after   G first, then Q_S^T G Q_A: P out in + out^2 in + out in^2.

With few positions (a Linear, a Conv2d on a 1x1 or 2x2 map) the squares that EK-FAC and self-influence
need never form G at all: (sum_p g_p a_p^T)^2 = sum_{p,p'} (g_p * g_p') (a_p * a_p')^T elementwise, so
sum_b G_b^2 = sum_{b,p<=p'} c_pp' (g_bp * g_bp') (a_bp * a_bp')^T is one matrix product over the position
pairs (c = 1 on the diagonal, 2 off it), and sum_oi G_b[o, i]^2 w_oi = sum_{p<=p'} c_pp' (g_bp * g_bp')^T w
(a_bp * a_bp'). With P(P+1)/2 pairs that beats writing B per-example matrices out while P is small (a
ResNet-18's 2x2 maps: 10 pairs, about 9 times faster on a CPU). Input columns that are zero padding in
every example (``Captured.support``) are left out of every product.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from xaibench.influence.tracking import Captured, outer_sum


class Basis:
    """One module's eigenvectors Q_S (out, out) and Q_A (in, in) in the compute dtype, on the compute
    device; none for the strategies that do not rotate (identity, diagonal).

    Q_A is read by rows (``a_rows(rows)``: float64 blocks of rows, None for all), only those that the
    input columns in use need, and of those rows only the eigenvector columns that are not zero on all of
    them are kept (``rows``). Factors split a covariance's zero rows off before its eigendecomposition
    (``factors._eigh``), so for a 3x3 convolution on a 1x1 map that is 512 x 512 of 4,608 x 4,608: the
    rotated gradients are zero in the other eigen-directions. Nothing else of Q_A is held.
    """

    def __init__(self, s: torch.Tensor | None = None,
                 a_rows: Callable[[torch.Tensor | None], Iterable[torch.Tensor]] | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | None = None) -> None:
        self.s = None if s is None else s.to(device, dtype)
        self._a_rows, self._dtype, self._device = a_rows, dtype, device
        self._rows: dict[int, tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]] = {}

    @property
    def rotates(self) -> bool:
        return self.s is not None

    def rows(self, columns: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Q_A's rows ``columns`` (None: all) restricted to its eigenvector columns that are non-zero
        there, and those eigenvector columns (None: all); converted once per set of input columns, a
        block of rows at a time (``a_rows`` yields float64 blocks): one pass finds the columns, a
        second converts them, so no float64 copy of the whole exists."""
        key = id(columns)  # the cached entry holds ``columns``, so its id is not reused meanwhile
        if key not in self._rows:
            live, count = None, 0
            for block in self._a_rows(columns):
                seen = (block != 0).any(dim=0)
                live, count = seen if live is None else live | seen, count + len(block)
            eigen = None if live is None or bool(live.all()) else live.nonzero()[:, 0]
            width = 0 if live is None else len(live) if eigen is None else len(eigen)
            converted = torch.empty(count, width, dtype=self._dtype, device=self._device)
            first = 0
            for block in self._a_rows(columns):
                part = block if eigen is None else block.index_select(1, eigen.to(block.device))
                converted[first:first + len(block)] = part.to(self._device, self._dtype)
                first += len(block)
            self._rows[key] = (columns, converted, None if eigen is None else eigen.to(self._device))
        return self._rows[key][1:]

    def held_bytes(self) -> int:
        """Bytes of the eigenvectors converted so far."""
        held = [self.s] if self.s is not None else []
        return sum(t.numel() * t.element_size() for t in [*held, *(r[1] for r in self._rows.values())])


@dataclass(frozen=True)
class Rotated:
    """The rotated per-example gradients of a batch: G_b = sum_p g_bp a_bp^T from rotated output
    gradients ``g`` (B, P, out) and activations ``a`` (B, P, in), or the matrices ``full`` (B, out, in).

    ``columns`` are the columns the in axis holds, None for all of them: without a rotation the input
    columns of the support, after one the eigenvectors that are not zero on the support (``Basis.rows``);
    the others hold zeros.
    """

    g: torch.Tensor | None
    a: torch.Tensor | None
    full: torch.Tensor | None
    columns: torch.Tensor | None

    def matrices(self) -> torch.Tensor:
        """(B, out, in) rotated per-example gradients."""
        return self.full if self.full is not None else outer_sum(self.g, self.a)

    def square_sum(self) -> torch.Tensor:
        """sum_b G_b^2 elementwise: (out, in)."""
        if self.full is not None:
            return self.full.square().sum(0)
        g, a = self._pairs()
        return g.flatten(0, 1).T @ a.flatten(0, 1)

    def weighted_squares(self, weights: torch.Tensor | None) -> torch.Tensor:
        """sum_oi G_b[o, i]^2 weights[o, i] per example (B,); ``weights`` has the in axis's columns,
        None weighs every entry 1."""
        if self.full is not None:
            squares = self.full.square().flatten(1)
            return squares.sum(1) if weights is None else squares @ weights.flatten()
        g, a = self._pairs()
        if weights is None:
            return (g.sum(2) * a.sum(2)).sum(1)
        return ((g @ weights) * a).sum((1, 2))

    def _pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_pp' g_p * g_p', a_p * a_p') over the position pairs p <= p': (B, pairs, out), (B, pairs, in)."""
        positions = self.a.shape[1]
        if positions == 1:
            return self.g.square(), self.a.square()
        first, second = torch.triu_indices(positions, positions, device=self.a.device)
        twice = torch.where(first == second, 1.0, 2.0).to(self.g.dtype)
        return self.g[:, first] * self.g[:, second] * twice[:, None], self.a[:, first] * self.a[:, second]


def by_pairs(positions: int) -> bool:
    """Whether squares of G are cheaper through position pairs than through G itself: measured on a
    CPU, writing B (out, in) matrices out and reading them back costs about as much as 32 pairs."""
    return positions * (positions + 1) // 2 < positions + 32


def rotate(seen: Captured, basis: Basis, dtype: torch.dtype, pairs: bool = True) -> Rotated:
    """The batch's per-example gradients rotated by ``basis`` (as they are without one), in ``dtype``;
    with ``pairs`` kept as rotated positions when ``by_pairs`` says squares are cheaper that way."""
    a, g, columns = supported(seen, dtype)
    positions, outs, ins = a.shape[1], g.shape[2], a.shape[2]
    keep = positions == 1 or (pairs and by_pairs(positions))
    if not basis.rotates:
        return Rotated(g, a, None, columns) if keep else Rotated(None, None, outer_sum(g, a), columns)
    q_a, eigen = basis.rows(columns)
    if keep:
        return Rotated(g @ basis.s, a @ q_a, None, eigen)
    first = positions * (ins * q_a.shape[1] + outs * outs + outs * q_a.shape[1])
    after = positions * outs * ins + outs * outs * ins + outs * ins * q_a.shape[1]
    if first <= after:
        return Rotated(None, None, outer_sum(g @ basis.s, a @ q_a), eigen)
    return Rotated(None, None, basis.s.T @ outer_sum(g, a) @ q_a, eigen)


def supported(seen: Captured, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Activations on the support columns (B, P, in'), output gradients (B, P, out), both in ``dtype``
    and contiguous, and the support (None: every column). A Conv2d's unfolded patches arrive as a
    transposed view, which a matrix product would take as B small products (5 times slower at P = 4)."""
    columns = seen.support()
    a = seen.activations
    if columns is not None:
        a = a.index_select(2, columns)
    return a.to(dtype).contiguous(), seen.gradients.to(dtype).contiguous(), columns
