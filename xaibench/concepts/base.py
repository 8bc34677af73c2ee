"""The contracts of concept extraction: a concept bank, the registries, and the model seen from a layer.

Fel et al. (NeurIPS 2023) cast concept extraction as dictionary learning on a layer's activations
A ~ U W + b (U codes (n, k), W the concept bank (k, p), b an offset: PCA's mean, zero otherwise) and
concept importance as attribution in concept space: perturb the codes, rebuild the activations, pass
them through the rest of the model h. Everything here is torch; factorisations run in scikit-learn.

Registries (one pattern, ``xaibench.core.registry.Registry``):
  DECOMPOSITIONS  name -> Decomposition class (nmf, kmeans, pca, sparse, semi_nmf)
  IMPORTANCES     name -> importance function (gradient_input, integrated_gradients, occlusion,
                  saliency, rise, sobol)
Concept metrics live in the shared METRICS registry, category "concept" (``xaibench.metrics.concept``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from xaibench.core.lazy import lazy_import
from xaibench.core.registry import Registry

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

#: head(codes (N, *spatial, k)) -> logits (N, classes): decode the codes into activations, run h.
ConceptHead = Callable[["torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class ConceptBank:
    """A learned dictionary: concept i is row i of ``dictionary``.

    Attributes:
        method: the DECOMPOSITIONS name that learned it.
        dictionary: W, (k, p) float32.
        offset: b, (p,) float32, added after U @ W (PCA's mean; zeros for the other methods).
    """

    method: str
    dictionary: torch.Tensor
    offset: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.dictionary.shape[0])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Activations (..., p) rebuilt from codes (..., k)."""
        return codes @ self.dictionary.to(codes.dtype) + self.offset.to(codes.dtype)


@dataclass(frozen=True)
class Factorization:
    """What ``Decomposition.fit`` returns: the codes of the rows it was fitted on and the bank."""

    codes: torch.Tensor  # (n, k) float32
    bank: ConceptBank


class Decomposition(Protocol):
    """A dictionary-learning method. Metadata as class attributes; instances are stateless."""

    name: ClassVar[str]
    nonnegative_codes: ClassVar[bool]
    nonnegative_dictionary: ClassVar[bool]
    needs_nonnegative_activations: ClassVar[bool]
    description: ClassVar[str]

    def fit(self, activations: torch.Tensor, k: int, seed: int) -> Factorization:
        """Learn k concepts from activations (n, p) float32; deterministic for a seed."""

    def encode(self, activations: torch.Tensor, bank: ConceptBank) -> torch.Tensor:
        """Codes (m, k) of new activations (m, p) against a learned bank (nmf: non-negative least
        squares; kmeans: one-hot nearest centre; pca: projection; sparse: sparse coding; semi_nmf:
        non-negative least squares against the signed dictionary)."""


#: importance(head, codes (N, *spatial, k), target (N,), *, batch_size, generator, **params) -> (N, k)
Importance = Callable[..., "torch.Tensor"]

DECOMPOSITIONS: Registry[type[Decomposition]] = Registry(
    "concept decomposition", modules=("xaibench.concepts.decompose",))
IMPORTANCES: Registry[Importance] = Registry("concept importance", modules=("xaibench.concepts.importance",))
