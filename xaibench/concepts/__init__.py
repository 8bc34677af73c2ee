"""Concept extraction and importance (Fel et al., NeurIPS 2023; CRAFT, CVPR 2023)."""

from xaibench.concepts.base import (
    DECOMPOSITIONS,
    IMPORTANCES,
    ConceptBank,
    ConceptHead,
    Factorization,
)

__all__ = ["DECOMPOSITIONS", "IMPORTANCES", "ConceptBank", "ConceptHead", "Factorization"]
