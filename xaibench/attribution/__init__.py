"""Attribution methods: captum adapters, the batched path-integration engine, CAMs, perturbations.

A library package: it uses models, data and ``xaibench.core`` and knows nothing of run directories,
jobs or the CLI (the layers are in ``xaibench.core``'s docstring).
"""

from xaibench.attribution.base import METHODS, Method, attribute, describe_params, parse_params

__all__ = ["METHODS", "Method", "attribute", "describe_params", "parse_params"]
