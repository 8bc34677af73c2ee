"""Concept extraction and importance (Fel et al., NeurIPS 2023; CRAFT, CVPR 2023).

A library package: it uses models, data and ``xaibench.core`` and knows nothing of run directories,
jobs or the CLI (the layers are in ``xaibench.core``'s docstring).
"""

from xaibench.concepts.base import (
    DECOMPOSITIONS,
    IMPORTANCES,
    ConceptBank,
    ConceptHead,
    Factorization,
)

__all__ = ["DECOMPOSITIONS", "IMPORTANCES", "ConceptBank", "ConceptHead", "Factorization"]
